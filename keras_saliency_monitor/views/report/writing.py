"""Writing the report: :func:`write_report` checks the output and options, loads the runs,
draws them in the output's format and writes the file atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from keras_saliency_monitor.storage import arrays
from keras_saliency_monitor.views.report.drawing import (
    DEFAULT_MAX_EPOCHS,
    HTML_MAX_FRAMES,
    encode_gif,
    encode_png,
    filmstrip,
    gif_frames,
    html_page,
    sample_columns,
)
from keras_saliency_monitor.views.report.reading import (
    Progress,
    ReportError,
    _load,
    _probe_counts,
    _select,
)

EXTENSIONS = (".gif", ".png", ".html")


# ==================================================================================================
# Writing
# ==================================================================================================


@dataclass
class ReportSummary:
    """What :func:`write_report` wrote."""

    path: str  # the output file
    runs: list  # run names, in order
    epochs: int  # logged epochs (union over the runs)
    size: int  # bytes written
    skipped: list = field(default_factory=list)  # what could not be read, one line each


def _parse_out(out) -> tuple[str, str]:
    """Checks the output before any work: known extension, and a place that can be written."""
    out = os.fspath(out)
    ext = os.path.splitext(out)[1].lower()
    if ext not in EXTENSIONS:
        raise ReportError(
            f"unknown output extension {ext or '(none)'!r} in {out!r}: use one of "
            + ", ".join(EXTENSIONS)
        )
    if os.path.isdir(out):
        raise ReportError(f"cannot write {out!r}: it is a directory")
    # The nearest existing ancestor must be a writable directory (missing ones are made later).
    ancestor = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(ancestor) and os.path.dirname(ancestor) != ancestor:
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ReportError(f"cannot write {out!r}: {ancestor!r} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise ReportError(f"cannot write {out!r}: directory {ancestor!r} is not writable")
    return out, ext


def _prepare_parent(out: str) -> None:
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise ReportError(
            f"cannot write {out!r}: cannot create its directory ({err.strerror or err})"
        ) from None
    if not os.access(parent, os.W_OK):
        raise ReportError(f"cannot write {out!r}: directory {parent!r} is not writable")


def _write_atomic(path: str, data: bytes) -> None:
    try:  # 0644: mkstemp makes 0600, and a report is meant to be shared
        with arrays.atomic_file(path, prefix=".report.", overwrite=True, mode=0o644) as f:
            f.write(data)
    except OSError as err:
        raise ReportError(f"cannot write {path!r}: {err.strerror or err}") from None


def _check_probes(counts: dict, probes):
    """``probes`` without repeats, or a ReportError naming a run whose probe count they exceed.

    Args:
        counts: {run name: number of probes}.
        probes: the asked probe numbers (0-based), or None for all.
    """
    if probes is None:
        return None
    probes = list(dict.fromkeys(int(p) for p in probes))
    if not probes:
        raise ReportError("--probes selects no probe: give indices such as 0,3,5")
    for name, count in counts.items():
        bad = [p for p in probes if not 0 <= p < count]
        if bad:
            raise ReportError(
                f"probe {', '.join(map(str, bad))} out of range: run {name!r} has "
                f"{count} probes (0-{count - 1})"
            )
    return probes


def write_report(
    logdir, out, *, runs=None, probes=None, max_epochs=DEFAULT_MAX_EPOCHS, progress=None
) -> ReportSummary:
    """Reads the saliency runs under ``logdir`` and writes a ``.gif``, ``.png`` or ``.html``.

    Args:
        logdir: directory searched recursively for runs (see the module docstring).
        out: output file; its extension picks the format. Missing parent directories are made.
        runs: run names to include, in this order (e.g. ``["clean", "shortcut"]``). Defaults to
            all runs, sorted by name.
        probes: probe indices (rows) to show, e.g. ``[0, 3, 5]``. Defaults to all.
        max_epochs: filmstrip columns per run, at least 2 (first and last epoch are always
            kept, the rest evenly spaced). Defaults to 12.
        progress: a :class:`Progress`; None draws nothing.

    Returns:
        A :class:`ReportSummary`; its ``skipped`` names each run or epoch that could not be read
        (with its event files), which the others were written without.

    Raises:
        ReportError: no saliency events, unknown run or extension, bad option, or an output
            that cannot be written. The message is one line, for the user.
    """
    out, ext = _parse_out(out)
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 2:
        raise ReportError(
            f"--max-epochs must be an int >= 2 (first and last epoch), received {max_epochs!r}"
        )
    progress = progress or Progress(enabled=False)
    try:
        chosen = _select(logdir, runs)
        # The probe count comes from the first probe set in the files, before anything else is
        # read: a wrong --probes fails at once, not after loading every run.
        probes = _check_probes(_probe_counts(chosen), probes)
        loaded, skipped = _load(chosen, logdir, progress)
        probes = _check_probes({r.name: r.num_probes for r in loaded}, probes)  # latest fits
        _prepare_parent(out)
        all_steps = sorted(set().union(*(r.steps for r in loaded)))
        if ext == ".gif":
            progress.stage("drawing frames", len(all_steps))
            frames, _ = gif_frames(loaded, probes, None, progress)
            data = encode_gif(frames)
        elif ext == ".png":
            progress.stage("drawing", sum(len(sample_columns(r.steps, max_epochs)) for r in loaded))
            data = encode_png(filmstrip(loaded, probes, max_epochs, progress))
        else:
            total = len(sample_columns(all_steps, HTML_MAX_FRAMES))
            total += sum(len(sample_columns(r.steps, max_epochs)) for r in loaded)
            progress.stage("drawing", total)
            data = html_page(loaded, logdir, probes, max_epochs, progress).encode("utf-8")
        _write_atomic(out, data)
    finally:
        progress.close()
    return ReportSummary(out, [r.name for r in loaded], len(all_steps), len(data), skipped)
