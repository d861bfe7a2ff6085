"""The smallest complete use: one SaliencyMonitor in a model.fit, then TensorBoard.

    python examples/quickstart.py [--log-dir runs/quickstart] [--epochs 5] [--train 1500]

Trains a small CNN on the demo's synthetic shapes (made in code: no download; the class is the
shape) with a SaliencyMonitor and Keras's own TensorBoard callback writing to the same log dir,
then prints the command that shows the SALIENCY tab. With the object masks the monitor also logs
how much of each map falls on the object, and the shortcut alarm watches those numbers too.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from keras_saliency_monitor import SaliencyMonitor  # noqa: E402
from keras_saliency_monitor.demo_data import make_demo_splits  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default=os.path.join("runs", "quickstart"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=1500, help="training images")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    data = make_demo_splits(n_train=args.train, seed=0)
    train, probes = data["train_clean"], data["probes_clean"]
    model = keras.Sequential(
        [
            keras.Input(train.x.shape[1:]),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.GlobalMaxPooling2D(),
            layers.Dense(len(train.class_names), activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    monitor = SaliencyMonitor(
        log_dir=args.log_dir,  # events go to <log_dir>/saliency
        probe_data=(probes.x, probes.y),  # drawn once, stratified by class, seeded
        num_probes=12,
        masks=probes.masks,  # optional: object masks aligned with probe_data
        class_names=list(train.class_names),  # optional, for captions
    )
    model.fit(
        train.x,
        train.y,
        epochs=args.epochs,
        batch_size=32,
        verbose=2,
        callbacks=[monitor, keras.callbacks.TensorBoard(args.log_dir)],
    )
    last = monitor.history[max(monitor.history)]  # {step: {name: value}}, as put into logs
    print(
        f"last epoch: focus lift {last['saliency_focus_lift']:.2f} (chance 1.0), "
        f"border ratio {last['saliency_border_ratio']:.2f} (chance 1.0)"
    )
    print(f"see it: keras-saliency-monitor tensorboard {args.log_dir}")


if __name__ == "__main__":
    main()
