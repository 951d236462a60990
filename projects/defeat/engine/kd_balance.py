"""The balance between the DeFeat (KD) losses and the detector's own, shown while training.

Every iteration, :class:`KDBalanceHook` reads the losses the trainer logged in its
``EventStorage`` and puts their balance there as ``[metric]kd_to_det_ratio``: the sum of the
``loss_defeat_*`` terms over the sum of the other ``loss_*`` terms (Detectron2's console line
prints it, median over its window, and ``metrics.json`` keeps it). Once, over the first
:data:`BALANCE_WINDOW` iterations with the KD terms on, the summed KD terms are compared with
the summed detection terms: one INFO line gives the ratio, and a WARNING says what to lower when
the KD terms are more than :data:`KD_DOMINANCE_RATIO` times the detection terms (they then
swamp the student's own training, and often end in NaN).
"""

import logging
import math
from typing import Dict, Mapping, Optional, Tuple

from detectron2.engine import HookBase

from .nonfinite import DEFEAT_PREFIX as KD_PREFIX

__all__ = [
    "BALANCE_WINDOW",
    "KD_DOMINANCE_RATIO",
    "KD_PREFIX",
    "RATIO_KEY",
    "KDBalanceHook",
    "balance_message",
    "loss_sums",
]

logger = logging.getLogger(__name__)

# KD terms above this multiple of the detection terms (summed over the first window) dominate.
KD_DOMINANCE_RATIO = 10.0
# Iterations with the KD terms on that the check sums over: Detectron2's logging window (20).
BALANCE_WINDOW = 20
# The EventStorage key of the per-iteration ratio ("[metric]": Detectron2's console line prints it).
RATIO_KEY = "[metric]kd_to_det_ratio"


def loss_sums(losses: Mapping[str, float]) -> Tuple[float, float]:
    """``(KD sum, detection sum)`` of ``losses`` (name -> value): the ``loss_defeat_*`` terms and
    the other ``loss_*`` terms (``total_loss`` and non-loss metrics are not counted)."""
    kd = sum(float(v) for k, v in losses.items() if k.startswith(KD_PREFIX))
    det = sum(float(v) for k, v in losses.items() if k.startswith("loss_") and not k.startswith(KD_PREFIX))
    return kd, det


def balance_message(
    kd_terms: Mapping[str, float], det: float, iterations: int, threshold: float = KD_DOMINANCE_RATIO
) -> Tuple[int, str]:
    """``(logging level, message)`` for KD terms summing ``kd_terms`` (name -> sum over the
    window) against the detection terms summing ``det`` over ``iterations`` iterations: WARNING
    with what to lower when the KD sum exceeds ``threshold`` times the detection sum, else INFO."""
    kd = sum(kd_terms.values())
    ratio = kd / det if det > 0 else math.inf
    head = (
        f"KD/detection loss balance over the first {iterations} iterations with the KD terms on: the "
        f"loss_defeat_* terms sum to {ratio:.3g}x the detection losses (per iteration {kd / iterations:.4g} vs "
        f"{det / iterations:.4g})"
    )
    if not ratio > threshold:
        return logging.INFO, f"{head}."
    largest = max(kd_terms, key=kd_terms.get)
    part = "NECK" if largest.startswith(f"{KD_PREFIX}neck") else "HEAD"
    return logging.WARNING, (
        f"{head}: above {threshold:g}x the distillation terms dominate (largest: {largest}, "
        f"{kd_terms[largest] / iterations:.4g} per iteration); they swamp the student's own detection training "
        f"and often end in NaN. Lower MODEL.DEFEAT.{part}.OBJ_WEIGHT and {part}.BG_WEIGHT at the same ratio "
        f"(model.defeat.{part.lower()}.obj_weight/bg_weight in a LazyConfig) until the ratio is a few x at "
        "most, or add MODEL.DEFEAT.WARMUP_ITERS; see 'Is my distillation working?' in docs/troubleshooting.md"
    )


class KDBalanceHook(HookBase):
    """Puts :data:`RATIO_KEY` in the storage each iteration and logs the balance once (see the
    module). Does nothing in a run without ``loss_defeat_*`` terms, and on the processes where
    the trainer logs no losses (all but the main one). Register it before the ``PeriodicWriter``,
    so the ratio is written with the same iteration's losses."""

    def __init__(self, window: int = BALANCE_WINDOW, threshold: float = KD_DOMINANCE_RATIO):
        if window < 1:
            raise ValueError(f"KDBalanceHook: window must be at least 1 iteration, got {window}")
        self.window, self.threshold = window, threshold
        self._kd: Dict[str, float] = {}
        self._det = 0.0
        self._seen = 0
        self.reported: Optional[Tuple[int, str]] = None  # (level, message) once logged

    def after_step(self):
        storage = self.trainer.storage
        now = storage.iter
        losses = {k: v for k, (v, it) in storage.latest().items() if it == now and k.startswith("loss_")}
        kd_terms = {k: float(v) for k, v in losses.items() if k.startswith(KD_PREFIX)}
        if not kd_terms:
            return
        kd, det = loss_sums(losses)
        if det > 0 and math.isfinite(kd) and math.isfinite(det):
            storage.put_scalar(RATIO_KEY, kd / det, cur_iter=now)
        if self.reported is not None or kd <= 0:  # reported already, or the KD terms are still off
            return
        for k, v in kd_terms.items():
            self._kd[k] = self._kd.get(k, 0.0) + v
        self._det += det
        self._seen += 1
        if self._seen >= self.window:
            self._report()

    def after_train(self):
        if self.reported is None and self._seen:  # a run shorter than the window
            self._report()

    def _report(self):
        self.reported = balance_message(self._kd, self._det, self._seen, self.threshold)
        logger.log(*self.reported)
