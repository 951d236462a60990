"""Teacher construction: config chains, model-zoo names, strict weight loading, freezing."""
import pytest
import torch

from conftest import CONFIGS
from defeat import TeacherLoadError, build_teacher
from defeat.teacher import load_teacher_config


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

    from conftest import CONFIGS, defeat_cfg, make_cfg, synthetic_batch

    rgb = ("INPUT.FORMAT", "RGB", "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]",
           "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]")
    cfg_t = tmp_path / "rgb_teacher.yaml"
    cfg_t.write_text(make_cfg(f"{CONFIGS}/tiny_teacher.yaml", *rgb).dump())
    DetectionCheckpointer(build_model(make_cfg(str(cfg_t))), str(tmp_path)).save("t")
    m = build_model(defeat_cfg(str(tmp_path / "t.pth"), "MODEL.DEFEAT.TEACHER.CONFIG_FILE", str(cfg_t)))
    assert m.input_format == "BGR" and m.teacher.input_format == "RGB"
    batch = synthetic_batch()
    images = m.preprocess_image(batch)
    got = m._teacher_images(batch, images).tensor
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    for i, x in enumerate(batch):
        expected = (x["image"].flip(0) - mean) / std
        h, w = expected.shape[-2:]
        assert torch.allclose(got[i, :, :h, :w], expected, atol=1e-5)
    assert not torch.allclose(got, images.tensor)
