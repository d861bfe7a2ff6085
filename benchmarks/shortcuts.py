"""Does the alarm catch learned shortcuts, and stay silent on controls? Measured, not fitted.

    python benchmarks/shortcuts.py --split tune              # TUNE seeds: tune thresholds here
    python benchmarks/shortcuts.py --split held_out          # HELD_OUT seeds: report these
    python benchmarks/shortcuts.py --quick                   # 5 cases, 6 epochs: about 2 minutes
    python benchmarks/shortcuts.py --tables runs.jsonl       # re-make the tables, no training

Each run trains one case of ``shortcut_data`` (a source, a size, a cue or control with its
geometry, an architecture: every factor drawn per seed by ``shortcut_data.draw_cases``) once,
with four real ``SaliencyMonitor`` callbacks at the library's defaults attached to the same fit:
probes that carry the artefact and probes from the artefact-free split, each without and with
object masks. Watching never changes what is watched, so the four see the same weights. Every
epoch it records each monitor's ``saliency_*`` numbers (``monitor.history``), Keras's ``logs``,
and the model's accuracy on fresh images with and without the cue; at the end each monitor's
``alarm.fired_at`` and ``alarm_message``.

Each run gets a status from its last epoch (accuracies in inference mode, on 150 fresh images
with the cue and 150 without):

* ``gap``: training accuracy (Keras's ``logs``) >= 0.9 while accuracy with the cue <= 0.5: the
  model fits its training data and predicts fresh images about as well as chance in inference
  mode (BatchNorm at Keras's default momentum after a few hundred steps: MobileNetV2's 0.999
  always, the ResNet's 0.99 often). The alarm should name the gap; these runs are counted
  apart, neither as missed shortcuts nor as false alarms.
* ``learned``: a cue the model LEARNED (the issue's test): accuracy with the cue >= 0.8 and at
  least 0.25 above the accuracy without it; ``full`` when the accuracy without it is also
  below 0.6. Only these count as shortcut cases.
* ``unlearned``: a cue the model did not learn (not counted).
* ``control``: a control that is not a gap run; any alarm on it is a false alarm.

``texture`` controls run without masks only (their object is the whole image).

Raw results go to a JSON-lines file (one run a line, appended as runs finish, so an interrupted
suite resumes where it stopped); the tables (one per factor: kind, size, inset, mark size,
frame width, architecture, source, probe split, control) are printed from that file, for the
TUNE and HELD_OUT seeds apart.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shortcut_data as data  # noqa: E402 - the benchmark folder is not a package

LEARNED_WITH = 0.8  # accuracy with the cue, at least
LEARNED_GAP = 0.25  # accuracy with the cue minus without it, at least
FULL_WITHOUT = 0.6  # "full": accuracy without the cue below this
GAP_TRAIN = 0.9  # a gap run: training accuracy at least this ...
GAP_FRESH = 0.5  # ... and accuracy on fresh images with the cue at most this
N_TRAIN = 480
N_PROBE_POOL = 48  # the monitor draws its 16 probes (stratified) from this pool
N_TEST = 150
MONITORS = ("carry", "free")  # probe splits; each without and with masks


def monitor_key(split, masked):
    return f"{split}/{'masks' if masked else 'no_masks'}"


def run_case(case: data.Case, epochs: int, n_train: int = N_TRAIN) -> dict:
    """Train one case with four monitors at defaults; return its JSON-ready record."""
    import keras

    from keras_saliency_monitor import SaliencyMonitor

    base = 10_000 * case.seed + 100 * data.KINDS.index(case.kind)
    train = data.make_images(case, n_train, base + 1)
    probes = {
        "carry": data.make_images(case, N_PROBE_POOL, base + 2, cue=True),
        "free": data.make_images(case, N_PROBE_POOL, base + 3, cue=False),
    }
    with_cue = data.make_images(case, N_TEST, base + 4, cue=True)
    without = data.make_images(case, N_TEST, base + 5, cue=False)
    model = data.build_model(case)
    root = tempfile.mkdtemp(prefix="ksm-shortcuts-")
    monitors = {}
    for split in MONITORS:
        p = probes[split]
        for masked in (False, True) if case.kind != "texture" else (False,):
            key = monitor_key(split, masked)
            monitors[key] = SaliencyMonitor(
                os.path.join(root, key.replace("/", "_")),
                (p.x, p.y),
                masks=p.masks if masked else None,
            )
    epochs_log = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            row = {k: float(v) for k, v in (logs or {}).items() if not k.startswith("saliency_")}
            for name, imgs in (("acc_with", with_cue), ("acc_without", without)):
                pred = np.argmax(self.model.predict(imgs.x, verbose=0, batch_size=150), axis=1)
                row[name] = float(np.mean(pred == imgs.y))
            epochs_log.append(row)

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the alarm's warning; its text is recorded below
            model.fit(
                train.x,
                train.y,
                epochs=epochs,
                batch_size=32,
                verbose=0,
                callbacks=[*monitors.values(), Record()],
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    seconds = time.perf_counter() - start
    last = epochs_log[-1]
    learned = (
        last["acc_with"] >= LEARNED_WITH and last["acc_with"] - last["acc_without"] >= LEARNED_GAP
    )
    if last.get("accuracy", 0.0) >= GAP_TRAIN and last["acc_with"] <= GAP_FRESH:
        status = "gap"
    elif case.kind in data.CONTROLS:
        status = "control"
    else:
        status = "learned" if learned else "unlearned"
    record = {
        "case": case.as_dict(),
        "name": case.name(),
        "group": group_of(case.seed),
        "epochs": epochs_log,
        "status": status,
        "learned": status == "learned",
        "full": status == "learned" and last["acc_without"] < FULL_WITHOUT,
        "seconds": seconds,
        "monitors": {},
    }
    for key, m in monitors.items():
        history = [
            {k: _json_number(v) for k, v in m.history[step].items()} for step in sorted(m.history)
        ]
        verdict = getattr(m.alarm, "verdict", None)  # the alarm's own words, where it has them
        record["monitors"][key] = {
            "fired_at": m.alarm.fired_at,
            "message": m.alarm_message,
            "verdict": verdict() if callable(verdict) else None,
            "history": history,
        }
    return record


def group_of(seed):
    """``"tune"``, ``"held_out"``, or ``"new"`` for a seed in neither (8 and up: free to tune
    on, as the TUNE seeds, but counted apart from them)."""
    if seed in data.TUNE_SEEDS:
        return "tune"
    return "held_out" if seed in data.HELD_OUT_SEEDS else "new"


def parse_case(spec):
    """A case from ``kind:source:size:arch:seed[:mark:inset[:frame]]`` (``--case``)."""
    parts = spec.split(":")
    if not 5 <= len(parts) <= 8 or len(parts) == 6:
        raise ValueError(
            f"Invalid value for argument `--case`: expected kind:source:size:arch:seed"
            f"[:mark:inset[:frame]], received {spec!r}."
        )
    kind, source, size, arch, seed, *rest = parts
    extra = dict(zip(("mark", "inset", "frame"), (int(v) for v in rest)))
    return data.Case(kind, source, int(size), arch=arch, seed=int(seed), **extra)


def _json_number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


# --- tables ----------------------------------------------------------------------------------


def _units(records):
    """One unit per (run, probe split, masks): the table cells count these."""
    for r in records:
        for split in MONITORS:
            for masked in (False, True):
                m = r["monitors"].get(monitor_key(split, masked))
                if m is not None:
                    yield r, split, masked, m["fired_at"] is not None


def _cell(hits):
    if not hits:
        return "-"
    return f"{sum(hits)}/{len(hits)} ({100 * sum(hits) / len(hits):.0f}%)"


FACTORS = {
    "kind": lambda r, split: r["case"]["kind"],
    "size": lambda r, split: r["case"]["size"],
    "source": lambda r, split: r["case"]["source"],
    "architecture": lambda r, split: r["case"]["arch"],
    "probe split": lambda r, split: split,
    "inset (marks, stamps)": lambda r, split: (
        r["case"]["inset"] if r["case"]["kind"] in ("corner", "edge", "stamp", "logo") else None
    ),
    "mark size (marks, stamps)": lambda r, split: (
        r["case"]["mark"]
        if r["case"]["kind"] in ("corner", "edge", "stamp", "logo", *data.CENTRED)
        else None
    ),
    "frame width": lambda r, split: (
        r["case"]["frame"] if r["case"]["kind"] in ("frame", "white_frame") else None
    ),
}


COLUMNS = (
    ("cue0", "learned cue, no masks"),
    ("cue1", "learned cue, masks"),
    ("full0", "full, no masks"),
    ("full1", "full, masks"),
    ("c0", "controls alarmed, no masks"),
    ("c1", "controls alarmed, masks"),
    ("gap0", "gap runs alarmed, no masks"),
    ("gap1", "gap runs alarmed, masks"),
)


def _factor_cells(records, factor):
    get = FACTORS[factor]
    cells = defaultdict(lambda: {k: [] for k, _ in COLUMNS})
    for r, split, masked, hit in _units(records):
        value = get(r, split)
        if value is None:
            continue
        m = int(masked)
        if r["status"] == "control":
            cells[value][f"c{m}"].append(hit)
        elif r["status"] == "gap":
            cells[value][f"gap{m}"].append(hit)
        elif r["status"] == "learned":
            cells[value][f"cue{m}"].append(hit)
            if r["full"]:
                cells[value][f"full{m}"].append(hit)
    return cells


def factor_table(records, factor, before=None):
    """Rows of one factor: alarms on learned cues, on controls and on gap runs.

    With ``before`` (records of the same runs under another alarm), each cell reads
    "before -> records".
    """
    cells = _factor_cells(records, factor)
    old = _factor_cells(before, factor) if before is not None else None
    lines = [
        f"| {factor} | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + " --- |" * (1 + len(COLUMNS)),
    ]
    values = set(cells) | set(old or ())
    for value in sorted(values, key=lambda v: (isinstance(v, str), v)):
        row = []
        for k, _ in COLUMNS:
            text = _cell(cells[value][k]) if value in cells else "-"
            if old is not None:
                was = _cell(old[value][k]) if value in old else "-"
                text = text if was == text == "-" else f"{was} -> {text}"
            row.append(text)
        lines.append(f"| {value} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary(records):
    """The issue's "Done when" figures for these records (units: run x probe split)."""

    def rate(select, masked):
        return _cell(
            [hit for r, split, m, hit in _units(records) if m == masked and select(r, split)]
        )

    def kind_in(kinds, full=True, split=None):
        return lambda r, s: (
            r["case"]["kind"] in kinds
            and (r["full"] if full else r["learned"])
            and split in (None, s)
        )

    def status(name):
        return lambda r, s: r["status"] == name

    count = defaultdict(int)
    for r in records:
        count[r["status"]] += 1
    lines = [
        f"- runs: {len(records)}: {count['learned']} learned their cue "
        f"({sum(r['full'] for r in records)} fully), {count['unlearned']} did not (not "
        f"counted), {count['control']} controls, {count['gap']} gap runs; each run counts once "
        "per probe split (carry, artefact-free)",
        "- without masks, full fixed-place shortcuts (corner, edge, stamp, frame) alarmed: "
        f"{rate(kind_in(data.FIXED_PLACE), False)} (goal >= 90%); carry probes "
        f"{rate(kind_in(data.FIXED_PLACE, split='carry'), False)}, artefact-free probes "
        f"{rate(kind_in(data.FIXED_PLACE, split='free'), False)}",
        "- without masks, learned centred marks alarmed: "
        f"{rate(kind_in(data.CENTRED, False), False)} (goal 70%); carry probes "
        f"{rate(kind_in(data.CENTRED, False, 'carry'), False)}",
        "- with masks, learned centred mark over the object (centre_on) alarmed: "
        f"{rate(kind_in(('centre_on',), False), True)} (goal >= 90%)",
        "- with masks, full shortcuts of every kind alarmed: "
        f"{rate(kind_in(data.CUES), True)} (goal >= 95%); carry probes "
        f"{rate(kind_in(data.CUES, split='carry'), True)}, artefact-free probes "
        f"{rate(kind_in(data.CUES, split='free'), True)}",
        f"- controls alarmed: without masks {rate(status('control'), False)}, with masks "
        f"{rate(status('control'), True)} (goal 0)",
        f"- gap runs alarmed: without masks {rate(status('gap'), False)}, with masks "
        f"{rate(status('gap'), True)} (goal: all, naming the gap)",
    ]
    return "\n".join(lines)


def status_table(records):
    """Per kind: how many runs learned their cue, fully, not at all, or ended in a gap."""
    names = ("learned", "unlearned", "control", "gap")
    rows = defaultdict(lambda: defaultdict(int))
    for r in records:
        row = rows[r["case"]["kind"]]
        row["runs"] += 1
        row[r["status"]] += 1
        row["full"] += r["full"]
    lines = [
        "| kind | runs | learned (full) | unlearned | control | gap |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind in data.KINDS:
        if kind in rows:
            c = rows[kind]
            cells = [f"{c['learned']} ({c['full']})", *(str(c[n]) for n in names[1:])]
            lines.append(f"| {kind} | {c['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def signal_table(records):
    """Which signals the alarm's text names, by run status and masks (counts of alarms)."""
    counts = defaultdict(lambda: defaultdict(int))
    for r in records:
        for key, m in r["monitors"].items():
            if m["message"]:
                row = counts[(r["status"], key.split("/")[1])]
                for name in set(re.findall(r"Signal (\w+)", m["message"])) or {"?"}:
                    row[name] += 1
    lines = ["| status, masks | signals named in the alarm's text (alarms) |", "| --- | --- |"]
    for (status, masks), row in sorted(counts.items()):
        named = ", ".join(f"{k} {v}" for k, v in sorted(row.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {status}, {masks} | {named} |")
    return "\n".join(lines)


def tables(records, before=None):
    """Every table, per seed group; with ``before``, the factor tables compare the same runs."""
    out = []
    for group in ("tune", "held_out", "new"):
        chosen = [r for r in records if group_of(r["case"]["seed"]) == group]
        old = None
        if before is not None:  # the runs both files hold
            names = {r["name"] for r in before} & {r["name"] for r in chosen}
            chosen = [r for r in chosen if r["name"] in names]
            old = [r for r in before if r["name"] in names]
        if not chosen:
            continue
        seeds = sorted({r["case"]["seed"] for r in chosen})
        out.append(f"## {group} seeds {seeds}\n")
        if old is not None:
            out.append("Before:\n\n" + summary(old) + "\n\nAfter:\n")
        out.append(summary(chosen) + "\n")
        out.append(status_table(chosen) + "\n")
        out.append(signal_table(chosen) + "\n")
        for factor in FACTORS:
            out.append(factor_table(chosen, factor, old) + "\n")
    return "\n".join(out)


def replay(records):
    """Feed each monitor's recorded numbers through today's ``ShortcutAlarm`` at its defaults.

    Valid only while the alarm is a function of the logged numbers (a change of thresholds or of
    how signals combine, not of how a number is measured); the alarm's text needs per-probe
    values that are not recorded, so only ``fired_at`` is replayed.
    """
    from keras_saliency_monitor.signals.alarm import ShortcutAlarm

    for r in records:
        for m in r["monitors"].values():
            alarm = ShortcutAlarm()
            over = []
            for epoch, numbers in enumerate(m["history"]):
                numbers = {k: np.nan if v is None else v for k, v in numbers.items()}
                try:
                    alarm.update(epoch, numbers, {})
                except (KeyError, TypeError, ValueError):
                    pass  # the words need per-probe values; fired_at is set before them
                if alarm.fired_at == epoch:  # the signals past their thresholds then
                    over = [k for k, v in alarm.scores(numbers).items() if v > 1.0]
            m["fired_at"] = alarm.fired_at
            m["message"] = None
            if alarm.fired_at is not None:
                m["message"] = "(replayed) " + " ".join(f"Signal {k}:" for k in over)
    return records


def load(path):
    """The records of a JSON-lines file (gzip-compressed when the name ends in .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


QUICK = (
    data.Case("corner", "photos", 64, 8, 3, arch="same_gap"),
    data.Case("frame", "photos", 64, frame=2, arch="valid_gap"),
    data.Case("centre_on", "shapes", 32, 8, arch="same_gmp"),
    data.Case("clean", "photos", 64, arch="same_flatten"),
    data.Case("logo", "shapes", 32, 6, 2, arch="resnet"),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tune", "held_out", "all"), default="tune")
    parser.add_argument("--seeds", help="comma-separated seeds instead of the split's")
    parser.add_argument("--kinds", default=",".join(data.KINDS))
    parser.add_argument("--archs", default=",".join(data.ARCHS), help="skip cases of others")
    parser.add_argument(
        "--case",
        action="append",
        metavar="SPEC",
        help="run this case instead of the drawn ones: kind:source:size:arch:seed[:mark:inset"
        "[:frame]] (repeatable), e.g. logo:shapes:64:valid_gap:35:9:6",
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=N_TRAIN)
    parser.add_argument("--quick", action="store_true", help="5 fixed cases, 6 epochs")
    parser.add_argument("--out", default="shortcut_runs.jsonl", help="JSON-lines results")
    parser.add_argument("--tables", metavar="JSONL", help="only print the tables of a file")
    parser.add_argument(
        "--replay", action="store_true", help="with --tables: re-run today's alarm on the numbers"
    )
    parser.add_argument(
        "--before", metavar="JSONL", help="with --tables: compare with these runs (before -> after)"
    )
    args = parser.parse_args(argv)
    if args.tables:
        records = load(args.tables)
        before = load(args.before) if args.before else None
        print(tables(replay(records) if args.replay else records, before))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.quick:
        cases = list(QUICK)
        epochs = 6
    elif args.case:
        cases = [parse_case(spec) for spec in args.case]
        epochs = args.epochs
    else:
        if args.seeds:
            seeds = [int(s) for s in args.seeds.split(",")]
        else:
            seeds = {
                "tune": data.TUNE_SEEDS,
                "held_out": data.HELD_OUT_SEEDS,
                "all": data.TUNE_SEEDS + data.HELD_OUT_SEEDS,
            }[args.split]
        kinds = [k for k in args.kinds.split(",") if k]
        archs = set(args.archs.split(","))
        cases = [
            c for s in seeds for c in data.draw_cases(s) if c.kind in kinds and c.arch in archs
        ]
        epochs = args.epochs
    done = set()
    if os.path.exists(args.out):
        done = {r["name"] for r in load(args.out)}
    start = time.perf_counter()
    for k, case in enumerate(cases):
        if case.name() in done:
            continue
        record = run_case(case, epochs, args.n_train)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        last = record["epochs"][-1]
        fired = {key: m["fired_at"] for key, m in record["monitors"].items()}
        print(
            f"[{k + 1}/{len(cases)}] {case.name()}: train acc {last.get('accuracy', 0):.2f}, "
            f"with cue {last['acc_with']:.2f}, without {last['acc_without']:.2f}, "
            f"learned {record['learned']}, alarm at {fired} ({record['seconds']:.0f} s, "
            f"total {time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    print()
    print(tables(load(args.out)))


if __name__ == "__main__":
    main(sys.argv[1:])
