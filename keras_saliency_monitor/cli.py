"""Command line: ``keras-saliency-monitor demo | report | tensorboard``.

Each sub-command lives in its own module; this file only parses arguments and dispatches, and
imports TensorFlow lazily so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from keras_saliency_monitor import demo

    demo.run_demo(log_dir=args.log_dir, epochs=args.epochs, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-saliency-monitor",
        description="See what your Keras image model looks at while it trains.",
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
    demo.add_argument("--epochs", type=int, default=None, help="epochs per run (default: tuned)")
    demo.add_argument("--seed", type=int, default=0, help="data and weight seed (default: 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
