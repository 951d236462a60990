"""Run ``train_net.py`` jobs as subprocesses and collect their COCO box metrics.

Shared by ``python -m defeat run`` (and so the demo) and ``benchmarks/accuracy.py``. Progress (iteration and ETA)
is parsed from Detectron2's own log lines, so any ``train_net.py``-style script works.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from ..analysis.run_summary import format_table
from ..config.paths import is_lazy_config
from ..engine.metrics_file import METRICS, read_box_metrics, record_box_metrics

__all__ = [
    "METRICS",
    "record_box_metrics",
    "load_config",
    "iters_opts",
    "run_job",
    "run_parallel",
    "read_box_metrics",
    "config_digest",
    "format_table",
    "max_iter",
    "is_lazy",
    "lazy_overrides",
    "load_lazy_config",
    "evaluate_job",
    "read_eval_output",
    "file_digest",
    "STAMP",
    "read_stamp",
    "write_stamp",
]

# The package loader (``defeat.config.files``: YAML KEY VALUE overrides, translated for a LazyConfig)
# is imported where it is used: this module imports without Detectron2 (the demo's commands read
# their arguments first).


def load_config(path: str, opts: Sequence[str] = (), **kwargs):
    """``defeat.config.files.load_config`` (imported on first use)."""
    from ..config.files import load_config as load

    return load(path, opts, **kwargs)


def lazy_overrides(opts: Sequence[str]) -> List[str]:
    """``defeat.config.files.lazy_overrides``: YAML ``KEY VALUE`` overrides as LazyConfig ``key=value`` ones."""
    from ..config.files import lazy_overrides as translate

    return translate(opts)


_ITER = re.compile(r"(?:eta: (\S+)\s+)?iter: (\d+)\s+total_loss")


def is_lazy(config_file: str) -> bool:
    """A LazyConfig (``.py``) file, trained with ``lazy_train_net.py``."""
    return is_lazy_config(config_file)


def load_lazy_config(config_file: str, opts: Sequence[str] = ()):
    """A LazyConfig loaded from a file (a ``.py`` file or the ``config.yaml`` a LazyConfig run
    saved), with YAML-style ``opts`` applied (:func:`lazy_overrides`)."""
    return load_config(config_file, lazy_overrides(opts), lazy=True)


def max_iter(config_file: str, opts: Sequence[str] = ()) -> int:
    """The iterations a run of ``config_file`` with YAML-style ``opts`` trains
    (``SOLVER.MAX_ITER``, or ``train.max_iter`` of a LazyConfig)."""
    from ..config.files import load_with_yaml_overrides, run_value

    return int(run_value(load_with_yaml_overrides(config_file, opts), "max_iter"))


def iters_opts(n: Optional[int]) -> List[str]:
    """Overrides for an ``n``-iteration run; ``[]`` for no change. Only ``SOLVER.MAX_ITER``: the
    config loader scales the config's LR steps and warm-ups to it (``defeat.config.iterations``),
    as for ``train_net.py ... SOLVER.MAX_ITER n`` and a LazyConfig's ``train.max_iter=n``."""
    return ["SOLVER.MAX_ITER", str(n)] if n else []


# The record a finished run leaves in its folder: the digest of what trained it and its metrics.
STAMP = "defeat_demo_teacher.json"


def file_digest(path: str) -> str:
    """A short hash of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_stamp(output_dir: str, digest: str, name: str = STAMP) -> Optional[dict]:
    """The record ``{"digest", "metrics"}`` of the finished run in ``output_dir`` when it was made
    with ``digest`` (:func:`config_digest`, plus the digests of what it read); None otherwise (no
    record, an unreadable one, or another digest: the run is to be trained again)."""
    try:
        with open(os.path.join(output_dir, name)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("digest") == digest else None


def write_stamp(output_dir: str, digest: str, metrics: Optional[dict], name: str = STAMP) -> None:
    """Mark the run in ``output_dir`` finished with ``digest`` (``metrics`` None: trained, not yet
    evaluated), for :func:`read_stamp`."""
    with open(os.path.join(output_dir, name), "w") as f:
        json.dump({"digest": digest, "metrics": metrics}, f)


def config_digest(config_file: str, opts: Sequence[str], lazy: Optional[bool] = None) -> str:
    """A hash of a config file (with its ``_BASE_`` chain merged) plus overrides, ``OUTPUT_DIR``
    left out: a cache key. A run's saved ``config.yaml`` (no overrides) has its run's digest
    (``NECK.SCALE_BASE: auto`` is hashed as the number a run records: its training set is read).
    ``lazy``: the file is a LazyConfig (a ``.py`` file, or the ``config.yaml`` that
    ``lazy_train_net.py`` saved); ``None`` decides from the file name."""
    from ..config.files import config_tree, load_with_yaml_overrides, train_dataset_names
    from ..data.box_levels import auto_scale_base_pending, resolve_scale_base
    from ..data.datasets import register_provided_datasets

    cfg = load_with_yaml_overrides(config_file, opts, lazy=lazy)
    if auto_scale_base_pending(cfg):  # SCALE_BASE auto: the number a run of it records in its config.yaml
        register_provided_datasets(train_dataset_names(cfg))
        resolve_scale_base(cfg, log=False)
    text = json.dumps(config_tree(cfg, blank=("output_dir",)), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def run_job(
    config_file: str,
    output_dir: str,
    opts: Sequence[str] = (),
    train_script: str = "train_net.py",
    on_progress: Optional[Callable[[int, str], None]] = None,
    log_name: str = "log_stdout.txt",
    threads: Optional[int] = None,
    processes: int = 1,
    evaluate: bool = True,
    on_start: Optional[Callable[[], None]] = None,
) -> Dict[str, float]:
    """Train (and evaluate) one config in a subprocess; return its final box metrics.

    A LazyConfig (``.py``) trains with ``lazy_train_net.py``; ``opts`` stay in the YAML form and
    are translated (:func:`lazy_overrides`).

    ``on_start()`` is called as the subprocess starts (e.g. ``Progress.start``: a job of
    :func:`run_parallel` may wait for a worker first), ``on_progress(iteration, eta)`` for every
    Detectron2 progress line. The full
    output goes to ``<output_dir>/<log_name>``; on failure its tail is in the raised error.
    ``threads`` sets the job's intra-op threads (``OMP_NUM_THREADS``): on a 2-core machine two
    1-thread jobs side by side train about twice as fast in total as one 2-thread job.
    ``processes > 1`` trains data-parallel on the CPU (``--num-gpus N``: Detectron2's ``launch``
    with gloo, ``SOLVER.IMS_PER_BATCH`` split between them), each with ``threads`` (default 1).
    ``evaluate=False`` trains without a test set (``DATASETS.TEST ()``, YAML configs only) and
    returns ``{}``: for a caller that evaluates the saved weights itself.
    A run already in ``output_dir`` is replaced (``--overwrite``): the caller owns the folder.
    """
    from ..config.files import script_for, script_overrides

    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if not evaluate:
        opts = [*opts, "DATASETS.TEST", "()"]
    train_script = script_for(config_file, train_script)
    try:
        overrides = script_overrides(config_file, ["OUTPUT_DIR", output_dir, *opts])
    except ValueError as e:  # a LazyConfig's loaders have no form of an empty test set
        if evaluate:
            raise
        raise ValueError(f"evaluate=False needs a YAML config; {config_file} is a LazyConfig ({e})") from e
    overrides = ["--overwrite", *overrides]  # the caller owns output_dir: a new run replaces the old
    if processes > 1:
        overrides = ["--num-gpus", str(processes), "--dist-url", "auto", *overrides]
        threads = threads or 1
    if on_start is not None:
        on_start()
    _run_script(train_script, config_file, overrides, output_dir, log_name, threads, on_progress)
    _drop_replaced_runs(output_dir)
    return read_box_metrics(output_dir) if evaluate else {}


def _drop_replaced_runs(output_dir: str) -> None:
    """Remove the earlier runs that ``--overwrite`` moved aside in ``output_dir``
    (``.replaced-<time>/``) once the run that replaced them has finished: the demo and the
    benchmarks own their run folders and re-run them whole."""
    import shutil

    from ..engine.run_folder import REPLACED_PREFIX

    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(REPLACED_PREFIX) and os.path.isdir(path):
            shutil.rmtree(path)


def _run_script(
    train_script: str,
    config_file: str,
    args: Sequence[str],
    output_dir: str,
    log_name: str,
    threads: Optional[int] = None,
    on_progress: Optional[Callable[[int, str], None]] = None,
) -> List[str]:
    """Run ``train_script --config-file config_file *args`` with its output in
    ``<output_dir>/<log_name>``; return the output lines. Raises RuntimeError with the log's tail."""
    if not os.path.isfile(train_script):
        raise FileNotFoundError(f"{train_script} not found; run from the repository root")
    os.makedirs(output_dir, exist_ok=True)
    cmd: List[str] = [sys.executable, train_script, "--config-file", config_file, *args]
    log_path = os.path.join(output_dir, log_name)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    lines: List[str] = []
    popen = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    with open(log_path, "w", buffering=1) as log, subprocess.Popen(cmd, **popen) as proc:  # line-buffered
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            m = _ITER.search(line)
            if m and on_progress is not None:
                on_progress(int(m.group(2)), m.group(1) or "?")
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); log: {log_path}\n" + "".join(lines[-40:]))
    return lines


PER_CATEGORY = "Per-category bbox AP:"  # the line before the per-class table that COCOEvaluator logs


def read_eval_output(lines: Sequence[str]) -> Dict[str, float]:
    """The ``bbox`` metrics of an ``--eval-only`` run, from the ``copypaste:`` lines that
    Detectron2's ``print_csv_format`` writes (task, metric names, values), and the AP of each
    class as ``AP-<class>`` from the table that ``COCOEvaluator`` logs after
    :data:`PER_CATEGORY` (Markdown rows of ``category | AP`` pairs, three decimals), in its order."""
    rows = [line.split("copypaste: ", 1)[1].strip() for line in lines if "copypaste: " in line]
    for i, row in enumerate(rows[:-2]):
        if row == "Task: bbox":
            names, values = rows[i + 1].split(","), rows[i + 2].split(",")
            metrics = {k: float(values[names.index(k)]) for k in METRICS}
            break
    else:
        raise RuntimeError("no bbox metrics in the evaluation output (did the test set load?)")
    start = next((i for i, line in enumerate(lines) if PER_CATEGORY in line), None)
    if start is None:
        return metrics
    table = []
    for line in lines[start + 1 :]:
        if not line.strip().startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    for cells in table[2:]:  # after the header and the alignment row
        for name, value in zip(cells[0::2], cells[1::2]):
            if name:
                metrics[f"AP-{name}"] = float(value)
    return metrics


def evaluate_job(
    config_file: str,
    weights: str,
    output_dir: str,
    opts: Sequence[str] = (),
    train_script: str = "train_net.py",
    threads: Optional[int] = None,
) -> Dict[str, float]:
    """Evaluate ``weights`` with a plain ``config_file`` on its test set (``--eval-only`` in a
    subprocess); return its box metrics. ``opts`` in the YAML form, as for :func:`run_job`;
    ``weights`` wins over a ``MODEL.WEIGHTS`` in them (the weights a run started from)."""
    from ..config.files import script_for, script_overrides

    opts = script_overrides(config_file, ["OUTPUT_DIR", output_dir, *opts, "MODEL.WEIGHTS", weights])
    train_script = script_for(config_file, train_script)
    lines = _run_script(train_script, config_file, ["--eval-only", *opts], output_dir, "log_eval.txt", threads)
    return read_eval_output(lines)


def run_parallel(jobs: Sequence, workers: int = 2) -> List[Dict[str, float]]:
    """Run the jobs ``workers`` at a time, in order as workers free up, with one thread each:
    a dict is ``run_job(**job)``; a callable is called as ``job(threads)`` (e.g. an evaluation
    that fills the core a shorter run leaves idle). Returns their results in the jobs' order."""
    from concurrent.futures import ThreadPoolExecutor

    threads = 1 if workers > 1 else None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(job, threads) if callable(job) else pool.submit(run_job, **dict({"threads": threads}, **job))
            for job in jobs
        ]
        return [f.result() for f in futures]


def elapsed(t0: float) -> str:
    s = int(time.time() - t0)
    return f"{s // 60}:{s % 60:02d}"
