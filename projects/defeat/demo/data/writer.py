"""Write a generated demo dataset (COCO json + PNGs) of a style (``shapes``, ``glyphs`` or ``photos``)
to disk, and read its statistics back. The renderers live in ``synthetic`` (shapes), ``glyphs`` and
``photos``."""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .glyphs import GLYPH_CLASS_NAMES, GLYPHS_VERSION, render_glyphs_image
from .names import DEFAULT_STYLE, STYLES, check_style  # noqa: F401 (STYLES: kept here too)
from .photos import PHOTO_CLASS_NAMES, PHOTOS_VERSION, render_photos_image
from .synthetic import (
    _SPLITS,
    CLASS_NAMES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    MEDIUM_MAX,
    SMALL_MAX,
    render_image,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- dataset
def _styles():
    """style name -> (render function, class names, version)."""
    return {
        "shapes": (render_image, CLASS_NAMES, GENERATOR_VERSION),
        "glyphs": (render_glyphs_image, GLYPH_CLASS_NAMES, GLYPHS_VERSION),
        "photos": (render_photos_image, PHOTO_CLASS_NAMES, PHOTOS_VERSION),
    }


def style_class_names(style=DEFAULT_STYLE):
    """The class names of a generator style (``shapes``, ``glyphs`` or ``photos``)."""
    return _check_style(style)[1]


def _check_style(style):
    return _styles()[check_style(style)]


def _config(num_train, num_val, image_size, seed, num_classes, style=DEFAULT_STYLE):
    cfg = {
        "version": _check_style(style)[2],
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
        "num_classes": int(num_classes),
    }
    if style != DEFAULT_STYLE:  # the shapes stamp predates styles: it stays as it was
        cfg["style"] = style
    return cfg


def _paths(root):
    root = Path(root)
    return {
        "root": str(root),
        "meta": str(root / "meta.json"),
        "train_images": str(root / "train"),
        "val_images": str(root / "val"),
        "train_json": str(root / "annotations" / "train.json"),
        "val_json": str(root / "annotations" / "val.json"),
    }


def _read_meta(root):
    try:
        with open(Path(root) / "meta.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_split(out, split, count, cfg):
    """Write images of one split into out/<split>/ and its COCO dict; returns the dict."""
    img_dir = out / split
    img_dir.mkdir(parents=True)
    style = cfg.get("style", DEFAULT_STYLE)
    render, class_names, _ = _check_style(style)
    names = class_names[: cfg["num_classes"]]
    images, anns = [], []
    for i in range(count):
        rng = np.random.default_rng([cfg["seed"], _SPLITS[split], i])
        image, objects = render(rng, cfg["image_size"], names)
        file_name = f"{i:06d}.png"
        ok = cv2.imwrite(str(img_dir / file_name), image[..., ::-1])
        if not ok:
            raise OSError(f"failed to write {img_dir / file_name}")
        images.append({"id": i + 1, "file_name": file_name, "width": cfg["image_size"], "height": cfg["image_size"]})
        for cls, box in objects:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": f"DeFeat synthetic {style} demo", "version": str(cfg["version"])},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(names)],
    }


def _dump_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, sort_keys=True, separators=(",", ":"))


def generate_dataset(
    root,
    num_train=DEFAULT_NUM_TRAIN,
    num_val=DEFAULT_NUM_VAL,
    image_size=DEFAULT_IMAGE_SIZE,
    seed=DEFAULT_SEED,
    num_classes=None,
    force=False,
    style=DEFAULT_STYLE,
):
    """Generate (if needed) the demo dataset of ``style`` (``shapes``, ``glyphs`` or ``photos``,
    see :data:`STYLES`) under ``root``; return a dict of paths. ``num_classes`` (default: all of
    the style's classes) keeps the first classes of the style only.

    Layout: ``root/{train,val}/NNNNNN.png``, ``root/annotations/{train,val}.json`` and
    ``root/meta.json`` (the stamp: generator version, seed and sizes).  When the stamp
    matches, nothing is written; otherwise the dataset is built in a sibling temp folder
    and renamed into place, so ``root`` is never seen half-written.

    Returns keys ``root, meta, train_images, val_images, train_json, val_json`` (str).
    """
    class_names = style_class_names(style)
    if num_classes is None:
        num_classes = len(class_names)
    if not 1 <= num_classes <= len(class_names):
        raise ValueError(f"num_classes must be in [1, {len(class_names)}], got {num_classes}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got {num_train}, {num_val}")
    root = Path(root).expanduser().absolute()
    paths = _paths(root)
    cfg = _config(num_train, num_val, image_size, seed, num_classes, style)
    complete = all(os.path.exists(paths[k]) for k in ("train_json", "val_json"))
    if not force and complete and _read_meta(root) == cfg:
        logger.debug("dataset at %s is up to date", root)
        return paths

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is a normal folder
        logger.info(
            "generating %d train + %d val %s images (%dpx, seed %d) in %s",
            num_train,
            num_val,
            style,
            image_size,
            seed,
            root,
        )
        (tmp / "annotations").mkdir()
        for split, count in (("train", num_train), ("val", num_val)):
            _dump_json(_write_split(tmp, split, count, cfg), tmp / "annotations" / f"{split}.json")
        _dump_json(cfg, tmp / "meta.json")  # the stamp is written last
        if root.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            # another process finished first; keep its copy if it is what we wanted
            if _read_meta(root) != cfg:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def size_range(area):
    """COCO size range name of a box area in px^2: 'small', 'medium' or 'large'."""
    if area < SMALL_MAX**2:
        return "small"
    return "medium" if area <= MEDIUM_MAX**2 else "large"


def dataset_stats(json_file):
    """Summary of a COCO json: images, annotations, per-class and per-size-range counts."""
    with open(json_file) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_class = {n: 0 for n in names.values()}
    per_size = {"small": 0, "medium": 0, "large": 0}
    for a in coco["annotations"]:
        per_class[names[a["category_id"]]] += 1
        per_size[size_range(a["area"])] += 1
    return {
        "images": len(coco["images"]),
        "annotations": len(coco["annotations"]),
        "per_class": per_class,
        "per_size": per_size,
    }
