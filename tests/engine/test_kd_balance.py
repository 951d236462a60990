"""The KD/detection loss balance: the ratio in the storage every iteration, one line over the
first window, a WARNING (what to lower) only when the KD terms dominate."""

import logging
from types import SimpleNamespace

import pytest
from detectron2.utils.events import EventStorage

from defeat.engine.kd_balance import (
    BALANCE_WINDOW,
    KD_DOMINANCE_RATIO,
    RATIO_KEY,
    KDBalanceHook,
    balance_message,
    loss_sums,
)

DETECTION = {"loss_cls": 1.0, "loss_box_reg": 0.25, "loss_rpn_cls": 0.2, "loss_rpn_loc": 0.05}  # sum 1.5


def _train(hook, steps, start=0):
    """Run ``hook`` over ``steps`` (one dict of losses per iteration) as the trainer would: the
    losses put in the storage at their iteration, then ``after_step``; ``after_train`` at the end."""
    storage = EventStorage(start)
    hook.trainer = SimpleNamespace(storage=storage)
    with storage:
        for i, losses in enumerate(steps, start):
            storage.iter = i
            storage.put_scalars(total_loss=sum(losses.values()), **losses)
            hook.after_step()
        hook.after_train()
    return storage


def test_loss_sums_split_kd_from_detection_terms():
    losses = {**DETECTION, "loss_defeat_neck_bg": 4.0, "loss_defeat_head_obj": 0.5, "total_loss": 99.0}
    assert loss_sums({**losses, "lr": 3.0, "defeat/kd_weight": 1.0}) == (4.5, 1.5)


def test_dominating_kd_terms_warn_once_naming_the_setting(caplog):
    steps = [{**DETECTION, "loss_defeat_neck_bg": 20.0, "loss_defeat_neck_obj": 5.0}] * (BALANCE_WINDOW + 5)
    hook = KDBalanceHook()
    with caplog.at_level(logging.INFO, logger="defeat.engine.kd_balance"):
        storage = _train(hook, steps)
    ratios = [v for v, _ in storage.history(RATIO_KEY).values()]
    assert ratios == pytest.approx([25.0 / 1.5] * len(steps))  # every iteration, (20 + 5) / 1.5
    records = [r for r in caplog.records if r.name == "defeat.engine.kd_balance"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert f"first {BALANCE_WINDOW} iterations" in message and "16.7x the detection losses" in message
    assert "largest: loss_defeat_neck_bg, 20 per iteration" in message
    assert "Lower MODEL.DEFEAT.NECK.OBJ_WEIGHT and NECK.BG_WEIGHT" in message
    assert "model.defeat.neck.obj_weight/bg_weight" in message


def test_balanced_terms_give_one_info_line_and_no_warning(caplog):
    steps = [{**DETECTION, "loss_defeat_neck_bg": 2.0, "loss_defeat_neck_obj": 1.0}] * (2 * BALANCE_WINDOW)
    with caplog.at_level(logging.INFO, logger="defeat.engine.kd_balance"):
        _train(KDBalanceHook(), steps)
    records = [r for r in caplog.records if r.name == "defeat.engine.kd_balance"]
    assert [r.levelno for r in records] == [logging.INFO]
    assert "sum to 2x the detection losses (per iteration 3 vs 1.5)." in records[0].getMessage()


def test_the_window_starts_when_the_kd_terms_are_on_and_a_short_run_is_still_reported():
    off = [{**DETECTION, "loss_defeat_neck_bg": 0.0, "loss_defeat_neck_obj": 0.0}] * 5  # a KD warm-up from 0
    on = [{**DETECTION, "loss_defeat_head_bg": 30.0, "loss_defeat_head_obj": 3.0}] * 3
    hook = KDBalanceHook(window=4)
    storage = _train(hook, off + on)
    level, message = hook.reported
    assert level == logging.WARNING and "first 3 iterations" in message and "22x" in message
    assert "Lower MODEL.DEFEAT.HEAD.OBJ_WEIGHT" in message  # the head terms dominate here
    assert [v for v, _ in storage.history(RATIO_KEY).values()] == pytest.approx([0.0] * 5 + [22.0] * 3)


def test_a_run_without_kd_terms_is_left_alone():
    hook = KDBalanceHook()
    storage = _train(hook, [DETECTION] * 3)
    assert hook.reported is None and RATIO_KEY not in storage.histories()


def test_threshold_is_the_named_constant_and_a_bad_window_is_refused():
    kd_at = {"loss_defeat_neck_bg": KD_DOMINANCE_RATIO * 1.5}
    assert balance_message(kd_at, 1.5, 1)[0] == logging.INFO  # exactly at the threshold: not above it
    assert balance_message({"loss_defeat_neck_bg": KD_DOMINANCE_RATIO * 1.5 + 0.01}, 1.5, 1)[0] == logging.WARNING
    with pytest.raises(ValueError, match="window must be at least 1"):
        KDBalanceHook(window=0)
