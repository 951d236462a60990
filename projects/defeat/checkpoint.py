"""A ``DetectionCheckpointer`` whose files are never left half-written, and resumes that are safe.

Checkpoints and the ``last_checkpoint`` tag are written to a temporary file in the same folder,
flushed to disk and then renamed over the target (atomic on POSIX), so a run killed during a
save still resumes from the previous complete checkpoint. On ``resume``, a newest checkpoint that
is missing, truncated or unreadable (copied, synced or damaged after the fact) is skipped for the
newest intact ``model_XXXXXXX.pth`` with a warning, and a checkpoint of another DeFeat model
(adapter kind, levels or widths) is refused before any weight is loaded.
"""

import contextlib
import logging
import os
import pickle
import re
import zipfile
from typing import List, Mapping, Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .errors import ResumeError, WeightsError

__all__ = [
    "AtomicDetectionCheckpointer",
    "NotACheckpointError",
    "RecordingCheckpointer",
    "loaded_nothing",
    "ResumeError",
    "WeightsError",
    "atomic_write",
    "load_weights_strictly",
    "defeat_only_keys",
    "DEFEAT_KEY_PREFIXES",
    "weight_problems",
    "restore_on_failure",
    "checkpoint_iteration",
    "check_weights_file",
    "UNREADABLE_CHECKPOINT_ERRORS",
    "unreadable_weights_error",
]

logger = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^model_(\d+)\.pth$")


# Prefixes of the tensors a DeFeat model adds to its student's (the adapters and, with the KD
# balance on, its factor; the teacher is kept out of ``state_dict``). A plain student has none of them.
DEFEAT_KEY_PREFIXES = ("distiller.",)


class NotACheckpointError(ValueError):
    """A weight file that reads, but holds no model tensors by name: a pickle or ``torch.save`` of
    another kind (a list, a dict of numbers, an optimizer's state only)."""


def checked_load(load, filename: str) -> dict:
    """``load(filename)`` (Detectron2's ``_load_file``), refused unless it gives a dict whose
    ``"model"`` maps names to tensors (or Detectron's numpy arrays).

    Raises:
        NotACheckpointError: naming the file and what it holds instead.
    """
    try:
        loaded = load(filename)
    except (AttributeError, TypeError, KeyError) as e:  # Detectron2's .pkl reader on a pickle of another kind
        raise NotACheckpointError(f"{filename} is not a checkpoint ({type(e).__name__}: {e})") from e
    model = loaded.get("model") if isinstance(loaded, dict) else None
    if not isinstance(model, Mapping):
        raise NotACheckpointError(
            f"{filename} holds a {type(model).__name__} where a checkpoint holds its tensors by name ('model')"
        )
    bad = next(((k, v) for k, v in model.items() if not isinstance(v, (torch.Tensor, np.ndarray))), None)
    if bad is not None:
        raise NotACheckpointError(
            f"{filename} holds no model weights: its entry {bad[0]!r} is a {type(bad[1]).__name__}, not a tensor"
        )
    return loaded


def loaded_nothing(model, incompatible) -> bool:
    """Whether a load (``incompatible``: what Detectron2's ``_load_model`` returned) left every
    parameter of ``model`` as it was: each one missing from the file or of another shape there."""
    params = {name for name, _ in model.named_parameters()}
    wrong = set(incompatible.missing_keys) | {key for key, *_ in incompatible.incorrect_shapes}
    return bool(params) and params <= wrong


class RecordingCheckpointer(DetectionCheckpointer):
    """A ``DetectionCheckpointer`` that keeps what ``_load_model`` found incompatible
    (``incompatible``: missing keys, unexpected keys, shape mismatches; ``None`` when the file
    held no model weights).

    Detectron2 only logs a warning for missing keys or mismatched shapes and leaves those
    parameters at their random initialisation; callers that must not run a half-random model
    (the teacher, prediction) check it.

    With ``drop_defeat_keys``, the file's tensors under :data:`DEFEAT_KEY_PREFIXES` that the model
    lacks (a DeFeat checkpoint loaded into its plain student) are left out before loading, so
    Detectron2 does not list them as unused; ``dropped`` names them.
    """

    incompatible = None

    def __init__(self, model, *args, drop_defeat_keys: bool = False, **kwargs):
        super().__init__(model, *args, **kwargs)
        self.drop_defeat_keys = drop_defeat_keys
        self.dropped: List[str] = []

    def _load_file(self, filename):
        return checked_load(super()._load_file, filename)

    def _load_model(self, checkpoint):
        if self.drop_defeat_keys and isinstance(checkpoint.get("model"), dict):
            self.dropped = defeat_only_keys(checkpoint["model"], self.model.state_dict())
            for key in self.dropped:
                del checkpoint["model"][key]
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def defeat_only_keys(saved: dict, model_state: dict) -> List[str]:
    """The keys of ``saved`` (a checkpoint's state dict, with or without DDP's ``module.``) under
    :data:`DEFEAT_KEY_PREFIXES` that ``model_state`` does not have."""
    out = []
    for key in saved:
        name = key[len("module.") :] if key.startswith("module.") else key
        if name.startswith(DEFEAT_KEY_PREFIXES) and name not in model_state:
            out.append(key)
    return out


def weight_problems(found, listed: int = 5) -> List[str]:
    """What a load left wrong, from ``RecordingCheckpointer.incompatible`` (``found``): no model
    weights at all, tensors of the wrong shape, tensors missing from the file (first ``listed``)."""
    if found is None:
        return ["the file holds no model weights"]
    problems = []
    if found.incorrect_shapes:
        problems.append(
            f"{len(found.incorrect_shapes)} tensors of another shape (key, checkpoint, model): "
            + ", ".join(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in found.incorrect_shapes[:listed])
        )
    shaped = {k for k, _, _ in found.incorrect_shapes}
    missing = [k for k in found.missing_keys if k not in shaped]
    if missing:
        problems.append(f"{len(missing)} tensors missing from the checkpoint: " + ", ".join(missing[:listed]))
    return problems


def load_weights_strictly(model, weights: str, setting: str = "MODEL.WEIGHTS", allow_random: bool = False):
    """Load ``weights`` into ``model`` (Detectron2's checkpointer: paths, URLs, model-zoo and
    pickled Detectron/pycls files) and refuse a file that leaves any tensor random or mismatched.

    Every entry point that evaluates or predicts loads through this. A DeFeat checkpoint's own
    tensors (``distiller.*``: the adapters) that the model lacks, as under the plain student, are
    left out with one INFO line; other keys in the file that the model lacks are fine (Detectron2
    lists them).
    Args:
        setting: the option or config key that named ``weights`` (in the message).
        allow_random: log the problems instead of raising (an untrained model on purpose).
    Returns:
        ``RecordingCheckpointer.incompatible`` of the load.
    Raises:
        WeightsError: naming the file, ``setting`` and the first tensors left wrong.
    """
    if not weights:
        raise WeightsError(f"{setting} is empty: evaluating or predicting needs trained weights")
    checkpointer = RecordingCheckpointer(model, drop_defeat_keys=True)
    local = os.path.expanduser(weights)
    if "://" not in local and os.path.isdir(local):
        raise WeightsError(f"{setting}: {weights!r} is a folder; give the checkpoint file in it (e.g. model_final.pth)")
    if "://" not in local and not PathManager.isfile(local):
        raise WeightsError(f"{setting}: weights not found: {weights}")
    try:
        checkpointer.load(local)
    except (OSError, RuntimeError, ValueError, EOFError, AssertionError) as e:
        raise WeightsError(f"{setting}: cannot read weights {weights}: {type(e).__name__}: {e}") from e
    if checkpointer.dropped:
        groups = sorted({".".join(k.split(".")[:2]) for k in checkpointer.dropped})
        logger.info(
            "Left out %d tensors of %s that are DeFeat's own (%s): used only while distilling, not by %s",
            len(checkpointer.dropped),
            weights,
            ", ".join(f"{g}.*" for g in groups),
            type(model).__name__,
        )
    problems = weight_problems(checkpointer.incompatible)
    if problems:
        message = (
            f"weights {weights} ({setting}) do not fit {type(model).__name__} of this config: "
            + "; ".join(problems)
            + ". They would be evaluated half-random; use the weights trained with this config (depth, "
            "widths, NUM_CLASSES)"
        )
        if not allow_random:
            raise WeightsError(message)
        logger.warning("%s (allowed: random weights were asked for)", message)
    return checkpointer.incompatible


# What torch, pickle and fvcore raise for a checkpoint that cannot be read back: truncated
# (``PytorchStreamReader failed reading zip archive``: a RuntimeError; EOFError), not a pickle
# (UnpicklingError), unreadable or not downloadable (OSError, urllib's URLError among them), or a
# pickle of another kind (NotACheckpointError).
UNREADABLE_CHECKPOINT_ERRORS = (
    OSError,
    EOFError,
    RuntimeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    NotACheckpointError,
)


def unreadable_weights_error(weights: str, setting: str, error: BaseException) -> WeightsError:
    """A :class:`WeightsError` naming ``weights``, the key ``setting`` that named it and what the
    reader said (``error``), with the fix."""
    said = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return WeightsError(
        f"{setting}: cannot read the weights {weights!r} ({said}). The file is truncated, damaged or not a "
        f"checkpoint: copy it again, or set {setting} to another .pth/.pkl file ('' to start from scratch)"
    )


def check_weights_file(weights: str, setting: str = "MODEL.WEIGHTS") -> None:
    """Refuse, before a run touches anything, a local weight file it could not load: missing, a
    folder, unreadable, or not a checkpoint (a truncated PyTorch zip, a text file). Empty
    ``weights`` (from scratch) and URLs pass (a URL is checked by ``defeat.engine.machine``).

    The kind is read from the file's first and last bytes only: a PyTorch ``.pth`` is a zip
    (its central directory at the end, lost when truncated) or a pickle (first byte 0x80);
    Detectron's ``.pkl`` files are pickles (any non-empty ``.pkl`` passes).

    Raises:
        WeightsError: naming ``setting``, the file, and how to give a usable file.
    """
    if not weights or "://" in weights:
        return
    path = os.path.expanduser(weights)
    if not os.path.exists(path):
        raise WeightsError(
            f"{setting}: {weights!r} is not a file. Point {setting} at an existing checkpoint (train or copy it "
            f"first), or set {setting} '' to start from scratch"
        )
    if os.path.isdir(path):
        raise WeightsError(f"{setting}: {weights!r} is a folder; give the checkpoint file in it (e.g. model_final.pth)")
    if not os.access(path, os.R_OK):
        raise WeightsError(f"{setting}: {weights!r} is not readable (permissions); make it readable or copy it")
    with open(path, "rb") as f:
        first = f.read(2)
    if first and (zipfile.is_zipfile(path) or first[:1] == b"\x80" or path.endswith(".pkl")):
        return  # a .pkl of pickle protocol 0/1 has no marker byte: its reader judges it
    what = "is empty" if not first else "is not a checkpoint (neither a PyTorch zip nor a pickle), or is truncated"
    raise WeightsError(
        f"{setting}: {weights!r} {what}. Give a .pth written by torch.save (a Detectron2 run's model_final.pth) "
        f"or a Detectron .pkl; copy it again if it was cut short"
    )


class _Unreadable(Exception):
    """A checkpoint file that cannot be read back (wraps the reader's exception)."""


def atomic_write(path: str, write, mode: str = "wb") -> None:
    """Call ``write(f)`` on a temporary file, fsync it, then rename it to ``path``."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """Same files and behaviour as ``DetectionCheckpointer``, written atomically (local dirs);
    ``resume_or_load(..., resume=True)`` falls back past unreadable checkpoints and, with
    ``strict_resume`` (default), refuses a checkpoint of another model (``ResumeError``).
    ``strict_resume=False`` is for loading a training run's checkpoint into another model on
    purpose (e.g. its plain student for evaluation)."""

    def __init__(self, model, save_dir: str = "", *, strict_resume: bool = True, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.strict_resume = strict_resume
        self._resume_file = ""  # the checkpoint a resume is reading (named in a refusal)

    def _local(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk or not self._local():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local():
            return super().tag_last_checkpoint(last_filename_basename)
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")

    # ---- resume: fall back past unreadable checkpoints, refuse another model's ----

    def _numbered_checkpoints(self) -> List[str]:
        """``model_XXXXXXX.pth`` files of ``save_dir``, newest iteration first."""
        if not self._local() or not os.path.isdir(self.save_dir):
            return []
        found = [(int(m.group(1)), f) for f in os.listdir(self.save_dir) for m in [_NUMBERED.match(f)] if m]
        return [os.path.join(self.save_dir, f) for _, f in sorted(found, reverse=True)]

    def has_checkpoint(self) -> bool:
        """A ``last_checkpoint`` tag, or (locally) any ``model_XXXXXXX.pth`` to resume from."""
        return super().has_checkpoint() or bool(self._numbered_checkpoints())

    def _resume_candidates(self) -> List[str]:
        tagged = self.get_checkpoint_file() if super().has_checkpoint() else ""
        tagged = tagged if tagged and tagged != self.save_dir + os.sep else ""
        rest = [p for p in self._numbered_checkpoints() if p != tagged]
        return ([tagged] if tagged else []) + rest

    def _load_file(self, filename):
        try:
            return checked_load(super()._load_file, filename)
        except Exception as e:  # truncated (EOFError/RuntimeError), not a pickle, unreadable
            if getattr(self, "_resuming", False):
                raise _Unreadable(f"{type(e).__name__}: {e}") from e
            raise

    incompatible = None  # what the last load left incompatible (Detectron2's _load_model result)

    def _load_model(self, checkpoint):
        if getattr(self, "_resuming", False) and self.strict_resume:
            self._check_same_model(checkpoint.get("model", {}))
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def _check_same_model(self, saved: dict) -> None:
        """Raise :class:`ResumeError` if ``saved`` (a state dict) is of another model: a tensor
        that only one of them has (adapter kind or levels, depth, heads) or any tensor of another
        shape (body, FPN, head or adapter widths)."""
        ours = self.model.state_dict()
        theirs = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in saved.items()}
        changes = []
        for name, keys in (
            ("in the checkpoint only", set(theirs) - set(ours)),
            ("in the model only", set(ours) - set(theirs)),
        ):
            kd = sorted(keys)
            if kd:
                changes.append(f"{name}: " + ", ".join(kd[:6]) + (" ..." if len(kd) > 6 else ""))
        shapes = [
            f"{k} {tuple(theirs[k].shape)} in the checkpoint vs {tuple(v.shape)} in the model"
            for k, v in ours.items()
            if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(v.shape)
        ]
        if shapes:
            changes.append("shapes: " + "; ".join(shapes[:6]) + (" ..." if len(shapes) > 6 else ""))
        if changes:
            raise ResumeError(
                f"--resume: the checkpoint {self._resume_file or self.save_dir} was written by a different model "
                "than this config builds (MODEL.DEFEAT.NECK.ADAPTER, NECK.IN_FEATURES, NECK.ENABLED, a width or "
                "depth of the backbone, FPN or heads, or the architecture changed): "
                + " | ".join(changes)
                + ". Resume with the run's own config "
                "(its config.yaml), or start the changed run in a new output folder (OUTPUT_DIR; "
                "train.output_dir in a LazyConfig)"
            )

    def resume_or_load(self, path: str, *, resume: bool = True):
        """As Detectron2's, but a resume tries the tagged checkpoint, then every
        ``model_XXXXXXX.pth`` newest first, skipping (with a warning) those that cannot be read
        (local ``save_dir``; a remote one resumes as in Detectron2).

        Raises:
            ResumeError: checkpoints exist but none can be read, or the one read belongs to
                another model (see :meth:`_check_same_model`); never a silent fresh start.
            FileNotFoundError: ``path`` is to be loaded and is a local path with no file there.
        """
        fresh = not (resume and self.has_checkpoint())
        if fresh or not self._local():
            if fresh and path and "://" not in path and not os.path.isfile(path):  # a local file that is not there
                raise FileNotFoundError(
                    f"MODEL.WEIGHTS: {path!r} is not a file. Train or copy that checkpoint first (the run "
                    "that writes it), point MODEL.WEIGHTS at an existing one, or set MODEL.WEIGHTS '' "
                    "to start from scratch"
                )
            return super().resume_or_load(path, resume=resume)
        skipped = []
        for candidate in self._resume_candidates():
            if not os.path.isfile(candidate):
                skipped.append(f"{os.path.basename(candidate)} (missing)")
                continue
            self._resuming, self._resume_file = True, candidate
            try:
                out = self.load(candidate)
            except _Unreadable as e:
                self._parsed_url_during_load = None  # DetectionCheckpointer.load resets it on success only
                skipped.append(f"{os.path.basename(candidate)} ({e})")
                continue
            finally:
                self._resuming = False
            if skipped:
                self.logger.warning(
                    "Resuming from %s, the newest intact checkpoint: skipped the newer %s",
                    os.path.basename(candidate),
                    "; ".join(skipped),
                )
            return out
        raise ResumeError(
            f"--resume: no checkpoint in {self.save_dir} can be read: "
            + "; ".join(skipped)
            + ". Restore a checkpoint, or remove last_checkpoint (and the damaged files) to start from scratch"
        )


@contextlib.contextmanager
def restore_on_failure(path: str, enabled: bool = True):
    """Put ``path`` back as it was (or remove it, if it did not exist) when the block raises.

    Used around the set-up of a resumed run: ``default_setup`` rewrites ``config.yaml`` before
    the model and checkpoint are checked, and a refused resume must leave the run as it was."""
    if not enabled:
        yield
        return
    old: Optional[bytes] = None
    if os.path.isfile(path):
        with open(path, "rb") as f:
            old = f.read()
    try:
        yield
    except BaseException:
        if old is not None:
            atomic_write(path, lambda f: f.write(old))
        elif os.path.exists(path):
            os.remove(path)
        raise


def checkpoint_iteration(weights: str) -> Optional[int]:
    """The ``iteration`` a Detectron2 checkpoint (``.pth``) was saved at; None when it has none
    or cannot be read here (remote, pickled Detectron weights)."""
    if not weights or "://" in weights or not weights.endswith(".pth") or not os.path.isfile(weights):
        return None
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    except Exception:  # unreadable: whoever loads the weights reports it
        return None
    it = checkpoint.get("iteration") if isinstance(checkpoint, dict) else None
    return int(it) if isinstance(it, int) else None
