"""Tests for the third generated dataset, the ``photos`` style (objects cut from real photographs)."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO
from pycocotools.coco import COCO

from defeat.demo import data as demo_data
from defeat.demo.data import generate_dataset, photos, register_demo_dataset_if_used
from defeat.demo.data.__main__ import main as data_main
from defeat.demo.data.writer import size_range

pytest.importorskip("skimage")

SMALL = dict(num_train=6, num_val=2, image_size=128)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("photos") / "p", seed=0, style="photos", **SMALL)


def test_photos_coco_files(small):
    meta = json.loads(Path(small["meta"]).read_text())
    assert meta["style"] == "photos" and meta["version"] == photos.PHOTOS_VERSION
    assert meta["num_classes"] == len(photos.PHOTO_CLASS_NAMES)  # all of the style's classes by default
    coco = COCO(small["train_json"])
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(photos.PHOTO_CLASS_NAMES)
    per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
    assert len(per_image) == 6 and min(per_image) >= 1 and max(per_image) <= photos.MAX_OBJECTS
    for a in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and a["area"] == w * h


def test_photos_deterministic_and_seeded(small, tmp_path):
    again = generate_dataset(tmp_path / "again", seed=0, style="photos", **SMALL)
    for key in ("train_json", "val_json"):
        assert Path(again[key]).read_bytes() == Path(small[key]).read_bytes()
    for split in ("train", "val"):
        for name in sorted(os.listdir(small[f"{split}_images"])):
            assert (Path(again[f"{split}_images"]) / name).read_bytes() == (
                Path(small[f"{split}_images"]) / name
            ).read_bytes()
    other = generate_dataset(tmp_path / "other", seed=1, style="photos", **SMALL)
    assert Path(other["train_json"]).read_bytes() != Path(small["train_json"]).read_bytes()
    assert (Path(other["train_images"]) / "000000.png").read_bytes() != (
        Path(small["train_images"]) / "000000.png"
    ).read_bytes()


def test_boxes_are_tight_around_the_pasted_masks():
    """Each box is the box of its object's visible mask; that mask is the pasted cut-out less
    what later objects cover (at most MAX_OCCLUSION of it), and inside the image."""
    for i in range(8):
        image, objs, owner, pasted = photos.render_photos_image_with_masks(np.random.default_rng([3, 0, i]), 128)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert len(objs) == len(pasted) >= 1 and owner.shape == (128, 128)
        for k, (_, (x, y, w, h)) in enumerate(objs):
            visible = owner == k
            ys, xs = np.nonzero(visible)
            assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            assert not (visible & ~pasted[k]).any()  # only pixels of its own cut-out
            assert visible.sum() >= (1 - photos.MAX_OCCLUSION) * pasted[k].sum()


def test_every_class_appears_in_all_sizes():
    counts = {n: 0 for n in photos.PHOTO_CLASS_NAMES}
    sizes = {"small": 0, "medium": 0, "large": 0}
    for i in range(30):
        _, objs = photos.render_photos_image(np.random.default_rng([7, 0, i]), 128)
        for cls, (_, _, w, h) in objs:
            counts[photos.PHOTO_CLASS_NAMES[cls]] += 1
            sizes[size_range(w * h)] += 1
    assert min(counts.values()) >= 3, counts
    total = sum(sizes.values())
    assert sizes["small"] > 0.1 * total and sizes["medium"] > 0.4 * total and sizes["large"] >= 1, sizes


def test_sources_are_the_bundled_photos_only():
    src = photos.sources()
    assert len(src["objects"]["coin"]) == 24  # every coin of coins.png, one cut-out each
    assert set(src["objects"]) | {"horse"} == set(photos.PHOTO_CLASS_NAMES)
    for rgb, alpha in [c for cuts in src["objects"].values() for c in cuts]:
        assert rgb.shape[:2] == alpha.shape and 0 <= alpha.min() and alpha.max() <= 1 and alpha.mean() > 0.3
    used = set(photos.BACKGROUNDS) | set(photos.HORSE_FILLS) | {n for n, _ in photos.ELLIPSES.values()}
    assert all(os.path.isfile(os.path.join(photos.source_dir(), n)) for n in used)
    assert not used & {"moon.png", "page.png", "lfw_subset.npy"}  # no stated licence: not used


def test_photos_registered_by_name(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from defeat.data.datasets import PROVIDED_DATASETS

    assert PROVIDED_DATASETS["defeat_photos_"] == "defeat.demo.data"
    monkeypatch.setenv(demo_data.DEMO_ROOT_ENV, str(tmp_path))
    monkeypatch.setenv("DEFEAT_DEMO_NUM_TRAIN", "2")
    monkeypatch.setenv("DEFEAT_DEMO_NUM_VAL", "1")
    names = ("defeat_photos_train", "defeat_photos_val")
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    try:
        register_demo_dataset_if_used(["defeat_photos_val"])
        assert sorted(os.listdir(tmp_path)) == ["defeat_photos"]
        assert len(DatasetCatalog.get("defeat_photos_val")) == 1
        assert MetadataCatalog.get("defeat_photos_train").thing_classes == list(photos.PHOTO_CLASS_NAMES)
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_cli_photos(tmp_path, capsys):
    data_main(["--dataset", "photos", "--root", str(tmp_path / "cli"), "--num-train", "2", "--num-val", "1"])
    out = capsys.readouterr().out
    assert "photos dataset at" in out and "defeat_photos_train" in out and "coin=" in out


def test_accuracy_photos_data_takes_the_photos_configs(capsys):
    from defeat.demo.experiments import load_config

    spec = importlib.util.spec_from_file_location("accuracy", os.path.join(REPO, "benchmarks", "accuracy.py"))
    acc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(acc)
    args = acc.parse_args(["--data", "photos"])
    assert (args.student, args.defeat, args.teacher_config, args.teacher_weights) == acc.PHOTOS_FAMILIES["rcnn"]
    for name in ("student", "defeat", "teacher_config"):
        cfg = load_config(getattr(args, name))
        assert cfg.DATASETS.TRAIN == ("defeat_photos_train",) and cfg.DATASETS.TEST == ("defeat_photos_val",)
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(photos.PHOTO_CLASS_NAMES)
    assert load_config(args.defeat).MODEL.DEFEAT.TEACHER.CONFIG_FILE == args.teacher_config
    with pytest.raises(SystemExit):
        acc.parse_args(["--data", "photos", "--family", "retinanet"])
    assert "--data photos has demo configs for --family rcnn only" in capsys.readouterr().err
