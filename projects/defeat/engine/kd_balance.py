"""The balance between the DeFeat (KD) losses and the detector's own, shown while training.

Every iteration, :class:`KDBalanceHook` reads the losses the trainer logged in its
``EventStorage`` and puts their balance there as ``[metric]kd_to_det_ratio``: the sum of the
``loss_defeat_*`` terms over the sum of the other ``loss_*`` terms (Detectron2's console line
prints it, median over its window, and ``metrics.json`` keeps it). Once, over the first
:data:`BALANCE_WINDOW` iterations with the KD terms on, the summed KD terms are compared with
the summed detection terms: one INFO line gives the ratio, and a WARNING says what to lower when
the KD terms are more than :data:`KD_DOMINANCE_RATIO` times the detection terms (they then
swamp the student's own training, and often end in NaN).

With ``MODEL.DEFEAT.BALANCE.TARGET_RATIO > 0`` (off by default), :class:`KDTargetRatioHook` acts
on the same ratio: over the first ``BALANCE.ITERS`` iterations whose KD weight is above 0 it sums
the ``loss_defeat_*`` terms divided by that iteration's schedule weight (warm-up and decay taken
out: the terms as at full weight) and the detection terms, then sets one factor
``TARGET_RATIO / (KD sum / detection sum)`` on the model's distiller
(``DeFeatDistiller.set_kd_balance``), which multiplies every KD term by it for the rest of the run
(their relative weights are kept; the schedule still applies on top). During the measured
iterations the factor is 1: the run trains as without the balance. The factor is a buffer of the
model, so checkpoints hold it and a resumed run keeps it without measuring again (a run resumed
before the measurement ended measures from where it resumes). Under DDP every process counts
the same iterations and takes the sums of the processes that logged losses (Detectron2's main
process, which logs the losses averaged over all of them), through ``comm.all_gather``: the
factor is the same everywhere.
"""

import logging
import math
from typing import Dict, Mapping, Optional, Tuple

import detectron2.utils.comm as comm
from detectron2.engine import HookBase

from .nonfinite import DEFEAT_PREFIX as KD_PREFIX

__all__ = [
    "BALANCE_WINDOW",
    "KD_DOMINANCE_RATIO",
    "KD_PREFIX",
    "RATIO_KEY",
    "KDBalanceHook",
    "KDTargetRatioHook",
    "balance_factor",
    "balance_message",
    "balanced_distiller",
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
        distiller = balanced_distiller(getattr(self.trainer, "model", None))
        if distiller is not None:  # the KD balance rescales the terms: a note, not advice to act on
            self.reported = (
                logging.INFO,
                self.reported[1].split(": above", 1)[0].rstrip(".")
                + f"; MODEL.DEFEAT.BALANCE scales the KD terms to {distiller.balance_target:g}x after its "
                f"{distiller.balance_iters} measured iterations.",
            )
        logger.log(*self.reported)


def balance_factor(target: float, kd: float, det: float) -> Optional[float]:
    """``target / (kd / det)``: the factor that brings KD terms summing ``kd`` to ``target`` times
    detection terms summing ``det``; None when the ratio cannot be measured (a sum not positive
    or not finite)."""
    if not (kd > 0 and det > 0 and math.isfinite(kd) and math.isfinite(det)):
        return None
    return target * det / kd


def balanced_distiller(model):
    """The ``distiller`` of a (DDP-wrapped) model whose KD balance is on
    (``BALANCE.TARGET_RATIO > 0``); None otherwise."""
    model = getattr(model, "module", model)
    distiller = getattr(model, "distiller", None)
    return distiller if getattr(distiller, "balance_target", 0) > 0 else None


class KDTargetRatioHook(HookBase):
    """Measures the KD/detection ratio and sets the distiller's balance factor once (see the
    module). Does nothing for a model without the balance, or whose factor a checkpoint restored
    (one INFO line says so). Register it before the ``PeriodicCheckpointer``, so the checkpoint of
    the iteration that ends the measurement holds the factor."""

    def __init__(self):
        self.distiller = None
        self._kd = 0.0  # sum over the measured iterations of the KD terms / the schedule's weight
        self._det = 0.0
        self._counted = 0  # iterations counted (the same on every process)
        self._logged = 0  # of them, with losses in this process's storage
        self._first = -1  # the first iteration counted
        self.result: Optional[Dict[str, float]] = None  # ratio, factor, iteration once set

    def before_train(self):
        self.distiller = balanced_distiller(self.trainer.model)
        if self.distiller is None:
            return
        restored = self.distiller.kd_balance()
        if restored is not None:
            factor, at = restored
            if comm.is_main_process():
                logger.info(
                    "KD balance: factor %.4g (measured up to iteration %d) restored from the checkpoint; "
                    "not measured again",
                    factor,
                    at,
                )
            self.distiller = None

    def after_step(self):
        d = self.distiller
        if d is None:
            return
        now = self.trainer.iter
        w = d.kd_weight_at(now)
        if not w > 0:  # the KD terms are off at this iteration: nothing to measure
            return
        latest = self.trainer.storage.latest()
        losses = {k: v for k, (v, it) in latest.items() if it == now and k.startswith("loss_")}
        if losses:  # the main process: Detectron2 logs the losses averaged over the processes there
            kd, det = loss_sums(losses)
            self._kd += kd / w
            self._det += det
            self._logged += 1
        if not self._counted:
            self._first = now
        self._counted += 1
        if self._counted >= d.balance_iters:
            self._apply(now)

    def _apply(self, now: int) -> None:
        d = self.distiller
        self.distiller = None
        gathered = comm.all_gather((self._kd, self._det, self._logged))
        measured = [g for g in gathered if g[2] > 0]
        kd = sum(g[0] for g in measured) / max(1, len(measured))
        det = sum(g[1] for g in measured) / max(1, len(measured))
        factor = balance_factor(d.balance_target, kd, det)
        ratio = kd / det if det > 0 else math.inf
        if factor is None:
            if comm.is_main_process():
                logger.warning(
                    "KD balance: the loss_defeat_* / detection ratio over %d iterations could not be measured "
                    "(KD sum %.4g, detection sum %.4g); the KD terms stay unscaled (factor 1)",
                    self._counted,
                    kd,
                    det,
                )
            factor = 1.0
        elif comm.is_main_process():
            logger.info(
                "KD balance: loss_defeat_* / detection losses measured at %.4g over iterations %d-%d (KD terms at "
                "full schedule weight), target %g (MODEL.DEFEAT.BALANCE.TARGET_RATIO): every KD term scaled by "
                "%.4g from iteration %d on",
                ratio,
                self._first,
                now,
                d.balance_target,
                factor,
                now + 1,
            )
        d.set_kd_balance(factor, now)
        self.result = {"ratio": ratio, "factor": factor, "iteration": now}

    def after_train(self):
        if self.distiller is not None and self._counted and comm.is_main_process():
            logger.warning(
                "KD balance: the run ended after %d of the %d measured iterations (MODEL.DEFEAT.BALANCE.ITERS); "
                "no factor was set",
                self._counted,
                self.distiller.balance_iters,
            )
