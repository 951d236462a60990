"""The presets of ``python -m defeat run``: which configs train the teacher, the student alone and
the DeFeat student, how (teacher processes, precision, ...), and the one schedule rule that sizes
their runs to a dataset.

``cpu`` is for one's own photos on a CPU: its configs get the rule's schedule and the suggested
``SCALE_BASE``. ``gpu`` is the same on the model-zoo templates of ``configs/custom`` (an R101-FPN
teacher fine-tuned from Detectron2's COCO model, an R50-FPN student from its ImageNet R-50, 800 px,
batch 16 at LR 0.02) on one CUDA device, the runs one after another; a machine without CUDA, or
weights that can be neither downloaded nor found in Detectron2's cache, are refused before anything
is written (``defeat.engine.machine``). ``demo`` and ``demo-retinanet`` (``python -m defeat
demo``) train on the embedded dataset with the ``configs/demo`` files as they are (their own
schedules and ``SCALE_BASE``), the teacher data-parallel in two one-thread processes, bf16
where the CPU has it; the RetinaNet teacher starts from the ``demo`` preset's trained teacher.

The rule (:func:`schedule`): ``MAX_ITER = max(min_iters, ceil(epochs * images / IMS_PER_BATCH))``,
the LR steps at 75 % and 92 % of it, and the config's LR warm-up, at most a fifth of the run. The
batch and the LR are the preset config's (``SOLVER.IMS_PER_BATCH``, ``SOLVER.BASE_LR``); ``epochs``
and ``min_iters`` the preset's. On 40 photographs the CPU preset's values (36 passes, at least 200
iterations, batch 4, LR 0.01, warm-up 50: 360 iterations) trained where the demo teacher's LR 0.03
with a 12-iteration warm-up diverged. The GPU preset's 24 passes (at least 1000 iterations) are
twice Detectron2's COCO 1x schedule (12 passes), for students that start from ImageNet weights on a
small dataset; they are not measured here (no GPU).
"""

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = [
    "EPOCHS",
    "GPU_EPOCHS",
    "GPU_MIN_ITERS",
    "MIN_ITERS",
    "PRECISIONS",
    "PRESETS",
    "Preset",
    "Schedule",
    "schedule",
    "preset_configs",
]

EPOCHS = 36  # passes over the training images (360 iterations of 4 images on 40 photos)
MIN_ITERS = 200  # a run shorter than this barely leaves its warm-up on a handful of images
GPU_EPOCHS = 24  # twice Detectron2's COCO 1x (90k iterations of 16 images: 12 passes over 118k images)
GPU_MIN_ITERS = 1000  # at least the templates' 1000-iteration LR warm-up, capped at a fifth of the run
STEP_FRACTIONS = (0.75, 0.92)  # LR decays by 10x at these fractions of the run (the demo configs' 975/1300, 1200/1300)
MAX_WARMUP_FRACTION = 0.2


PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on a CPU with native bf16, else fp32


@dataclass(frozen=True)
class Preset:
    """Config files (relative to the repository root) of one preset's three runs, and how
    ``python -m defeat run`` trains them (each a default of one of its options where it has one)."""

    name: str
    teacher: str
    student: str
    defeat: str
    description: str
    # CPU seconds per iteration (one thread) of the teacher and of the DeFeat student, the longer
    # student: for the total ETA of stages that have not started (docs/custom_dataset.md).
    s_per_iter: Tuple[float, float] = (3.3, 2.2)
    # The training and validation sets when none is given: names a module of
    # defeat.data.datasets.PROVIDED_DATASETS generates on first use; () for none.
    datasets: Tuple[str, ...] = ()
    # True: the schedule of :func:`schedule`, sized to the training set; False: the configs' own,
    # a changed length scaled by the loader's rule (defeat.config.iterations).
    schedule_rule: bool = True
    # True: the SCALE_BASE that the inspection suggests; False: the DeFeat config's own.
    suggest_scale_base: bool = True
    teacher_processes: int = 1  # data-parallel one-thread processes of the teacher (--teacher-processes)
    precision: str = "fp32"  # one of PRECISIONS (--precision)
    remeasure_teacher: bool = False  # a reused teacher evaluated again (--eval-teacher / --no-eval-teacher)
    # The preset whose trained teacher's weights start this one's teacher (MODEL.WEIGHTS); "" for none.
    init_teacher: str = ""
    # Row labels of the summary by role (teacher, alone, defeat); "{iters}" is the run's iterations.
    labels: Dict[str, str] = field(default_factory=dict)
    epochs: int = EPOCHS  # the schedule rule's passes over the training images
    min_iters: int = MIN_ITERS  # ... and its shortest run
    # True: the two students train side by side (one CPU thread each); False: one after the other
    # (one GPU holds one run at the templates' batch).
    side_by_side: bool = True


_DEMO = dict(
    datasets=("defeat_demo_train", "defeat_demo_val"),
    schedule_rule=False,
    suggest_scale_base=False,
    teacher_processes=2,  # on 2 cores about 20 % faster than one 2-thread process
    precision="auto",
    remeasure_teacher=True,  # a teacher broken in a way strict loading cannot see shows its AP
)


def _labels(teacher: str, student: str) -> Dict[str, str]:
    return {
        "teacher": f"{teacher} ({{iters}} iterations)",
        "alone": f"{student} (alone, {{iters}} iterations)",
        "defeat": f"{student} + DeFeat ({{iters}} iterations)",
    }


PRESETS = {
    "cpu": Preset(
        "cpu",
        "configs/presets/cpu/teacher_R18.yaml",
        "configs/presets/cpu/student_slimR18.yaml",
        "configs/presets/cpu/defeat_slimR18_from_R18.yaml",
        "R18-FPN teacher, slim R18-FPN student, trained from scratch at a short side of 320 px (long side <= 533)",
    ),
    "demo": Preset(
        "demo",
        "configs/demo/teacher_R18.yaml",
        "configs/demo/student_slimR18.yaml",
        "configs/demo/defeat_slimR18_from_R18.yaml",
        "the demo's Faster R-CNN R18-FPN teacher and slim R18-FPN student on the embedded 128-px shapes",
        # 2 CPU cores: the teacher as two one-thread processes, the students side by side
        s_per_iter=(0.60, 0.55),
        labels=_labels("teacher R18-FPN", "student slim-R18-FPN"),
        **_DEMO,
    ),
    "demo-retinanet": Preset(
        "demo-retinanet",
        "configs/demo/retinanet_teacher_R18.yaml",
        "configs/demo/retinanet_student_slimR18.yaml",
        "configs/demo/defeat_retinanet_slimR18_from_R18.yaml",
        "the demo's RetinaNet R18-FPN teacher (from the demo preset's Faster R-CNN teacher) and slim "
        "R18-FPN student on the embedded 128-px shapes",
        # its teacher's 3600 iterations took 2014 s as two processes, the students' 600 333 s
        s_per_iter=(0.56, 0.55),
        # from scratch, a RetinaNet learns far too slowly on these images (benchmarks/RESULTS.md)
        init_teacher="demo",
        labels=_labels("RetinaNet teacher R18-FPN", "RetinaNet student slim-R18-FPN"),
        **_DEMO,
    ),
    "gpu": Preset(
        "gpu",
        "configs/custom/teacher_R101_FPN.yaml",
        "configs/custom/student_R50_FPN.yaml",
        "configs/custom/defeat_R50_from_R101.yaml",
        "Detectron2's model-zoo recipe on one CUDA device: R101-FPN teacher from the COCO 3x model, R50-FPN "
        "student from ImageNet R-50, 640-800 px, batch 16, LR 0.02 (downloads both weights once)",
        # GPU seconds per iteration at batch 16 (an estimate for the ETA of stages not started: the
        # model zoo's R101-FPN trains 16 images in 0.29 s on 8 V100s; not measured here)
        s_per_iter=(0.8, 0.9),
        epochs=GPU_EPOCHS,
        min_iters=GPU_MIN_ITERS,
        side_by_side=False,
        labels=_labels("teacher R101-FPN", "student R50-FPN"),
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


def schedule(
    num_images: int,
    ims_per_batch: int,
    warmup_iters: int,
    iters: Optional[int] = None,
    epochs: int = EPOCHS,
    min_iters: int = MIN_ITERS,
) -> Schedule:
    """The schedule of a run on ``num_images`` training images at batch ``ims_per_batch`` with the
    config's LR warm-up ``warmup_iters``: ``epochs`` passes, at least ``min_iters`` iterations;
    ``iters`` fixes the length instead (a quick try).

    Raises:
        ValueError: no images, a batch below 1, or ``iters`` below 1.
    """
    if num_images < 1 or ims_per_batch < 1:
        raise ValueError(f"a schedule needs images and a batch, got {num_images} images, batch {ims_per_batch}")
    if iters is not None and iters < 1:
        raise ValueError(f"iterations must be at least 1, got {iters}")
    n = iters if iters is not None else max(min_iters, math.ceil(epochs * num_images / ims_per_batch))
    steps = sorted({s for s in (int(n * f) for f in STEP_FRACTIONS) if 0 < s < n})
    warmup = max(1, min(int(warmup_iters), int(n * MAX_WARMUP_FRACTION)))
    return Schedule(n, steps, warmup)


def preset_configs(preset: Preset, root: str = ".") -> List[str]:
    """The preset's teacher, student and DeFeat config files under the repository ``root``."""
    return [os.path.join(root, p) for p in (preset.teacher, preset.student, preset.defeat)]
