"""A ``DetectionCheckpointer`` whose files are never left half-written.

Checkpoints and the ``last_checkpoint`` tag are written to a temporary file in the same folder,
flushed to disk and then renamed over the target (atomic on POSIX), so a run killed during a
save still resumes from the previous complete checkpoint.
"""
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicDetectionCheckpointer", "atomic_write"]


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
    """Same files and behaviour as ``DetectionCheckpointer``, written atomically (local dirs)."""

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
