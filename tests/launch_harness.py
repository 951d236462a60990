"""Multi-process test scaffolding: run ``train_net.py`` / ``lazy_train_net.py`` in subprocesses on the
CPU (gloo, whether or not CUDA is present) and read back every process's final weights.

``python tests/launch_harness.py SCRIPT [script arguments]`` runs the script as its ``__main__``
would (same argument parsing, ``--dataset`` registration and ``launch``), and each process saves
its model's ``state_dict`` as ``$RANK_WEIGHTS_DIR/rank<r>_start.pth`` when training starts and
``rank<r>_final.pth`` when it ends.
"""

import functools
import importlib
import os
import socket
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.abspath(__file__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(**extra) -> dict:
    """The environment of a CPU-only multi-process run: CUDA hidden (so ``launch`` uses gloo),
    one thread per process, the repository importable."""
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "projects"), REPO]),
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(script: str, argv, weights_dir: str, env=None) -> subprocess.Popen:
    """Start ``script`` (``train_net`` or ``lazy_train_net``) through this harness."""
    env = dict(env or cpu_env(), RANK_WEIGHTS_DIR=weights_dir)
    os.makedirs(weights_dir, exist_ok=True)
    cmd = [sys.executable, HARNESS, script, *[str(a) for a in argv]]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs, timeout=400):
    """Wait for every process; assert each exited 0 (its output's tail in the message)."""
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


def rank_weights(weights_dir: str, world_size: int, when: str = "final"):
    """The weights of ranks ``0..world_size-1`` (state dicts) at the ``"start"`` or the
    ``"final"`` of training."""
    return [torch.load(os.path.join(weights_dir, f"rank{r}_{when}.pth"), weights_only=False) for r in range(world_size)]


BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def assert_replicas_in_sync(weights_dir: str) -> None:
    """Ranks 0 and 1 started and ended with the same parameters (DDP broadcast rank 0's at the
    start and averaged every gradient), and training moved them. BatchNorm running statistics
    are per process (``broadcast_buffers=False``) and are left out."""
    for when in ("start", "final"):
        a, b = rank_weights(weights_dir, 2, when)
        assert a.keys() == b.keys()
        for k in a:
            if not k.endswith(BN_STATS):
                assert torch.equal(a[k], b[k]), (when, k, float((a[k] - b[k]).abs().max()))
    start, final = rank_weights(weights_dir, 1, "start")[0], rank_weights(weights_dir, 1)[0]
    assert any(not torch.equal(start[k], final[k]) for k in start if k.startswith("distiller.adapters."))
    assert any(not torch.equal(start[k], final[k]) for k in start if k.startswith("backbone."))


def _save_rank_weights_around_training(weights_dir: str) -> None:
    import detectron2.utils.comm as comm
    from detectron2.engine.train_loop import TrainerBase

    def save(trainer, when):
        model = getattr(trainer, "_trainer", trainer).model  # DefaultTrainer wraps a SimpleTrainer
        model = getattr(model, "module", model)  # DDP
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch.save(state, os.path.join(weights_dir, f"rank{comm.get_rank()}_{when}.pth"))

    before, after = TrainerBase.before_train, TrainerBase.after_train

    def before_train(self):
        before(self)  # hooks first: a resumed run has its weights loaded by then
        save(self, "start")

    def after_train(self):
        after(self)
        save(self, "final")

    TrainerBase.before_train, TrainerBase.after_train = before_train, after_train


def _worker(script: str, args):
    _save_rank_weights_around_training(os.environ["RANK_WEIGHTS_DIR"])
    return importlib.import_module(script).main(args)


def _main(argv):
    sys.path.insert(0, REPO)
    from defeat.engine.script import launch_main, parse_args

    launch_main(functools.partial(_worker, argv[0]), parse_args(argv[1:]))


if __name__ == "__main__":
    _main(sys.argv[1:])
