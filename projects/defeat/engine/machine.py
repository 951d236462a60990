"""What a run needs from the machine, checked before anything is written: the device of
``MODEL.DEVICE`` and the weights it would download.

:func:`check_machine` is part of ``defeat.engine.preflight.check_run``. It refuses, in one line
naming the key and the fix (:class:`~defeat.errors.MachineError`):

- a device name torch does not read (``gpu``, ``CPU``), and a ``cuda`` device where
  ``torch.cuda.is_available()`` is False (``MODEL.DEVICE cpu`` trains on the CPU);
- a weight given as a URL (``detectron2://...``, ``http(s)://...``; ``MODEL.WEIGHTS`` and
  ``MODEL.DEFEAT.TEACHER.WEIGHTS``, LazyConfig ``train.init_checkpoint`` and
  ``model.teacher.weights``) that Detectron2's download cache does not hold (iopath's
  ``HTTPURLHandler``: ``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``, then the path of the
  URL) and whose host does not answer one TCP connection within :data:`PROBE_TIMEOUT_S`
  seconds. With ``DEFEAT_OFFLINE=1`` no connection is tried: every URL weight must be cached.
"""

import os
import socket
import tempfile
from typing import List, Optional, Tuple
from urllib.parse import urlparse

from ..config.files import key_of, model_device, model_weights, override_text, teacher_files
from ..errors import MachineError, env_flag

__all__ = [
    "OFFLINE_ENV",
    "PROBE_TIMEOUT_S",
    "MachineError",
    "check_device",
    "device_problem",
    "check_weights",
    "check_machine",
    "weight_url",
    "cached_file",
    "host_reachable",
    "url_weights",
]

OFFLINE_ENV = "DEFEAT_OFFLINE"  # boolean: no connection is tried, URL weights must be cached
PROBE_TIMEOUT_S = 3.0
DETECTRON2_PREFIX = "detectron2://"
DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2/"  # what Detectron2's handler resolves it to
URL_PREFIXES = ("http://", "https://")


def device_problem(device: str) -> Optional[str]:
    """Why ``device`` cannot run here, or None: not a device name torch reads (``gpu``, ``CPU``),
    or a ``cuda`` device on a machine without CUDA."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError):
        return "not a device name torch reads (cpu, cuda or cuda:N, lowercase)"
    if kind == "cuda" and not torch.cuda.is_available():
        return f"but this machine has no CUDA device (torch {torch.__version__} finds none)"
    return None


def check_device(cfg) -> None:
    """Refuse a device (``MODEL.DEVICE``, ``train.device``) that torch cannot read, or a ``cuda``
    one on a machine without CUDA (:func:`device_problem`).

    Raises:
        MachineError: naming the key and ``cpu``.
    """
    device = str(model_device(cfg) or "cpu")
    problem = device_problem(device)
    if problem is None:
        return
    key = key_of(cfg, "device")
    raise MachineError(
        f"{key} is {device!r}, {problem}: add {override_text(cfg, key, 'cpu')} to the command line to run on the "
        "CPU (docs/custom_dataset.md, without a GPU or internet)"
    )


def weight_url(path: str) -> Optional[str]:
    """The http(s) URL a weight path downloads from (``detectron2://`` resolved as Detectron2
    does); None for a local path."""
    path = str(path or "")
    if path.startswith(DETECTRON2_PREFIX):
        return DETECTRON2_URL + path[len(DETECTRON2_PREFIX) :]
    return path if path.startswith(URL_PREFIXES) else None


def _cache_dirs() -> List[str]:
    """Where iopath caches downloads: ``$FVCORE_CACHE`` (default ``~/.torch/iopath_cache``),
    and the temporary folder it falls back to when that one is not writable."""
    return [
        os.path.expanduser(os.getenv("FVCORE_CACHE", "~/.torch/iopath_cache")),
        os.path.join(tempfile.gettempdir(), "iopath_cache"),
    ]


def _cache_path(cache_dir: str, url: str) -> str:
    return os.path.join(cache_dir, os.path.dirname(urlparse(url).path.lstrip("/")), url.split("/")[-1])


def cached_file(url: str) -> Optional[str]:
    """The file of Detectron2's download cache that holds ``url`` (as iopath names it), or None."""
    for folder in _cache_dirs():
        path = _cache_path(folder, url)
        if os.path.isfile(path):
            return path
    return None


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def url_weights(cfg, model_weights_used: bool = True, teacher_used: bool = True) -> List[Tuple[str, str]]:
    """``[(key, value)]`` of the config's weights given as URLs: the model's (unless
    ``model_weights_used`` is False) and a DeFeat config's teacher's (unless ``teacher_used`` is False)."""
    found = []
    if model_weights_used:
        found.append((key_of(cfg, "weights"), model_weights(cfg)))
    teacher = teacher_files(cfg) if teacher_used else None
    if teacher is not None:
        found.append((key_of(cfg, "teacher_weights"), teacher[1]))
    return [(key, str(value)) for key, value in found if weight_url(value)]


def check_weights(cfg, model_weights_used: bool = True, teacher_used: bool = True) -> None:
    """Refuse a URL weight (:func:`url_weights`) that is not cached and cannot be downloaded
    (``$DEFEAT_OFFLINE``, or its host unreachable).

    Raises:
        MachineError: naming the key, the cache file it would be, and how to give a local file.
    """
    offline = None
    for key, value in url_weights(cfg, model_weights_used, teacher_used):
        url = weight_url(value)
        if cached_file(url):
            continue
        if offline is None:
            offline = env_flag(OFFLINE_ENV)
        if not offline and host_reachable(url):
            continue
        host = urlparse(url).hostname
        why = f"{OFFLINE_ENV} is set" if offline else f"{host} cannot be reached"
        name = url.split("/")[-1]
        teacher = key in ("MODEL.DEFEAT.TEACHER.WEIGHTS", "model.teacher.weights")
        scratch = "" if teacher else f", or {override_text(cfg, key, repr(''))} to train from scratch"
        raise MachineError(
            f"{key} is {value!r}, which must be downloaded, but {why} and Detectron2's download cache does not "
            f"hold it: download {url} on a machine with internet access and give the local file, "
            f"{override_text(cfg, key, '/path/to/' + name)} "
            f"(or copy it to {_cache_path(_cache_dirs()[0], url)}){scratch}"
        )


def check_machine(cfg, model_weights_used: bool = True, teacher_used: bool = True) -> None:
    """:func:`check_device`, then :func:`check_weights` (``model_weights_used`` False: a resumed
    run, which loads its checkpoint instead; ``teacher_used`` False: an evaluation, which builds
    the student only)."""
    check_device(cfg)
    check_weights(cfg, model_weights_used, teacher_used)
