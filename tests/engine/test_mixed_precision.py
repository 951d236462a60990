"""SOLVER.AMP.ENABLED on a CPU: bf16 autocast in the step loop, fp32 weights and losses, resume."""

import math
import os

import pytest
import torch
from helpers import CONFIGS, data_opts, defeat_cfg, metrics_rows, synthetic_batch, train_args

from defeat.engine import mixed_precision
from defeat.engine.mixed_precision import AMPUnsupportedError, CPUAutocastTrainer, build_step_trainer, check_amp

BF16 = pytest.mark.skipif(not mixed_precision.cpu_bf16_supported(), reason="this CPU has no native bf16")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend the CPU has native bf16 (autocast itself runs on any CPU, only slower)."""
    monkeypatch.setattr(mixed_precision, "cpu_bf16_supported", lambda: True)


def test_check_amp_refuses_a_cpu_without_bf16_naming_the_setting(monkeypatch):
    monkeypatch.setattr(mixed_precision, "cpu_bf16_supported", lambda: False)
    with pytest.raises(AMPUnsupportedError, match=r"SOLVER.AMP.ENABLED is on for the CPU.*no native bf16.*False"):
        check_amp(True, "cpu")
    with pytest.raises(AMPUnsupportedError, match="train.amp.enabled"):
        check_amp(True, "cpu", setting="train.amp.enabled")
    check_amp(False, "cpu")  # off: nothing to check


def test_check_amp_refuses_untyped_values_and_missing_cuda(bf16_cpu, monkeypatch):
    for value in ("true", "False", 1, 0.0, None):
        with pytest.raises(AMPUnsupportedError, match=r"must be True or False"):
            check_amp(value, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AMPUnsupportedError, match="CUDA is not available"):
        check_amp(True, "cuda")
    with pytest.raises(AMPUnsupportedError, match="supported on cuda and cpu"):
        check_amp(True, "meta")
    check_amp(True, "cpu")


def test_step_trainer_kind_follows_device_and_switch():
    from detectron2.engine import AMPTrainer, SimpleTrainer

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert type(build_step_trainer(model, [], opt, amp=False, device="cpu")) is SimpleTrainer
    assert type(build_step_trainer(model, [], opt, amp=True, device="cpu")) is CPUAutocastTrainer
    with pytest.warns(Warning):  # Detectron2's GradScaler warns without CUDA; the class is what matters
        assert type(build_step_trainer(model, [], opt, amp=True, device="cuda")) is AMPTrainer


def test_bf16_steps_run_the_convs_in_bf16_and_keep_weights_and_defeat_losses_in_fp32(teacher_weights):
    """Student, teacher and adapters compute in bf16; weights, gradients and every loss stay fp32;
    the weights move and the losses are finite and close to the fp32 step's."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    model = build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.HEAD.ENABLED", "True")).train()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.dtype

        return hook

    model.backbone.bottom_up.stem.conv1.register_forward_hook(record("student"))
    model.teacher.backbone.bottom_up.stem.conv1.register_forward_hook(record("teacher"))
    next(iter(model.distiller.adapters.values())).register_forward_hook(record("adapter"))
    logged = {}
    real_write = CPUAutocastTrainer._write_metrics

    def keep(self, loss_dict, data_time, *a, **k):
        logged.update(loss_dict)
        return real_write(self, loss_dict, data_time, *a, **k)

    batch = synthetic_batch()
    with EventStorage(0):
        ref = {k: float(v.detach()) for k, v in model(batch).items()}  # fp32 losses of the same weights
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    trainer = CPUAutocastTrainer(model, [batch] * 3, torch.optim.SGD(model.parameters(), lr=1e-3))
    trainer._write_metrics = keep.__get__(trainer)
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.run_step()
        first = {k: float(v) for k, v in logged.items()}
        trainer.run_step()

    assert seen == {"student": torch.bfloat16, "teacher": torch.bfloat16, "adapter": torch.bfloat16}
    defeat_keys = {k for k in logged if k.startswith("loss_defeat_")}
    assert defeat_keys == {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
    assert all(v.dtype == torch.float32 for v in logged.values()), {k: v.dtype for k, v in logged.items()}
    assert all(math.isfinite(float(v)) for v in logged.values())
    neck = ("loss_defeat_neck_obj", "loss_defeat_neck_bg")  # no sampling in them: comparable
    for k in neck:  # bf16 keeps 8 bits of mantissa: close to fp32, not equal
        assert first[k] == pytest.approx(ref[k], rel=0.05), k
        assert first[k] != ref[k], k  # it did run in lower precision
    params = dict(model.named_parameters())
    assert all(params[k].dtype == torch.float32 for k in before)
    assert any(not torch.equal(before[k], params[k]) for k in before)
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_amp_on_cpu_trains_through_train_net_and_resumes_across_precisions(
    tiny_dataset, teacher_weights, tmp_path, bf16_cpu
):
    """fp32 for 2 iterations, then --resume under bf16 to 4 (gradient clipping on): the iteration
    count, optimizer state and metrics continue; then back to fp32 to 5."""
    import train_net

    out = str(tmp_path / "run")
    common = [
        *data_opts(out),
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher_weights,
        "SOLVER.CHECKPOINT_PERIOD",
        1,
        "SOLVER.CLIP_GRADIENTS.ENABLED",
        True,
        "TEST.EVAL_PERIOD",
        0,
    ]
    train_net.main(train_args(f"{CONFIGS}/tiny_defeat.yaml", *common, "SOLVER.MAX_ITER", 2))
    step2 = torch.load(os.path.join(out, "model_0000001.pth"), map_location="cpu", weights_only=False)

    cfg = train_net.setup(
        train_args(
            f"{CONFIGS}/tiny_defeat.yaml", *common, "SOLVER.MAX_ITER", 4, "SOLVER.AMP.ENABLED", True, resume=True
        )
    )
    trainer = train_net.Trainer(cfg)
    assert type(trainer._trainer) is CPUAutocastTrainer
    assert hasattr(trainer._trainer.optimizer, "step") and "Clip" in type(trainer._trainer.optimizer).__name__
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    loaded = trainer.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in step2["model"].items())
    trainer.train()
    assert trainer.iter == 4  # Detectron2 leaves iter one past the last step
    iters = [r["iteration"] for r in metrics_rows(out) if "total_loss" in r]
    assert iters == [1, 3]  # each run's last iteration (log period 20)
    assert all(math.isfinite(r["total_loss"]) for r in metrics_rows(out) if "total_loss" in r)

    train_net.main(train_args(f"{CONFIGS}/tiny_defeat.yaml", *common, "SOLVER.MAX_ITER", 5, resume=True))
    assert [r["iteration"] for r in metrics_rows(out) if "total_loss" in r] == [1, 3, 4]


def test_train_net_refuses_amp_on_a_cpu_without_bf16_before_writing(tmp_path, monkeypatch):
    import train_net

    monkeypatch.setattr(mixed_precision, "cpu_bf16_supported", lambda: False)
    out = tmp_path / "never"
    args = train_args(f"{CONFIGS}/tiny_base.yaml", "OUTPUT_DIR", str(out), "SOLVER.AMP.ENABLED", True)
    with pytest.raises(AMPUnsupportedError, match="SOLVER.AMP.ENABLED"):
        train_net.main(args)
    assert not out.exists()


def test_lazy_train_net_refuses_a_string_amp_switch(tmp_path, bf16_cpu):
    """A LazyConfig file that sets ``train.amp.enabled = "true"`` (a string) is refused by name;
    the same string as a command-line override is refused by the override type check."""
    from detectron2.engine import default_argument_parser

    import lazy_train_net

    out = tmp_path / "never"
    config = tmp_path / "amp_string.py"
    base = os.path.abspath("configs/lazy/demo_student_slimR18.py")
    config.write_text(
        "from detectron2.config import LazyConfig\n"
        f"globals().update(LazyConfig.load({base!r}))\n"
        "train.amp.enabled = 'true'\n"
    )
    argv = ["--config-file", str(config), f"train.output_dir={out}"]
    with pytest.raises(AMPUnsupportedError, match=r"train.amp.enabled = 'true' must be True or False"):
        lazy_train_net.main(default_argument_parser().parse_args(argv))
    argv = ["--config-file", base, f"train.output_dir={out}", "train.amp.enabled='true'"]
    with pytest.raises(lazy_train_net.OverrideError, match="train.amp.enabled"):
        lazy_train_net.main(default_argument_parser().parse_args(argv))
    assert not out.exists()


@BF16
def test_this_cpu_reports_native_bf16():
    """Where oneDNN reports native bf16, the check lets AMP through unpatched."""
    check_amp(True, "cpu")


def test_the_step_loop_a_config_gets_on_a_cpu_autocasts_to_bf16():
    """What ``SOLVER.AMP.ENABLED`` builds for a CPU runs its forward under bf16 autocast (fp16 on a
    CPU is slow and overflows): the dtype is read inside the model's forward."""
    from detectron2.utils.events import EventStorage

    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, batch):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return {"loss": (self.w * batch).sum()}

    model = Probe()
    trainer = build_step_trainer(
        model, [torch.ones(2)] * 2, torch.optim.SGD(model.parameters(), lr=0.1), amp=True, device="cpu"
    )
    trainer._write_metrics = lambda *a, **k: None
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.run_step()
    assert seen == [(True, torch.bfloat16)]
