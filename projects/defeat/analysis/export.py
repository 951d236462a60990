"""Turn a DeFeat training checkpoint into a plain Detectron2 checkpoint of the student.

A DeFeat checkpoint holds the student, the adapters (``distiller.*``) and the trainer's state
(optimizer, scheduler, iteration). The export keeps ``{"model": student weights}`` only, which
loads into the student's own config (e.g. ``GeneralizedRCNN``) with no unexpected keys.
"""

import logging
import os
from typing import Dict, Mapping, Tuple

import torch

from ..checkpoint import atomic_write
from ..errors import ExportError
from .cli import same_file

__all__ = [
    "DISTILLATION_PREFIXES",
    "ExportError",
    "student_state_dict",
    "read_student_state",
    "write_student",
    "export_student",
]

logger = logging.getLogger(__name__)

# State that only exists for distillation. The teacher is never saved by DeFeatRCNN; its prefix
# is listed for checkpoints written by other tools that did include it.
DISTILLATION_PREFIXES: Tuple[str, ...] = ("distiller.", "teacher.")


def student_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` without distillation-only keys (``distiller.*``, ``teacher.*``), order kept.

    A ``module.`` prefix (a state dict taken from a DDP wrapper) is removed first.
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith(DISTILLATION_PREFIXES)}


def read_student_state(checkpoint: str) -> Dict[str, torch.Tensor]:
    """The student's state dict from a DeFeat checkpoint file (nothing is written).

    Raises:
        ExportError: the file is missing, is not a PyTorch checkpoint, has no ``"model"``
            entry, or holds no student tensor; the message names the file.
    """
    if not os.path.isfile(checkpoint):
        raise ExportError(f"checkpoint not found: {checkpoint!r}")
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as e:  # a text file, a truncated download, another format
        reason = str(e).splitlines()[0] if str(e) else ""
        raise ExportError(
            f"cannot read {checkpoint!r} as a PyTorch checkpoint ({type(e).__name__}: {reason}); "
            "give the model_final.pth (or model_XXXXXXX.pth) of a DeFeat run"
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("model"), Mapping):
        raise ExportError(f"{checkpoint!r} is not a Detectron2 training checkpoint (no 'model' entry)")
    state = student_state_dict(data["model"])
    if not state:
        raise ExportError(
            f"{checkpoint!r} holds no student weights (its 'model' entry is empty or has only distillation tensors)"
        )
    dropped = len(data["model"]) - len(state)
    logger.info(
        "Read %d student tensors from %s (dropped %d distillation tensors and %s)",
        len(state),
        checkpoint,
        dropped,
        sorted(k for k in data if k != "model") or "nothing else",
    )
    return state


def write_student(state: Mapping[str, torch.Tensor], output: str, checkpoint: str = "") -> None:
    """Write ``{"model": state}`` to ``output`` atomically; its folder is created if needed.

    Raises:
        ExportError: ``output`` is ``checkpoint`` (the input would be overwritten) or a folder.
    """
    if checkpoint and same_file(output, checkpoint):
        raise ExportError(f"the output {output!r} is the input checkpoint; choose another file name")
    if os.path.isdir(output):
        raise ExportError(f"the output {output!r} is a folder; give a file path such as {output}/student.pth")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        logger.info("Creating folder %s", folder)
        os.makedirs(folder, exist_ok=True)
    atomic_write(output, lambda f: torch.save({"model": dict(state)}, f))
    logger.info("Wrote %d student tensors to %s", len(state), output)


def export_student(checkpoint: str, output: str) -> Dict[str, torch.Tensor]:
    """Read a DeFeat checkpoint file and write ``{"model": student_state_dict}`` to ``output``.

    Returns the exported state dict. Raises :class:`ExportError` (see the two steps above).
    """
    if same_file(output, checkpoint):  # refuse before reading a possibly large file
        raise ExportError(f"the output {output!r} is the input checkpoint; choose another file name")
    state = read_student_state(checkpoint)
    write_student(state, output, checkpoint)
    return state
