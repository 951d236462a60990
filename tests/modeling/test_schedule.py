"""KD weight over iterations: warm-up and decay schedules against closed forms."""

import math

import pytest

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
