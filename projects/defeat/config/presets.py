"""The presets of ``python -m defeat run``: which configs train the teacher, the student alone and
the DeFeat student, and the one schedule rule that sizes their runs to a dataset.

The rule (:func:`schedule`): ``MAX_ITER = max(MIN_ITERS, ceil(EPOCHS * images / IMS_PER_BATCH))``,
the LR steps at 75 % and 92 % of it, and the config's LR warm-up, at most a fifth of the run. The
batch and the LR are the preset config's (``SOLVER.IMS_PER_BATCH``, ``SOLVER.BASE_LR``). On 40
photographs the CPU preset's values (batch 4, LR 0.01, warm-up 50, 360 iterations) trained where
the demo teacher's LR 0.03 with a 12-iteration warm-up diverged.
"""

import math
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

__all__ = ["EPOCHS", "MIN_ITERS", "PRESETS", "Preset", "Schedule", "schedule", "preset_configs"]

EPOCHS = 36  # passes over the training images (360 iterations of 4 images on 40 photos)
MIN_ITERS = 200  # a run shorter than this barely leaves its warm-up on a handful of images
STEP_FRACTIONS = (0.75, 0.92)  # LR decays by 10x at these fractions of the run (the demo configs' 975/1300, 1200/1300)
MAX_WARMUP_FRACTION = 0.2


@dataclass(frozen=True)
class Preset:
    """Config files (relative to the repository root) of one preset's three runs."""

    name: str
    teacher: str
    student: str
    defeat: str
    description: str
    # CPU seconds per iteration (one thread) of the teacher and of the DeFeat student, the longer
    # student: for the total ETA of stages that have not started (docs/custom_dataset.md).
    s_per_iter: Tuple[float, float] = (3.3, 2.2)


PRESETS = {
    "cpu": Preset(
        "cpu",
        "configs/presets/cpu/teacher_R18.yaml",
        "configs/presets/cpu/student_slimR18.yaml",
        "configs/presets/cpu/defeat_slimR18_from_R18.yaml",
        "R18-FPN teacher, slim R18-FPN student, trained from scratch at a short side of 320 px (long side <= 533)",
    ),
}


@dataclass(frozen=True)
class Schedule:
    """A run's length and LR schedule, as ``SOLVER`` keys."""

    max_iter: int
    steps: List[int]
    warmup_iters: int

    def opts(self) -> List[str]:
        """The schedule as ``KEY VALUE`` overrides (given explicitly, so the loader keeps them)."""
        return [
            "SOLVER.MAX_ITER",
            str(self.max_iter),
            "SOLVER.STEPS",
            str(tuple(self.steps)),
            "SOLVER.WARMUP_ITERS",
            str(self.warmup_iters),
        ]


def schedule(num_images: int, ims_per_batch: int, warmup_iters: int, iters: Optional[int] = None) -> Schedule:
    """The schedule of a run on ``num_images`` training images at batch ``ims_per_batch`` with the
    config's LR warm-up ``warmup_iters``; ``iters`` fixes the length instead (a quick try).

    Raises:
        ValueError: no images, a batch below 1, or ``iters`` below 1.
    """
    if num_images < 1 or ims_per_batch < 1:
        raise ValueError(f"a schedule needs images and a batch, got {num_images} images, batch {ims_per_batch}")
    if iters is not None and iters < 1:
        raise ValueError(f"iterations must be at least 1, got {iters}")
    n = iters if iters is not None else max(MIN_ITERS, math.ceil(EPOCHS * num_images / ims_per_batch))
    steps = sorted({s for s in (int(n * f) for f in STEP_FRACTIONS) if 0 < s < n})
    warmup = max(1, min(int(warmup_iters), int(n * MAX_WARMUP_FRACTION)))
    return Schedule(n, steps, warmup)


def preset_configs(preset: Preset, root: str = ".") -> List[str]:
    """The preset's teacher, student and DeFeat config files under the repository ``root``."""
    return [os.path.join(root, p) for p in (preset.teacher, preset.student, preset.defeat)]
