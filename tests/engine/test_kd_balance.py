"""The KD/detection loss balance: the ratio in the storage every iteration, one line over the
first window, a WARNING naming the weights of the dominant term (from the settings table) only
when the KD terms dominate, and one line at the end comparing the first and the last window."""

import logging
from types import SimpleNamespace

import pytest
from detectron2.utils.events import EventStorage

from defeat.config.validation import RULES
from defeat.engine.kd_balance import (
    BALANCE_WINDOW,
    KD_DOMINANCE_RATIO,
    KD_WEIGHT_KEY,
    RATIO_KEY,
    STEADY_CHANGE,
    KDBalanceHook,
    balance_message,
    loss_sums,
    weights_advice,
)

DETECTION = {"loss_cls": 1.0, "loss_box_reg": 0.25, "loss_rpn_cls": 0.2, "loss_rpn_loc": 0.05}  # sum 1.5
LOGGER = "defeat.engine.kd_balance"


def _train(hook, steps, start=0, kd_weights=None):
    """Run ``hook`` over ``steps`` (one dict of losses per iteration) as the trainer would: the
    losses (and ``kd_weights[i]`` as the distiller's schedule weight) put in the storage at their
    iteration, then ``after_step``; ``after_train`` at the end."""
    storage = EventStorage(start)
    hook.trainer = SimpleNamespace(storage=storage)
    with storage:
        for n, (i, losses) in enumerate(enumerate(steps, start)):
            storage.iter = i
            if kd_weights is not None:
                storage.put_scalar(KD_WEIGHT_KEY, kd_weights[n], smoothing_hint=False)
            storage.put_scalars(total_loss=sum(losses.values()), **losses)
            hook.after_step()
        hook.after_train()
    return storage


def _messages(caplog):
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_loss_sums_split_kd_from_detection_terms():
    losses = {**DETECTION, "loss_defeat_neck_bg": 4.0, "loss_defeat_head_obj": 0.5, "total_loss": 99.0}
    assert loss_sums({**losses, "lr": 3.0, "defeat/kd_weight": 1.0}) == (4.5, 1.5)


def test_dominating_kd_terms_warn_once_naming_the_setting(caplog):
    steps = [{**DETECTION, "loss_defeat_neck_bg": 20.0, "loss_defeat_neck_obj": 5.0}] * (BALANCE_WINDOW + 5)
    hook = KDBalanceHook()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        storage = _train(hook, steps)
    ratios = [v for v, _ in storage.history(RATIO_KEY).values()]
    assert ratios == pytest.approx([25.0 / 1.5] * len(steps))  # every iteration, (20 + 5) / 1.5
    warnings = [m for level, m in _messages(caplog) if level == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0]
    assert f"first {BALANCE_WINDOW} iterations" in message and "16.7x the detection losses" in message
    assert "largest: loss_defeat_neck_bg, 20 per iteration" in message
    assert "Lower MODEL.DEFEAT.NECK.OBJ_WEIGHT and MODEL.DEFEAT.NECK.BG_WEIGHT at the same ratio" in message
    assert "LazyConfig: model.defeat.neck.obj_weight and model.defeat.neck.bg_weight" in message


# The largest term -> the weights the warning must name (YAML), and those it must not.
DOMINANT = {
    "loss_defeat_box": (["MODEL.DEFEAT.BOX.WEIGHT"], ["OBJ_WEIGHT", "BG_WEIGHT", "NECK", "HEAD."]),
    "loss_defeat_cross_obj": (
        ["MODEL.DEFEAT.CROSS_HEAD.OBJ_WEIGHT", "MODEL.DEFEAT.CROSS_HEAD.BG_WEIGHT"],
        ["NECK", "DEFEAT.HEAD.", "BOX.WEIGHT"],
    ),
    "loss_defeat_cross_bg": (
        ["MODEL.DEFEAT.CROSS_HEAD.OBJ_WEIGHT", "MODEL.DEFEAT.CROSS_HEAD.BG_WEIGHT"],
        ["NECK", "DEFEAT.HEAD.", "BOX.WEIGHT"],
    ),
    "loss_defeat_neck_obj": (
        ["MODEL.DEFEAT.NECK.OBJ_WEIGHT", "MODEL.DEFEAT.NECK.BG_WEIGHT"],
        ["HEAD", "BOX.WEIGHT"],
    ),
    "loss_defeat_head_bg": (
        ["MODEL.DEFEAT.HEAD.OBJ_WEIGHT", "MODEL.DEFEAT.HEAD.BG_WEIGHT"],
        ["NECK", "CROSS_HEAD", "BOX.WEIGHT"],
    ),
}


@pytest.mark.parametrize("largest", sorted(DOMINANT))
def test_the_warning_names_the_weights_of_the_dominant_term(largest):
    # Every KD term present, the named one largest: 30 of 36, against a detection sum of 1.5.
    terms = {k: 1.0 for k in DOMINANT}
    terms["loss_defeat_head_obj"] = 1.0
    terms[largest] = 30.0
    level, message = balance_message(terms, 1.5, 1)
    assert level == logging.WARNING and f"largest: {largest}, 30 per iteration" in message
    advice = message[message.index("Lower ") :]
    named, not_named = DOMINANT[largest]
    for key in named:
        assert key in advice
        assert "model.defeat." + key[len("MODEL.DEFEAT.") :].lower() in advice  # the LazyConfig key
    for part in not_named:
        assert part not in advice.split(" until ")[0], part
    assert ("at the same ratio" in advice) == (len(named) > 1)  # a pair is lowered together; BOX alone


def test_the_named_weights_are_those_whose_rule_multiplies_the_term():
    # Independently of the message: every weight rule's own term names that rule's setting.
    for path, rule in RULES.items():
        if rule.term:
            advice = weights_advice(rule.term)
            assert "MODEL.DEFEAT." + ".".join(p.upper() for p in path) in advice
            assert "model.defeat." + ".".join(path) in advice


def test_a_kd_term_no_weight_rule_multiplies_gets_a_sensible_message():
    level, message = balance_message({"loss_defeat_attention": 40.0, "loss_defeat_neck_bg": 1.0}, 1.5, 1)
    assert level == logging.WARNING and "largest: loss_defeat_attention" in message
    assert "Lower the weight of what adds loss_defeat_attention" in message
    assert "no MODEL.DEFEAT setting multiplies it" in message
    assert "NECK" not in message and "OBJ_WEIGHT" not in message and "WARMUP_ITERS" in message


def test_balanced_terms_give_one_info_line_and_no_warning(caplog):
    steps = [{**DETECTION, "loss_defeat_neck_bg": 2.0, "loss_defeat_neck_obj": 1.0}] * (2 * BALANCE_WINDOW)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _train(KDBalanceHook(), steps)
    messages = _messages(caplog)
    assert [level for level, _ in messages] == [logging.INFO, logging.INFO]  # the first window, the run
    assert "sum to 2x the detection losses (per iteration 3 vs 1.5)." in messages[0][1]
    assert "Steady" in messages[1][1]


def test_the_window_starts_when_the_kd_terms_are_on_and_a_short_run_is_still_reported(caplog):
    off = [{**DETECTION, "loss_defeat_neck_bg": 0.0, "loss_defeat_neck_obj": 0.0}] * 5  # a KD warm-up from 0
    on = [{**DETECTION, "loss_defeat_head_bg": 30.0, "loss_defeat_head_obj": 3.0}] * 3
    hook = KDBalanceHook(window=4)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        storage = _train(hook, off + on)
    level, message = hook.reported
    assert level == logging.WARNING and "first 3 iterations" in message and "22x" in message
    assert "Lower MODEL.DEFEAT.HEAD.OBJ_WEIGHT and MODEL.DEFEAT.HEAD.BG_WEIGHT" in message  # the head terms
    assert [v for v, _ in storage.history(RATIO_KEY).values()] == pytest.approx([0.0] * 5 + [22.0] * 3)
    # Shorter than two windows: the end says so instead of comparing overlapping windows.
    assert _messages(caplog)[-1] == (logging.INFO, hook.trend)
    assert "not compared: 3 iterations with the KD terms on, fewer than two windows of 4" in hook.trend


def _ramp(n, kd_start, kd_end, det_start, det_end):
    """``n`` iterations of losses moving linearly: the neck terms' sum (split 1:3 obj/bg) from
    ``kd_start`` to ``kd_end``, ``loss_cls`` from ``det_start`` to ``det_end`` (``loss_box_reg`` 0.5)."""
    steps = []
    for i in range(n):
        t = i / (n - 1)
        kd = kd_start + (kd_end - kd_start) * t
        det = det_start + (det_end - det_start) * t
        steps.append(
            {"loss_cls": det, "loss_box_reg": 0.5, "loss_defeat_neck_obj": kd / 4, "loss_defeat_neck_bg": kd * 3 / 4}
        )
    return steps


def _window_ratio(steps):
    kd = sum(v for s in steps for k, v in s.items() if k.startswith("loss_defeat_"))
    det = sum(v for s in steps for k, v in s.items() if not k.startswith("loss_defeat_"))
    return kd / det


@pytest.mark.parametrize(
    "kd_end, det_end, word",
    [(6.0, 0.2, "Rising"), (1.0, 2.0, "Falling"), (16.0, 2.0, "Rising, with the detection losses not falling")],
)
def test_the_end_of_the_run_compares_the_first_and_last_window(caplog, kd_end, det_end, word):
    window, n = 5, 17
    off = [{**DETECTION, "loss_defeat_neck_obj": 0.0, "loss_defeat_neck_bg": 0.0}] * 3  # KD warm-up at 0
    on = _ramp(n, 8.0, kd_end, 2.0, det_end)
    hook = KDBalanceHook(window=window)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _train(hook, off + on, start=100)
    first, last = _window_ratio(on[:window]), _window_ratio(on[-window:])
    assert (last > first * STEADY_CHANGE) if word.startswith("Rising") else (last * STEADY_CHANGE < first)
    line = hook.trend
    assert _messages(caplog)[-1] == (logging.INFO, line)
    assert f"{first:.3g}x over iterations 103-107 (the first {window} with the KD terms on)" in line
    assert f"{last:.3g}x over iterations 115-119 (the last {window})" in line
    assert f" {word}:" in line and "Steady" not in line and line.count("Rising") + line.count("Falling") == 1
    if word == "Rising":
        assert "detection losses fall as the student fits" in line and "small dataset" in line
        assert "5.5x to 16.7x gained 17 AP" in line and "not by itself a fault" in line
    elif word.startswith("Rising"):
        assert "the KD terms grew" in line and "not by itself a fault" not in line
    else:
        assert "KD terms fell faster than the detection losses" in line
    assert ("student trained alone" in line) == (word in ("Rising", "Falling")) and "tools/plot_losses.py" in line
    assert "KD schedule" not in line  # no schedule weight was logged


def test_the_end_line_names_a_changing_kd_schedule_weight():
    n, window = 12, 4
    steps = [{**DETECTION, "loss_defeat_box": 3.0 * (1 - i / n)} for i in range(n)]  # a linear KD schedule
    weights = [1 - i / n for i in range(n)]
    hook = KDBalanceHook(window=window)
    _train(hook, steps, kd_weights=weights)
    first_w, last_w = sum(weights[:window]) / window, sum(weights[-window:]) / window
    assert "Falling:" in hook.trend
    assert f"averaged {first_w:.3g} over the first window and {last_w:.3g} over the last" in hook.trend


def test_the_last_window_ends_at_the_last_iteration_with_the_kd_terms_on():
    # The last iterations have the KD terms off (a schedule at 0): the last window ends before them.
    steps = _ramp(10, 3.0, 3.0, 1.5, 1.5) + [{**DETECTION, "loss_defeat_neck_bg": 0.0}] * 4
    hook = KDBalanceHook(window=5)
    _train(hook, steps)
    assert "over iterations 5-9 (the last 5)" in hook.trend and "Steady" in hook.trend


def test_a_run_without_kd_terms_is_left_alone(caplog):
    hook = KDBalanceHook()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        storage = _train(hook, [DETECTION] * 3)
    assert hook.reported is None and hook.trend is None and RATIO_KEY not in storage.histories()
    assert _messages(caplog) == []


def test_threshold_is_the_named_constant_and_a_bad_window_is_refused():
    kd_at = {"loss_defeat_neck_bg": KD_DOMINANCE_RATIO * 1.5}
    assert balance_message(kd_at, 1.5, 1)[0] == logging.INFO  # exactly at the threshold: not above it
    assert balance_message({"loss_defeat_neck_bg": KD_DOMINANCE_RATIO * 1.5 + 0.01}, 1.5, 1)[0] == logging.WARNING
    with pytest.raises(ValueError, match="window must be at least 1"):
        KDBalanceHook(window=0)


@pytest.mark.parametrize("iterations, compared", [(7, False), (8, True)])
def test_the_run_is_compared_from_two_whole_windows_on(iterations, compared):
    hook = KDBalanceHook(window=4)
    _train(hook, [{**DETECTION, "loss_defeat_neck_bg": 3.0}] * iterations)
    assert hook.reported[0] == logging.INFO and "first 4 iterations" in hook.reported[1]
    if compared:
        assert "2x over iterations 0-3 (the first 4 with the KD terms on), 2x over iterations 4-7" in hook.trend
    else:
        assert f"not compared: {iterations} iterations with the KD terms on, fewer than two windows of 4" in hook.trend
