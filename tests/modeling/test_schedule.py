"""KD weight over iterations: warm-up and decay schedules against closed forms."""

import math

import pytest
import torch

from defeat import kd_weight


def test_constant_without_warmup_is_one():
    assert [kd_weight(i, 100) for i in (0, 50, 99, 100)] == [1.0, 1.0, 1.0, 1.0]


def test_warmup_ramps_linearly_then_holds():
    assert kd_weight(0, 100, warmup_iters=10) == pytest.approx(0.1)
    assert kd_weight(4, 100, warmup_iters=10) == pytest.approx(0.5)
    assert kd_weight(9, 100, warmup_iters=10) == 1.0
    assert kd_weight(50, 100, warmup_iters=10) == 1.0


@pytest.mark.parametrize("it", [0, 25, 50, 75, 100])
def test_linear_and_cosine_decay_to_zero(it):
    assert kd_weight(it, 100, "linear") == pytest.approx(1 - it / 100)
    assert kd_weight(it, 100, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * it / 100)))


def test_warmup_multiplies_decay():
    assert kd_weight(4, 100, "linear", warmup_iters=10) == pytest.approx(0.5 * 0.96)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown KD loss schedule 'step'"):
        kd_weight(0, 10, "step")


# ---- the schedule over every loss term of a model ----

EVERY_TERM = {
    "loss_defeat_neck_obj",
    "loss_defeat_neck_bg",
    "loss_defeat_head_obj",
    "loss_defeat_head_bg",
    "loss_defeat_box",
    "loss_defeat_cross_obj",
    "loss_defeat_cross_bg",
}
RUN, WARMUP, AT = 20, 8, 3  # iteration 3 of 20, inside an 8-iteration KD warm-up


def _by_hand(schedule):
    """The KD weight at iteration AT, written out: the warm-up ramp times the decay."""
    warm = (AT + 1) / WARMUP
    progress = AT / RUN
    decay = 1 - progress if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return warm * decay


def _every_term_model(kind, schedule, teacher_weights):
    from detectron2.modeling import build_model
    from helpers import defeat_cfg, lazy_defeat

    torch.manual_seed(0)
    if kind == "yaml":
        opts = ["MODEL.DEFEAT.BOX.ENABLED", True, "MODEL.DEFEAT.CROSS_HEAD.ENABLED", True]
        opts += ["MODEL.DEFEAT.NECK.ADAPTER_INIT_STD", 0.2, "MODEL.DEFEAT.LOSS_SCHEDULE", schedule]
        opts += ["MODEL.DEFEAT.WARMUP_ITERS", WARMUP, "SOLVER.MAX_ITER", RUN]
        return build_model(defeat_cfg(teacher_weights, *opts)).train()
    return lazy_defeat(
        teacher_weights,
        "model.defeat.box.enabled=True",
        "model.defeat.cross_head.enabled=True",
        "model.defeat.neck.adapter_init_std=0.2",
        f"model.defeat.loss_schedule={schedule}",
        f"model.defeat.warmup_iters={WARMUP}",
        f"train.max_iter={RUN}",
    ).train()


def _losses(model, batch):
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)  # the same RoIs in both passes
    with EventStorage(AT) as storage:
        return model(batch), storage


@pytest.mark.parametrize("kind, schedule", [("yaml", "linear"), ("yaml", "cosine"), ("lazy", "cosine")])
def test_every_loss_term_is_scaled_by_the_same_kd_weight(teacher_weights, kind, schedule):
    """Neck, head, box and cross-head terms on, KD warm-up on, a decaying schedule: each
    ``loss_defeat_*`` term at iteration 3 is the unscheduled term times the same KD weight."""
    from helpers import synthetic_batch

    model = _every_term_model(kind, schedule, teacher_weights)
    d = model.distiller
    assert (d.max_iter, d.warmup_iters, d.schedule) == (RUN, WARMUP, schedule)  # from the run's one length
    batch = synthetic_batch(boxes_per_image=(3, 1))
    scheduled, storage = _losses(model, batch)
    expected = _by_hand(schedule)
    assert 0.1 < expected < 0.5  # the warm-up and the decay both show
    assert storage.history("defeat/kd_weight").latest() == pytest.approx(expected)
    d.schedule, d.warmup_iters = "constant", 0  # the same model, weight 1
    plain, _ = _losses(model, batch)
    terms = {k for k in scheduled if k.startswith("loss_defeat_")}
    assert terms == EVERY_TERM
    for key in sorted(terms):
        assert plain[key].item() > 0, key  # a term that is 0 would hide its schedule
        assert scheduled[key].item() == pytest.approx(expected * plain[key].item(), rel=1e-5), key
    for key in set(scheduled) - terms:  # the detection losses are not scheduled
        assert scheduled[key].item() == pytest.approx(plain[key].item(), rel=1e-5), key
