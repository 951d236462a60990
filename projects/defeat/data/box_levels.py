"""Which FPN level a ground-truth box goes to, and the ``SCALE_BASE`` a dataset's boxes suggest.

:func:`assign_levels` is the level rule of the neck loss's masks (docs/algorithm.md, section 1):
``floor(log2(sqrt(w*h) / SCALE_BASE))`` clamped to the levels. :func:`suggest_scale_base` is
the one rule that picks ``SCALE_BASE`` from a dataset: ``tools/inspect_dataset.py`` prints it,
``python -m defeat run`` trains with it, and ``MODEL.DEFEAT.NECK.SCALE_BASE: auto`` is resolved
to it at the start of a training run (:func:`resolve_scale_base`).

All sizes are in the pixels the model sees: each image resized as at test time
(``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``, :func:`inference_resize`).

**COCO reference.** ``SCALE_BASE = 56`` is the paper's value for COCO on 800-px images. COCO's
own statistics (cocodataset.org, detection evaluation page) give 41 % of its objects as small
(area < 32^2 px), 34 % medium and 24 % large (area > 96^2) on the original images (mostly
640x480), which short-side-800 resizing scales by 800/480: 32 -> 53.3 px and 96 -> 160 px.
A log-normal fit of ``sqrt(area)`` through those two quantiles (median 70 px, sigma 1.22 in
log space) gives COCO's share of boxes per level at 56: about 65 / 18 / 11 / 5 / 2 % on five
levels. :func:`suggest_scale_base` returns the ``SCALE_BASE`` whose level shares on the
dataset are closest (L1) to those reference shares.
"""

import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config.files import (
    defeat_settings,
    inference_augmentations,
    is_defeat_config,
    set_defeat_setting,
    train_dataset_names,
)
from ..config.validation import AUTO, setting_name
from ..errors import ConfigFileError, DataCheckError

__all__ = [
    "AUTO",
    "COCO_LOG_SIDE",
    "ResizedImage",
    "ScaleBaseChoice",
    "assign_levels",
    "auto_scale_base_pending",
    "choose_scale_base",
    "coco_level_shares",
    "level_shares",
    "resize_records",
    "resolve_scale_base",
    "suggest_scale_base",
    "inference_resize",
]

logger = logging.getLogger(__name__)


def assign_levels(boxes: torch.Tensor, num_levels: int, scale_base: float = 56.0) -> torch.Tensor:
    """FPN level of each box: ``floor(log2(sqrt(w*h) / scale_base))`` clamped to [0, L-1].

    Args:
        boxes: ``[K, 4]`` XYXY in pixels.
    Returns:
        ``[K]`` int64 level indices; boxes with ``w*h <= 0`` go to level 0.
    """
    b = boxes.to(torch.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    valid = area > 0
    side = torch.sqrt(torch.where(valid, area, torch.ones_like(area)))
    lvl = torch.floor(torch.log2(side / scale_base))
    lvl = torch.where(valid, lvl, torch.zeros_like(lvl))
    return lvl.clamp(0, num_levels - 1).to(torch.int64)


# (mu, sigma) of ln(sqrt(box area)) on COCO resized to short side 800, fitted as in the module doc.
_SMALL, _LARGE = 32 * 800 / 480, 96 * 800 / 480
_Z41, _Z75 = -0.22754, 0.67449  # standard normal quantiles at 0.41 and 0.75 (41 % small, 24 % large)
_SIGMA = (math.log(_LARGE) - math.log(_SMALL)) / (_Z75 - _Z41)
COCO_LOG_SIDE = (math.log(_SMALL) - _Z41 * _SIGMA, _SIGMA)


@dataclass
class ResizedImage:
    """One image as the model sees it: resized ``height``/``width`` and its boxes (XYXY, ``[K, 4]``)."""

    height: int
    width: int
    boxes: torch.Tensor
    classes: torch.Tensor


def resize_records(dicts: Sequence[Dict], min_size: int, max_size: int) -> Tuple[List[ResizedImage], Dict[str, int]]:
    """Resize every image's boxes as ``ResizeShortestEdge(min_size, max_size)`` would.

    Crowd boxes and boxes of zero width or height are left out (Detectron2 drops them while
    training); their counts are returned as ``{"crowd": n, "zero_area": m}``.
    """
    from detectron2.data.transforms import ResizeShortestEdge
    from detectron2.structures import BoxMode

    out, skipped = [], {"crowd": 0, "zero_area": 0}
    for r in dicts:
        h, w = r["height"], r["width"]
        nh, nw = ResizeShortestEdge.get_output_shape(h, w, min_size, max_size) if min_size else (h, w)
        boxes, classes = [], []
        for a in r.get("annotations", ()):
            if a.get("iscrowd", 0):
                skipped["crowd"] += 1
                continue
            x1, y1, x2, y2 = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            if x2 <= x1 or y2 <= y1:
                skipped["zero_area"] += 1
                continue
            boxes.append([x1 * nw / w, y1 * nh / h, x2 * nw / w, y2 * nh / h])
            classes.append(a["category_id"])
        out.append(
            ResizedImage(
                nh,
                nw,
                torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                torch.tensor(classes, dtype=torch.int64),
            )
        )
    return out, skipped


def level_shares(images: Sequence[ResizedImage], num_levels: int, scale_base: float) -> np.ndarray:
    """Boxes per level (counts, ``[L]``) under ``MASK_ASSIGN: scale`` (:func:`assign_levels`)."""
    if not images:
        return np.zeros(num_levels, dtype=np.int64)
    levels = assign_levels(torch.cat([im.boxes for im in images]), num_levels, scale_base)
    return np.bincount(levels.numpy(), minlength=num_levels)


def coco_level_shares(num_levels: int, scale_base: float = 56.0) -> np.ndarray:
    """Share of COCO's boxes (800-px images) on each level at ``scale_base``: the log-normal
    reference of the module doc, with the same floor/clamp rule as :func:`assign_levels`."""
    mu, sigma = COCO_LOG_SIDE

    def cdf(side):
        return 0.5 * (1 + math.erf((math.log(side) - mu) / (sigma * math.sqrt(2))))

    edges = [cdf(scale_base * 2 ** (k + 1)) for k in range(num_levels - 1)]  # level k: side < base * 2^(k+1)
    return np.diff([0.0, *edges, 1.0])


def suggest_scale_base(
    images: Sequence[ResizedImage], num_levels: int, steps_per_octave: int = 16
) -> Tuple[float, float]:
    """``(SCALE_BASE, L1 distance)``: the base whose level shares are closest to COCO's at 56.

    Bases ``2^(k / steps_per_octave)`` from 1 to 4096 px are scanned; of equally close ones
    (a small dataset leaves flat stretches) the middle of the first run is taken, rounded to
    0.1 px. A base above the largest box side puts every box on the first level, as that side
    itself does: the result is capped there (the same levels, a number within the data),
    rounded to 0.01 px.
    """
    target = coco_level_shares(num_levels)
    total = max(1, sum(len(im.boxes) for im in images))
    grid = [2 ** (k / steps_per_octave) for k in range(12 * steps_per_octave + 1)]
    dist = np.array([np.abs(level_shares(images, num_levels, b) / total - target).sum() for b in grid])
    best = np.flatnonzero(dist <= dist.min() + 1e-9)
    breaks = np.flatnonzero(np.diff(best) > 1)
    run = best[: breaks[0] + 1] if len(breaks) else best
    k = int(run[len(run) // 2])
    base = round(grid[k], 1)
    boxes = [im.boxes for im in images if len(im.boxes)]
    if boxes:
        b = torch.cat(boxes)
        largest = float(torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).max())
        base = min(base, round(largest, 2))
    return base, float(dist[k])


def inference_resize(cfg) -> Tuple[int, int]:
    """``(short side, long side limit)`` of the config's test-time ``ResizeShortestEdge``
    (``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``, or the LazyConfig's ``dataloader.test.mapper``).

    Raises:
        ConfigFileError: the config has no test-time ``ResizeShortestEdge`` to size boxes by.
    """
    from detectron2.data.transforms import ResizeShortestEdge

    try:
        augs = inference_augmentations(cfg)
    except Exception as e:  # a LazyConfig without dataloader.test.mapper.augmentations
        raise ConfigFileError(
            f"its test-time augmentations cannot be read to size boxes by ({type(e).__name__}: {e})"
        ) from e
    resize = next((a for a in augs if isinstance(a, ResizeShortestEdge)), None)
    if resize is None:
        raise ConfigFileError("its test-time augmentations have no ResizeShortestEdge to size boxes by")
    return int(resize.short_edge_length[0]), int(resize.max_size)


@dataclass(frozen=True)
class ScaleBaseChoice:
    """``SCALE_BASE`` for a config and what it came from.

    value: the base (px); distance: L1 distance between its level shares and COCO's at 56;
    boxes/images: counted from ``datasets``; min_size/max_size: the test-time resize;
    num_levels: ``len(NECK.IN_FEATURES)``; source: ``"data"`` (computed) or the file it was read
    from (a resumed run's ``config.yaml``).
    """

    value: float
    distance: float
    boxes: int
    images: int
    datasets: Tuple[str, ...]
    min_size: int
    max_size: int
    num_levels: int
    source: str = "data"

    def log(self) -> None:
        """Log :meth:`message` at INFO (on the main process)."""
        import detectron2.utils.comm as comm

        if comm.is_main_process():
            logger.info(self.message())

    def message(self) -> str:
        """The INFO line a run logs."""
        key = setting_name(("neck", "scale_base"))
        if self.source != "data":
            return (
                f"{key} {AUTO} -> {self.value:g}: the value the run's first start computed, read from "
                f"{self.source} (the training data is not read again)"
            )
        return (
            f"{key} {AUTO} -> {self.value:g}: the base whose split of the {self.boxes} boxes of "
            f"{', '.join(self.datasets)} ({self.images} images, resized as at test time: short side "
            f"{self.min_size}, long side <= {self.max_size}) over the {self.num_levels} levels of NECK.IN_FEATURES "
            f"is closest to COCO's at 56 (L1 distance {self.distance:.3f}; tools/inspect_dataset.py shows the "
            "split); the run's config.yaml records the number"
        )


def choose_scale_base(cfg, dicts_by_name: Mapping[str, Sequence[Dict]]) -> ScaleBaseChoice:
    """:func:`suggest_scale_base` for the config's student: the boxes of every dataset in
    ``dicts_by_name`` resized by its :func:`inference_resize`, over ``len(NECK.IN_FEATURES)`` levels.

    Raises:
        ConfigFileError: no test-time ``ResizeShortestEdge`` in the config.
        DataCheckError: the datasets hold no box to size the levels by.
    """
    min_size, max_size = inference_resize(cfg)
    num_levels = len(defeat_settings(cfg)["neck"]["in_features"])
    images: List[ResizedImage] = []
    for dicts in dicts_by_name.values():
        images += resize_records(dicts, min_size, max_size)[0]
    boxes = sum(len(im.boxes) for im in images)
    names = tuple(dicts_by_name)
    if not boxes:
        key = setting_name(("neck", "scale_base"))
        raise DataCheckError(
            f"{key} = {AUTO!r} (LazyConfig: model.defeat.neck.scale_base): the training set(s) "
            f"{', '.join(names) or '(none named)'} hold no box (other than crowd or zero-area ones) to size the "
            "levels by; give a number instead (56 for COCO-like boxes on 800-px images)"
        )
    value, distance = suggest_scale_base(images, num_levels)
    return ScaleBaseChoice(value, distance, boxes, len(images), names, min_size, max_size, num_levels)


def auto_scale_base_pending(cfg) -> bool:
    """Whether the config is a DeFeat config whose ``NECK.SCALE_BASE`` is ``auto`` and acts (neck
    loss on with ``MASK_ASSIGN: scale``): a number must be put there before its model is built.
    With the neck loss off it cannot act and stays ``auto`` (the settings gate warns)."""
    if not is_defeat_config(cfg):
        return False
    neck = defeat_settings(cfg)["neck"]
    return neck["scale_base"] == AUTO and neck["enabled"] and neck["mask_assign"] == "scale"


def resolve_scale_base(
    cfg,
    dicts_by_name: Optional[Mapping[str, Sequence[Dict]]] = None,
    saved: Optional[Tuple[float, str]] = None,
    log: bool = True,
) -> Optional[ScaleBaseChoice]:
    """Put a number where the config's ``NECK.SCALE_BASE`` is ``auto`` (in place, a frozen YAML
    config too) and log one INFO line with it and what it came from (``log`` False: the caller
    logs it later, :meth:`ScaleBaseChoice.log`); nothing when :func:`auto_scale_base_pending` is
    False.

    The main process computes it (:func:`choose_scale_base`) from ``dicts_by_name``, else from
    the config's training sets (``DatasetCatalog``), unless ``saved`` gives ``(number, file)``:
    the value a resumed run recorded. Other processes take the main process's number
    (``detectron2.utils.comm.all_gather``), so every process builds the same model.

    Returns:
        The :class:`ScaleBaseChoice` put in the config (None when nothing was to resolve).
    Raises:
        ConfigFileError, DataCheckError: see :func:`choose_scale_base` (main process).
    """
    import detectron2.utils.comm as comm

    if not auto_scale_base_pending(cfg):
        return None
    choice = None
    if comm.is_main_process():
        if saved is not None:
            choice = ScaleBaseChoice(float(saved[0]), math.nan, 0, 0, (), 0, 0, 0, source=saved[1])
        else:
            if dicts_by_name is None:
                from detectron2.data import DatasetCatalog

                dicts_by_name = {name: DatasetCatalog.get(name) for name in train_dataset_names(cfg)}
            choice = choose_scale_base(cfg, dicts_by_name)
    if comm.get_world_size() > 1:
        choice = comm.all_gather(choice)[0]  # the main process's: the same number everywhere
    set_defeat_setting(cfg, ("neck", "scale_base"), float(choice.value))
    if log:
        choice.log()
    return choice
