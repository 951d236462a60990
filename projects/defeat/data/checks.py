"""Checks of dataset dicts that Detectron2 would otherwise hide; run once before training.

Detectron2's mapper clips every box to its image and drops boxes left empty, without a word,
so annotations in the wrong frame (or a wrong ``height``/``width``) train silently on the wrong
regions. :func:`check_dataset_boxes` reports such boxes and refuses malformed ones;
:func:`check_dataset_has_boxes` refuses a dataset with no usable box;
:func:`check_dataset_classes` compares the dataset's categories with the model's classes and
:func:`check_dataset_images` opens every image (an unreadable one would otherwise stop training
at a random iteration with an error that names no file). :func:`check_training_data` runs them all.
"""

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from detectron2.structures import BoxMode

from ..config.files import num_classes as model_num_classes  # noqa: F401 (kept here by name)
from ..errors import DataCheckError
from .datasets import IMAGE_CHECKS  # how thoroughly check_dataset_images reads each image (its docstring: the cost)

__all__ = [
    "IMAGE_CHECKS",
    "DataCheckError",
    "check_dataset_boxes",
    "check_dataset_classes",
    "check_dataset_has_boxes",
    "check_dataset_images",
    "check_training_data",
    "image_problem",
    "model_num_classes",
]


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
    Crowd boxes (``iscrowd``) are checked for malformed coordinates only: Detectron2's mapper drops
    them while training, so one outside its image is not clipped into a wrong region.
    Returns:
        The number of (non-crowd) boxes that extend outside their image.
    Raises:
        DataCheckError: a box has a non-finite coordinate, ``x2 < x1`` or ``y2 < y1`` (a negative
            width or height); the message names the first such image and box, and how many there are.
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
                "a non-finite coordinate"
                if not all(math.isfinite(v) for v in xyxy)
                else "x2 < x1"
                if x2 < x1
                else "y2 < y1"
                if y2 < y1
                else None
            )
            if problem:
                num_invalid += 1
                first_invalid = first_invalid or (
                    f"image {_image_name(record, index)} has a box with {problem}: bbox {list(bbox)} "
                    f"({BoxMode(anno['bbox_mode']).name}) -> XYXY [{x1}, {y1}, {x2}, {y2}]"
                )
                continue
            if height is None or width is None or anno.get("iscrowd", 0):
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
        raise DataCheckError(f"dataset {dataset_name!r}: {first_invalid}{more}; fix the annotations")
    if num_outside:
        logger.warning(
            "dataset %r: %d box(es) in %d image(s) extend outside their image; Detectron2 clips them "
            "to the image (and drops boxes left empty) without a warning. Check the annotations' frame "
            "and the images' height/width. First %d:\n  %s",
            dataset_name,
            num_outside,
            images_outside,
            len(listed),
            "\n  ".join(listed),
        )
    return num_outside


def check_dataset_has_boxes(dataset_dicts: Sequence[Dict], dataset_name: str) -> Tuple[int, int]:
    """Refuse a dataset without a usable box; warn about zero-area boxes.

    Detectron2 drops crowd boxes and boxes of zero width or height while training, and images
    left without boxes, so a dataset of only those trains on nothing (or fails deep in the
    sampler). Returns ``(usable boxes, zero-area boxes)``.
    Raises:
        DataCheckError: no annotation at all, or none with a positive area (counts given).
    """
    total = zero = crowd = 0
    for record in dataset_dicts:
        for anno in record.get("annotations", ()):
            if "bbox" not in anno or "bbox_mode" not in anno:
                continue
            total += 1
            if anno.get("iscrowd", 0):
                crowd += 1
                continue
            xyxy = _xyxy(anno["bbox"], anno["bbox_mode"])
            if xyxy is not None and (xyxy[2] - xyxy[0] <= 0 or xyxy[3] - xyxy[1] <= 0):
                zero += 1
    usable = total - zero - crowd
    images = len(dataset_dicts)
    if total == 0:
        raise DataCheckError(
            f"dataset {dataset_name!r} has no boxes at all ({images} images, 0 annotations); "
            "check that the annotation file is the instances file of this split"
        )
    if usable == 0:
        raise DataCheckError(
            f"dataset {dataset_name!r} has no box to train on: {zero} of its {total} boxes have zero "
            f"width or height and {crowd} are crowd boxes ({images} images); COCO's bbox is "
            "[x, y, width, height] in pixels"
        )
    if zero:
        logger.warning(
            "dataset %r: %d of its %d boxes have zero width or height; Detectron2 drops them while training",
            dataset_name,
            zero,
            total,
        )
    return usable, zero


def check_dataset_classes(dataset_name: str, num_classes: int, key: str) -> Optional[int]:
    """Refuse a dataset whose number of categories is not the model's number of classes.

    Reads ``thing_classes`` from the dataset's metadata (set when a COCO json is loaded, so
    call it after ``DatasetCatalog.get``); returns the number of categories, or ``None``
    when the metadata has none (nothing is checked then).
    Raises:
        DataCheckError: naming both numbers and ``key``, the config key to set.
    """
    from detectron2.data import MetadataCatalog

    classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    if classes is None:
        logger.info("dataset %r has no thing_classes metadata: its categories are not checked", dataset_name)
        return None
    if len(classes) != num_classes:
        shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
        raise DataCheckError(
            f"dataset {dataset_name!r} has {len(classes)} categories ({shown}) but the model has "
            f"{num_classes} classes ({key}); set {key} to {len(classes)} (the teacher must be "
            "trained on the same categories)"
        )
    return len(classes)


def _jpeg_complete(path: str) -> bool:
    """True when a JPEG ends with its end-of-image marker (within its last 4 KiB)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        return b"\xff\xd9" in f.read()


# PIL modes that Detectron2's ``read_image`` (``Image.convert`` to RGB/BGR) would clip to 8 bits
# or otherwise mangle: 16- and 32-bit grey levels and floating point.
MANGLED_MODES = {
    "I;16": "16-bit",
    "I;16B": "16-bit",
    "I;16L": "16-bit",
    "I": "32-bit integer",
    "F": "32-bit float",
}
# EXIF orientations (tag 274) that Detectron2 applies by rotating a quarter turn: width and height swap.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


def image_problem(record: Dict, mode: str) -> Optional[str]:
    """Why the image of ``record`` cannot be trained on, or None: missing (a folder, or a link to
    nothing, named as such), unreadable or truncated, a pixel format Detectron2 would mangle, or a
    size (after the EXIF orientation Detectron2 applies) other than the record's ``width`` x ``height``."""
    from PIL import Image

    path = record["file_name"]
    if os.path.isdir(path):
        return "a folder, not an image file"
    if os.path.islink(path) and not os.path.exists(path):
        return f"a link to {os.readlink(path)!r}, which does not exist"
    if not os.path.isfile(path):
        return "file not found"
    try:
        with Image.open(path) as img:
            size, fmt, pil_mode = img.size, img.format, img.mode
            if mode == "full":
                img.load()
            else:
                img.verify()  # PNG: every chunk's CRC, truncation (must come right after open)
        with Image.open(path) as img:  # the header again: the EXIF orientation
            try:
                orientation = int(img.getexif().get(274, 1) or 1)
            except Exception:  # an unreadable EXIF block: Detectron2 ignores it too
                orientation = 1
        if mode == "verify" and fmt == "JPEG" and not _jpeg_complete(path):
            return "truncated JPEG (no end-of-image marker)"
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return f"unreadable image: {type(e).__name__}: {e}"
    if pil_mode in MANGLED_MODES:
        return (
            f"{MANGLED_MODES[pil_mode]} pixels (PIL mode {pil_mode}), which Detectron2 clips to 8 bits when it "
            "reads the image; convert it to 8-bit RGB (or grey) first"
        )
    shown = (size[1], size[0]) if orientation in _SWAPPING_ORIENTATIONS else size
    expected = (record.get("width"), record.get("height"))
    if None not in expected and shown != tuple(expected):
        turned = (
            f" after the EXIF orientation ({orientation}) that Detectron2 applies when reading it (stored "
            f"{size[0]}x{size[1]})"
            if shown != size
            else ""
        )
        fix = (
            "; rotate the pixels and drop the EXIF orientation, or give the json the displayed size"
            if orientation != 1 or size == tuple(expected)[::-1]
            else "; fix the json's height/width"
        )
        return f"image is {shown[0]}x{shown[1]} (WxH){turned} but the annotations say {expected[0]}x{expected[1]}{fix}"
    return None


def check_dataset_images(
    dataset_dicts: Sequence[Dict], dataset_name: str, mode: str = "verify", workers: int = 8, max_listed: int = 5
) -> int:
    """Open every image of a dataset; raise naming the files that cannot be read.

    ``mode``: ``"verify"`` reads each file's header and size, checks a PNG's chunks (PIL
    ``verify``) and that a JPEG ends with its end-of-image marker, without decoding pixels
    (well under 1 ms per image); ``"full"`` decodes every image (a few ms per COCO-sized JPEG:
    minutes for 100k images); ``"none"`` skips the check. Files are read by ``workers`` threads.
    Returns the number of images checked.
    Raises:
        DataCheckError: an image is missing, unreadable, truncated or of another size than its
            ``height``/``width``; the message names the first files and the total.
    """
    if mode not in IMAGE_CHECKS:
        raise ValueError(f"image check must be one of {IMAGE_CHECKS}, got {mode!r}")
    if mode == "none":
        return 0
    records = [r for r in dataset_dicts if "file_name" in r]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(lambda r: image_problem(r, mode), records))
    bad = [f"{r['file_name']}: {p}" for r, p in zip(records, problems) if p]
    if bad:
        raise DataCheckError(
            f"dataset {dataset_name!r}: {len(bad)} of {len(records)} images cannot be trained on; first "
            f"{min(len(bad), max_listed)}:\n  "
            + "\n  ".join(bad[:max_listed])
            + "\nfix or remove them from the annotation file"
        )
    return len(records)


def check_training_data(
    dicts_by_name: Dict[str, Sequence[Dict]], num_classes: Optional[int], key: str, images: str = "verify"
) -> None:
    """All checks above for each training dataset, before training: boxes (malformed, outside,
    none usable), categories vs ``num_classes`` (``key`` named in the error) and images."""
    for name, dicts in dicts_by_name.items():
        check_dataset_boxes(dicts, name)
        check_dataset_has_boxes(dicts, name)
        if num_classes is not None:
            check_dataset_classes(name, num_classes, key)
        check_dataset_images(dicts, name, images)
