"""The demo: one model learns the shape, the other a watermark, and the monitor tells them apart.

``keras-saliency-monitor demo`` trains the same small CNN twice on synthetic shapes
(:mod:`demo_data`, generated in code: no download): ``clean`` on plain images, ``shortcut`` on the
same images carrying a class-revealing watermark. Both runs log to one directory, so TensorBoard
shows them side by side: the clean model's saliency lands on the shape, the shortcut model's on the
corner mark, and the monitor's alarm, at the library's default settings, fires for the shortcut
run only. The printed verdict of each run is the alarm's.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

DEFAULT_EPOCHS = 8
NUM_PROBES = 12


def build_model(image_size=64, num_classes=3):
    """The demo's small CNN (about 25k parameters; an epoch takes seconds on 2 CPU cores)."""
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            layers.Rescaling(2.0, offset=-1.0),  # [0, 1] -> [-1, 1]: centred inputs train faster
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.GlobalMaxPooling2D(),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="shapes_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def run_demo(log_dir="runs/demo", epochs=None, seed=0, verbose="auto", out=sys.stdout):
    """Train the ``clean`` and ``shortcut`` runs with a SaliencyMonitor each.

    Args:
        log_dir: parent directory; runs go to ``<log_dir>/clean`` and ``<log_dir>/shortcut``.
        epochs: epochs per run. Defaults to ``DEFAULT_EPOCHS``.
        seed: seed of the data and of the weights.
        verbose: Keras's ``fit`` verbosity (the progress bar by default).
        out: where the summary is printed.

    Returns:
        ``{run: {"history": dict, "alarm": str | None, "verdict": str, "numbers": dict,
        "val_accuracy": float, "focus_lift": float, "border_ratio": float}}`` (the last
        epoch's numbers; ``verdict`` is the alarm's own, ``ShortcutAlarm.verdict``: its text,
        or why there was none; ``numbers`` the monitor's ``{epoch: numbers}``).
    """
    import keras

    from keras_saliency_monitor import SaliencyMonitor
    from keras_saliency_monitor.demo_data import make_demo_splits

    epochs = DEFAULT_EPOCHS if epochs is None else int(epochs)
    splits = make_demo_splits(seed=seed)
    val = splits["val"]
    names = list(val.class_names)
    results = {}
    for run, train, probes in (
        ("clean", splits["train_clean"], splits["probes_clean"]),
        ("shortcut", splits["train_watermark"], splits["probes_watermark"]),
    ):
        print(
            f"\n== run '{run}': training on {len(train.x)} images"
            f"{' with a class watermark' if run == 'shortcut' else ''} ==",
            file=out,
        )
        keras.utils.set_random_seed(seed)
        model = build_model(val.x.shape[1], len(names))
        run_dir = os.path.join(log_dir, run)
        monitor = SaliencyMonitor(
            run_dir,
            (probes.x, probes.y),
            num_probes=NUM_PROBES,
            masks=probes.masks,
            class_names=names,
            seed=seed,
        )
        callbacks = [monitor, keras.callbacks.TensorBoard(run_dir)]
        with warnings.catch_warnings():
            # The alarm is reported in the summary below; keep the progress bar readable.
            warnings.filterwarnings("ignore", message="Saliency alarm")
            history = model.fit(
                train.x,
                train.y,
                validation_data=(val.x, val.y),
                epochs=epochs,
                batch_size=32,
                callbacks=callbacks,
                verbose=verbose,
            )
        results[run] = {
            "history": history.history,
            "alarm": monitor.alarm_message,
            "verdict": monitor.alarm.verdict(),
            "numbers": monitor.history,  # {epoch: numbers}: keys absent where not measured
            "val_accuracy": history.history["val_accuracy"][-1],
            "focus_lift": history.history["saliency_focus_lift"][-1],
            "border_ratio": history.history["saliency_border_ratio"][-1],
        }
    print(summary(results), file=out)
    print(
        f"\nLogs: {os.path.abspath(log_dir)}\nView them in TensorBoard's SALIENCY tab:\n"
        f"  keras-saliency-monitor tensorboard {log_dir}\n"
        f"or:  tensorboard --logdir {log_dir}\n"
        f"A shareable page:  keras-saliency-monitor report {log_dir} --out demo.html",
        file=out,
    )
    return results


def summary(results) -> str:
    """Per run: a table of the alarm's numbers by epoch, then the alarm's verdict.

    ``band`` and ``hot`` are the share of the confidence lost when the outer band, or the place
    the maps agree on, is painted over, beyond a same-area control (the alarm fires above 0.3);
    ``-`` before the model has learned its training data (the alarm counts no such epoch).
    """
    lines = []
    for run, r in results.items():
        h = r["history"]
        lines.append(
            f"\n{run}: epoch  val_acc  train_skill   band    hot  focus_lift  border_ratio  alarm"
        )
        numbers = r.get("numbers", {})
        for e in range(len(h["loss"])):
            at = numbers.get(e, {})
            cells = [
                _cell(at, "saliency_train_skill", 11),
                _cell(at, "saliency_band_excess", 6),
                _cell(at, "saliency_hot_excess", 6),
                _cell(at, "saliency_focus_lift", 10),
                _cell(at, "saliency_border_ratio", 12),
            ]
            lines.append(
                f"{'':{len(run)}}  {e:5d}  {h['val_accuracy'][e]:7.3f}  {'  '.join(cells)}  "
                f"{'FIRED' if h['saliency_shortcut'][e] else '-':>5}"
            )
        verdict = r.get("verdict") or r["alarm"] or "no alarm."
        if r["alarm"]:
            verdict = f"SHORTCUT SUSPECTED. {r['alarm']}"
        lines.append(f"verdict ({run}): {verdict}")
    return "\n".join(lines)


def _cell(numbers, key, width):
    """One number of an epoch's row, ``-`` where it is missing (not measured) or NaN."""
    value = float(numbers.get(key, float("nan")))
    return f"{value:{width}.2f}" if math.isfinite(value) else f"{'-':>{width}}"
