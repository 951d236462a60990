"""The output guard: nothing a run or a tool writes lands on what it reads or on an earlier result.

Every training script, tool, benchmark and the demo goes through these checks before doing any
work:

- :func:`run_inputs` lists what a training or evaluation run reads (its config, ``MODEL.WEIGHTS``,
  the teacher's config and weights, every dataset's json and image folder);
- :func:`check_run_output` refuses an ``OUTPUT_DIR`` whose checkpoints, ``metrics.json`` or
  ``config.yaml`` would replace one of those inputs, or that already holds another run (unless
  ``--resume`` continues it or ``--overwrite`` replaces it: then the earlier run's files are
  moved aside by ``defeat.engine.run_folder``, so no record is deleted and two runs' metrics
  never merge);
- :func:`check_output_dir`, :func:`check_output_files` and :func:`check_distinct_outputs` do the
  same for the folders and files a tool writes (an existing file is kept unless ``--overwrite``);
  the first two also refuse, through :func:`check_writable`, a folder that is a file, a path under
  a file and a folder that cannot be written, so a tool fails before its work, not after it.
"""

import glob
import logging
import os
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import OutputError

__all__ = [
    "OutputError",
    "RUN_RECORD_FILES",
    "check_distinct_outputs",
    "check_output_dir",
    "check_output_files",
    "check_run_output",
    "check_writable",
    "earlier_run_entries",
    "overwritten_input",
    "run_inputs",
    "same_file",
    "written_by_run",
]

logger = logging.getLogger(__name__)

# Files whose presence in OUTPUT_DIR means a run was already there (or is starting there: a fresh
# run has only config.yaml, log.txt and its event file until its first metrics are written).
RUN_RECORD_FILES = ("last_checkpoint", "model_final.pth", "metrics.json", "config.yaml", "log.txt")
_RUN_RECORD_GLOBS = ("events.out.tfevents.*",)
# What a training run writes into OUTPUT_DIR (Detectron2's checkpointer, writers, default_setup).
_TRAIN_WRITES = re.compile(
    r"^(model_final\.pth|model_\d+\.pth|last_checkpoint|metrics\.json|config\.yaml|log\.txt(\.rank\d+)?"
    r"|events\.out\.tfevents\..*)$"
)
# What an evaluation (--eval-only) writes there.
_EVAL_WRITES = re.compile(r"^(config\.yaml|log\.txt(\.rank\d+)?)$")


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (links resolved when both exist)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def overwritten_input(output: str, **inputs: str) -> Optional[str]:
    """An error message if ``output`` is one of the named ``inputs`` (empty ones skipped), else None.

    ``overwritten_input("a.pth", checkpoint="a.pth")`` -> ``"the output 'a.pth' is the
    checkpoint; choose another file name"``.
    """
    for what, path in inputs.items():
        if path and same_file(output, path):
            return f"the output {output!r} is the {what.replace('_', ' ')}; choose another file name"
    return None


def written_by_run(output_dir: str, path: str, eval_only: bool = False) -> bool:
    """Whether a run with ``OUTPUT_DIR`` ``output_dir`` writes (or may write) the file ``path``:
    its checkpoints, ``last_checkpoint``, ``metrics.json``, ``config.yaml``, logs, event files and
    anything under ``inference/``; an evaluation only its config, logs and ``inference/``."""
    if not _inside(path, output_dir):
        return False
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(output_dir))
    if rel.split(os.sep)[0] == "inference":
        return True
    return os.sep not in rel and bool((_EVAL_WRITES if eval_only else _TRAIN_WRITES).match(rel))


def run_inputs(cfg, config_file: str = "", dataset_names: Iterable[str] = ()) -> Dict[str, str]:
    """What a run of ``cfg`` reads, as ``{what: path}``: the config file, the weights it starts
    from, the teacher's config and weights (a DeFeat config) and, for each registered dataset in
    ``dataset_names``, its annotation file and image folder. Remote paths are left out."""
    from ..config.files import model_weights, teacher_files

    found = {"config file (--config-file)": config_file, "weights (MODEL.WEIGHTS)": model_weights(cfg)}
    teacher = teacher_files(cfg)
    if teacher is not None:
        found["teacher config (MODEL.DEFEAT.TEACHER.CONFIG_FILE)"] = teacher[0]
        found["teacher weights (MODEL.DEFEAT.TEACHER.WEIGHTS)"] = teacher[1]
    for name in dataset_names:
        found.update(_dataset_files(name))
    return {
        k: v for k, v in found.items() if isinstance(v, str) and v and "://" not in v and not v.startswith("model_zoo:")
    }


def _dataset_files(name: str) -> Dict[str, str]:
    """The annotation file and image folder of a registered dataset (none when not known)."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    found = {}
    if meta.get("json_file"):
        found[f"annotations of dataset {name!r}"] = str(meta.json_file)
    if meta.get("image_root"):
        found[f"image folder of dataset {name!r}"] = str(meta.image_root)
    return found


def check_run_output(
    output_dir: str,
    inputs: Mapping[str, str],
    *,
    resume: bool = False,
    eval_only: bool = False,
    overwrite: bool = False,
    setting: str = "OUTPUT_DIR",
) -> List[str]:
    """Refuse an output folder that would write over an input or merge with another run.

    Args:
        output_dir: the run's ``OUTPUT_DIR`` (``train.output_dir``).
        inputs: ``{what: path}`` the run reads (:func:`run_inputs`); the config file itself is
            only refused when a run would write a file of that name other than its own record.
        resume: ``--resume``: continuing the run in the folder is what was asked.
        eval_only: ``--eval-only``: only the config, logs and ``inference/`` are written.
        overwrite: ``--overwrite``: replace the run in the folder (nothing is removed here).
        setting: the config key named in messages.
    Returns:
        With ``overwrite``, the names of the earlier run's entries in the folder, to be moved
        aside before the new run writes (``RunFolder.set_aside``); else ``[]``.
    Raises:
        OutputError: naming the input and ``setting``, or the earlier run and the choices.
    """
    for what, path in inputs.items():
        if not path:
            continue
        own_record = what.startswith("config file") and os.path.basename(path) == "config.yaml"
        if not own_record and written_by_run(output_dir, path, eval_only):
            raise OutputError(
                f"{setting} {output_dir!r} would write over the {what}, {path!r}: a run writes its "
                f"checkpoints, metrics.json and config.yaml there. Set {setting} to another folder "
                "(each run its own), or move the file out of it"
            )
        if os.path.isdir(path) and os.path.realpath(path) == os.path.realpath(output_dir):
            raise OutputError(
                f"{setting} {output_dir!r} is the {what}: the run's files would mix with it. "
                f"Set {setting} to another folder"
            )
    if eval_only:
        return []
    present = [f for f in RUN_RECORD_FILES if os.path.isfile(os.path.join(output_dir, f))] + sorted(
        os.path.basename(p) for g in _RUN_RECORD_GLOBS for p in glob.glob(os.path.join(output_dir, g))
    )
    if resume:
        numbered = sorted(glob.glob(os.path.join(output_dir, "model_[0-9]*.pth")))
        if "last_checkpoint" not in present and numbered:
            logger.warning(
                "--resume: %s holds no last_checkpoint; the run resumes from %s, the newest of its numbered "
                "checkpoints",
                output_dir,
                os.path.basename(numbered[-1]),
            )
        elif "last_checkpoint" not in present:
            logger.warning(
                "--resume: %s holds no checkpoint to resume (no last_checkpoint); the run starts from "
                "the beginning (MODEL.WEIGHTS)",
                output_dir,
            )
        return []
    if not present:
        return []
    if not overwrite:
        raise OutputError(
            f"{setting} {output_dir!r} already holds a run ({', '.join(present)}): a new run there would "
            "replace its checkpoints and add its metrics to the same metrics.json. Pass --resume to "
            f"continue that run, --overwrite to replace it, or set {setting} to another folder"
        )
    return earlier_run_entries(output_dir)


def earlier_run_entries(output_dir: str) -> List[str]:
    """The names of the entries of ``output_dir`` that a training run writes (checkpoints,
    ``last_checkpoint``, ``metrics.json``, ``config.yaml``, logs, event files, ``inference/``):
    what ``--overwrite`` moves aside."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(n for n in os.listdir(output_dir) if _TRAIN_WRITES.match(n) or n == "inference")


def check_writable(path: str, option: str = "--output", folder: bool = False) -> None:
    """Refuse an output path that cannot be written: an empty one (the current folder); with
    ``folder``, an existing file; otherwise an existing folder; in both cases a path under a file
    (a "folder" that is a file) or whose nearest existing folder is not writable.

    Raises:
        OutputError: naming ``option``, the path and what to do instead.
    """
    if not str(path).strip():
        what = "folder" if folder else "file"
        raise OutputError(f"{option} is empty; give the {what} to write (an empty path would be the current folder)")
    full = os.path.abspath(path)
    if folder and os.path.exists(full) and not os.path.isdir(full):
        raise OutputError(f"{option} {path!r} is a file, not a folder; give a folder (or move the file away)")
    if not folder and os.path.isdir(full):
        raise OutputError(f"{option} {path!r} is a folder; give a file path in it")
    existing = full if folder else os.path.dirname(full)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(
            f"{option} {path!r} lies under {existing!r}, which is a file, not a folder; choose a path whose "
            "folders are folders"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"{option} {path!r}: the folder {existing!r} is not writable; choose a folder you can write to "
            "(or change its permissions)"
        )


def check_distinct_outputs(pairs: Sequence[Tuple[str, str]], option: str = "--output") -> None:
    """Refuse two inputs that a tool would write to one output file (``pairs``: (input, output)).

    Raises:
        OutputError: naming both inputs and the output.
    """
    seen: Dict[str, str] = {}
    for source, target in pairs:
        key = os.path.realpath(target)
        if key in seen and not same_file(seen[key], source):
            raise OutputError(
                f"{option}: {seen[key]!r} and {source!r} would both be written to {target!r}; "
                "rename one of the inputs or give them separate runs"
            )
        seen[key] = source


def check_output_dir(folder: str, inputs: Mapping[str, str], option: str = "--output") -> None:
    """Refuse an output folder that cannot be written (:func:`check_writable`) or that is, or lies
    inside, one of the input folders in ``inputs`` (``{what: path}``; files and empty paths are
    skipped): its files would mix with the inputs.

    Raises:
        OutputError: naming ``option`` and the input folder (or what makes the folder unwritable).
    """
    check_writable(folder, option, folder=True)
    for what, source in inputs.items():
        if source and os.path.isdir(source) and _inside(folder, source):
            where = "is" if os.path.realpath(folder) == os.path.realpath(source) else "lies inside"
            raise OutputError(
                f"{option} {folder!r} {where} the {what} {source!r}: its files could replace or mix with the "
                "inputs; choose a folder outside it"
            )


def check_output_files(targets: Sequence[str], inputs=(), overwrite: bool = False, option: str = "--output") -> None:
    """Refuse output files that cannot be written (:func:`check_writable`: a folder, a path under a
    file, a folder not writable), that are inputs (``inputs``: paths, or ``{what: path}`` to name
    them) or that exist already (unless ``overwrite``); the first of each problem is named, with
    the count.

    Raises:
        OutputError: naming ``option``.
    """
    for target in targets:
        check_writable(target, option)
    named = dict(inputs) if isinstance(inputs, Mapping) else {f"input {p!r}": p for p in inputs if p}
    sources = {os.path.realpath(p): what for what, p in named.items() if p}
    for target in targets:
        what = sources.get(os.path.realpath(target))
        if what:
            raise OutputError(f"{option}: {target!r} is the {what}; writing it would replace it. Choose another path")
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(
            f"{option}: {existing[0]!r}{more} already exists; pass --overwrite to replace it, or choose another path"
        )
