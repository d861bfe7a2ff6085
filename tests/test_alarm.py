"""The shortcut alarm, alone and inside the callback (masks -> lift -> warning, text, stop)."""

import os

import numpy as np
import pytest

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor.alarm import FocusAlarm
from keras_saliency_monitor.callback import ALARM_TAG, INFO_TAG

from .helpers import accumulator, tiny_cnn, tiny_data


def test_fires_once_after_warmup_and_patience():
    alarm = FocusAlarm(threshold=1.5, patience=2, warmup=1)
    lifts = [0.5, 0.9, 2.0, 1.0, 1.1, 0.8, 0.7]
    fired = [alarm.update(e, v, np.array([v, 3.0, 0.2])) for e, v in enumerate(lifts)]
    # Epoch 0 is warm-up; 1 starts a streak that epoch 2 (2.0 >= 1.5) breaks; 3 and 4 fire.
    assert [m is not None for m in fired] == [False, False, False, False, True, False, False]
    assert alarm.fired_at == 4
    text = fired[4]
    assert "epoch 4" in text and "1.10" in text and "below 1.5" in text
    # The probes most off target are named, lowest lift first.
    assert text.index("probe 2 lift 0.20") < text.index("probe 0 lift 1.10")


def test_nan_is_ignored_and_reset_rearms():
    alarm = FocusAlarm(threshold=1.0, patience=1, warmup=0)
    assert alarm.update(0, float("nan"), np.array([np.nan])) is None
    assert alarm.update(1, 0.5, np.array([0.5])) is not None
    alarm.reset()
    assert alarm.fired_at is None
    assert alarm.update(0, 0.5, np.array([0.5])) is not None


def test_disabled_with_none():
    alarm = FocusAlarm(threshold=None)
    assert all(alarm.update(e, 0.0, np.zeros(2)) is None for e in range(5))


@pytest.mark.parametrize(
    "kwargs", [{"threshold": 0}, {"threshold": float("nan")}, {"patience": 0}, {"warmup": -1}]
)
def test_bad_alarm_arguments(kwargs):
    with pytest.raises(ValueError, match="alarm_"):
        FocusAlarm(**kwargs)


def test_callback_fires_on_masks_the_model_ignores(tmp_path):
    """Masks far from the squares that define the class: lift stays low, the alarm fires."""
    x, y = tiny_data()
    masks = np.zeros(x.shape[:3], bool)
    masks[:, -3:, -3:] = True  # bottom-right corner: nothing there predicts the class
    model = tiny_cnn()
    monitor = SaliencyMonitor(
        tmp_path,
        (x, y),
        num_probes=6,
        masks=masks,
        alarm_threshold=1.0,
        alarm_patience=1,
        alarm_warmup=0,
        stop_on_alarm=True,
        class_names=["a", "b", "c"],
    )
    with pytest.warns(UserWarning, match="Saliency alarm"):
        history = model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[monitor])
    # It stopped training at the epoch it fired.
    assert len(history.history["loss"]) == monitor.alarm.fired_at + 1
    assert history.history["saliency_focus_lift"][-1] < 1.0
    for key in ("saliency_focus", "saliency_pointing_game", "saliency_concentration"):
        assert key in history.history
    acc = accumulator(os.path.join(tmp_path, "saliency"))
    from tensorboard.util import tensor_util

    alarm_text = tensor_util.make_ndarray(acc.Tensors(ALARM_TAG)[0].tensor_proto)
    assert b"Saliency alarm" in alarm_text.item()
    info = tensor_util.make_ndarray(acc.Tensors(INFO_TAG)[0].tensor_proto).item().decode()
    assert info.count("\n") == 6 + 1  # header, rule, one row per probe
    assert "saliency/focus_lift_per_probe" in acc.Tags()["tensors"]
