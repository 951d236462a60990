"""What a dataset looks like to DeFeat's neck loss: box sizes, FPN levels, object cells.

All sizes are in the pixels the model sees: each image resized as at test time
(``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``). Levels use the library's
rule (:func:`defeat.data.box_levels.assign_levels`) and object cells its masks
(:func:`defeat.gt_masks`). The suggested ``SCALE_BASE`` is
:func:`defeat.data.box_levels.suggest_scale_base` (its module doc gives the COCO reference): the
number ``MODEL.DEFEAT.NECK.SCALE_BASE: auto`` takes when a training run starts.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.box_levels import (
    AUTO,
    COCO_LOG_SIDE,
    ResizedImage,
    coco_level_shares,
    inference_resize,
    level_shares,
    resize_records,
    suggest_scale_base,
)
from ..modeling.masks import gt_masks

__all__ = [
    "config_stats",
    "COCO_LOG_SIDE",
    "DatasetStats",
    "ResizedImage",
    "coco_level_shares",
    "compute_stats",
    "format_report",
    "level_shares",
    "object_cell_shares",
    "resize_records",
    "stats_figure",
    "suggest_scale_base",
]


def _sides(images: Sequence[ResizedImage]) -> np.ndarray:
    """``sqrt(w * h)`` of every box, in resized pixels."""
    if not images:
        return np.zeros(0)
    b = torch.cat([im.boxes for im in images]).numpy()
    return np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))


def object_cell_shares(
    images: Sequence[ResizedImage], strides: Sequence[int], size_divisibility: int, assignment: str, scale_base: float
) -> np.ndarray:
    """Share of feature cells inside object masks, per level, over all images (``[L]``).

    Each image is padded to a multiple of ``size_divisibility`` on its own (a batch pads to
    its largest image); a level's map is ``ceil(padded / stride)`` cells, as Detectron2's FPN.
    """
    inside, cells = np.zeros(len(strides)), np.zeros(len(strides))
    div = max(1, size_divisibility)
    for im in images:
        ph, pw = math.ceil(im.height / div) * div, math.ceil(im.width / div) * div
        shapes = [(math.ceil(ph / s), math.ceil(pw / s)) for s in strides]
        masks = gt_masks([im.boxes.float()], shapes, strides, assignment, scale_base)
        for lvl, m in enumerate(masks):
            inside[lvl] += float(m.sum())
            cells[lvl] += m.numel()
    return inside / np.maximum(cells, 1)


@dataclass
class DatasetStats:
    """Everything :func:`format_report` and :func:`stats_figure` show."""

    name: str
    num_images: int
    class_names: List[str]
    class_counts: np.ndarray
    sides: np.ndarray
    skipped: Dict[str, int]
    min_size: int
    max_size: int
    in_features: List[str]
    strides: List[int]
    scale_base: float
    assignment: str
    level_counts: np.ndarray
    coco_shares: np.ndarray
    object_shares: Optional[np.ndarray]
    suggested: Tuple[float, float]
    distance_now: float = field(default=0.0)
    auto: bool = False  # the config's SCALE_BASE is "auto": scale_base is the suggested value


def compute_stats(
    dicts: Sequence[Dict],
    name: str,
    class_names: Sequence[str],
    min_size: int,
    max_size: int,
    in_features: Sequence[str],
    strides: Sequence[int],
    size_divisibility: int,
    assignment: str = "scale",
    scale_base=56.0,
) -> DatasetStats:
    """The statistics of a dataset for a DeFeat config (its test-time resize, neck levels and
    strides, ``MASK_ASSIGN`` and ``SCALE_BASE``); ``"coupled"`` has no object cells (None).
    ``scale_base`` ``"auto"``: the suggested value, as a training run would take it."""
    images, skipped = resize_records(dicts, min_size, max_size)
    num_levels = len(strides)
    suggested = suggest_scale_base(images, num_levels)
    auto = scale_base == AUTO
    scale_base = suggested[0] if auto else scale_base
    classes = torch.cat([im.classes for im in images]).numpy() if images else np.zeros(0, dtype=np.int64)
    counts = np.bincount(classes, minlength=len(class_names))
    level_counts = level_shares(images, num_levels, scale_base)
    total = max(1, int(level_counts.sum()))
    coco = coco_level_shares(num_levels)
    shares = None
    if assignment in ("scale", "all"):
        shares = object_cell_shares(images, strides, size_divisibility, assignment, scale_base)
    return DatasetStats(
        name=name,
        num_images=len(dicts),
        class_names=list(class_names),
        class_counts=counts,
        sides=_sides(images),
        skipped=skipped,
        min_size=min_size,
        max_size=max_size,
        in_features=list(in_features),
        strides=list(strides),
        scale_base=scale_base,
        assignment=assignment,
        level_counts=level_counts,
        coco_shares=coco,
        object_shares=shares,
        suggested=suggested,
        distance_now=float(np.abs(level_counts / total - coco).sum()),
        auto=auto,
    )


def _level_range(k: int, num_levels: int, base: float) -> str:
    lo, hi = base * 2**k, base * 2 ** (k + 1)
    if num_levels == 1:
        return "all"
    if k == 0:
        return f"< {hi:g}"
    return f">= {lo:g}" if k == num_levels - 1 else f"{lo:g} - {hi:g}"


def format_report(s: DatasetStats) -> str:
    """The statistics as the text ``tools/inspect_dataset.py`` prints."""
    n = len(s.sides)
    resize = (
        f"short side {s.min_size}, long side <= {s.max_size} (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST)"
        if s.min_size
        else "not resized (INPUT.MIN_SIZE_TEST 0)"
    )
    lines = [
        f"dataset {s.name}: {s.num_images} images, {n} boxes used "
        f"({s.skipped['crowd']} crowd and {s.skipped['zero_area']} zero-area boxes left out), "
        f"{len(s.class_names)} categories",
        f"images resized as at test time: {resize}",
        "",
        "boxes per class:",
    ]
    width = max([len(c) for c in s.class_names] + [5])
    for c, k in zip(s.class_names, s.class_counts):
        lines.append(f"  {c:<{width}} {int(k):>7}")
    if n:
        q = np.percentile(s.sides, [0, 10, 25, 50, 75, 90, 100])
        lines += [
            "",
            "box size sqrt(w*h) after resizing, px: "
            + ", ".join(f"{lab} {v:.1f}" for lab, v in zip(("min", "10%", "25%", "median", "75%", "90%", "max"), q)),
        ]
        edges = [0, 8, 16, 32, 64, 128, 256, 512, 1024, np.inf]
        hist, _ = np.histogram(s.sides, bins=edges)
        used = np.flatnonzero(hist)  # the bins from the first to the last that hold boxes
        lines += [
            f"  {lo:>4g} - {hi:<4g}: {int(k):>7}  {'#' * int(round(40 * k / max(1, hist.max())))}".rstrip()
            for lo, hi, k in list(zip(edges[:-1], edges[1:], hist))[used[0] : used[-1] + 1]
        ]
    total = max(1, n)
    lines += [
        "",
        f"FPN levels under MASK_ASSIGN scale, SCALE_BASE {s.scale_base:g}{' (auto)' if s.auto else ''} "
        "(level = floor(log2(sqrt(w*h) / SCALE_BASE)), clamped to the levels):",
        "  level feature stride  box side (px)      boxes  share  COCO@56  object cells ("
        + ("MASK_ASSIGN " + s.assignment + ")" if s.object_shares is not None else "coupled: none)"),
    ]
    for k, (f, st) in enumerate(zip(s.in_features, s.strides)):
        obj = f"{100 * s.object_shares[k]:11.1f}%" if s.object_shares is not None else "          -"
        lines.append(
            f"  {k:>5} {f:<7} {st:>6}  {_level_range(k, len(s.strides), s.scale_base):<16} "
            f"{int(s.level_counts[k]):>7} {100 * s.level_counts[k] / total:5.0f}% {100 * s.coco_shares[k]:7.0f}% {obj}"
        )
    base, dist = s.suggested
    advice = (
        "the config's MODEL.DEFEAT.NECK.SCALE_BASE auto takes it when a training run starts"
        if s.auto
        else "set MODEL.DEFEAT.NECK.SCALE_BASE to it, or to auto"
    )
    lines += [
        "",
        f"suggested SCALE_BASE: {base:g} (boxes spread over the levels like COCO's at 56 on 800-px images: "
        f"L1 distance {dist:.2f}, vs {s.distance_now:.2f} at {s.scale_base:g}); {advice}",
    ]
    return "\n".join(lines)


def stats_figure(s: DatasetStats, path: str) -> None:
    """A PNG with four panels: boxes per class, box sizes (with the level edges), boxes per
    level against COCO's reference, and object-cell shares per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    ax = axes[0, 0]
    ax.bar(range(len(s.class_names)), s.class_counts, color="tab:blue")
    ax.set_xticks(
        range(len(s.class_names)),
        s.class_names,
        rotation=45 if len(s.class_names) > 6 else 0,
        ha="right" if len(s.class_names) > 6 else "center",
    )
    ax.set(title="boxes per class", ylabel="boxes")
    ax = axes[0, 1]
    if len(s.sides):
        bins = np.logspace(np.log2(max(1.0, s.sides.min())), np.log2(s.sides.max() + 1), 30, base=2)
        ax.hist(s.sides, bins=bins, color="tab:gray")
        ax.set_xscale("log", base=2)
    for k in range(1, len(s.strides)):
        ax.axvline(
            s.scale_base * 2**k,
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label="level edges at SCALE_BASE" if k == 1 else None,
        )
    ax.set(title="box size after test-time resize", xlabel="sqrt(w*h), px", ylabel="boxes")
    if len(s.strides) > 1:
        ax.legend(loc="best")
    ax = axes[1, 0]
    x = np.arange(len(s.strides))
    total = max(1, int(s.level_counts.sum()))
    ax.bar(x - 0.2, 100 * s.level_counts / total, 0.4, label=f"this dataset, SCALE_BASE {s.scale_base:g}")
    ax.bar(x + 0.2, 100 * s.coco_shares, 0.4, label="COCO at 56 (reference)")
    ax.set_xticks(x, s.in_features)
    ax.set(title="boxes per FPN level (MASK_ASSIGN scale)", ylabel="% of boxes")
    ax.legend(loc="best")
    ax = axes[1, 1]
    if s.object_shares is not None:
        ax.bar(x, 100 * s.object_shares, color="tab:green")
    ax.set_xticks(x, s.in_features)
    ax.set(title=f"object cells per level (MASK_ASSIGN {s.assignment})", ylabel="% of feature cells")
    fig.suptitle(f"{s.name}: {s.num_images} images, {len(s.sides)} boxes; suggested SCALE_BASE {s.suggested[0]:g}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def config_stats(cfg, neck, dicts: List[dict], name: str, classes: Sequence[str], scale_base: Optional[float] = None):
    """:func:`compute_stats` of ``dicts`` as a config's DeFeat student sees them: its test-time
    resize (:func:`defeat.data.box_levels.inference_resize`), the ``neck`` settings' levels (with the
    backbone's strides and padding) and mask assignment, and ``scale_base`` (default: the neck's
    ``SCALE_BASE``, which may be ``"auto"``).

    Raises:
        DeFeatConfigError: a level of ``NECK.IN_FEATURES`` that the backbone does not produce.
        ConfigFileError: the config's test-time augmentations have no ``ResizeShortestEdge``.
    """
    from ..config.files import build_backbone_from_config
    from ..errors import DeFeatConfigError

    backbone = build_backbone_from_config(cfg)  # the student's levels and strides, as the distiller uses them
    shapes = backbone.output_shape()
    features = list(neck["in_features"])
    missing = [f for f in features if f not in shapes]
    if missing:
        raise DeFeatConfigError(f"MODEL.DEFEAT.NECK.IN_FEATURES {missing} are not backbone outputs {sorted(shapes)}")
    min_size, max_size = inference_resize(cfg)
    return compute_stats(
        dicts,
        name,
        classes,
        min_size,
        max_size,
        features,
        [shapes[f].stride for f in features],
        backbone.size_divisibility,
        neck["mask_assign"],
        neck["scale_base"] if scale_base is None else scale_base,
    )
