"""MODEL.DEFEAT.INHERIT: the teacher's tensors copied into the student at a fresh start only,
checked at build time, logged."""

import logging

import pytest
import torch
from detectron2.modeling import build_model
from helpers import CONFIGS, defeat_cfg

from defeat.checkpoint import AtomicDetectionCheckpointer
from defeat.config.settings import DeFeatConfigError
from defeat.engine.start import load_or_resume

SAME_WIDTHS = ("MODEL.FPN.OUT_CHANNELS", 48, "MODEL.ROI_BOX_HEAD.FC_DIM", 64)  # the tiny teacher's


def _model(teacher_weights, inherit, *opts):
    torch.manual_seed(7)
    return build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.INHERIT", repr(list(inherit)), *opts))


def _matches(model, prefix):
    ours, theirs = model.state_dict(), model.teacher.state_dict()
    names = [n for n in ours if n.startswith(prefix)]
    assert names
    return [torch.equal(ours[n], theirs[n]) for n in names]


def test_fresh_start_copies_the_named_parts_only(teacher_weights, tmp_path, caplog):
    m = _model(teacher_weights, ["backbone.fpn_", "roi_heads.box_head"], *SAME_WIDTHS)
    assert not all(_matches(m, "backbone.fpn_"))  # random weights before the run starts (biases are 0 in both)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="defeat.modeling.inherit"):
        load_or_resume(AtomicDetectionCheckpointer(m, str(tmp_path)), "", False)
    assert all(_matches(m, "backbone.fpn_")) and all(_matches(m, "roi_heads.box_head"))
    after = m.state_dict()
    untouched = [k for k in after if not k.startswith(("backbone.fpn_", "roi_heads.box_head"))]
    assert untouched and all(torch.equal(after[k], before[k]) for k in untouched)
    assert "under 'backbone.fpn_' from the teacher" in caplog.text
    assert "under 'roi_heads.box_head' from the teacher" in caplog.text


def test_resume_keeps_the_checkpoint_not_the_teacher(teacher_weights, tmp_path):
    m = _model(teacher_weights, ["backbone.fpn_"], *SAME_WIDTHS)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("backbone.fpn_"):
                p.fill_(0.5)
    AtomicDetectionCheckpointer(m, str(tmp_path)).save("model_0000009")
    resumed = _model(teacher_weights, ["backbone.fpn_"], *SAME_WIDTHS)
    load_or_resume(AtomicDetectionCheckpointer(resumed, str(tmp_path)), "", True)
    fpn = [v for n, v in resumed.named_parameters() if n.startswith("backbone.fpn_")]
    assert all(torch.all(v == 0.5) for v in fpn)
    # --resume with nothing to resume is a fresh start: it inherits
    fresh = _model(teacher_weights, ["backbone.fpn_"], *SAME_WIDTHS)
    load_or_resume(AtomicDetectionCheckpointer(fresh, str(tmp_path / "empty")), "", True)
    assert all(_matches(fresh, "backbone.fpn_"))


def test_inherit_after_model_weights(teacher_weights, tmp_path):
    """MODEL.WEIGHTS first, then the teacher's parts on top; the rest keeps MODEL.WEIGHTS."""
    src = _model(teacher_weights, [], *SAME_WIDTHS)
    with torch.no_grad():
        for p in src.parameters():
            p.fill_(0.25)
    AtomicDetectionCheckpointer(src, str(tmp_path)).save("init")
    m = _model(teacher_weights, ["proposal_generator"], *SAME_WIDTHS)
    load_or_resume(AtomicDetectionCheckpointer(m, str(tmp_path / "run")), str(tmp_path / "init.pth"), False)
    assert all(_matches(m, "proposal_generator"))
    fpn = [v for n, v in m.named_parameters() if n.startswith("backbone.fpn_")]
    assert all(torch.all(v == 0.25) for v in fpn)


def test_no_inherit_copies_nothing(teacher_weights, tmp_path):
    m = _model(teacher_weights, [], *SAME_WIDTHS)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    load_or_resume(AtomicDetectionCheckpointer(m, str(tmp_path)), "", False)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_prefix_matching_nothing_is_refused_at_build(teacher_weights):
    with pytest.raises(DeFeatConfigError, match=r"prefix 'backbone.fpn_typo' matches no tensor.*'roi_heads'"):
        _model(teacher_weights, ["backbone.fpn_typo"], *SAME_WIDTHS)
    with pytest.raises(DeFeatConfigError, match="matches no tensor"):  # the adapters are DeFeat's own
        _model(teacher_weights, ["distiller"], *SAME_WIDTHS)


def test_shape_mismatch_is_refused_at_build(teacher_weights):
    # the tiny student's FPN is 32 wide, the teacher's 48
    with pytest.raises(
        DeFeatConfigError, match=r"backbone.fpn_\S+ \(32, .*\) in the student vs \(48, .*\) in the teacher"
    ):
        _model(teacher_weights, ["backbone.fpn_"])
    # the bottom-up body has the same shapes in both: allowed
    m = _model(teacher_weights, ["backbone.bottom_up"])
    assert m.inherit_from_teacher() and all(_matches(m, "backbone.bottom_up"))


@pytest.mark.parametrize(
    "value,match",
    [
        ("'backbone.fpn_'", "MODEL.DEFEAT.INHERIT"),  # yacs: a string where a list is expected
        ("['']", "must hold module-name prefixes"),
        ("['backbone', 'backbone']", r"lists \['backbone'\] more than once"),
    ],
)
def test_bad_inherit_values_name_the_setting(teacher_weights, value, match):
    from defeat.config.files import load_config

    with pytest.raises(Exception, match=match):
        cfg = load_config(
            f"{CONFIGS}/tiny_defeat.yaml",
            ["MODEL.DEFEAT.TEACHER.WEIGHTS", teacher_weights, "MODEL.DEFEAT.INHERIT", value],
        )
        build_model(cfg)


def test_lazy_config_inherits(tmp_path):
    from detectron2.config import instantiate
    from helpers import save_random_weights

    from defeat.config.files import load_config

    teacher = save_random_weights(f"{CONFIGS}/tiny_teacher.py", tmp_path)
    cfg = load_config(
        f"{CONFIGS}/tiny_defeat.py", [f"model.teacher.weights={teacher}", "model.defeat.inherit=['backbone.bottom_up']"]
    )
    torch.manual_seed(0)
    m = instantiate(cfg.model)
    load_or_resume(AtomicDetectionCheckpointer(m, str(tmp_path / "run")), "", False)
    assert all(_matches(m, "backbone.bottom_up"))
    with pytest.raises(DeFeatConfigError, match=r"MODEL.DEFEAT.INHERIT = 'x' must be a list.*model.defeat.inherit"):
        load_config(f"{CONFIGS}/tiny_defeat.py", [f"model.teacher.weights={teacher}", "model.defeat.inherit='x'"])


@pytest.mark.parametrize("student_format", ["BGR", "RGB"])
def test_a_teacher_of_the_other_channel_order_gives_its_image_facing_tensors_reversed(
    teacher_weights, tmp_path, student_format
):
    """The tiny teacher reads BGR; an RGB student inheriting its stem gets the first convolution's
    input channels reversed (it sees its input as the teacher saw its); a BGR student gets them
    as they are. Every other tensor is copied unchanged."""
    from defeat.modeling.inherit import image_facing_tensors

    m = _model(teacher_weights, ["backbone.bottom_up"], "INPUT.FORMAT", student_format)
    assert m.teacher.input_format == "BGR" and m.input_format == student_format
    load_or_resume(AtomicDetectionCheckpointer(m, str(tmp_path)), "", False)
    ours, theirs = m.state_dict(), m.teacher.state_dict()
    facing = image_facing_tensors(m)
    assert facing == {"backbone.bottom_up.stem.conv1.weight": 1}
    stem = theirs["backbone.bottom_up.stem.conv1.weight"]
    assert not torch.equal(stem, stem.flip(1))  # a reversal shows
    for name, dim in facing.items():
        expected = theirs[name].flip(dim) if student_format == "RGB" else theirs[name]
        assert torch.equal(ours[name], expected), name
    others = [n for n in ours if n.startswith("backbone.bottom_up") and n not in facing]
    assert others and all(torch.equal(ours[n], theirs[n]) for n in others)
