"""The shortcut alarm over sequences of numbers, and inside the callback (warning, text, stop)."""

import os

import keras
import numpy as np
import pytest

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor import alarm as alarm_module
from keras_saliency_monitor.alarm import ShortcutAlarm
from keras_saliency_monitor.callback import ALARM_TAG, INFO_TAG

from .helpers import accumulator, tiny_cnn, tiny_data

SHARE = np.array([0.9, 0.2, 0.95])  # per-probe border shares for the messages


def _run(alarm, numbers_by_epoch, per_probe=None):
    per_probe = per_probe or {"border_share": SHARE, "focus_lift": np.array([0.8, 3.0, 1.1])}
    return [alarm.update(e, n, per_probe) for e, n in enumerate(numbers_by_epoch)]


def test_border_signal_fires_once_after_warmup_and_patience():
    alarm = ShortcutAlarm(patience=2, warmup=1)
    ratios = [5.0, 1.2, 0.5, 1.5, 1.1, 3.0, 3.0]
    fired = _run(alarm, [{"saliency_border_ratio": r} for r in ratios])
    # Epoch 0 is warm-up; 1 starts a streak that epoch 2 (0.5 <= 1.0) breaks; 3 and 4 fire.
    assert [m is not None for m in fired] == [False, False, False, False, True, False, False]
    assert alarm.fired_at == 4
    text = fired[4]
    assert "epoch 4" in text and "border_ratio = 1.10" in text and "above 1" in text
    assert "focus_lift" not in text  # no masks: only the signal that fired is named
    # 0-based probes, most saliency at the edges first.
    assert text.index("probe 2 0.95") < text.index("probe 0 0.90") < text.index("probe 1 0.20")


def test_lift_signal_needs_masks_that_can_tell():
    low_lift = {"saliency_focus_lift": 1.0, "saliency_border_ratio": 0.3}
    # Masks that differ (contrast 3): a lift of 1.0 is chance, the alarm fires.
    alarm = ShortcutAlarm(patience=1, warmup=0)
    text = alarm.update(0, {**low_lift, "saliency_mask_contrast": 3.0}, {"focus_lift": SHARE})
    assert text is not None and "focus_lift = 1.00" in text and "below 1.25" in text
    assert "probe 1 0.20" in text  # least on its object first
    # Objects all in the middle (contrast 1.2): the lift says nothing, no alarm.
    alarm = ShortcutAlarm(patience=1, warmup=0)
    assert alarm.update(0, {**low_lift, "saliency_mask_contrast": 1.2}, {}) is None
    assert alarm.scores({**low_lift, "saliency_mask_contrast": 1.2}) == {"border_ratio": 0.3}


def test_shortcut_score_is_the_largest_ratio_to_threshold():
    alarm = ShortcutAlarm()
    numbers = {"border_ratio": 0.5, "focus_lift": 0.625, "mask_contrast": 4.0}
    assert alarm.scores(numbers) == {"border_ratio": 0.5, "focus_lift": 2.0}
    assert alarm.shortcut_score(numbers) == 2.0
    assert np.isnan(alarm.shortcut_score({"border_ratio": float("nan")}))


def test_both_signals_named_when_both_past_threshold():
    alarm = ShortcutAlarm(patience=1, warmup=0)
    numbers = {"border_ratio": 2.0, "focus_lift": 1.0, "mask_contrast": 5.0}
    text = alarm.update(7, numbers, {"border_share": SHARE, "focus_lift": SHARE}, ["a", "b", "c"])
    assert "border_ratio = 2.00" in text and "focus_lift = 1.00" in text
    assert "probe 2 (c) 0.95" in text


def test_epochs_count_only_once_the_model_predicts_the_probes():
    alarm = ShortcutAlarm(patience=2, warmup=0)
    fresh = {"border_ratio": 3.0, "probe_skill": 0.1}  # a fresh network's noisy maps
    learned = {"border_ratio": 3.0, "probe_skill": 0.9}
    fired = _run(alarm, [fresh, fresh, fresh, learned, fresh, learned])
    # Unlearned epochs neither count nor reset: the two learned epochs make the streak.
    assert [m is not None for m in fired] == [False] * 5 + [True]
    # The per-epoch number is the same whether or not the epoch counts.
    assert alarm.shortcut_score(fresh) == alarm.shortcut_score(learned) == 3.0


def test_nan_is_ignored_and_reset_rearms():
    alarm = ShortcutAlarm(patience=2, warmup=0)
    nan, high = {"border_ratio": float("nan")}, {"border_ratio": 2.0}
    # A NaN epoch neither counts nor breaks the streak.
    fired = _run(alarm, [high, nan, high])
    assert fired[:2] == [None, None] and fired[2] is not None and alarm.fired_at == 2
    alarm.reset()
    assert alarm.fired_at is None
    assert _run(alarm, [high, high])[1] is not None


def test_reliance_signal_fires_below_its_threshold_whatever_the_mask_contrast():
    alarm = ShortcutAlarm(patience=2, warmup=1)
    # Objects all in the middle (contrast 1.2, the lift is not used): the reliance still is.
    base = {"focus_lift": 2.0, "mask_contrast": 1.2, "probe_skill": 0.9}
    values = [0.0, 0.05, 0.6, 0.1, float("nan"), -0.02, 0.9]
    per_probe = {"object_reliance": np.array([0.4, -0.1, 0.02])}
    fired = _run(alarm, [{**base, "object_reliance": v} for v in values], per_probe)
    # Epoch 0 is warm-up; 1 starts a streak that 2 (0.6) breaks; 3, NaN (ignored), 5 fire.
    assert [m is not None for m in fired] == [False] * 5 + [True, False]
    text = fired[5]
    assert "object_reliance = -0.02" in text and "below 0.25" in text and "; 0 = chance" in text
    assert "painting over each probe's object" in text and "focus_lift" not in text
    assert text.index("probe 1 -0.10") < text.index("probe 2 0.02") < text.index("probe 0 0.40")
    # (1 - r) / (1 - t): 1.0 at the threshold, above 1 below it, bounded at chance and below.
    assert alarm.scores({"object_reliance": 0.25})["object_reliance"] == pytest.approx(1.0)
    assert alarm.scores({"object_reliance": 0.5})["object_reliance"] == pytest.approx(2 / 3)
    assert alarm.scores({"object_reliance": 0.0})["object_reliance"] == pytest.approx(4 / 3)
    assert alarm.scores({"object_reliance": -1.0})["object_reliance"] == pytest.approx(8 / 3)
    # A lift of 0 is capped, not 1e12.
    capped = alarm.scores({"focus_lift": 0.0, "mask_contrast": 9.0})["focus_lift"]
    assert capped == alarm_module.MAX_SCORE


def test_disabled_signals():
    alarm = ShortcutAlarm(
        lift_threshold=None,
        border_threshold=None,
        reliance_threshold=None,
        patience=1,
        warmup=0,
    )
    numbers = {"border_ratio": 9.0, "focus_lift": 0.1, "mask_contrast": 9.0, "object_reliance": 0}
    assert all(m is None for m in _run(alarm, [numbers] * 4))
    assert np.isnan(alarm.shortcut_score(numbers))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"lift_threshold": 0}, "alarm_threshold"),
        ({"lift_threshold": float("nan")}, "alarm_threshold"),
        ({"border_threshold": -1.0}, "alarm_border_threshold"),
        ({"border_threshold": True}, "alarm_border_threshold"),
        ({"reliance_threshold": 0.0}, "alarm_reliance_threshold"),
        ({"reliance_threshold": 1.5}, "alarm_reliance_threshold"),
        ({"patience": 0}, "alarm_patience"),
        ({"warmup": -1}, "alarm_warmup"),
    ],
)
def test_bad_alarm_arguments_name_the_callback_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        ShortcutAlarm(**kwargs)


def test_monitor_passes_alarm_reliance_threshold_to_the_alarm(tmp_path):
    from keras_saliency_monitor import SaliencyMonitor

    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    monitor = SaliencyMonitor(str(tmp_path), x, num_probes=4, alarm_reliance_threshold=0.4)
    assert monitor.alarm.reliance_threshold == 0.4
    off = SaliencyMonitor(str(tmp_path), x, num_probes=4, alarm_reliance_threshold=None)
    assert off.alarm.reliance_threshold is None
    with pytest.raises(ValueError, match="`alarm_reliance_threshold`"):
        SaliencyMonitor(str(tmp_path), x, num_probes=4, alarm_reliance_threshold=2.0)


def _corner_data(n=48, size=24, classes=3, seed=0):
    """The class is a bright mark in the bottom-right corner: a fixed-place shortcut."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.1, size=(n, size, size, 3)).astype("float32")
    y = (np.arange(n) % classes).astype("int32")
    for i in range(n):
        x[i, -3:, -3:, y[i]] += 2.0
    return x, y


def _pooling_cnn(size=24, classes=3):
    """Same-padded conv and global max pooling: a mark anywhere is one filter's peak."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def test_callback_fires_without_masks_on_a_corner_shortcut_and_stops(tmp_path):
    x, y = _corner_data()
    model = _pooling_cnn()
    monitor = SaliencyMonitor(
        tmp_path, (x, y), num_probes=6, stop_on_alarm=True, class_names=["a", "b", "c"]
    )
    with pytest.warns(UserWarning, match="Saliency alarm"):
        history = model.fit(x, y, epochs=8, batch_size=16, verbose=0, callbacks=[monitor])
    # It stopped training at the epoch it fired, and said which signal and which probes.
    assert len(history.history["loss"]) == monitor.alarm.fired_at + 1
    assert "border_ratio" in monitor.alarm_message and "probe " in monitor.alarm_message
    # The per-epoch number behind the alarm is in logs, past 1.0 at the alarm.
    assert history.history["saliency_shortcut"][-1] > 1.0
    assert history.history["saliency_border_ratio"][-1] > 1.0
    assert history.history["saliency_probe_skill"][-1] >= 0.5  # it had learned the mark
    for key in ("saliency_place_agreement", "saliency_border_share", "saliency_concentration"):
        assert key in history.history
    acc = accumulator(os.path.join(tmp_path, "saliency"))
    from tensorboard.util import tensor_util

    alarm_text = tensor_util.make_ndarray(acc.Tensors(ALARM_TAG)[0].tensor_proto)
    assert b"Saliency alarm" in alarm_text.item()
    info = tensor_util.make_ndarray(acc.Tensors(INFO_TAG)[0].tensor_proto).item().decode()
    assert info.count("\n") == 6 + 1  # header, rule, one row per probe
    tags = acc.Tags()["tensors"]
    assert "saliency/shortcut" in tags and "saliency/border_ratio" in tags


def test_early_stopping_recipe_reads_the_alarm_number(tmp_path):
    x, y = _corner_data()
    model = _pooling_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6)
    stop = keras.callbacks.EarlyStopping(monitor="saliency_shortcut", mode="min", patience=2)
    with pytest.warns(UserWarning, match="Saliency alarm"):
        history = model.fit(x, y, epochs=30, batch_size=16, verbose=0, callbacks=[monitor, stop])
    assert len(history.history["loss"]) < 30  # EarlyStopping saw the number and stopped
    assert "saliency_shortcut" in history.history


def test_callback_with_masks_logs_the_calibrated_lift(tmp_path):
    """Masks far from the squares that define the class: the lift is no better than chance."""
    x, y = tiny_data()
    masks = np.zeros(x.shape[:3], bool)
    for i in range(len(x)):
        r = (3 * i) % 9
        masks[i, r : r + 3, 8:11] = True  # boxes that move, away from the class squares
    model = tiny_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, masks=masks)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    numbers = monitor.history[1]
    assert numbers["saliency_mask_contrast"] > 1.0
    for key in ("saliency_focus", "saliency_focus_lift", "saliency_pointing_game"):
        assert np.isfinite(numbers[key])
