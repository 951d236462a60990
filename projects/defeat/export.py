"""Turn a DeFeat training checkpoint into a plain Detectron2 checkpoint of the student.

A DeFeat checkpoint holds the student, the adapters (``distiller.*``) and the trainer's state
(optimizer, scheduler, iteration). The export keeps ``{"model": student weights}`` only, which
loads into the student's own config (e.g. ``GeneralizedRCNN``) with no unexpected keys.
"""
import logging
from typing import Dict, Mapping, Tuple

import torch

from .checkpoint import atomic_write

__all__ = ["DISTILLATION_PREFIXES", "student_state_dict", "export_student"]

logger = logging.getLogger(__name__)

# State that only exists for distillation. The teacher is never saved by DeFeatRCNN; its prefix
# is listed for checkpoints written by other tools that did include it.
DISTILLATION_PREFIXES: Tuple[str, ...] = ("distiller.", "teacher.")


def student_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` without distillation-only keys (``distiller.*``, ``teacher.*``), order kept.

    A ``module.`` prefix (a state dict taken from a DDP wrapper) is removed first.
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith(DISTILLATION_PREFIXES)}


def export_student(checkpoint: str, output: str) -> Dict[str, torch.Tensor]:
    """Read a DeFeat checkpoint file and write ``{"model": student_state_dict}`` to ``output``.

    Returns the exported state dict. Raises ``KeyError`` if the file has no ``"model"`` entry.
    """
    data = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or "model" not in data:
        raise KeyError(f"{checkpoint!r} is not a Detectron2 training checkpoint (no 'model' entry)")
    state = student_state_dict(data["model"])
    dropped = len(data["model"]) - len(state)
    logger.info("Exporting %d student tensors to %s (dropped %d distillation tensors and %s)",
                len(state), output, dropped, sorted(k for k in data if k != "model") or "nothing else")
    atomic_write(output, lambda f: torch.save({"model": state}, f))
    return state
