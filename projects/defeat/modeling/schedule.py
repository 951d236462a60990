"""Weight of the distillation losses over training iterations. Pure functions."""

import math

from ..config.validation import SCHEDULES

__all__ = ["SCHEDULES", "kd_weight"]


def kd_weight(iteration: int, max_iter: int, schedule: str = "constant", warmup_iters: int = 0) -> float:
    """Multiplier in [0, 1] for the KD losses at ``iteration`` (0-based).

    ``warmup_iters`` ramps linearly from 0 to 1 (``(iteration + 1) / warmup_iters``); the schedule
    then keeps 1 (``constant``) or decays to 0 at ``max_iter`` (``linear``, ``cosine``).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown KD loss schedule {schedule!r}; expected one of {SCHEDULES}")
    warm = 1.0 if warmup_iters <= 0 else min(1.0, (iteration + 1) / warmup_iters)
    if schedule == "constant" or max_iter <= 0:
        return warm
    progress = min(max(iteration / max_iter, 0.0), 1.0)
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * decay
