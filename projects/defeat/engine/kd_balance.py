"""The balance between the DeFeat (KD) losses and the detector's own, shown while training.

Every iteration, :class:`KDBalanceHook` reads the losses the trainer logged in its
``EventStorage`` and puts their balance there as ``[metric]kd_to_det_ratio``: the sum of the
``loss_defeat_*`` terms over the sum of the other ``loss_*`` terms (Detectron2's console line
prints it, median over its window, and ``metrics.json`` keeps it). Once, over the first
:data:`BALANCE_WINDOW` iterations with the KD terms on, the summed KD terms are compared with
the summed detection terms: one INFO line gives the ratio, and a WARNING names the weights to
lower (the settings of :data:`defeat.config.validation.RULES` whose ``term`` is the largest KD
term, and their obj/bg sibling) when the KD terms are more than :data:`KD_DOMINANCE_RATIO` times
the detection terms (they then swamp the student's own training, and often end in NaN). At the
end of training one more line compares the ratio over the first window with the ratio over the
last one (:func:`trend_message`) and says what the change means.

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

import collections
import logging
import math
from typing import Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import detectron2.utils.comm as comm
from detectron2.engine import HookBase

from ..config.validation import RULES, setting_name
from .nonfinite import DEFEAT_PREFIX as KD_PREFIX

__all__ = [
    "BALANCE_WINDOW",
    "KD_DOMINANCE_RATIO",
    "KD_PREFIX",
    "KD_WEIGHT_KEY",
    "RATIO_KEY",
    "STEADY_CHANGE",
    "KDBalanceHook",
    "WindowSums",
    "KDTargetRatioHook",
    "balance_factor",
    "balance_message",
    "balanced_distiller",
    "loss_sums",
    "trend_message",
    "weights_advice",
]

logger = logging.getLogger(__name__)

# KD terms above this multiple of the detection terms (summed over the first window) dominate.
KD_DOMINANCE_RATIO = 10.0
# Iterations with the KD terms on that the check sums over: Detectron2's logging window (20).
BALANCE_WINDOW = 20
# The EventStorage key of the per-iteration ratio ("[metric]": Detectron2's console line prints it).
RATIO_KEY = "[metric]kd_to_det_ratio"
# The schedule's multiplier of the KD terms, as the distiller logs it (defeat.modeling.distiller).
KD_WEIGHT_KEY = "defeat/kd_weight"
# A last-window ratio within this factor of the first window's counts as steady (neither rising nor falling).
STEADY_CHANGE = 1.2


def loss_sums(losses: Mapping[str, float]) -> Tuple[float, float]:
    """``(KD sum, detection sum)`` of ``losses`` (name -> value): the ``loss_defeat_*`` terms and
    the other ``loss_*`` terms (``total_loss`` and non-loss metrics are not counted)."""
    kd = sum(float(v) for k, v in losses.items() if k.startswith(KD_PREFIX))
    det = sum(float(v) for k, v in losses.items() if k.startswith("loss_") and not k.startswith(KD_PREFIX))
    return kd, det


def _weight_paths(term: str) -> List[Tuple[str, ...]]:
    """The settings paths of the weights to lower for the loss key ``term``: the weight rules of
    :data:`RULES` whose ``term`` it is, with the other weight rules of the same part (the obj/bg
    sibling), in table order; ``[]`` for a key no weight rule multiplies."""
    parts = {path[:-1] for path, rule in RULES.items() if rule.term == term}
    return [
        path
        for path, rule in RULES.items()
        if rule.term and path[:-1] in parts and (path[:-1] or rule.term == term)  # top-level rules: own only
    ]


def weights_advice(term: str) -> str:
    """What to lower when the loss key ``term`` dominates, naming the YAML and LazyConfig keys of
    its weights (from :data:`RULES`); a sentence starting with ``Lower``."""
    paths = _weight_paths(term)
    if not paths:
        return (
            f"Lower the weight of what adds {term}: no MODEL.DEFEAT setting multiplies it (a term of your own "
            "model's defeat_losses), so scale it where your model computes it"
        )
    yaml = " and ".join(setting_name(p) for p in paths)
    lazy = " and ".join("model.defeat." + ".".join(p) for p in paths)
    ratio = " at the same ratio" if len(paths) > 1 else ""
    return f"Lower {yaml}{ratio} (LazyConfig: {lazy})"


def balance_message(
    kd_terms: Mapping[str, float], det: float, iterations: int, threshold: float = KD_DOMINANCE_RATIO
) -> Tuple[int, str]:
    """``(logging level, message)`` for KD terms summing ``kd_terms`` (name -> sum over the
    window) against the detection terms summing ``det`` over ``iterations`` iterations: WARNING
    naming the weights of the largest term (:func:`weights_advice`) when the KD sum exceeds
    ``threshold`` times the detection sum, else INFO."""
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
    return logging.WARNING, (
        f"{head}: above {threshold:g}x the distillation terms dominate (largest: {largest}, "
        f"{kd_terms[largest] / iterations:.4g} per iteration); they swamp the student's own detection training "
        f"and often end in NaN. {weights_advice(largest)} until the ratio is a few x at "
        "most, or add MODEL.DEFEAT.WARMUP_ITERS; see 'Is my distillation working?' in docs/troubleshooting.md"
    )


class WindowSums:
    """Sums over a window of iterations: ``kd`` and ``det`` (the loss sums of :func:`loss_sums`),
    ``kd_weight`` (the KD schedule's multiplier, summed over the ``weighted`` iterations that
    logged it), ``first``/``last`` (iteration numbers) and ``count`` (iterations)."""

    def __init__(self, rows: Sequence[Tuple[int, float, float, Optional[float]]]):
        """``rows``: ``(iteration, KD sum, detection sum, KD weight or None)`` per iteration."""
        self.count = len(rows)
        self.first, self.last = rows[0][0], rows[-1][0]
        self.kd = sum(r[1] for r in rows)
        self.det = sum(r[2] for r in rows)
        weights = [r[3] for r in rows if r[3] is not None]
        self.kd_weight = sum(weights) / len(weights) if weights else None

    @property
    def ratio(self) -> float:
        return self.kd / self.det if self.det > 0 else math.inf


def trend_message(first: WindowSums, last: WindowSums) -> str:
    """One line comparing the KD/detection ratio over ``first`` (the first window with the KD
    terms on) with the ratio over ``last`` (the last window, as long), with what the change means."""
    n = first.count
    head = (
        f"KD/detection ratio over the run: {first.ratio:.3g}x over iterations {first.first}-{first.last} "
        f"(the first {n} with the KD terms on), {last.ratio:.3g}x over iterations {last.first}-{last.last} "
        f"(the last {n}); per iteration the detection losses went {first.det / n:.4g} -> {last.det / n:.4g} and "
        f"the loss_defeat_* terms {first.kd / n:.4g} -> {last.kd / n:.4g}"
    )
    schedule = ""
    if first.kd_weight is not None and last.kd_weight is not None and abs(first.kd_weight - last.kd_weight) > 1e-6:
        schedule = (
            f" Part of the change is the KD schedule: its weight ({KD_WEIGHT_KEY}, MODEL.DEFEAT.WARMUP_ITERS and "
            f"LOSS_SCHEDULE) averaged {first.kd_weight:.3g} over the first window and {last.kd_weight:.3g} over "
            "the last."
        )
    plot = "tools/plot_losses.py on the run's metrics.json shows each term over the run"
    if last.ratio > first.ratio * STEADY_CHANGE and not last.det < first.det:
        meaning = (
            "Rising, with the detection losses not falling: the KD terms grew, which they do not once the "
            "warm-up is over in a healthy run (the student drifts from its teacher's features); check the "
            f"teacher (its AP and inputs) and the weights; {plot}."
        )
    elif last.ratio > first.ratio * STEADY_CHANGE:
        meaning = (
            "Rising: the detection losses fall as the student fits its training data (common on a small dataset), "
            "so the KD terms carry more of the gradient; that is not by itself a fault (a run that rose from 5.5x "
            "to 16.7x gained 17 AP). Judge it by the box AP against the student "
            f"trained alone with the same schedule; {plot}."
        )
    elif last.ratio * STEADY_CHANGE < first.ratio:
        meaning = (
            "Falling: the KD terms fell faster than the detection losses, as the student's features and outputs "
            "came closer to its teacher's; the detection losses lead the rest of training. Compare the box AP "
            f"with the student trained alone; {plot}."
        )
    else:
        meaning = f"Steady (within {STEADY_CHANGE:g}x): the balance held over the run; {plot}."
    return f"{head}. {meaning}{schedule}"


class KDBalanceHook(HookBase):
    """Puts :data:`RATIO_KEY` in the storage each iteration, logs the balance over the first
    window and, at the end of training, the trend (see the module). Does nothing in a run without
    ``loss_defeat_*`` terms, and on the processes where the trainer logs no losses (all but the
    main one). Register it before the ``PeriodicWriter``, so the ratio is written with the same
    iteration's losses."""

    def __init__(self, window: int = BALANCE_WINDOW, threshold: float = KD_DOMINANCE_RATIO):
        if window < 1:
            raise ValueError(f"KDBalanceHook: window must be at least 1 iteration, got {window}")
        self.window, self.threshold = window, threshold
        self._kd: Dict[str, float] = {}
        self._first: List[Tuple[int, float, float, Optional[float]]] = []
        self._last: Deque[Tuple[int, float, float, Optional[float]]] = collections.deque(maxlen=window)
        self._seen = 0  # iterations with the KD terms on (finite sums)
        self.reported: Optional[Tuple[int, str]] = None  # (level, message) of the first window, once logged
        self.trend: Optional[str] = None  # the end-of-run line, once logged

    def after_step(self):
        storage = self.trainer.storage
        now = storage.iter
        latest = storage.latest()
        losses = {k: v for k, (v, it) in latest.items() if it == now and k.startswith("loss_")}
        kd_terms = {k: float(v) for k, v in losses.items() if k.startswith(KD_PREFIX)}
        if not kd_terms:
            return
        kd, det = loss_sums(losses)
        if not (math.isfinite(kd) and math.isfinite(det)):
            return
        if det > 0:
            storage.put_scalar(RATIO_KEY, kd / det, cur_iter=now)
        if kd <= 0:  # the KD terms are off (a warm-up from 0, a schedule at its end)
            return
        weight, at = latest.get(KD_WEIGHT_KEY, (None, None))
        row = (now, kd, det, float(weight) if at == now else None)
        self._seen += 1
        self._last.append(row)
        if self.reported is None:
            for k, v in kd_terms.items():
                self._kd[k] = self._kd.get(k, 0.0) + v
            self._first.append(row)
            if len(self._first) >= self.window:
                self._report()

    def after_train(self):
        if not self._seen:
            return
        if self.reported is None:  # a run shorter than the window
            self._report()
        if self._seen < 2 * self.window:
            self.trend = (
                f"KD/detection ratio over the run not compared: {self._seen} iterations with the KD terms on, "
                f"fewer than two windows of {self.window} (the first window's line above is the balance)"
            )
        else:
            self.trend = trend_message(WindowSums(self._first), WindowSums(list(self._last)))
        logger.info(self.trend)

    def _report(self):
        self.reported = balance_message(self._kd, WindowSums(self._first).det, len(self._first), self.threshold)
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
