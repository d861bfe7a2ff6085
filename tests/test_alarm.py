"""The shortcut alarm over sequences of numbers, and inside the callback (warning, text, stop)."""

import os

import keras
import numpy as np
import pytest

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor.monitor.callback import ALARM_TAG, INFO_TAG
from keras_saliency_monitor.signals import alarm as alarm_module
from keras_saliency_monitor.signals.alarm import ShortcutAlarm

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
    # The signals that ask the probes are withheld while the probes are predicted too poorly
    # to ask (probe skill below min_skill): no score then, whether or not the epoch counts.
    assert np.isnan(alarm.shortcut_score(fresh)) and alarm.shortcut_score(learned) == 3.0


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
    # The alarm's state is in logs: 0.0 before it fired, 1.0 at its epoch (issue 22: a score
    # above 1.0 for one epoch was not the alarm).
    assert history.history["saliency_shortcut"] == [0.0] * monitor.alarm.fired_at + [1.0]
    assert history.history["saliency_border_ratio"][-1] > 1.0
    assert history.history["saliency_train_skill"][-1] >= 0.5  # it had learned the mark
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


def test_saliency_shortcut_moves_only_with_the_alarm(tmp_path):
    """Issue 22: EarlyStopping(mode="min") on a per-epoch score stopped a clean run at epoch 4
    of 15. The logged number is now the alarm's state; a clean run keeps it at 0.0."""
    x, y = _corner_data()
    rng = np.random.default_rng(1)
    y_clean = rng.permutation(y)  # the mark no longer tells the class: nothing to learn there
    model = _pooling_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y_clean), num_probes=6)
    history = model.fit(x, y_clean, epochs=4, batch_size=16, verbose=0, callbacks=[monitor])
    assert monitor.alarm.fired_at is None
    assert history.history["saliency_shortcut"] == [0.0] * 4


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


# ---------------------------------------------------------------- issue 22: gate, gap, verdict
def test_the_gate_reads_the_training_logs_not_the_probes():
    alarm = ShortcutAlarm(patience=2, warmup=0)
    # A shortcut model shown artefact-free probes: probes at chance, training data fitted; the
    # gap speaks (the band, asking probes at chance, is withheld).
    shortcut = {
        "band_lost": 0.9,
        "band_chance": 0.1,
        "probe_skill": 0.0,
        "probe_chance_p": 0.6,
        "train_skill": 0.95,
    }
    assert alarm.learned(shortcut)
    assert not alarm.learned({**shortcut, "train_skill": 0.3})
    # Without a training skill in logs, the probes' skill stands in (NaN passes).
    assert alarm.learned({"probe_skill": 0.6}) and not alarm.learned({"probe_skill": 0.2})
    assert alarm.learned({})
    fired = _run(alarm, [{**shortcut, "train_skill": 0.3}, shortcut, shortcut])
    assert [m is not None for m in fired] == [False, False, True]
    assert alarm.counted == 2


def test_band_and_hot_scores_are_the_excess_over_their_measured_chance():
    alarm = ShortcutAlarm(intervention_threshold=0.5)
    numbers = {"band_lost": 0.9, "band_chance": 0.2, "hot_lost": 0.3, "hot_chance": 0.1}
    scores = alarm.scores({**numbers, "border_ratio": 5.0})
    assert scores["band"] == pytest.approx(1.4) and scores["hot"] == pytest.approx(0.4)
    # The maps' border ratio is evidence once the model was asked; alone it still fires
    # (a regression output has no confidence to ask about).
    assert "border_ratio" not in scores
    assert alarm.scores({"border_ratio": 5.0}) == {"border_ratio": 5.0}
    # A control that costs as much as the band: no excess, whatever the band costs.
    assert alarm.scores({"band_lost": 0.9, "band_chance": 0.9})["band"] == 0.0
    off = ShortcutAlarm(intervention_threshold=None)
    assert "band" not in off.scores(numbers)


def test_gap_needs_a_fitted_training_set_and_probes_like_guesses():
    alarm = ShortcutAlarm(patience=1, warmup=0)
    gap = {"train_skill": 1.0, "probe_skill": 0.05, "probe_chance_p": 0.4, "probe_chance": 1 / 3}
    assert alarm.scores(gap)["gap"] == pytest.approx(8.0)
    assert "gap" not in alarm.scores({**gap, "train_skill": 0.7})  # not fitted yet
    assert alarm.scores({**gap, "probe_chance_p": 0.01})["gap"] < 1.0  # better than guessing
    assert "gap" not in alarm.scores({**gap, "probe_skill": 0.5})  # few probes, half right
    per_probe = {"probe_accuracy": np.array([1.0, 0.0, 0.0])}
    text = alarm.update(3, {**gap, "probe_accuracy": 0.33}, per_probe, ["a", "b", "c"], [7, 8, 9])
    assert "Signal gap" in text and "training skill 1.00" in text and "p = 0.40" in text
    assert "probe 1 (b, row 8 of probe_data), probe 2 (c, row 9 of probe_data)" in text
    assert "BatchNorm" in text and "To confirm" in text


def test_state_and_verdict_say_what_happened():
    alarm = ShortcutAlarm(patience=2, warmup=1)
    assert alarm.verdict().startswith("no verdict: no epoch")
    fresh = {"band_lost": 0.0, "band_chance": 0.0, "train_skill": 0.1}
    _run(alarm, [fresh, fresh])
    assert alarm.verdict().startswith("no verdict: the alarm counted none of the 2")
    assert "training skill 0.10" in alarm.verdict() and "Train longer" in alarm.verdict()
    learned = {**fresh, "train_skill": 0.9}
    alarm.update(2, learned, {})
    assert alarm.verdict().startswith("no verdict yet: only 1 of 3 logged epochs counted")
    for e in (3, 4):
        alarm.update(e, learned, {})
    assert alarm.verdict().startswith("no alarm") and "band 0.00" in alarm.verdict()
    assert alarm.state(4) == 0.0
    high = {**learned, "band_lost": 1.0}
    alarm.update(5, high, {})
    assert alarm.update(6, high, {}) == alarm.message == alarm.verdict()
    assert alarm.state(5) == 0.0 and alarm.state(6) == alarm.state(9) == 1.0


def test_training_skill_from_logs():
    from keras_saliency_monitor.signals.learning import accuracy_key, training_skill

    assert training_skill({"loss": 0.1, "accuracy": 1.0}, 3) == pytest.approx(1.0)
    assert training_skill({"accuracy": 1 / 3, "val_accuracy": 1.0}, 3) == pytest.approx(0.0)
    assert accuracy_key({"val_accuracy": 1, "head_accuracy": 0.5}) == "head_accuracy"
    assert accuracy_key({"saliency_probe_accuracy": 1.0}) is None
    # One sigmoid unit: chance 1/2.
    assert training_skill({"binary_accuracy": 0.75}, 2, "sigmoid") == pytest.approx(0.5)
    # No accuracy: a cross-entropy loss against log K, only when it is one.
    assert np.isnan(training_skill({"loss": 0.5}, 3))
    skill = training_skill({"loss": np.log(3) / 4}, 3, loss_is_crossentropy=True)
    assert skill == pytest.approx(0.75)
    assert np.isnan(training_skill({"accuracy": 0.9}, None))  # regression


def test_probe_chance_p_is_the_binomial_tail():
    from math import comb

    from keras_saliency_monitor.signals.learning import probe_chance_p

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 3))
    labels = np.argmax(logits, axis=1)
    labels[:7] = (labels[:7] + 1) % 3  # 5 of 12 right
    p, accuracy, chance = probe_chance_p(logits, labels)
    tail = sum(comb(12, k) * (1 / 3) ** k * (2 / 3) ** (12 - k) for k in range(5, 13))
    assert p == pytest.approx(tail) and accuracy == pytest.approx(5 / 12) and chance == 1 / 3
    assert np.isnan(probe_chance_p(logits, None)[0])


def test_lift_is_evidence_where_the_model_says_it_relies_on_the_object():
    alarm = ShortcutAlarm()
    low_lift = {"focus_lift": 1.2, "mask_contrast": 3.0}
    assert "focus_lift" in alarm.scores(low_lift)  # nothing asked: the maps decide
    assert "focus_lift" in alarm.scores({**low_lift, "object_reliance": 0.3})
    assert "focus_lift" not in alarm.scores({**low_lift, "object_reliance": 0.97})
    assert alarm.intervention_threshold == 0.3  # the default, set on the TUNE seeds


def test_probes_at_chance_withhold_every_signal_that_asks_them():
    """Probes predicted about as right as chance tell nothing of what the model learned: the
    confidence lost on the few right by luck and a guesser's maps are withheld, and only the
    gap speaks (TUNE seed 3: a MobileNetV2 control at chance in inference mode, training skill
    0.75, fired on object reliance 0.00 and lift 1.13)."""
    alarm = ShortcutAlarm(patience=2, warmup=0)
    chance = {"probe_chance_p": 0.66, "probe_skill": -0.03, "probe_chance": 1 / 3}
    asked = {
        "band_lost": 0.9,
        "band_chance": 0.1,
        "hot_lost": 0.9,
        "hot_chance": 0.1,
        "object_reliance": 0.0,
        "focus_lift": 1.0,
        "mask_contrast": 3.0,
        "border_ratio": 4.0,
        "probe_accuracy": 0.31,
    }
    near = {**asked, **chance, "train_skill": 0.75}
    assert alarm.probes_at_chance(near) and not alarm.probes_tell(near)
    assert alarm.scores(near) == {}
    assert _run(alarm, [near] * 4) == [None] * 4
    verdict = alarm.verdict()
    assert verdict.startswith("no verdict: the probes are predicted too poorly to ask")
    assert "accuracy 0.31 against a chance of 0.33" in verdict and "p = 0.66" in verdict
    assert "training skill, 0.75" in verdict and "below the 0.8" in verdict
    # Fitted: the gap alone is scored, and named.
    fitted = {**near, "train_skill": 0.95}
    assert set(alarm.scores(fitted)) == {"gap"}
    # Better than guessing but barely (new seed 65: a logo control fired hot at probe skill
    # 0.34, p 0.05): still not asked; from min_skill (0.5) on, or without labels, asked.
    barely = {**near, "probe_chance_p": 0.04, "probe_skill": 0.34}
    assert not alarm.probes_at_chance(barely) and not alarm.probes_tell(barely)
    assert alarm.scores(barely) == {}
    for told in (
        {**near, "probe_chance_p": 0.001, "probe_skill": 0.6},
        {**near, "probe_chance_p": float("nan"), "probe_skill": float("nan")},
    ):
        assert alarm.probes_tell(told)
        assert {"band", "hot", "object_reliance", "focus_lift"} <= set(alarm.scores(told))


def test_hot_needs_a_fixed_place_not_each_objects_own_part():
    """The agreed place must take at least HOT_SHARE of what each probe's own hottest region
    takes (faithfulness): new seed 35's uninformative-logo control, shown logo-free probes, lost
    0.47 at the agreed place against 0.12 around it while each probe's own region took 1.33."""
    alarm = ShortcutAlarm(warmup=0)
    logo = {"hot_lost": 0.47, "hot_chance": 0.12, "faithfulness": 1.33, "train_skill": 1.0}
    assert alarm.scores(logo)["hot"] == pytest.approx(0.35 / (alarm_module.HOT_SHARE * 1.33))
    assert alarm.scores(logo)["hot"] < 1.0
    # A mark: the one place does what the probes' own places do (TUNE seed 0, a stamp).
    mark = {**logo, "hot_lost": 0.52, "hot_chance": 0.11, "faithfulness": 0.38}
    assert alarm.scores(mark)["hot"] == pytest.approx(0.41 / 0.3)
    # Without a faithfulness (NaN) the threshold alone, as before.
    assert alarm.scores({**logo, "faithfulness": float("nan")})["hot"] == pytest.approx(0.35 / 0.3)
    text = _run(alarm, [mark, mark], {"hot_excess": np.array([0.5, 0.4])})[-1]
    assert "Signal hot" in text and "faithfulness 0.38" in text and "not a shortcut" in text


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="set on TF's draw of the seed: under JAX the model solves the toy without its maps "
    "agreeing on the strip (painting it leaves 0.71 accuracy after 20 epochs); under PyTorch "
    "it fires at epoch 9, before the model fits the toy (0.75 accuracy after the 10 epochs)",
)
def test_hot_fires_on_a_task_whose_class_is_a_place_and_says_so(tmp_path):
    """The tests' toy (the class is the row of a bright square, always in columns 2-4): the
    decision does follow one fixed place, so ``hot`` fires, and its text says that a task whose
    class is a place looks like this. Checked independently: painting that strip with each
    image's mean colour takes the model to chance; painting as many pixels elsewhere does not."""
    import re

    from keras_saliency_monitor.signals.interventions import fill

    x, y = tiny_data(n=24)
    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, background=False, sanity_blocks=0)
    with pytest.warns(UserWarning, match="Signal hot"):
        model.fit(x, y, epochs=10, batch_size=24, verbose=0, callbacks=[monitor])
    text = monitor.alarm_message
    assert "not a shortcut" in text
    column = int(re.search(r"column (\d+) of the 12x12 image", text).group(1))
    assert 2 <= column <= 4  # the strip every square sits in
    strip = np.zeros((12, 12), bool)
    strip[1:10, 2:5] = True
    elsewhere = np.roll(strip, 5, axis=1)  # columns 7-9: noise only

    def accuracy(images):
        return np.mean(np.argmax(model.predict(images, verbose=0), axis=1) == y)

    assert accuracy(x) == 1.0 and accuracy(fill(x, elsewhere)) == 1.0
    assert accuracy(fill(x, strip)) <= 0.5
