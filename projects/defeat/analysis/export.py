"""Turn a DeFeat training checkpoint into a plain Detectron2 checkpoint of the student.

A DeFeat checkpoint holds the student, the adapters (``distiller.*``) and the trainer's state
(optimizer, scheduler, iteration). The export keeps ``{"model": student weights}``, which loads
into the student's own config (e.g. ``GeneralizedRCNN``) with no unexpected keys, and, when the
dataset is known, ``"classes"``: the class names and the dataset's category ids of the model's
class indices (``defeat.data.classes``; :func:`export_classes` finds them for the export and
trace tools).
"""

import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from ..checkpoint import atomic_write
from ..data.classes import CHECKPOINT_KEY, class_identity, describe, identity_from_checkpoint
from ..errors import ExportError
from .cli import same_file

__all__ = [
    "DISTILLATION_PREFIXES",
    "ExportError",
    "student_state_dict",
    "read_student_state",
    "write_student",
    "export_student",
    "export_classes",
    "check_export_classes",
    "classes_in_state",
    "checkpoint_classes",
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


def write_student(
    state: Mapping[str, torch.Tensor], output: str, checkpoint: str = "", classes: Optional[Mapping[str, Any]] = None
) -> None:
    """Write ``{"model": state}`` to ``output`` atomically, with ``"classes": classes`` (a
    ``defeat.data.classes.class_identity`` result) when given; its folder is created if needed.

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
    data = {"model": dict(state), **({CHECKPOINT_KEY: dict(classes)} if classes else {})}
    atomic_write(output, lambda f: torch.save(data, f))
    logger.info(
        "Wrote %d student tensors to %s%s", len(state), output, f"; classes {describe(classes)}" if classes else ""
    )


def export_student(checkpoint: str, output: str) -> Dict[str, torch.Tensor]:
    """Read a DeFeat checkpoint file and write ``{"model": student_state_dict}`` to ``output``.

    Returns the exported state dict. Raises :class:`ExportError` (see the two steps above).
    """
    if same_file(output, checkpoint):  # refuse before reading a possibly large file
        raise ExportError(f"the output {output!r} is the input checkpoint; choose another file name")
    state = read_student_state(checkpoint)
    write_student(state, output, checkpoint)
    return state


def classes_in_state(state: Mapping[str, torch.Tensor]) -> Optional[int]:
    """The number of classes of an R-CNN's box predictor in ``state`` (its ``cls_score`` rows less
    the background row; the last stage of a cascade); None for other models."""
    keys = sorted(k for k in state if k.startswith("roi_heads.box_predictor") and k.endswith("cls_score.weight"))
    return int(state[keys[-1]].shape[0]) - 1 if keys else None


def checkpoint_classes(weights: str) -> Optional[Dict[str, Any]]:
    """The ``"classes"`` entry of a local checkpoint file that an export wrote; None otherwise
    (no such entry, a URL, a file that is not a PyTorch checkpoint)."""
    if not weights or "://" in weights or not os.path.isfile(os.path.expanduser(weights)):
        return None
    try:
        data = torch.load(os.path.expanduser(weights), map_location="cpu", weights_only=False)
    except Exception:  # a pickled Detectron file or another format: it carries no classes
        return None
    return identity_from_checkpoint(data)


def export_classes(
    dataset: str = "", dataset_names: Sequence[str] = (), weights: str = ""
) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(classes, where they come from)`` for an export or a trace: the ``dataset`` given (a
    registered name or a ``NAME=ANNOTATIONS.json[:IMAGE_ROOT]`` spec), else the ``"classes"`` of
    the ``weights`` file, else the first of ``dataset_names`` (a config's training and test sets)
    that is registered (``--dataset`` specs of ``$DEFEAT_COCO_DATASETS`` included) with known
    classes; ``(None, "")`` when none is known.

    Raises:
        ExportError: the ``dataset`` given has no known classes, or its spec is wrong.
    """
    from detectron2.data import DatasetCatalog

    from ..data.datasets import dataset_from_argument, register_provided_datasets, setup_datasets
    from ..errors import DatasetSpecError

    if dataset:
        try:
            name = dataset_from_argument(dataset)
            register_provided_datasets([name])
        except DatasetSpecError as e:
            raise ExportError(f"--dataset: {e}") from e
        if name not in DatasetCatalog.list():
            raise ExportError(
                f"--dataset {name!r} is not a registered dataset; give it as {name}=ANNOTATIONS.json[:IMAGE_ROOT]"
            )
        identity = class_identity(name)
        if identity is None:
            raise ExportError(f"--dataset {name!r}: its class names are unknown (no thing_classes in its metadata)")
        return identity, f"--dataset {name}"
    identity = checkpoint_classes(weights)
    if identity is not None:
        return identity, f"the weights {weights}"
    if dataset_names:
        try:
            setup_datasets()  # the names of $DEFEAT_COCO_DATASETS
        except DatasetSpecError as e:
            raise ExportError(str(e)) from e
    for name in dataset_names:
        if name in DatasetCatalog.list():
            identity = class_identity(name)
            if identity is not None:
                return identity, f"the config's dataset {name}"
    return None, ""


def check_export_classes(classes: Optional[Mapping[str, Any]], source: str, num: Optional[int], key: str) -> None:
    """Refuse classes of another count than the model's ``num`` (``key``: where it was read).

    Raises:
        ExportError: naming both counts and where the classes came from.
    """
    if classes is None or num is None or len(classes["names"]) == num:
        return
    raise ExportError(
        f"{source} has {len(classes['names'])} classes ({describe(classes)}) but the model {num} ({key}); "
        "give the dataset the model was trained on (--dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT])"
    )
