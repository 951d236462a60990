"""Teacher construction: config chains, model-zoo names, strict weight loading, freezing."""

import pytest
import torch
from helpers import CONFIGS

from defeat import TeacherLoadError, build_teacher
from defeat.modeling.teacher import load_teacher_config


def test_teacher_loads_every_tensor_and_is_frozen(teacher_weights):
    t = build_teacher(f"{CONFIGS}/tiny_teacher.yaml", teacher_weights, "cpu")
    saved = torch.load(teacher_weights, map_location="cpu", weights_only=False)["model"]
    state = t.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k]) for k in state)
    assert not t.training and all(not p.requires_grad for p in t.parameters())
    assert t.backbone.output_shape()["p2"].channels == 48  # _BASE_ chain of the teacher config applied


def test_model_zoo_prefix_resolves_a_bundled_config():
    cfg = load_teacher_config("model_zoo:COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml")
    assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.MODEL.DEVICE == "cpu"


def test_unknown_model_zoo_name():
    with pytest.raises(TeacherLoadError, match="unknown model-zoo teacher config"):
        load_teacher_config("model_zoo:COCO-Detection/nope.yaml")


def test_teacher_reading_rgb_gets_flipped_channels_and_its_own_normalisation(tmp_path):
    """A BGR student with an RGB teacher of other pixel statistics: the teacher's batch is its own
    preprocessing of the channel-flipped images, not the student's tensor."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from helpers import CONFIGS, defeat_cfg, make_cfg, synthetic_batch

    rgb = (
        "INPUT.FORMAT",
        "RGB",
        "MODEL.PIXEL_MEAN",
        "[123.675, 116.28, 103.53]",
        "MODEL.PIXEL_STD",
        "[58.395, 57.12, 57.375]",
    )
    cfg_t = tmp_path / "rgb_teacher.yaml"
    cfg_t.write_text(make_cfg(f"{CONFIGS}/tiny_teacher.yaml", *rgb).dump())
    DetectionCheckpointer(build_model(make_cfg(str(cfg_t))), str(tmp_path)).save("t")
    m = build_model(defeat_cfg(str(tmp_path / "t.pth"), "MODEL.DEFEAT.TEACHER.CONFIG_FILE", str(cfg_t)))
    assert m.input_format == "BGR" and m.teacher.input_format == "RGB"
    batch = synthetic_batch()
    images = m.preprocess_image(batch)
    got = m.teacher_images(batch, images).tensor
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    for i, x in enumerate(batch):
        expected = (x["image"].flip(0) - mean) / std
        h, w = expected.shape[-2:]
        assert torch.allclose(got[i, :, :h, :w], expected, atol=1e-5)
    assert not torch.allclose(got, images.tensor)


# ---- the teacher is sound before step 0 ----


def test_non_finite_teacher_weights_are_refused_naming_the_tensor(teacher_weights, tmp_path):
    state = torch.load(teacher_weights, map_location="cpu", weights_only=False)
    state["model"]["roi_heads.box_head.fc1.weight"][0, 0] = float("nan")
    state["model"]["backbone.fpn_output5.weight"][0] = float("inf")  # a later tensor: the first is named
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(TeacherLoadError, match=r"diverged\.pth' hold non-finite values: backbone\.fpn_output5\.weight"):
        build_teacher(f"{CONFIGS}/tiny_teacher.yaml", str(path))
    del state["model"]["backbone.fpn_output5.weight"]
    state["model"]["backbone.fpn_output5.weight"] = torch.zeros_like(
        torch.load(teacher_weights, map_location="cpu", weights_only=False)["model"]["backbone.fpn_output5.weight"]
    )
    torch.save(state, path)
    with pytest.raises(TeacherLoadError, match=r"roi_heads\.box_head\.fc1\.weight has 1 NaN/inf entries"):
        build_teacher(f"{CONFIGS}/tiny_teacher.yaml", str(path))


def test_non_finite_teacher_buffer_is_refused(teacher_weights, tmp_path):
    state = torch.load(teacher_weights, map_location="cpu", weights_only=False)
    key = next(k for k in state["model"] if k.endswith("running_var") or k.endswith(".bn.running_var"))
    state["model"][key] = state["model"][key].clone().fill_(float("inf"))
    torch.save(state, tmp_path / "t.pth")
    with pytest.raises(TeacherLoadError, match=rf"non-finite values: {key.replace('.', '[.]')}"):
        build_teacher(f"{CONFIGS}/tiny_teacher.yaml", str(tmp_path / "t.pth"))


@pytest.mark.parametrize("kind", ["yaml", "py"])
def test_teacher_that_is_a_user_defeat_subclass_is_refused(teacher_weights, tmp_path, kind):
    """A DeFeat model under a name not starting with 'DeFeat' is recognised by its class, and the
    message does not blame TEACHER.WEIGHTS (which the user did set)."""
    import os
    import sys

    from helpers import REPO

    sys.path.insert(0, os.path.join(REPO, "examples"))
    import custom_rcnn  # noqa: F401  (registers CustomDeFeatRCNN)

    if kind == "yaml":
        cfg = tmp_path / "custom_teacher.yaml"
        cfg.write_text(f'_BASE_: "{CONFIGS}/tiny_defeat.yaml"\nMODEL:\n  META_ARCHITECTURE: "CustomDeFeatRCNN"\n')
    else:
        cfg = tmp_path / "custom_teacher.py"
        cfg.write_text(
            "import sys\n"
            f"sys.path.insert(0, {os.path.join(REPO, 'examples')!r})\n"
            "from custom_rcnn import CustomDeFeatRCNN\n"
            f"from detectron2.config import LazyConfig\n"
            f"model = LazyConfig.load({CONFIGS + '/tiny_defeat.py'!r}).model\n"
            "model._target_ = CustomDeFeatRCNN\n"
        )
    with pytest.raises(TeacherLoadError, match=r"is itself a DeFeat config \(CustomDeFeatRCNN") as e:
        build_teacher(str(cfg), teacher_weights)
    assert "WEIGHTS" not in str(e.value)
    # The same with the target given by its import path (string) in a LazyConfig.
    if kind == "py":
        cfg.write_text(
            cfg.read_text().replace(
                "model._target_ = CustomDeFeatRCNN", "model._target_ = 'custom_rcnn.CustomDeFeatRCNN'"
            )
        )
        with pytest.raises(TeacherLoadError, match="is itself a DeFeat config"):
            build_teacher(str(cfg), teacher_weights)
