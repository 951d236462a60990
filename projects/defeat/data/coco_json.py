"""Checks of a COCO instances json as written, before Detectron2 reads it.

Detectron2's ``load_coco_json`` keys images by ``id`` (two images sharing one: the first
disappears and the other trains with both sets of boxes), reads ``height``/``width`` and
``bbox`` without looking at their types (a string coordinate fails inside the data loader), and
needs every annotation's ``category_id`` among the categories. :func:`check_coco_json` reads the
file once and names the json, the entry and the field of the first problem of each kind.
"""

import json
import logging
import math
import numbers
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List

from ..errors import DataCheckError

__all__ = ["CocoSummary", "check_coco_json"]

logger = logging.getLogger(__name__)


@dataclass
class CocoSummary:
    """What the checks found in a COCO json: class names in Detectron2's order (sorted by
    category id), the category ids, and the categories without any box to train on (placeholders,
    or categories with crowd boxes only: Detectron2 drops crowd boxes while training)."""

    json_file: str
    classes: List[str]
    category_ids: List[int]
    empty_categories: List[str] = field(default_factory=list)
    num_images: int = 0
    num_annotations: int = 0
    has_segmentation: bool = False


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _positive_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _load(json_file: str) -> Dict:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except OSError as e:
        raise DataCheckError(f"cannot read annotation file {json_file}: {e}") from e
    except ValueError as e:
        raise DataCheckError(f"annotation file {json_file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DataCheckError(f"annotation file {json_file} holds a {type(data).__name__}, not a COCO dict")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataCheckError(f"annotation file {json_file} has no {key!r} list; a COCO instances json needs one")
    if not isinstance(data.get("annotations", []), list):
        raise DataCheckError(f"annotation file {json_file}: 'annotations' is not a list")
    return data


def _check_images(data: Dict, where: str) -> Dict:
    """Image ids and file names unique, ``id``/``file_name``/``height``/``width`` present and typed."""
    by_id: Dict = {}
    names: Dict[str, object] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise DataCheckError(f"{where}: images[{i}] is not a dict")
        for key, ok, want in (
            ("id", lambda v: isinstance(v, (numbers.Integral, str)) and not isinstance(v, bool), "an integer"),
            ("file_name", lambda v: isinstance(v, str) and v, "a file name"),
            ("height", _positive_int, "a positive integer (pixels)"),
            ("width", _positive_int, "a positive integer (pixels)"),
        ):
            if key not in img:
                raise DataCheckError(
                    f"{where}: images[{i}] ({img.get('file_name', '?')}) has no {key!r}; it needs {want}"
                )
            if not ok(img[key]):
                raise DataCheckError(
                    f"{where}: images[{i}] ({img.get('file_name', '?')}) has {key}={img[key]!r}; it must be {want}"
                )
        if img["id"] in by_id:
            raise DataCheckError(
                f"{where}: image id {img['id']!r} is used by {by_id[img['id']]['file_name']!r} and "
                f"{img['file_name']!r}; "
                "Detectron2 would keep one of them and give it the boxes of both. Give every image its own id"
            )
        if img["file_name"] in names:
            raise DataCheckError(
                f"{where}: file_name {img['file_name']!r} is listed twice (image ids {names[img['file_name']]!r} and "
                f"{img['id']!r}); each image must be listed once, with all its boxes"
            )
        by_id[img["id"]] = img
        names[img["file_name"]] = img["id"]
    return by_id


def _check_categories(data: Dict, where: str) -> Dict[int, str]:
    cats: Dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        if (
            not isinstance(cat, dict)
            or not isinstance(cat.get("id"), numbers.Integral)
            or isinstance(cat.get("id"), bool)
        ):
            raise DataCheckError(f"{where}: categories[{i}] needs an integer 'id' (and a 'name'), got {cat!r}")
        if cat["id"] in cats:
            raise DataCheckError(
                f"{where}: category id {cat['id']} is used twice ({cats[cat['id']]!r}, {cat.get('name')!r})"
            )
        cats[cat["id"]] = str(cat.get("name", cat["id"]))
    if not cats:
        raise DataCheckError(
            f"{where} has no categories; a COCO json needs a list like "
            '[{"id": 1, "name": "cat"}, ...] naming every class'
        )
    duplicates = [n for n, k in Counter(cats.values()).items() if k > 1]
    if duplicates:
        logger.warning("%s: category names used twice: %s (their boxes stay apart by id)", where, duplicates)
    return cats


def check_coco_json(json_file: str, dataset_name: str = "", needs_masks: bool = False) -> CocoSummary:
    """Read a COCO instances json and refuse what Detectron2 would misread or crash on.

    Checks: image ids and file names unique; each image's ``id``, ``file_name``, ``height`` and
    ``width`` present and typed; category ids unique; each annotation's ``image_id`` among the
    images (otherwise counted and warned: Detectron2 drops them), its ``category_id`` among the
    categories, its ``bbox`` four finite numbers, its polygons a list of lists; a ``segmentation``
    on every non-crowd annotation when ``needs_masks`` (a mask model). Polygons of fewer than 3
    points, which make Detectron2 drop the whole annotation, are refused for a mask model and
    warned about otherwise.
    Returns:
        A :class:`CocoSummary`.
    Raises:
        DataCheckError: naming the json (and ``dataset_name``), the entry and the field.
    """
    where = f"dataset {dataset_name!r} ({json_file})" if dataset_name else json_file
    data = _load(json_file)
    images = _check_images(data, where)
    cats = _check_categories(data, where)
    boxes_per_cat: Counter = Counter()
    orphans, without_masks, with_masks, dropped, first_dropped = 0, 0, 0, 0, ""
    annotations = data.get("annotations", [])
    for i, anno in enumerate(annotations):
        if not isinstance(anno, dict):
            raise DataCheckError(f"{where}: annotations[{i}] is not a dict")
        label = f"annotations[{i}] (id {anno.get('id', '?')}, image_id {anno.get('image_id', '?')})"
        if anno.get("image_id") not in images:
            orphans += 1
            continue
        bbox = anno.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            raise DataCheckError(
                f"{where}: {label} has bbox {bbox!r}; it must be four numbers [x, y, width, height] in pixels"
            )
        if anno.get("category_id") not in cats:
            raise DataCheckError(
                f"{where}: {label} has category_id {anno.get('category_id')!r}, which is not among the "
                f"categories (ids {sorted(cats)}); add the category or fix the annotation"
            )
        if not anno.get("iscrowd", 0):
            boxes_per_cat[anno["category_id"]] += 1
        segm = anno.get("segmentation")
        if isinstance(segm, (list, tuple)) and segm and not all(isinstance(p, (list, tuple)) for p in segm):
            raise DataCheckError(
                f"{where}: {label} has a flat 'segmentation' {_short(segm)}; COCO polygons are a list of "
                "lists, [[x1, y1, x2, y2, x3, y3, ...], ...]: wrap it in another pair of brackets"
            )
        if isinstance(segm, (list, tuple)) and segm and not any(len(p) % 2 == 0 and len(p) >= 6 for p in segm):
            dropped += 1
            first_dropped = first_dropped or label
        if segm:
            with_masks += 1
        elif not anno.get("iscrowd", 0):
            without_masks += 1
    if orphans:
        logger.warning(
            "%s: %d of %d annotations belong to no listed image (their image_id is not among the images' "
            "ids); Detectron2 ignores them",
            where,
            orphans,
            len(annotations),
        )
    if dropped:
        message = (
            f"{where}: {dropped} annotations (the first {first_dropped}) have a 'segmentation' without a polygon "
            "of 3 or more points; Detectron2 drops such annotations, their boxes included, when it loads the json"
        )
        if needs_masks:
            raise DataCheckError(f"{message}: fix their polygons")
        logger.warning("%s: fix or remove their 'segmentation' to train on those boxes", message)
    if needs_masks and without_masks:
        raise DataCheckError(
            f"{where}: {without_masks} of {without_masks + with_masks} annotations have no 'segmentation', but "
            "the model predicts masks (MODEL.MASK_ON); use an instances json with polygons or RLE, or train "
            "a box-only model (MODEL.MASK_ON False)"
        )
    ids = sorted(cats)
    return CocoSummary(
        json_file=json_file,
        classes=[cats[i] for i in ids],
        category_ids=ids,
        empty_categories=[cats[i] for i in ids if boxes_per_cat[i] == 0],
        num_images=len(images),
        num_annotations=len(annotations) - orphans,
        has_segmentation=with_masks > 0,
    )
