"""Tests for the generated demo dataset (``defeat.demo.data``), on a small 40 + 10 image copy."""

import json
import os
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from defeat.demo.data import CLASS_NAMES, dataset_stats, generate_dataset, register_demo_dataset
from defeat.demo.data.__main__ import main as data_main
from defeat.demo.data.synthetic import render_image
from defeat.demo.data.writer import size_range

SMALL = dict(num_train=40, num_val=10, image_size=128)


def _files(root):
    """{relative path: bytes} of every file under root."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "demo", seed=0, **SMALL)


def _load(paths, split):
    with open(paths[f"{split}_json"]) as f:
        return json.load(f)


def test_layout(small):
    assert json.loads(Path(small["meta"]).read_text())["seed"] == 0
    for split, n in (("train", 40), ("val", 10)):
        assert len(os.listdir(small[f"{split}_images"])) == n
        img = cv2.imread(os.path.join(small[f"{split}_images"], "000000.png"))
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8


def test_deterministic(small, tmp_path):
    again = generate_dataset(tmp_path / "again", seed=0, **SMALL)
    a, b = _files(small["root"]), _files(again["root"])
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)  # JSON and PNG bytes identical
    other = _files(generate_dataset(tmp_path / "other", seed=1, **SMALL)["root"])
    assert other["annotations/train.json"] != a["annotations/train.json"]
    assert sum(other[k] != a[k] for k in a if k.endswith(".png")) == 50


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_valid(small, split):
    coco = COCO(small[f"{split}_json"])
    assert len(coco.getImgIds()) == SMALL[f"num_{split}"]
    assert sorted(coco.getCatIds()) == list(range(1, len(CLASS_NAMES) + 1))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= SMALL[f"num_{split}"]  # every image has 1+ objects
    assert len({a["id"] for a in anns}) == len(anns)
    for a in anns:
        assert a["image_id"] in coco.imgs and a["category_id"] in coco.cats
        assert a["iscrowd"] == 0
    # every image has at least one object and at most 8
    per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
    assert min(per_image) >= 1 and max(per_image) <= 8


@pytest.mark.parametrize("split", ["train", "val"])
def test_boxes_inside(small, split):
    data = _load(small, split)
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = sizes[a["image_id"]]
        assert w > 0 and h > 0 and a["area"] == w * h
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H


def test_classes_and_size_ranges(small):
    st = dataset_stats(small["train_json"])
    assert all(n > 0 for n in st["per_class"].values()), st["per_class"]
    both = {k: st["per_size"][k] + dataset_stats(small["val_json"])["per_size"][k] for k in st["per_size"]}
    assert all(n >= 1 for n in both.values()), both  # seed 0: 120 small, 89 medium, 8 large


def test_size_mix_is_robust():
    """Per 100 images (~430 objects) each COCO size range holds >= 2% of the objects.

    Seeds 0-9 give 3.9-7.6% large, 39-44% medium, 50-56% small.
    """
    for seed in (7, 8):
        counts = {"small": 0, "medium": 0, "large": 0}
        for i in range(100):
            _, objs = render_image(np.random.default_rng([seed, 0, i]), 128)
            for _, (_, _, w, h) in objs:
                counts[size_range(w * h)] += 1
        total = sum(counts.values())
        assert all(c >= 0.02 * total for c in counts.values()), (seed, counts)


def test_idempotent(small, tmp_path):
    files = [Path(small["meta"]), Path(small["train_json"]), Path(small["val_images"]) / "000003.png"]
    before = [p.stat().st_mtime_ns for p in files]
    assert generate_dataset(small["root"], seed=0, **SMALL) == small
    assert [p.stat().st_mtime_ns for p in files] == before

    root = tmp_path / "cfg"
    generate_dataset(root, seed=0, num_train=4, num_val=2)
    generate_dataset(root, seed=0, num_train=5, num_val=2)  # new config: regenerated
    assert len(os.listdir(root / "train")) == 5
    assert json.loads((root / "meta.json").read_text())["num_train"] == 5
    assert os.listdir(tmp_path) == ["cfg"]  # no temp folders left behind


def test_prefix_property(small, tmp_path):
    """Per-image seeding: a smaller dataset is a prefix of a larger one."""
    tiny = generate_dataset(tmp_path / "tiny", seed=0, num_train=5, num_val=1)
    for i in range(5):
        name = f"{i:06d}.png"
        assert (Path(tiny["train_images"]) / name).read_bytes() == (Path(small["train_images"]) / name).read_bytes()


def test_register(small):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    prefix = f"defeat_test_{uuid.uuid4().hex[:8]}"
    names = register_demo_dataset(root=small["root"], name_prefix=prefix, seed=0, **SMALL)
    try:
        assert names == (f"{prefix}_train", f"{prefix}_val")
        assert register_demo_dataset(root=small["root"], name_prefix=prefix, seed=0, **SMALL) == names
        for name, n in zip(names, (40, 10)):
            dicts = DatasetCatalog.get(name)
            assert len(dicts) == n
            assert all(d["annotations"] for d in dicts)
            assert MetadataCatalog.get(name).thing_classes == list(CLASS_NAMES)
            assert MetadataCatalog.get(name).evaluator_type == "coco"
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_cli(tmp_path, capsys):
    data_main(["--root", str(tmp_path / "cli"), "--num-train", "3", "--num-val", "2", "--seed", "3"])
    out = capsys.readouterr().out
    assert "[train] 3 images" in out and "per size" in out and "per class" in out


def test_demo_root_env_names_the_folder_and_the_earlier_name_still_works(monkeypatch):
    from defeat.demo.data import default_root

    monkeypatch.delenv("DEFEAT_DEMO_ROOT", raising=False)
    monkeypatch.delenv("DEFEAT_DATASETS", raising=False)
    assert default_root() == os.path.join("datasets", "defeat_demo")
    monkeypatch.setenv("DEFEAT_DATASETS", "/old")
    assert default_root("glyphs") == os.path.join("/old", "defeat_glyphs")
    monkeypatch.setenv("DEFEAT_DEMO_ROOT", "/new")
    assert default_root() == os.path.join("/new", "defeat_demo")
