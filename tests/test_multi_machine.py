"""Two "machines" on this host (train_net.py --num-machines 2, one gloo process each) train exactly
like one process with the same total batch: same DeFeat losses, same final weights."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import CONFIGS, REPO

DEFEAT_KEYS = ("loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="launch() uses NCCL when CUDA is present; this is the CPU/gloo path"
)
def test_two_machines_match_one_process(teacher_weights, tmp_path):
    from defeat.demo.data import generate_dataset

    # One training image: every batch is that image, so one process's batch of 2 and two
    # machines' batches of 1 hold the same data. Sampling is made deterministic: no flip, and
    # RPN/ROI batch sizes above the candidate counts (every anchor and proposal is taken).
    # FrozenBN: training-mode BN on this tiny model's 2x2 res5 maps turns float rounding of
    # different batch shapes into visible weight differences within three steps.
    data = tmp_path / "data"
    generate_dataset(str(data / "defeat_demo"), num_train=1, num_val=1)
    teacher_cfg = tmp_path / "teacher.yaml"
    teacher_cfg.write_text(
        f'_BASE_: "{CONFIGS}/tiny_teacher.yaml"\nMODEL:\n  ROI_HEADS:\n    BATCH_SIZE_PER_IMAGE: 512\n'
    )
    env = {
        **os.environ,
        "DEFEAT_DATASETS": str(data),
        "DEFEAT_DEMO_NUM_TRAIN": "1",
        "DEFEAT_DEMO_NUM_VAL": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "projects"), REPO]),
    }
    opts = [
        "--config-file",
        f"{CONFIGS}/tiny_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        str(teacher_cfg),
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
        "SEED",
        "0",
        "INPUT.RANDOM_FLIP",
        "none",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
        "4096",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "512",
        "MODEL.RESNETS.NORM",
        "FrozenBN",
    ]
    script = os.path.join(REPO, "train_net.py")

    single = str(tmp_path / "single")
    proc = subprocess.run(
        [sys.executable, script, "--num-gpus", "1", *opts, "OUTPUT_DIR", single],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]

    multi = str(tmp_path / "multi")
    url = f"tcp://127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                script,
                "--num-gpus",
                "1",
                "--num-machines",
                "2",
                "--machine-rank",
                str(rank),
                "--dist-url",
                url,
                *opts,
                "OUTPUT_DIR",
                multi,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    for rank, log in ((0, "log.txt"), (1, "log.txt.rank1")):
        assert f"Rank of current process: {rank}. World size: 2" in open(os.path.join(multi, log)).read()

    # The logged losses (averaged over the machines) are the single process's.
    one, two = _metrics(single)[-1], _metrics(multi)[-1]
    assert one["iteration"] == two["iteration"] == 2
    for key in (*DEFEAT_KEYS, "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "total_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
    assert one["loss_defeat_neck_bg"] > 0 and one["loss_defeat_head_bg"] > 0

    # After three SGD steps the weights are the same (DDP averaged the machines' gradients).
    a = torch.load(os.path.join(single, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    b = torch.load(os.path.join(multi, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    assert set(a) == set(b) and any(k.startswith("distiller.adapters.") for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), (k, (a[k] - b[k]).abs().max())
