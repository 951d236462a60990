"""Say which loss went NaN/inf, and what to check, when Detectron2's trainer stops on it.

Detectron2's ``SimpleTrainer`` already moves every loss to the host to log it and raises
``FloatingPointError`` when their sum is not finite. :func:`explain_nonfinite_losses` wraps that
step of a trainer: no extra check and no extra host sync per iteration; the explanation is only
computed once the trainer has found a non-finite loss.
"""

import functools
import math
from typing import Mapping

__all__ = ["nonfinite_loss_message", "explain_nonfinite_losses"]

DEFEAT_PREFIX = "loss_defeat_"

_DEFEAT_CHECKS = (
    "check that the teacher's outputs are finite (a teacher checkpoint saved after its training diverged, "
    "or a teacher fed inputs it was not trained on: INPUT.FORMAT, PIXEL_MEAN/STD), lower "
    "MODEL.DEFEAT.NECK/HEAD.OBJ_WEIGHT and BG_WEIGHT (same ratio) or add MODEL.DEFEAT.WARMUP_ITERS, "
    "keep MODEL.DEFEAT.HEAD.TEMPERATURE near 1, and lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS"
)
_DETECTOR_CHECKS = (
    "the DeFeat losses were still finite, so look at the detector itself first: SOLVER.BASE_LR and warm-up, "
    "SOLVER.CLIP_GRADIENTS, and degenerate boxes in the data; strong KD weights "
    "(MODEL.DEFEAT.NECK/HEAD weights) can also push the student there"
)


def _value(v) -> float:
    return float(v.detach().float().cpu().item()) if hasattr(v, "detach") else float(v)


def nonfinite_loss_message(loss_dict: Mapping, iteration: int) -> str:
    """The explanation for a step whose total loss was not finite.

    Args:
        loss_dict: this process's losses of the step (scalar tensors or numbers), by name.
        iteration: the step's iteration.
    """
    values = {k: _value(v) for k, v in loss_dict.items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    defeat = [k for k in bad if k.startswith(DEFEAT_PREFIX)]
    detector = [k for k in bad if not k.startswith(DEFEAT_PREFIX)]
    shown = ", ".join(f"{k}={bad[k]}" for k in defeat + detector)
    head = f"Loss became infinite or NaN at iteration={iteration}"
    if defeat and detector:
        return (
            f"{head}: the DeFeat terms {defeat} and the detector terms {detector} went non-finite at the same "
            f"iteration ({shown}); the DeFeat terms are the likely cause: {_DEFEAT_CHECKS}."
        )
    if defeat:
        return f"{head}: the DeFeat term {defeat[0]} went non-finite first ({shown}); {_DEFEAT_CHECKS}."
    if detector:
        return f"{head}: the detector loss {detector[0]} went non-finite first ({shown}); {_DETECTOR_CHECKS}."
    return (
        f"{head}: every loss of this process is finite ({values}), so another process's went non-finite; "
        f"see its log. {_DEFEAT_CHECKS}."
    )


def explain_nonfinite_losses(trainer) -> None:
    """Make ``trainer`` (a ``SimpleTrainer``/``AMPTrainer``) raise ``FloatingPointError`` with
    :func:`nonfinite_loss_message` (Detectron2's message chained) when a loss is not finite."""
    write = trainer._write_metrics

    @functools.wraps(write)
    def checked(loss_dict, data_time, *args, **kwargs):
        try:
            return write(loss_dict, data_time, *args, **kwargs)
        except FloatingPointError as e:
            iteration = kwargs.get("iter")
            iteration = trainer.iter if iteration is None else iteration
            raise FloatingPointError(nonfinite_loss_message(loss_dict, iteration)) from e

    trainer._write_metrics = checked
