"""The start of a training run's model: weights loaded or resumed, a fresh DeFeat student's
inheritance from its teacher (``MODEL.DEFEAT.INHERIT``) and KD balance reset, and the teacher's
recorded AP logged."""

import logging

from ..checkpoint import (
    UNREADABLE_CHECKPOINT_ERRORS,
    AtomicDetectionCheckpointer,
    loaded_nothing,
    unreadable_weights_error,
)
from ..errors import DeFeatError, WeightsError
from ..modeling.meta_arch.common import TeacherMixin
from .kd_balance import balanced_distiller
from .metrics_file import teacher_ap_line

__all__ = ["load_or_resume", "log_teacher_quality"]

logger = logging.getLogger(__name__)


def _unwrap(model):
    return getattr(model, "module", model)  # DDP


def load_or_resume(
    checkpointer: AtomicDetectionCheckpointer, path: str, resume: bool, setting: str = "MODEL.WEIGHTS"
) -> bool:
    """Resume the run in the checkpointer's folder (``resume`` and a checkpoint there) or load
    ``path`` (named by the key ``setting``); on a fresh start a DeFeat student then copies the
    teacher's tensors under ``MODEL.DEFEAT.INHERIT`` and its KD balance factor
    (``MODEL.DEFEAT.BALANCE``) goes back to "not measured" (``MODEL.WEIGHTS`` from another DeFeat
    run holds that run's factor); a resumed run keeps the checkpoint's. Returns whether the run
    resumed.

    Raises:
        WeightsError: ``path`` cannot be read or downloaded (truncated, not a checkpoint), or none
            of its tensors fits the model (the checkpoint of another model: the run would start
            from random weights), naming ``setting`` and the file.
        ResumeError: see ``AtomicDetectionCheckpointer.resume_or_load``.
    """
    resumed = resume and checkpointer.has_checkpoint()
    try:
        checkpointer.resume_or_load(path, resume=resume)
    except (DeFeatError, FileNotFoundError):  # FileNotFoundError: names the key and the fix already
        raise
    except UNREADABLE_CHECKPOINT_ERRORS as e:
        if resumed:
            raise
        raise unreadable_weights_error(path, setting, e) from e
    found = checkpointer.incompatible
    if not resumed and path and found is not None and loaded_nothing(checkpointer.model, found):
        raise WeightsError(
            f"{setting}: none of the tensors of {path!r} fits the model of this config (each one is missing "
            "there or of another shape), so the run would start from random weights: it is the checkpoint of "
            f"another model. Give weights of this architecture (a backbone's will do), or set {setting} '' "
            "to train from scratch"
        )
    model = _unwrap(checkpointer.model)
    if not resumed and isinstance(model, TeacherMixin):
        model.inherit_from_teacher()
        distiller = balanced_distiller(model)
        if distiller is not None:
            distiller.reset_kd_balance()
    return resumed


def log_teacher_quality(model) -> None:
    """One INFO line with the box AP the teacher's own training run recorded for its weights
    (or why it is unknown, or that it found no detections); nothing for a model without a teacher."""
    model = _unwrap(model)
    teacher = getattr(model, "teacher", None) if isinstance(model, TeacherMixin) else None
    weights = getattr(teacher, "teacher_weights", None)
    if weights:  # the iteration build_teacher read from the checkpoint: the file is not loaded again
        logger.info("DeFeat %s", teacher_ap_line(weights, getattr(teacher, "teacher_iteration", None)))
