"""Multi-process training on CPU (gloo): train_net.py --num-gpus 2, and the teacher kept out of DDP."""

import json
import math

import pytest
import torch
import torch.distributed as dist
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, defeat_cfg, synthetic_batch
from launch_harness import assert_replicas_in_sync, cpu_env, finish, start
from torch.nn.parallel import DistributedDataParallel

DEFEAT_KEYS = ("loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg")


@pytest.fixture
def single_process_group(tmp_path):
    """A world-size-1 gloo process group (file store: nothing listens on a port)."""
    assert not dist.is_initialized()
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_teacher_is_not_wrapped_or_synchronised_by_ddp(teacher_weights, single_process_group):
    torch.manual_seed(0)
    model = build_model(defeat_cfg(teacher_weights)).train()
    teacher_state = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    ddp = DistributedDataParallel(model, device_ids=None, broadcast_buffers=False)  # as train_net's Trainer on CPU

    teacher_params = {id(p) for p in model.teacher.parameters()}
    teacher_buffers = {id(b) for b in model.teacher.buffers()}
    assert teacher_params and not teacher_params & {id(p) for p in ddp.parameters()}
    assert not teacher_buffers & {id(b) for b in ddp.buffers()}
    assert not any("teacher" in name for name, _ in ddp.named_parameters())
    assert ddp.module is model and type(ddp.module.teacher) is GeneralizedRCNN
    assert not isinstance(ddp.module.teacher, DistributedDataParallel)
    assert not any(isinstance(m, DistributedDataParallel) for m in ddp.module.teacher.modules())
    # DDP's reducer covers exactly the student's trainable parameters (+ adapters).
    assert {id(p) for p in ddp.parameters() if p.requires_grad} == {
        id(p) for p in model.parameters() if p.requires_grad
    }

    # Two steps: DDP fails on the second forward if a parameter got no gradient in the first.
    opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.01)
    for it in range(2):
        torch.manual_seed(it)
        with EventStorage(it):
            losses = ddp(synthetic_batch(seed=it))
        assert set(DEFEAT_KEYS) <= set(losses) and all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert not ddp.module.teacher.training
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(torch.equal(v, teacher_state[k]) for k, v in model.teacher.state_dict().items())


@pytest.mark.heavy(seconds=40)
def test_train_net_two_processes_on_cpu(teacher_weights, tmp_path):
    """--num-gpus 2 on the CPU (gloo, CUDA hidden if present): both processes train, log and end
    with the same student weights although each read other images."""
    out = tmp_path / "run"
    env = cpu_env(
        DEFEAT_DEMO_ROOT=tmp_path / "data",  # train_net generates and registers the demo set here
        DEFEAT_DEMO_NUM_TRAIN=4,
        DEFEAT_DEMO_NUM_VAL=2,
    )
    argv = [
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        "--config-file",
        f"{CONFIGS}/tiny_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher_weights,
        "DATASETS.TRAIN",
        "('defeat_demo_train',)",
        "DATASETS.TEST",
        "()",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "3",
        "OUTPUT_DIR",
        str(out),
    ]
    finish([start("train_net", argv, str(tmp_path / "w"), env=env)])
    for rank, log in ((0, "log.txt"), (1, "log.txt.rank1")):
        assert f"Rank of current process: {rank}. World size: 2" in (out / log).read_text()
    assert_replicas_in_sync(str(tmp_path / "w"))

    rows = [json.loads(line) for line in open(out / "metrics.json")]
    last = rows[-1]
    assert last["iteration"] == 2
    for key in ("total_loss", "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", *DEFEAT_KEYS):
        assert key in last and math.isfinite(last[key]), key

    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 2
    single = build_model(defeat_cfg(teacher_weights)).state_dict().keys()
    assert set(saved["model"]) == set(single)
    assert not any(k.startswith("module.") or k.startswith("teacher") for k in saved["model"])
