"""Test helpers: a tiny COCO-format dataset written as plain files (a json and PNGs), as a user
would have it; the module of a script in tools/."""

import importlib.util
import json
import os

import cv2
import numpy as np
import pytest

CLASSES = ("square", "bar")


def write_coco(
    root,
    num_images=6,
    size=64,
    classes=CLASSES,
    boxes=None,
    image_dir="images",
    json_name="train.json",
    seed=0,
    categories=True,
    category_ids=None,
):
    """Images with filled rectangles and their COCO json; returns ``(json path, image folder)``.

    ``boxes``: optional ``fn(index) -> [(x, y, w, h, category_index), ...]``; default: one or two
    random boxes per image. ``file_name`` entries are relative to the image folder.
    ``category_ids``: the json's id of each class (default 1..N).
    """
    ids = list(category_ids) if category_ids is not None else list(range(1, len(classes) + 1))
    rng = np.random.default_rng(seed)
    images_root = os.path.join(root, image_dir)
    os.makedirs(images_root, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img = np.full((size, size, 3), 40, np.uint8)
        if boxes is not None:
            objs = boxes(i)
        else:
            objs = []
            for _ in range(1 + i % 2):
                w, h = (int(v) for v in rng.integers(size // 6, size // 2, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                objs.append((x, y, w, h, int(rng.integers(0, len(classes)))))
        for x, y, w, h, c in objs:
            colour = (60 + 150 * c % 256, 200, 255 - 80 * c % 256)
            cv2.rectangle(img, (int(x), int(y)), (int(x + w) - 1, int(y + h) - 1), colour, -1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": ids[c],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        name = f"img_{i:03d}.png"
        cv2.imwrite(os.path.join(images_root, name), img)
        images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
    data = {"images": images, "annotations": annotations}
    if categories:
        data["categories"] = [{"id": ids[k], "name": n} for k, n in enumerate(classes)]
    json_path = os.path.join(root, json_name)
    with open(json_path, "w") as f:
        json.dump(data, f)
    return json_path, images_root


def _load_script(folder, name, prefix):
    """The module of ``<folder>/<name>.py`` of this repository (scripts, not a package)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"{prefix}_{name}", os.path.join(repo, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_tool(name):
    """The module of ``tools/<name>.py`` (tools are scripts, not a package)."""
    return _load_script("tools", name, "tool")


def tool_main(name, *argv):
    """``tools/<name>.py``'s ``main`` on ``argv`` (each item as text)."""
    return load_tool(name).main([str(a) for a in argv])


def tool_exit(name, *argv) -> str:
    """The exit message (or code) of ``tools/<name>.py`` refusing ``argv``; fails if it does not exit."""
    import pytest

    with pytest.raises(SystemExit) as e:
        tool_main(name, *argv)
    return str(e.value.code)


def load_benchmark(name):
    """The module of ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    return _load_script("benchmarks", name, "bench")


def usage_error_line(capsys, call):
    """The one line an argument error of ``call()`` prints on stderr (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def tiny_student_files(folder, num_images=2, **coco):
    """Random weights of the 2-class tiny student, saved as ``<folder>/model_final.pth`` by
    ``DetectionCheckpointer``, and a COCO dataset of ``num_images`` files under ``<folder>/data``
    (``coco``: more arguments of :func:`write_coco`): ``(weights, json, image folder)``."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from helpers import CONFIGS, make_cfg

    torch.manual_seed(0)
    model = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 2))
    DetectionCheckpointer(model, str(folder)).save("model_final")
    json_file, images = write_coco(os.path.join(str(folder), "data"), num_images=num_images, **coco)
    return os.path.join(str(folder), "model_final.pth"), json_file, images
