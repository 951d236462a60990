"""Each COCO DeFeat recipe has a plain student config that builds the same student (for the
baseline and for evaluating DeFeat checkpoints with --eval-only)."""

import pytest
from helpers import make_cfg

PAIRS = [
    ("COCO-Detection/defeat_R50_FPN_1x_from_R101_FPN_3x.yaml", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"),
    ("COCO-Detection/defeat_R18_FPN_1x_from_R50_FPN_3x.yaml", "COCO-Detection/faster_rcnn_R_18_FPN_1x.yaml"),
    ("COCO-Detection/defeat_retinanet_R50_FPN_1x_from_R101_FPN_3x.yaml", "COCO-Detection/retinanet_R_50_FPN_1x.yaml"),
    (
        "COCO-Detection/defeat_retinanet_R50_FPN_1x_from_faster_rcnn_R101_FPN_3x.yaml",
        "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    ),
    (
        "COCO-InstanceSegmentation/defeat_mask_rcnn_R_50_FPN_1x_from_R101_FPN_3x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    ),
]


@pytest.mark.parametrize("defeat_file,plain_file", PAIRS)
def test_plain_config_describes_the_same_student(defeat_file, plain_file):
    defeat = make_cfg(f"configs/{defeat_file}")
    plain = make_cfg(f"configs/{plain_file}")
    assert defeat.MODEL.META_ARCHITECTURE == "DeFeat" + plain.MODEL.META_ARCHITECTURE.replace("GeneralizedRCNN", "RCNN")
    for cfg in (defeat, plain):
        cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.DEFEAT = cfg.OUTPUT_DIR = None
    assert defeat.MODEL == plain.MODEL
    assert defeat.INPUT == plain.INPUT and defeat.DATASETS == plain.DATASETS and defeat.SOLVER == plain.SOLVER


# --- every COCO recipe builds with its real teacher config and takes one training step ----------
# The teacher is the recipe's own config (model_zoo: names resolve from Detectron2's installed
# model zoo) with a random checkpoint saved from it in place of the trained weights.

import glob  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from helpers import REPO  # noqa: E402

RECIPES = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "COCO-*", "defeat_*.yaml"))
    + glob.glob(os.path.join(REPO, "configs", "lazy", "defeat_*.py"))
)
DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg"}


def test_every_coco_recipe_is_listed():
    names = {os.path.basename(p) for p in RECIPES}
    assert {
        "defeat_mask_rcnn_R_50_FPN_1x_from_R101_FPN_3x.yaml",
        "defeat_fcos_R_50_FPN_1x_from_R101_FPN_3x.py",
        "defeat_mask_rcnn_R_50_FPN_100ep_LSJ_from_R101.py",
        "defeat_R50_FPN_1x_from_R101_FPN_3x.yaml",
    } <= names
    assert len(RECIPES) == 7


@pytest.fixture(scope="module")
def random_teachers(tmp_path_factory):
    """``teacher config -> path of a random checkpoint saved from it`` (built once per config)."""
    from detectron2.checkpoint import DetectionCheckpointer

    from defeat.modeling.teacher import _teacher_builder

    cache, root = {}, tmp_path_factory.mktemp("teachers")

    def get(config_file):
        if config_file not in cache:
            build, _, _ = _teacher_builder(config_file, "cpu")
            torch.manual_seed(0)
            folder = root / str(len(cache))
            folder.mkdir()
            DetectionCheckpointer(build(), str(folder)).save("random")
            cache[config_file] = str(folder / "random.pth")
        return cache[config_file]

    return get


def _one_image_batch():
    """One 64x96 image with two boxes and their polygon masks (for the Mask R-CNN recipes)."""
    from detectron2.structures import Boxes, Instances, PolygonMasks

    inst = Instances((64, 96))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 6.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]]))
    inst.gt_classes = torch.tensor([3, 17])
    inst.gt_masks = PolygonMasks(
        [[np.array(b, dtype=np.float64)] for b in ([8, 6, 40, 6, 40, 50, 8, 50], [50, 20, 90, 20, 70, 60])]
    )
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(3, 64, 96, generator=g) * 255, "instances": inst, "height": 64, "width": 96}]


def _build_recipe(recipe, random_teachers):
    from detectron2.config import LazyConfig, instantiate
    from detectron2.modeling import build_model

    if recipe.endswith(".py"):
        cfg = LazyConfig.load(recipe)
        cfg.model.teacher.weights = random_teachers(cfg.model.teacher.config_file)
        cfg.model.teacher.device = "cpu"
        if "square_pad" in cfg.model.backbone:
            cfg.model.backbone.square_pad = 0  # the recipe's 1024 px square padding, at test size
        return instantiate(cfg.model)
    cfg = make_cfg(recipe, "MODEL.DEVICE", "cpu")
    cfg.MODEL.DEFEAT.TEACHER.WEIGHTS = random_teachers(cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE)
    return build_model(cfg)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_builds_with_its_teacher_and_trains_one_step(recipe, random_teachers):
    from detectron2.utils.events import EventStorage

    model = _build_recipe(recipe, random_teachers).train()
    torch.manual_seed(0)
    with EventStorage(0):
        losses = model(_one_image_batch())
    assert DEFEAT_KEYS <= set(losses) and all(torch.isfinite(v) for v in losses.values()), losses
    if "mask" in os.path.basename(recipe):
        assert "loss_mask" in losses
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.distiller.parameters())


def test_plain_mask_rcnn_student_is_the_model_zoo_config():
    from detectron2 import model_zoo

    ours = make_cfg("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    zoo = make_cfg(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    assert ours.MODEL == zoo.MODEL and ours.SOLVER == zoo.SOLVER and ours.INPUT == zoo.INPUT


def test_lazy_fcos_recipe_student_is_the_model_zoo_fcos():
    """The FCOS recipe changes only the meta-architecture (+ teacher, settings, output dir) of
    Detectron2's fcos_R_50_FPN_1x.py, which therefore evaluates its checkpoints."""
    from detectron2.config import LazyConfig
    from detectron2.model_zoo import get_config

    from defeat import DeFeatFCOS
    from defeat.config.settings import resolve_settings

    recipe = LazyConfig.load("configs/lazy/defeat_fcos_R_50_FPN_1x_from_R101_FPN_3x.py")
    plain = get_config("COCO-Detection/fcos_R_50_FPN_1x.py")
    assert recipe.model._target_ is DeFeatFCOS
    assert set(recipe.model) - {"teacher", "defeat"} == set(plain.model)
    for key in set(plain.model) - {"_target_"}:
        assert recipe.model[key] == plain.model[key], key
    assert recipe.dataloader == plain.dataloader and recipe.optimizer == plain.optimizer
    assert recipe.lr_multiplier == plain.lr_multiplier
    settings = resolve_settings(recipe.model.defeat)
    assert settings["neck"]["in_features"] == ["p3", "p4", "p5", "p6", "p7"]
    assert settings["max_iter"] == plain.train.max_iter
    teacher = LazyConfig.load(recipe.model.teacher.config_file)
    assert teacher.model.backbone.bottom_up.stages.depth == 101 and teacher.train.max_iter == 3 * plain.train.max_iter
