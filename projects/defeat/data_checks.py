"""Checks of dataset dicts that Detectron2 would otherwise hide; run once before training.

Detectron2's mapper clips every box to its image and drops boxes left empty, without a word,
so annotations in the wrong frame (or a wrong ``height``/``width``) train silently on the wrong
regions. :func:`check_dataset_boxes` reports such boxes and refuses malformed ones.
"""
import logging
import math
from typing import Dict, Iterable, List, Optional, Tuple

from detectron2.structures import BoxMode

__all__ = ["check_dataset_boxes"]

logger = logging.getLogger(__name__)


def _xyxy(bbox, bbox_mode) -> Optional[Tuple[float, float, float, float]]:
    """``(x1, y1, x2, y2)`` of an absolute box; ``None`` for relative or rotated boxes (not checked)."""
    mode = BoxMode(bbox_mode)
    if mode == BoxMode.XYXY_ABS:
        x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    elif mode == BoxMode.XYWH_ABS:
        x1, y1, w, h = (float(v) for v in bbox[:4])
        x2, y2 = x1 + w, y1 + h
    else:
        return None
    return x1, y1, x2, y2


def _image_name(record: Dict, index: int) -> str:
    return str(record.get("file_name", record.get("image_id", f"#{index}")))


def check_dataset_boxes(
    dataset_dicts: Iterable[Dict], dataset_name: str, max_listed: int = 5, tolerance: float = 0.01
) -> int:
    """Warn about boxes outside their image; raise on malformed boxes.

    Args:
        dataset_dicts: Detectron2 dataset dicts (``file_name``, ``height``, ``width``,
            ``annotations`` with ``bbox`` and ``bbox_mode``). Boxes in ``XYXY_ABS`` and
            ``XYWH_ABS`` are checked; relative and rotated boxes are skipped.
        dataset_name: named in the messages.
        max_listed: how many offending boxes the warning lists (the total is always given).
        tolerance: pixels a box may extend past the image border without a warning.
    Returns:
        The number of boxes that extend outside their image.
    Raises:
        ValueError: a box has a non-finite coordinate, ``x2 < x1`` or ``y2 < y1``; the message
            names the first such image and box, and how many there are.
    """
    listed: List[str] = []
    num_outside = images_outside = 0
    first_invalid, num_invalid = None, 0
    for index, record in enumerate(dataset_dicts):
        height, width = record.get("height"), record.get("width")
        image_has_outside = False
        for anno in record.get("annotations", ()):
            bbox = anno.get("bbox")
            if bbox is None or "bbox_mode" not in anno:
                continue
            xyxy = _xyxy(bbox, anno["bbox_mode"])
            if xyxy is None:
                continue
            x1, y1, x2, y2 = xyxy
            problem = (
                "a non-finite coordinate" if not all(math.isfinite(v) for v in xyxy)
                else "x2 < x1" if x2 < x1
                else "y2 < y1" if y2 < y1
                else None
            )
            if problem:
                num_invalid += 1
                first_invalid = first_invalid or (
                    f"image {_image_name(record, index)} has a box with {problem}: bbox {list(bbox)} "
                    f"({BoxMode(anno['bbox_mode']).name}) -> XYXY [{x1}, {y1}, {x2}, {y2}]"
                )
                continue
            if height is None or width is None:
                continue
            if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
                image_has_outside = True
                num_outside += 1
                if len(listed) < max_listed:
                    listed.append(
                        f"{_image_name(record, index)}: box XYXY [{x1:g}, {y1:g}, {x2:g}, {y2:g}] "
                        f"in a {width}x{height} (WxH) image"
                    )
        images_outside += image_has_outside
    if num_invalid:
        more = f" ({num_invalid} invalid boxes in all)" if num_invalid > 1 else ""
        raise ValueError(f"dataset {dataset_name!r}: {first_invalid}{more}; fix the annotations")
    if num_outside:
        logger.warning(
            "dataset %r: %d box(es) in %d image(s) extend outside their image; Detectron2 clips them "
            "to the image (and drops boxes left empty) without a warning. Check the annotations' frame "
            "and the images' height/width. First %d:\n  %s",
            dataset_name, num_outside, images_outside, len(listed), "\n  ".join(listed),
        )
    return num_outside
