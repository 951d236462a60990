"""Data-parallel training is one training: two processes (on one machine, or as two "machines" on
this host) that each read a different image train exactly like one process reading both.

The two images differ (other colours, other labels) so that a process's gradient on its own image
differs from the average: without DDP's averaging, each process would drift its own way. Their
boxes lie in the same places, so every loss normaliser (RPN samples, RoIs, DeFeat's mask cells) is
the same per image and the average of the two processes' losses is exactly the one-process loss.
Everything runs on the CPU with gloo, whether or not CUDA is present.
"""

import os

import pytest
import torch
from coco_files import write_coco
from helpers import CONFIGS, metrics_rows
from launch_harness import finish, free_port, rank_weights, start

DEFEAT_KEYS = ("loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg")
BOXES = [(6, 8, 20, 14), (30, 30, 24, 28), (40, 4, 12, 20)]  # x, y, w, h (64-px images)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    """``--dataset`` spec of two 64-px images: the same boxes, other classes (so other colours)."""
    root = tmp_path_factory.mktemp("pair")
    classes = {0: (0, 1, 0), 1: (1, 0, 1)}
    names = tuple(f"class{k}" for k in range(10))  # the tiny models' 10 classes
    json_file, images = write_coco(
        str(root), num_images=2, classes=names, boxes=lambda i: [(*b, c) for b, c in zip(BOXES, classes[i])]
    )
    return f"pair={json_file}:{images}"


def _opts(teacher_weights, out):
    # Deterministic sampling: no flip; RPN and RoI batch sizes above the candidate counts (every
    # anchor and proposal is taken). FrozenBN: BatchNorm statistics are per process by design.
    return [
        "--config-file",
        f"{CONFIGS}/tiny_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher_weights,
        "DATASETS.TRAIN",
        "('pair',)",
        "DATASETS.TEST",
        "()",
        "SOLVER.IMS_PER_BATCH",
        2,
        "SOLVER.MAX_ITER",
        3,
        "SOLVER.BASE_LR",
        0.01,
        "SOLVER.WARMUP_ITERS",
        0,
        "SEED",
        0,
        "INPUT.RANDOM_FLIP",
        "none",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
        4096,
        "MODEL.RPN.NMS_THRESH",
        1.0,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        512,
        "MODEL.RESNETS.NORM",
        "FrozenBN",
        "MODEL.DEFEAT.HEAD.ENABLED",
        False,
        "OUTPUT_DIR",
        out,
    ]


@pytest.fixture(scope="module")
def one_process(two_images, teacher_weights, tmp_path_factory):
    """One process, both images in each batch of 2: weights and last metrics."""
    tmp = tmp_path_factory.mktemp("one")
    out = str(tmp / "run")
    finish([start("train_net", ["--dataset", two_images, *_opts(teacher_weights, out)], str(tmp / "w"))])
    return str(tmp / "w"), metrics_rows(out)[-1]


def _assert_same_training(one_dir, ranks_dir):
    (w1,), (s1,) = rank_weights(one_dir, 1), rank_weights(one_dir, 1, "start")
    ranks, starts = rank_weights(ranks_dir, 2), rank_weights(ranks_dir, 2, "start")
    assert ranks[0].keys() == ranks[1].keys() == w1.keys()
    for k in w1:  # all three start alike (DDP broadcasts rank 0's weights; the same seed)
        assert torch.equal(starts[0][k], s1[k]) and torch.equal(starts[1][k], s1[k]), k
    # DDP keeps the replicas identical: each rank read another image, and both hold the same weights.
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    # ... and they are the one-process weights (the average of the two gradients at every step), up
    # to float summation order: within 1 % of how far each tensor moved (one image alone: far more).
    moved = [k for k in w1 if not torch.equal(w1[k], s1[k])]
    assert any(k.startswith("distiller.adapters.") for k in moved) and any(k.startswith("roi_heads") for k in moved)
    for k in moved:
        step = (w1[k] - s1[k]).abs().max()
        assert (ranks[0][k] - w1[k]).abs().max() <= 1e-2 * step + 1e-7, (k, float(step))


@pytest.mark.heavy(seconds=90)
def test_two_processes_on_one_machine_average_like_one_process(one_process, two_images, teacher_weights, tmp_path):
    w1, m1 = one_process
    out = str(tmp_path / "run")
    argv = [
        "--num-gpus",
        2,
        "--dist-url",
        f"tcp://127.0.0.1:{free_port()}",
        "--dataset",
        two_images,
        *_opts(teacher_weights, out),
    ]
    finish([start("train_net", argv, str(tmp_path / "w"))])
    _assert_same_training(w1, str(tmp_path / "w"))
    # The logged losses (averaged over the processes) are the one process's.
    m2 = metrics_rows(out)[-1]
    assert m1["iteration"] == m2["iteration"] == 2
    for key in (*DEFEAT_KEYS[:2], "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "total_loss"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-3, abs=1e-6), key


@pytest.mark.heavy(seconds=55)
def test_two_machines_average_like_one_process(one_process, two_images, teacher_weights, tmp_path):
    w1, m1 = one_process
    out = str(tmp_path / "run")
    url = f"tcp://127.0.0.1:{free_port()}"
    procs = [
        start(
            "train_net",
            [
                "--num-gpus",
                1,
                "--num-machines",
                2,
                "--machine-rank",
                rank,
                "--dist-url",
                url,
                "--dataset",
                two_images,
                *_opts(teacher_weights, out),
            ],
            str(tmp_path / "w"),
        )
        for rank in (0, 1)
    ]
    finish(procs)
    for rank, log in ((0, "log.txt"), (1, "log.txt.rank1")):
        assert f"Rank of current process: {rank}. World size: 2" in open(os.path.join(out, log)).read()
    _assert_same_training(w1, str(tmp_path / "w"))
