"""Offline and GPU-less made explicit: before a run writes anything, a cuda device on a machine
without CUDA and a URL weight that is neither cached nor reachable stop it in one line naming the
key and the fix. The network probe is replaced in every test but the one that serves a local port."""

import socket
from types import SimpleNamespace

import pytest
import torch
from helpers import CONFIGS, defeat_cfg, make_cfg

from defeat.config.files import load_config
from defeat.engine import machine
from defeat.engine.preflight import check_run
from defeat.errors import DeFeatError, MachineError

R50 = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
R50_URL = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
PROBE = machine.host_reachable  # as defined: the autouse fixture replaces the module's attribute
TEACHER = "detectron2://COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/model_final_f6e8b1.pkl"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """An empty download cache, no DEFEAT_OFFLINE, and a probe that finds no host (and counts its calls)."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(machine.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.delenv(machine.OFFLINE_ENV, raising=False)
    calls = []
    monkeypatch.setattr(machine, "host_reachable", lambda url, timeout=machine.PROBE_TIMEOUT_S: calls.append(url))
    return calls


def _args(**kw):
    return SimpleNamespace(**{"config_file": "", "resume": False, "eval_only": False, "overwrite": False, **kw})


def _cfg(tmp_path, *opts):
    return make_cfg(
        f"{CONFIGS}/tiny_base.yaml", "DATASETS.TRAIN", "('unregistered',)", "OUTPUT_DIR", str(tmp_path / "out"), *opts
    )


def _refused(cfg, tmp_path, args=None):
    """check_run's MachineError message; nothing written (no OUTPUT_DIR, no cache folder)."""
    with pytest.raises(MachineError) as e:
        check_run(cfg, args or _args())
    message = str(e.value)
    assert isinstance(e.value, DeFeatError) and "\n" not in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    return message


def test_cuda_without_a_cuda_device_names_the_key_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = _refused(_cfg(tmp_path, "MODEL.DEVICE", "cuda"), tmp_path)
    assert message.startswith("MODEL.DEVICE is 'cuda', but this machine has no CUDA device")
    assert "add MODEL.DEVICE cpu to the command line" in message
    lazy = load_config(f"{CONFIGS}/tiny_base.py", ["train.device=cuda:0"])
    with pytest.raises(MachineError, match=r"train.device is 'cuda:0'.*add train.device=cpu"):
        machine.check_device(lazy)
    # the good path: the CPU, or a machine that has CUDA
    machine.check_device(_cfg(tmp_path, "MODEL.DEVICE", "cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    machine.check_device(_cfg(tmp_path, "MODEL.DEVICE", "cuda"))


def test_an_unreachable_url_weight_names_the_key_and_a_local_file(tmp_path, offline):
    message = _refused(_cfg(tmp_path, "MODEL.WEIGHTS", R50), tmp_path)
    assert message.startswith(f"MODEL.WEIGHTS is {R50!r}, which must be downloaded, but dl.fbaipublicfiles.com")
    assert f"download {R50_URL}" in message and "MODEL.WEIGHTS /path/to/R-50.pkl" in message
    assert "MODEL.WEIGHTS '' to train from scratch" in message and offline == [R50_URL]


def test_an_unreachable_teacher_url_names_the_teacher_key(tmp_path, offline):
    cfg = defeat_cfg(TEACHER, "DATASETS.TRAIN", "('unregistered',)", "OUTPUT_DIR", str(tmp_path / "out"))
    message = _refused(cfg, tmp_path)
    assert message.startswith(f"MODEL.DEFEAT.TEACHER.WEIGHTS is {TEACHER!r}")
    assert "MODEL.DEFEAT.TEACHER.WEIGHTS /path/to/model_final_f6e8b1.pkl" in message and "scratch" not in message
    # an evaluation builds the student only: the teacher's URL is not needed, nor tried
    offline.clear()
    cfg.defrost()
    cfg.DATASETS.TEST = ("unregistered",)
    check_run(cfg, _args(eval_only=True))
    assert offline == []


def test_a_lazy_configs_url_weights(tmp_path):
    lazy = load_config(f"{CONFIGS}/tiny_base.py", [f"train.init_checkpoint={R50}"])
    with pytest.raises(MachineError, match=r"^train.init_checkpoint is .*train.init_checkpoint=/path/to/R-50.pkl"):
        machine.check_weights(lazy)


def test_offline_variable_tries_no_connection(tmp_path, monkeypatch, offline):
    monkeypatch.setenv(machine.OFFLINE_ENV, "1")
    message = _refused(_cfg(tmp_path, "MODEL.WEIGHTS", R50), tmp_path)
    assert "but DEFEAT_OFFLINE is set" in message and offline == []


def test_cached_or_reachable_or_local_weights_pass(tmp_path, monkeypatch, offline):
    cached = tmp_path / "cache" / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    assert machine._cache_path(str(tmp_path / "cache"), R50_URL) == str(cached)  # iopath's layout
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    monkeypatch.setenv(machine.OFFLINE_ENV, "1")
    machine.check_weights(_cfg(tmp_path, "MODEL.WEIGHTS", R50))  # in the cache: no download, offline is fine
    assert machine.cached_file(R50_URL) == str(cached)
    monkeypatch.delenv(machine.OFFLINE_ENV)
    monkeypatch.setattr(machine, "host_reachable", lambda url, timeout=3.0: True)
    machine.check_weights(_cfg(tmp_path, "MODEL.WEIGHTS", "https://example.org/w.pth"))  # reachable
    machine.check_weights(_cfg(tmp_path, "MODEL.WEIGHTS", str(tmp_path / "local.pth")))  # local: not this check's
    assert machine.url_weights(_cfg(tmp_path, "MODEL.WEIGHTS", "")) == []


def test_a_resumed_run_does_not_need_its_model_weights(tmp_path, offline):
    cfg = _cfg(tmp_path, "MODEL.WEIGHTS", R50)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "last_checkpoint").write_text("model_0000001.pth")
    check_run(cfg, _args(resume=True))  # it loads its checkpoint, not MODEL.WEIGHTS
    assert offline == []
    with pytest.raises(MachineError):  # without --resume the weights are loaded
        check_run(cfg, _args(overwrite=True))


def test_the_probe_connects_with_a_timeout():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert PROBE(f"http://127.0.0.1:{port}/w.pth", timeout=2.0)
    finally:
        server.close()
    assert not PROBE(f"http://127.0.0.1:{port}/w.pth", timeout=2.0)  # closed: refused at once
