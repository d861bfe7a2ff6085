"""Reading a run back for the report: event files -> :class:`Run` (through
``storage.store``), and the :class:`Progress` bar of the loading and drawing."""

from __future__ import annotations

import contextlib
import itertools
import math
import mmap
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tensorboard.data import provider as tb_provider
from tqdm import tqdm

from keras_saliency_monitor.drawing import render
from keras_saliency_monitor.storage import logdirs, store

_MAPS_TAG_BYTES = store.MAPS_TAG.encode()  # what marks a run's event files (see find_runs)


class ReportError(Exception):
    """A problem the user can fix (bad log dir, option or output); the CLI exits with code 2."""


# ==================================================================================================
# Loading
# ==================================================================================================


@dataclass
class Run:
    """Everything the report shows of one run; overlays are re-rendered from the stored maps."""

    name: str  # e.g. "clean": path relative to LOGDIR without the trailing "saliency"
    path: str  # the directory holding the saliency event files
    probe_set: dict = field(default_factory=dict)  # JSON of saliency/probe_set (store.py)
    epochs: dict = field(default_factory=dict)  # step -> JSON of that step's saliency/maps
    scalars: dict = field(default_factory=dict)  # "focus" -> {step: value} (tags saliency/<name>)
    metrics: dict = field(default_factory=dict)  # "loss" -> {"train": {step: v}, "validation": ..}
    alarms: list = field(default_factory=list)  # [(step, text)]
    labels: dict = field(default_factory=dict)  # probe index -> label name (or class number)
    source: tuple | None = None  # (provider, ctx, experiment_id, run id) to read maps from
    display: np.ndarray | None = None  # (N, H, W, 3) uint8 probe images, as the monitor shows them

    @property
    def steps(self) -> list[int]:
        """Logged epochs, ascending."""
        return sorted(self.epochs)

    @property
    def num_probes(self) -> int:
        return int(self.probe_set["num_probes"])

    def maps(self, step: int) -> np.ndarray:
        """The stored maps of ``step``, decoded: float32 (N, h, w) in the raw maps' units."""
        provider, ctx, eid, run_id = self.source
        png = store.read_maps(provider, ctx, eid, run_id, step)
        return store.decode_maps(png, self.epochs[step])

    def probe_images(self, step: int, probes=None) -> np.ndarray:
        """(k, h, w, 3) uint8 overlays of ``step``, rendered from the stored maps as the monitor
        renders its grid (its colormap, clip percentile, smoothing and opacity), framed where a
        map is flat or broken."""
        info = self.epochs[step]
        maps = self.maps(step)
        h, w = maps.shape[1:]
        backdrop = _backdrop(self, h, w)
        options = dict(_DEFAULT_RENDER, **self.probe_set.get("render", {}))
        factor = self.display.shape[1] / h
        overlays = render.heat_overlays(
            backdrop,
            maps,
            clip_percentile=options["clip_percentile"],
            sigma=options["smoothing"] / factor,
            cmap=options["cmap"],
            alpha=options["alpha"],
        )
        overlays = render.mark_tiles(overlays, info["flat"], info["non_finite"])
        return overlays if probes is None else overlays[list(probes)]

    def probe_caption(self, probe: int) -> str:
        label = self.labels.get(probe)
        return f"#{probe} {label}" if label else f"#{probe}"


_DEFAULT_RENDER = {"clip_percentile": 99.0, "smoothing": 0.0, "cmap": "inferno", "alpha": 0.8}


def _backdrop(run: Run, h: int, w: int) -> np.ndarray:
    """The dimmed grey probe images at the stored maps' resolution (cached per run and size)."""
    cache = run.__dict__.setdefault("_backdrops", {})
    if (h, w) not in cache:
        display = run.display
        if display.shape[1:3] != (h, w):
            display = np.stack(
                [np.asarray(Image.fromarray(d).resize((w, h), Image.BOX)) for d in display]
            )
        cache[(h, w)] = render.dim_grey(display)
    return cache[(h, w)]


def _has_saliency_maps(directory: str, files: list[str]) -> bool:
    """Whether any event file of ``directory`` holds the monitor's maps.

    The tag is searched for as bytes, without parsing (protobuf stores strings as they are;
    mmap: C speed, nothing read into memory). A run's tag shows up with its first epoch, near
    the start of the file, so even large files are cheap to check.
    """
    for name in files:
        path = os.path.join(directory, name)
        try:
            if os.path.getsize(path) == 0:
                continue
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(_MAPS_TAG_BYTES) >= 0:
                    return True
        except (OSError, ValueError):
            continue
    return False


@dataclass
class _Found:
    runs: list  # [(name, directory)]
    directories: int  # directories with event files, searched
    files: int  # event files seen


def find_runs(logdir) -> _Found:
    """Directories under ``logdir`` (included) whose event files hold saliency maps.

    Not TensorBoard's ``io_wrapper.GetLogdirSubdirectories``: it imports TensorFlow (6.0 s against
    1.4 s in a fresh process, before the first error) and would still leave the tag search."""
    logdir = os.fspath(logdir)
    found, directories, files = [], 0, 0
    for dirpath, dirnames, filenames in os.walk(logdir):
        dirnames.sort()
        events = sorted(f for f in filenames if logdirs.is_event_file(f))
        if not events:
            continue
        directories += 1
        files += len(events)
        if _has_saliency_maps(dirpath, events):
            found.append(dirpath)
    names = {}
    runs = []
    for path in found:
        name = _run_name(logdir, path)
        count = names.get(name, 0)
        names[name] = count + 1
        runs.append((name if count == 0 else f"{name} ({count + 1})", path))
    return _Found(runs, directories, files)


def _run_name(logdir: str, path: str) -> str:
    rel = os.path.relpath(path, logdir)
    parts = [] if rel == os.curdir else rel.split(os.sep)
    if parts and parts[-1] == "saliency":
        parts = parts[:-1]
    if not parts:  # LOGDIR is the run's own log_dir (or its saliency dir)
        base = os.path.abspath(logdir)
        if os.path.basename(base) == "saliency":
            base = os.path.dirname(base)
        return os.path.basename(base) or "run"
    return "/".join(parts)


def _split_dirs(run_path: str) -> list[tuple[str, str]]:
    """Where Keras's TensorBoard callback puts a run's train/validation directories."""
    root = os.path.dirname(run_path) if os.path.basename(run_path) == "saliency" else run_path
    return [(split, os.path.join(root, split)) for split in ("train", "validation")]


def _metric_dirs(run_path: str) -> list[tuple[str, str]]:
    """The sibling train/validation directories of Keras's TensorBoard callback, if any (with a
    non-empty event file)."""
    return [(split, path) for split, path in _split_dirs(run_path) if _has_events(path)]


def _has_events(path: str) -> bool:
    with contextlib.suppress(OSError), os.scandir(path) as entries:  # OSError: no such directory
        return any(logdirs.is_event_file(e.name) and e.stat().st_size > 0 for e in entries)
    return False


def _select(logdir, runs) -> list[tuple[str, str]]:
    """The chosen ``(name, directory)`` runs under ``logdir``, found without reading events."""
    logdir = os.fspath(logdir)
    if not os.path.isdir(logdir):
        raise ReportError(f"log dir {logdir!r} does not exist or is not a directory")
    found = find_runs(logdir)
    if not found.runs:
        raise ReportError(
            f"no saliency events under {logdir!r}: searched {found.directories} "
            f"director{'y' if found.directories == 1 else 'ies'} with {found.files} event "
            f"file{'' if found.files == 1 else 's'} (recursively) for the tag "
            f"{store.MAPS_TAG!r} that SaliencyMonitor writes to <log_dir>/saliency"
        )
    available = dict(found.runs)
    if runs is None:
        return [(name, available[name]) for name in sorted(available)]
    unknown = [r for r in runs if r not in available]
    if unknown:
        raise ReportError(
            f"unknown run{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the runs "
            f"under {logdir!r} are {', '.join(sorted(available))}"
        )
    return [(name, available[name]) for name in dict.fromkeys(runs)]


def _series_of(pairs) -> dict:
    return {int(step): math.nan if value is None else float(value) for step, value in pairs}


def _read_run(name, path, source, progress) -> list[Run]:
    """The run ``name``, one :class:`Run` per probe set it was logged with.

    A log dir reused with other probes holds epochs of several probe sets (``store``'s
    ``group_epochs``); each is drawn with its own probes, as a run of its own named after its
    epochs, e.g. ``"clean (epochs 0-1, 4 probes)"``.
    """
    provider, ctx, eid = source
    latest = store.read_run(provider, ctx, eid, name)
    if latest["probe_set"] is None:
        raise ReportError(f"run {name} has saliency maps but no probe set ({store.PROBE_SET_TAG})")
    groups = latest["probe_sets"]
    metrics = _read_metrics(name, path, source)
    runs = []
    for group in groups:
        key = group["key"]
        index = latest if key == latest["probe_set_key"] else None
        index = index or store.read_run(provider, ctx, eid, name, probe_set=key)
        label = name
        if len(groups) > 1:
            label = f"{name} (epochs {_ranges(group['steps'])}, {group['num_probes']} probes)"
        runs.append(_group_run(label, name, path, source, index, metrics, len(groups) > 1))
    progress.advance()
    return runs


def _group_run(label, name, path, source, index, metrics, split) -> Run:
    """One probe set's epochs of run ``name`` (``split``: the run has others, whose numbers
    are left to their own Run)."""
    provider, ctx, eid = source
    run = Run(label, path, source=(provider, ctx, eid, name))
    run.probe_set = index["probe_set"]
    run.epochs = {int(step): info for step, info in index["epochs"].items()}
    steps = set(run.epochs)
    first, last = min(steps, default=0), max(steps, default=0)

    def keep(step):
        return not split or step in steps

    run.scalars = {k: _series_of(v) for k, v in index["scalars"].items()}
    run.scalars = {k: {s: v for s, v in d.items() if keep(s)} for k, d in run.scalars.items()}
    run.scalars = {k: d for k, d in run.scalars.items() if d}
    alarm = index["alarm"]
    if alarm is not None and (not split or first <= alarm["step"] <= last):
        run.alarms = [(alarm["step"], alarm["text"])]
    for probe in run.probe_set["probes"]:
        if probe.get("label") is not None:
            run.labels[int(probe["probe"])] = probe.get("label_name") or str(probe["label"])
    png = store.read_probe_images(provider, ctx, eid, name, probe_set=index["probe_set_key"])
    run.display = store.decode_images(png, run.num_probes)
    for metric, splits in metrics.items():
        for split_name, values in splits.items():
            values = {s: v for s, v in values.items() if not split or first <= s <= last}
            if values:
                run.metrics.setdefault(metric, {})[split_name] = values
    return run


def _read_metrics(name, path, source) -> dict:
    """``{"loss": {"train": {step: value}, "validation": ...}}`` from the sibling directories of
    Keras's TensorBoard callback."""
    provider, ctx, eid = source
    metrics = {}
    for split, _ in _metric_dirs(path):
        data = provider.read_scalars(
            ctx,
            experiment_id=eid,
            plugin_name="scalars",
            downsample=10**9,
            run_tag_filter=tb_provider.RunTagFilter(runs=[_metric_run(name, split)]),
        )
        for tag, series in data.get(_metric_run(name, split), {}).items():
            # Keras 3 writes epoch_<metric>; the monitor's own numbers also reach the `logs`
            # (epoch_saliency_*) and are plotted from saliency/ already.
            if not tag.startswith("epoch_") or tag.startswith("epoch_saliency_"):
                continue
            if tag == "epoch_learning_rate":
                continue
            values = {int(d.step): float(d.value) for d in series}
            if values:
                metrics.setdefault(tag[len("epoch_") :], {})[split] = values
    return metrics


def _check_run(run: Run) -> list[str]:
    """Drops the epochs whose stored maps cannot be read; returns what was dropped, in words."""
    notes = []
    for step in run.steps:
        try:
            run.maps(step)
        except Exception as err:  # noqa: BLE001 - a corrupt blob: PIL, zlib, shape errors alike
            del run.epochs[step]
            notes.append(
                f"run {run.name}: skipped epoch {step}, whose stored maps cannot be read "
                f"({type(err).__name__}: {err}) in {_files_of(run.path)}"
            )
    return notes


def _files_of(path: str) -> str:
    """The event files of a run directory, for a message naming the bad file."""
    try:
        names = sorted(n for n in os.listdir(path) if logdirs.is_event_file(n))
    except OSError:
        names = []
    if not names:
        return repr(path)
    shown = ", ".join(os.path.join(path, n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more event files" if len(names) > 3 else "")


def _irregular(paths) -> str:
    one = len(paths) == 1
    return (
        f"{', '.join(paths)} {'is not a regular file' if one else 'are not regular files'} (a "
        f"FIFO or a device, which a reader would wait on for good); move {'it' if one else 'them'}"
        " out of the log dir"
    )


def _metric_run(name: str, split: str) -> str:
    # A provider run id that no saliency run can have (run names never hold a NUL).
    return f"{name}\0{split}"


def load_runs(logdir, runs=None, progress=None) -> list[Run]:
    """Reads the selected runs under ``logdir``, every step, through ``store`` (TensorBoard's
    own multiplexer and data provider).

    Args:
        logdir: a directory searched recursively (e.g. ``runs/demo`` or ``runs/demo/clean``).
        runs: run names to keep, in this order; None keeps all, sorted by name.
        progress: a :class:`Progress` (None: silent).

    A run that cannot be read (a corrupt file) is left out; :func:`write_report` names it. A run
    whose log dir was reused with other probes comes as one :class:`Run` per probe set.

    Raises:
        ReportError: ``logdir`` missing, no saliency events, an unknown run name, or no run
            that can be read.
    """
    return _load(_select(logdir, runs), logdir, progress or Progress(enabled=False))[0]


def _load(chosen, logdir, progress) -> list[Run]:
    directories, loaded, skipped = {}, [], []
    readable = []
    for name, path in chosen:
        # A FIFO is never handed to TensorBoard's reader, which would wait on it for good: its
        # run (or its train/validation curves) is left out, named.
        irregular = logdirs.irregular_event_files(path)
        if irregular:
            skipped.append(f"skipped run {name}: {_irregular(irregular)}")
            continue
        readable.append((name, path))
        directories[name] = path
        for split, split_path in _split_dirs(path):
            irregular = logdirs.irregular_event_files(split_path)
            if irregular:
                skipped.append(f"run {name}: skipped its {split} curves: {_irregular(irregular)}")
            elif _has_events(split_path):
                directories[_metric_run(name, split)] = split_path
    chosen = readable
    if not chosen:
        raise ReportError("; ".join(skipped))
    progress.stage("reading events", 1 + len(chosen))
    source = store.open_logdir(logdir, runs=directories)
    progress.advance()
    for name, path in chosen:
        # One bad run (a corrupt image, a missing probe set) is skipped, named, and the others
        # are written.
        try:
            runs = _read_run(name, path, source, progress)
        except Exception as err:  # noqa: BLE001 - whatever a corrupt file raises
            why = str(err) if isinstance(err, ReportError) else f"{type(err).__name__}: {err}"
            skipped.append(f"skipped run {name}: {why} (in {_files_of(path)})")
            continue
        for run in runs:
            skipped.extend(_check_run(run))
            if run.steps:
                loaded.append(run)
            else:
                skipped.append(f"skipped run {run.name}: no readable maps")
    if not loaded:
        raise ReportError("; ".join(skipped) or "no readable saliency maps")
    return loaded, skipped


def _probe_counts(chosen) -> dict:
    """{run name: number of probes}, from each run's first probe set, read straight from its
    event files: checking --probes must not wait for every event of every run to load."""
    counts = {}
    for name, path in chosen:
        try:
            info = store.peek_probe_set(path)
        except Exception:  # noqa: BLE001, S112 - a corrupt run: named once it is loaded
            continue
        if info is not None:
            counts[name] = int(info["num_probes"])
    return counts


# ==================================================================================================
# Progress
# ==================================================================================================


class Progress:
    """The report's progress on stderr: a tqdm bar per stage, shown once it has taken ``delay`` s.

    Args:
        stream: where to draw. Defaults to ``sys.stderr``.
        delay: seconds a stage runs before its bar shows. Defaults to 1.
        enabled: draw at all; None draws only on a terminal. Defaults to None.
    """

    def __init__(self, stream=None, delay=1.0, enabled=None):
        self._options = dict(
            file=sys.stderr if stream is None else stream,
            delay=delay,
            disable=None if enabled is None else not enabled,  # None: only on a terminal
            dynamic_ncols=True,
        )
        self._bar = None

    def stage(self, label: str, total: int) -> None:
        self.close()
        self._bar = tqdm(total=max(int(total), 1), desc=label, **self._options)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _ranges(steps) -> str:
    """[0, 1, 2, 5] -> "0-2, 5" (ascending distinct steps)."""
    # A run of consecutive steps keeps step - position constant.
    groups = itertools.groupby(enumerate(steps), lambda pair: pair[1] - pair[0])
    spans = [[step for _, step in group] for _, group in groups]
    return ", ".join(str(s[0]) if len(s) == 1 else f"{s[0]}-{s[-1]}" for s in spans)
