"""Command line: ``keras-saliency-monitor demo | report | tensorboard``.

Each sub-command lives in its own module; this file only parses arguments and dispatches, and
imports TensorFlow lazily so ``--help`` and ``--version`` are instant. ``python -m
keras_saliency_monitor`` runs the same :func:`main`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys
import tempfile

from keras_saliency_monitor import __version__
from keras_saliency_monitor.storage import logdirs

PROG = "keras-saliency-monitor"

# TensorFlow's C++ log threshold: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR. We default to 2
# (errors only, as the tests and the launched TensorBoard use); a value the user exported wins.
_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# absl's C++ log line: severity letter, MMDD, hh:mm:ss.us (TF: 00:00:<epoch>), thread, file:line]
_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [^\]]+\] ")
_ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called"
_CPU_GUARD_TAIL = b"To enable the following instructions:"  # second line of an INFO message
_NO_CUDA_DRIVER = b"Could not find cuda drivers"
_CUINIT = b"failed call to cuInit"


def _tf_log_level() -> int:
    try:
        return int(os.environ.get(_TF_LOG_LEVEL, "0"))
    except ValueError:
        return 0


def _keep_line(line: bytes, level: int, no_driver: bool) -> bool:
    """Whether a line TensorFlow printed while importing stays on stderr at log ``level``."""
    if line.startswith(_ABSL_BANNER) or line.startswith(_CPU_GUARD_TAIL):
        return False
    match = _ABSL_LINE.match(line)
    if match is None:
        return True  # not a C++ log line: a Python warning, a traceback; always kept
    if no_driver and _CUINIT in line:
        return False  # no CUDA driver installed, so the failed cuInit is expected, not an error
    return "IWEF".index(match.group(1).decode()) >= level


def _import_quietly(name: str) -> None:
    """Imports ``name`` with TensorFlow's start-up lines below ``TF_CPP_MIN_LOG_LEVEL`` dropped.

    TensorFlow 2.21 prints 6 lines (oneDNN, "no CUDA driver", each twice, after absl's "before
    absl::InitializeLog()" banner) before absl is initialized, which no environment variable
    reaches (measured: TF_CPP_MIN_LOG_LEVEL=3 and CUDA_VISIBLE_DEVICES=-1 leave all 6), and an
    ERROR "failed call to cuInit ... (303)" on a machine without a GPU driver. So stderr's file
    descriptor points to a temporary file while TensorFlow loads and finds its devices; then the
    lines kept are written back. Cost: none measurable next to the ~3-5 s import.

    Args:
        name: ``"tensorflow"``, or ``"keras"`` (which loads TensorFlow only on its backend).
    """
    level = _tf_log_level()
    if "tensorflow" in sys.modules or level <= 0 or importlib.util.find_spec(name) is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                importlib.import_module(name)
                if "tensorflow" in sys.modules:  # the cuInit probe, while still captured
                    sys.modules["tensorflow"].config.list_physical_devices()
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                lines = captured.read().splitlines(keepends=True)
                no_driver = any(_NO_CUDA_DRIVER in line for line in lines)
                kept = b"".join(line for line in lines if _keep_line(line, level, no_driver))
                if kept:
                    sys.stderr.write(kept.decode(errors="replace"))
                    sys.stderr.flush()
    finally:
        os.close(saved)


def _demo(args) -> int:
    _import_quietly("keras")
    from keras_saliency_monitor import demo

    demo.run_demo(log_dir=args.log_dir, epochs=args.epochs, seed=args.seed)
    return 0


def _csv(kind, convert=str):
    """argparse type: "a,b,c" -> [a, b, c]."""

    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return [convert(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind}, received {text!r}"
            ) from None

    return parse


def _error(command, message) -> int:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return 2


def _report(args) -> int:
    if logdirs.has_saliency_events(args.logdir):
        # TensorBoard's event reader imports TensorFlow; without events, report errors before.
        _import_quietly("tensorflow")
    from keras_saliency_monitor.views import report

    progress = report.Progress(enabled=False if args.no_progress else None)
    try:
        summary = report.write_report(
            args.logdir,
            args.out,
            runs=args.runs,
            probes=args.probes,
            max_epochs=args.max_epochs,
            progress=progress,
        )
    except report.ReportError as err:
        return _error("report", err)
    except KeyboardInterrupt:
        print("\nkeras-saliency-monitor report: interrupted; nothing written", file=sys.stderr)
        return 130
    for note in summary.skipped:  # a corrupt run or epoch: the others are written
        print(f"{PROG} report: warning: {note}", file=sys.stderr)
    print(
        f"wrote {summary.path}: {', '.join(summary.runs)}, {summary.epochs} logged epochs, "
        f"{summary.size / 1e6:.2f} MB"
    )
    return 0


def _tensorboard(args) -> int:
    from keras_saliency_monitor.views import launcher

    if not os.path.isdir(args.logdir):
        return _error("tensorboard", f"log dir {args.logdir!r} is not a directory")
    if not logdirs.has_saliency_events(args.logdir):
        # Not an error: training may be about to write there, and TensorBoard shows it live.
        print(
            f"{PROG} tensorboard: warning: no saliency events under {args.logdir!r} yet "
            f"(SaliencyMonitor writes them to <log_dir>/{logdirs.SALIENCY_DIR})",
            file=sys.stderr,
        )
    print(f"Starting TensorBoard on {args.logdir} (takes a few seconds)...", flush=True)
    try:
        board = launcher.launch(
            args.logdir, port=args.port, host=args.host, max_images=args.max_images
        )
    except ValueError as err:
        return _error("tensorboard", err)
    except launcher.LaunchError as err:
        hint = ". Pass --port 0 for a free port." if "in use" in str(err) else ""
        print(f"keras-saliency-monitor tensorboard: error: {err}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while TensorBoard starts; the launcher stops it at exit
        print("\nkeras-saliency-monitor tensorboard: interrupted", file=sys.stderr)
        return 130
    try:
        board.echo_to(sys.stderr)  # TensorBoard's own warnings from now on
        print(
            f"TensorBoard: {board.url}#saliency  (every logged image reachable: "
            f"--samples_per_plugin images={args.max_images}). Press Ctrl-C to stop.",
            flush=True,
        )
    except KeyboardInterrupt:  # TensorBoard is up: the user's stop, as in serve_forever
        print("Stopping TensorBoard...", flush=True)
        board.stop()
        return 0
    return launcher.serve_forever(board)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="See what your Keras image model looks at while it trains.",
    )
    # pyproject.toml installs under __version__ too, so this is the installed version.
    version = f"{PROG} {__version__}"
    parser.add_argument(
        "--version", action="version", version=version, help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train a clean and a shortcut model on synthetic shapes and log their saliency",
        description="Offline demo (no download): two small CNNs on synthetic shapes, one of them "
        "trained on images with a class-revealing watermark. Logs go to LOG_DIR/clean and "
        "LOG_DIR/shortcut.",
    )
    demo.add_argument("--log-dir", default="runs/demo", help="where to write (default: runs/demo)")
    demo.add_argument("--epochs", type=int, help="epochs per run (default: tuned)")
    demo.add_argument("--seed", type=int, default=0, help="data and weight seed (default: 0)")
    demo.set_defaults(func=_demo)

    rep = sub.add_parser(
        "report",
        help="write every logged epoch as a GIF, a PNG filmstrip or a self-contained HTML page",
        description="Reads the saliency event files under LOGDIR (every step, with TensorBoard's "
        "reader) and writes OUT by its extension: .gif (one frame per logged epoch, runs side by "
        "side), .png (filmstrip: rows = probes, columns = epochs), .html (a self-contained page: "
        "filmstrips, curves, probe labels, runs side by side). A run is a directory "
        "holding saliency events, named by its path under LOGDIR without the trailing "
        "'saliency' (runs/demo/clean/saliency -> clean).",
    )
    rep.add_argument("logdir", metavar="LOGDIR", help="log directory, searched recursively")
    rep.add_argument(
        "--out", "-o", required=True, metavar="FILE", help="output file: .gif, .png or .html"
    )
    rep.add_argument(
        "--runs",
        type=_csv("run names"),
        metavar="A,B",
        help="runs to include, in this order (default: all)",
    )
    rep.add_argument(
        "--probes",
        type=_csv("probe indices", int),
        metavar="I,J",
        help="probe indices (rows) to show, e.g. 0,3,5 (default: all)",
    )
    rep.add_argument(
        "--max-epochs",
        type=int,
        default=12,
        metavar="N",
        help="filmstrip columns per run; first and last epoch always kept (default: 12)",
    )
    rep.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    rep.set_defaults(func=_report)

    from keras_saliency_monitor.views.launcher import DEFAULT_MAX_IMAGES

    tb = sub.add_parser(
        "tensorboard",
        help="start TensorBoard with every logged image reachable (not only 10 per tag)",
        description="Starts the real TensorBoard (python -m tensorboard.main) on LOGDIR with "
        "--samples_per_plugin images=K, so the step slider reaches every logged epoch, waits "
        "until it answers and prints its URL. Ctrl-C stops it.",
    )
    tb.add_argument("logdir", metavar="LOGDIR", help="log directory (e.g. runs/demo)")
    tb.add_argument(
        "--port",
        type=int,
        default=6006,
        metavar="N",
        help="port; 0 picks a free one (default: 6006)",
    )
    tb.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    tb.add_argument(
        "--max-images",
        type=int,
        default=DEFAULT_MAX_IMAGES,
        metavar="K",
        help=f"images kept per tag (default: {DEFAULT_MAX_IMAGES}; 0 would show none)",
    )
    tb.set_defaults(func=_tensorboard)
    return parser


def main(argv=None) -> int:
    """Runs one sub-command; returns its exit code (0 ok, 1 failed, 2 usage error, 130 Ctrl-C)."""
    # Before anything imports TensorFlow (C++ reads it once, at load). Inherited by TensorBoard.
    os.environ.setdefault(_TF_LOG_LEVEL, "2")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
