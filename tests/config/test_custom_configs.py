"""The templates of configs/custom/ (real photos, pretrained backbones): filled in as
docs/custom_dataset.md says (a copy of the folder, the three placeholders of the base set), each
builds and takes one training step on CPU; left unfilled, a run refuses them by name."""

import os
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, make_cfg

CUSTOM = os.path.join(REPO, "configs", "custom")
TEMPLATES = ["teacher_R101_FPN.yaml", "student_R50_FPN.yaml", "defeat_R50_from_R101.yaml"]
# Nothing downloads (no pretrained weights), CPU, small inputs.
TINY = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", 96]
# The command-line options of a user without a GPU or internet (docs/custom_dataset.md).
OFFLINE_CPU = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg"}


def fill_in(folder, classes=3, train="mine_train", test="mine_val"):
    """A copy of configs/custom/ in ``folder`` with the base's placeholders filled in, as a user
    does it (the base's own _BASE_ made absolute, since the copy lives elsewhere)."""
    shutil.copytree(CUSTOM, folder)
    base = os.path.join(folder, "Base-Custom-RCNN-FPN.yaml")
    text = open(base).read()
    for old, new in (
        ('"../Base-RCNN-FPN.yaml"', f'"{REPO}/configs/Base-RCNN-FPN.yaml"'),
        ("NUM_CLASSES: 0 ", f"NUM_CLASSES: {classes} "),
        ("TRAIN: () ", f'TRAIN: ("{train}",) '),
        ("TEST: () ", f'TEST: ("{test}",) '),
    ):
        assert text.count(old) == 1, old  # the placeholder as the docs describe it
        text = text.replace(old, new)
    open(base, "w").write(text)
    return str(folder)


def test_the_templates_are_detectron2s_recipe_with_pretrained_weights():
    names = sorted(os.listdir(CUSTOM))
    assert names == sorted(["Base-Custom-RCNN-FPN.yaml", *TEMPLATES])
    teacher, student, defeat = (make_cfg(os.path.join(CUSTOM, t)) for t in TEMPLATES)
    assert (
        teacher.MODEL.WEIGHTS == "detectron2://COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/model_final_f6e8b1.pkl"
    )
    assert student.MODEL.WEIGHTS == defeat.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert (teacher.MODEL.RESNETS.DEPTH, student.MODEL.RESNETS.DEPTH) == (101, 50)
    for cfg in (teacher, student, defeat):  # Detectron2's usual input sizes, anchors and frozen BN
        assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, max(cfg.INPUT.MIN_SIZE_TRAIN)) == (800, 1333, 800)
        assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32], [64], [128], [256], [512]]
        assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 2
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 0 and not cfg.DATASETS.TRAIN and not cfg.DATASETS.TEST
    assert defeat.MODEL.DEFEAT.NECK.SCALE_BASE == 56.0  # COCO's at 800 px, as the anchors
    assert defeat.MODEL.DEFEAT.TEACHER.CONFIG_FILE == os.path.join(CUSTOM, "teacher_R101_FPN.yaml")
    assert defeat.MODEL.DEFEAT.TEACHER.WEIGHTS == f"{teacher.OUTPUT_DIR}/model_final.pth"  # where it is trained
    # The plain student config describes the DeFeat config's student (it evaluates its checkpoints).
    for cfg in (defeat, student):
        cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.DEFEAT = cfg.OUTPUT_DIR = None
    assert defeat == student


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """The filled-in copy, a one-image dataset and a random teacher saved from the copy's teacher."""
    from detectron2.checkpoint import DetectionCheckpointer

    from defeat.modeling.teacher import _teacher_builder

    root = tmp_path_factory.mktemp("custom")
    folder = fill_in(root / "custom")
    build, _, _ = _teacher_builder(os.path.join(folder, "teacher_R101_FPN.yaml"), "cpu")
    torch.manual_seed(0)
    DetectionCheckpointer(build(), str(root)).save("teacher")
    image = np.full((64, 96, 3), 40, np.uint8)
    cv2.rectangle(image, (8, 6), (40, 50), (200, 60, 60), -1)
    cv2.rectangle(image, (50, 20), (90, 60), (60, 200, 60), -1)
    cv2.imwrite(str(root / "img.png"), image)
    return SimpleNamespace(folder=folder, teacher=str(root / "teacher.pth"), image=str(root / "img.png"))


def _one_image_batch(cfg, image_path):
    """One image through Detectron2's training mapper (the config's INPUT sizes)."""
    from detectron2.data import DatasetMapper
    from detectron2.structures import BoxMode

    record = {
        "file_name": image_path,
        "height": 64,
        "width": 96,
        "image_id": 1,
        "annotations": [
            {"bbox": [8, 6, 40, 50], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0},
            {"bbox": [50, 20, 90, 60], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 2, "iscrowd": 0},
        ],
    }
    return [DatasetMapper(cfg, is_train=True)(record)]


@pytest.mark.parametrize("template", TEMPLATES)
def test_filled_in_template_builds_and_trains_one_step(template, filled):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    opts = [*TINY]
    if template.startswith("defeat"):
        opts += ["MODEL.DEFEAT.TEACHER.WEIGHTS", filled.teacher]
    cfg = make_cfg(os.path.join(filled.folder, template), *opts)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3 and cfg.DATASETS.TRAIN == ("mine_train",)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = _one_image_batch(cfg, filled.image)
    assert batch[0]["image"].shape[1] == 64  # the small input size of the override
    with EventStorage(0):
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    if template.startswith("defeat"):
        assert DEFEAT_KEYS <= set(losses)
        assert all(p.grad is None for p in model.teacher.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.distiller.parameters())
    else:
        assert not DEFEAT_KEYS & set(losses)
    frozen = model.backbone.bottom_up.stem.conv1.weight  # FREEZE_AT 2: stem and res2 stay pretrained
    assert frozen.grad is None and model.roi_heads.box_predictor.cls_score.out_features == 4


def _args(config_file, eval_only=False):
    return SimpleNamespace(config_file=config_file, eval_only=eval_only, resume=False, overwrite=False)


def test_unfilled_placeholders_are_refused_before_a_run_starts(tmp_path):
    from defeat.engine.preflight import check_run
    from defeat.errors import DataCheckError

    student = os.path.join(CUSTOM, "student_R50_FPN.yaml")
    # on the CPU with a local weight (none): the machine's checks are tests/engine/test_machine.py's
    out = ["OUTPUT_DIR", str(tmp_path / "out"), *OFFLINE_CPU]
    with pytest.raises(DataCheckError, match=r"DATASETS.TRAIN is empty: training needs a training set.*--dataset"):
        check_run(make_cfg(student, *out), _args(student))
    with pytest.raises(DataCheckError, match=r"DATASETS.TEST is empty: an evaluation \(--eval-only\) needs a test set"):
        check_run(make_cfg(student, *out), _args(student, eval_only=True))
    lazy = "configs/lazy/demo_student_slimR18.py"  # the LazyConfig key is named the same way
    cfg = make_cfg(lazy, "dataloader.train.dataset.names=''", f"train.output_dir={tmp_path / 'lazy'}")
    with pytest.raises(DataCheckError, match=r"dataloader.train.dataset.names is empty: .*names=mine_train"):
        check_run(cfg, _args(lazy))
    # Names given, classes left at 0: refused by name (a dataset without a json gives no count).
    from detectron2.data import DatasetCatalog

    DatasetCatalog.register("custom_no_json_train", lambda: [])
    try:
        cfg = make_cfg(student, *out, "DATASETS.TRAIN", "('custom_no_json_train',)")
        with pytest.raises(
            DataCheckError, match=r"MODEL.ROI_HEADS.NUM_CLASSES = 0: set it to the number of categories"
        ):
            check_run(cfg, _args(student))
        check_run(
            make_cfg(student, *out, "DATASETS.TRAIN", "('custom_no_json_train',)", "MODEL.ROI_HEADS.NUM_CLASSES", 3),
            _args(student),
        )
    finally:
        DatasetCatalog.remove("custom_no_json_train")


def test_a_count_from_the_json_names_the_number_to_set(tmp_path):
    """With a COCO json, the check of the datasets names the count itself."""
    from coco_files import write_coco

    from defeat.data.datasets import setup_datasets
    from defeat.engine.preflight import check_run
    from defeat.errors import DataCheckError

    json_file, images = write_coco(str(tmp_path / "data"), num_images=2)
    setup_datasets([f"custom_two_train={json_file}:{images}"])
    student = os.path.join(CUSTOM, "student_R50_FPN.yaml")
    cfg = make_cfg(
        student, "OUTPUT_DIR", str(tmp_path / "out"), "DATASETS.TRAIN", "('custom_two_train',)", *OFFLINE_CPU
    )
    with pytest.raises(DataCheckError, match=r"has 2 categories .* set MODEL.ROI_HEADS.NUM_CLASSES to 2"):
        check_run(cfg, _args(student))


def test_an_unfilled_teacher_template_is_refused_by_name():
    from defeat.errors import TeacherLoadError
    from defeat.modeling.teacher import _teacher_builder

    with pytest.raises(TeacherLoadError, match=r"teacher_R101_FPN.yaml' has MODEL.ROI_HEADS.NUM_CLASSES = 0"):
        _teacher_builder(os.path.join(CUSTOM, "teacher_R101_FPN.yaml"), "cpu")


def test_every_template_names_the_weights_it_downloads_and_the_offline_fix():
    """Each template's comments name every URL weight its config resolves to (its own or its
    base's), and a local file for it; the base names the device it needs."""
    from defeat.engine.machine import url_weights

    for name in sorted(os.listdir(CUSTOM)):
        path = os.path.join(CUSTOM, name)
        comments = "\n".join(line for line in open(path) if line.lstrip().startswith("#"))
        assert "Downloads" in comments, name
        for key, url in url_weights(make_cfg(path)):
            assert url in comments and f"{key} /path/to/{url.split('/')[-1]}" in comments, (name, key)
    base = open(os.path.join(CUSTOM, "Base-Custom-RCNN-FPN.yaml")).read()
    assert "MODEL.DEVICE cpu" in base
