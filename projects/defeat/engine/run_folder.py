"""A run's hold on its output folder: a lock while it lives, and a start that either gets under
way or leaves the folder exactly as it was.

:class:`RunFolder` is entered by ``train_net.py`` and ``lazy_train_net.py`` on the main process
before anything is checked, written or built:

- the output path must be a folder (or not exist yet) that can be written, given in full (not
  empty, no ``~`` or ``$VARIABLE`` left unexpanded, no link to a missing folder);
- ``OUTPUT_DIR/.defeat-run.lock`` is created with ``O_EXCL`` and holds ``pid host``: a second
  run into the folder is refused, naming the folder and the pid; a lock whose process is gone
  (same host, pid not alive) is stale, named in the log and taken over; the lock is removed when
  the run ends, also on error;
- the folder's top-level entries are noted, with the bytes of the files a start writes
  (``config.yaml``, ``log.txt``, ``metrics.json``, ``last_checkpoint``, the lock): until
  :meth:`RunFolder.started` is called, an error puts every noted file back, removes what the
  start created (and the folder itself if it did not exist) and moves back what
  :meth:`RunFolder.set_aside` moved;
- ``--overwrite`` moves the earlier run's files into ``OUTPUT_DIR/.replaced-<time>/``
  (:func:`set_aside_files`), so no record is deleted and two runs' metrics never merge.
"""

import errno
import logging
import os
import re
import shutil
import socket
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import OutputError

__all__ = ["LOCK_NAME", "REPLACED_PREFIX", "RunFolder", "live_lock", "read_lock", "set_aside_files"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".defeat-run.lock"
REPLACED_PREFIX = ".replaced-"
# The top-level files a start writes in place (kept byte for byte until the run is under way).
# ``~`` and ``$VAR`` / ``${VAR}`` left in a path (a shell expands them; a config does not).
_UNEXPANDED = re.compile(r"\$(\{\w+\}|[A-Za-z_]\w*)")
_START_WRITES = re.compile(r"^(config\.yaml|log\.txt(\.rank\d+)?|metrics\.json|last_checkpoint|\.defeat-run\.lock)$")


def _host() -> str:
    return socket.gethostname()


def read_lock(path: str) -> Optional[Tuple[int, str]]:
    """``(pid, host)`` of the lock file ``path``; None when it is missing or not a lock DeFeat wrote."""
    try:
        with open(path) as f:
            parts = f.read().split()
    except OSError:
        return None
    if len(parts) < 2 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def live_lock(folder: str) -> Optional[Tuple[int, str]]:
    """``(pid, host)`` of the lock a live run holds on ``folder``; None when there is none or it
    is stale (its process gone from this host). A lock of another host, or one DeFeat cannot
    read, counts as live: it cannot be checked from here."""
    path = os.path.join(folder, LOCK_NAME)
    if not os.path.isfile(path):
        return None
    held = read_lock(path)
    if held is None:
        return (0, "unknown")
    pid, host = held
    return held if host != _host() or _alive(pid) else None


def set_aside_files(folder: str, names: Sequence[str]) -> Tuple[str, List[str]]:
    """Move the entries ``names`` of ``folder`` into a new ``folder/.replaced-<YYYYmmdd-HHMMSS>/``
    (a suffix added if that exists); returns that folder and the names moved."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = os.path.join(folder, REPLACED_PREFIX + stamp), 1
    while os.path.exists(target):
        n += 1
        target = os.path.join(folder, f"{REPLACED_PREFIX}{stamp}-{n}")
    os.makedirs(target)
    moved = []
    for name in names:
        if os.path.lexists(os.path.join(folder, name)):
            os.replace(os.path.join(folder, name), os.path.join(target, name))
            moved.append(name)
    return target, moved


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


class RunFolder:
    """The output folder of one run, held from before its checks until its end (a context
    manager; a no-op when ``enabled`` is False, as on every process but the main one).

    Args:
        folder: ``OUTPUT_DIR`` / ``train.output_dir``.
        setting: its config key, named in messages.
        enabled: hold the folder (the main process) or do nothing.
    Raises (on entering):
        OutputError: the path is a file or lies under one, cannot be written, or another live
            run holds the folder's lock.
    """

    def __init__(self, folder: str, setting: str = "OUTPUT_DIR", enabled: bool = True):
        self.folder = folder
        self.setting = setting
        self.enabled = enabled
        self.lock = os.path.join(folder, LOCK_NAME)
        self.notes: List[str] = []  # what the run's log should say about the folder
        self._created: Optional[str] = None  # the top-most folder this start created
        self._before: Dict[str, Optional[Tuple[bytes, int]]] = {}  # name -> (bytes, mtime_ns) or None
        self._aside: Optional[Tuple[str, List[str]]] = None
        self._started = False
        self._own_lock = False

    # ---- entering: a writable folder, its state noted, the lock taken ----

    def _check_writable(self) -> None:
        path, setting = self.folder, self.setting
        if not path.strip():
            raise OutputError(
                f"{setting} is empty; set it to a folder for the run's files (e.g. output/my_run): an empty "
                "path would be the current folder"
            )
        if path.startswith("~") or _UNEXPANDED.search(path):
            raise OutputError(
                f"{setting} {path!r} holds '~' or '$VARIABLE', which a config does not expand (the run would "
                f"create a folder of that literal name); write the path out, e.g. "
                f"{os.path.expandvars(os.path.expanduser(path))!r}"
            )
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(f"{setting} {path!r} is a file, not a folder; set {setting} to a folder")
        existing = os.path.abspath(path)
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        if os.path.islink(existing) and not os.path.exists(existing):
            raise OutputError(
                f"{setting} {path!r}: {existing!r} is a link to {os.readlink(existing)!r}, which does not exist; "
                f"create that folder, or set {setting} to another folder"
            )
        if not os.path.isdir(existing):
            raise OutputError(
                f"{setting} {path!r} lies under the file {existing!r}, not a folder; set {setting} to a folder"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(
                f"{setting} {path!r}: the folder {existing!r} cannot be written (permissions); set {setting} "
                "to a folder you can write, or change its permissions"
            )

    def _note_state(self) -> None:
        if not os.path.isdir(self.folder):
            top = os.path.abspath(self.folder)
            while not os.path.lexists(os.path.dirname(top)):
                top = os.path.dirname(top)
            if not os.path.lexists(top):  # never an entry that was there: the rollback removes it
                self._created = top
            return
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            kept = None
            if _START_WRITES.match(name) and os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    kept = (f.read(), os.stat(path).st_mtime_ns)
            self._before[name] = kept

    def _take_lock(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = read_lock(self.lock)
                if held is None or held[1] != _host() or _alive(held[0]):
                    who = f"process {held[0]} on {held[1]}" if held else "an unknown process"
                    raise OutputError(
                        f"{self.setting} {self.folder!r} is in use by another run ({who} holds "
                        f"{self.lock}). Wait for it to end, or set {self.setting} to another folder; if that "
                        "run is gone (another host, or an unreadable lock), remove the lock file"
                    ) from None
                self.notes.append(
                    f"took over the stale lock {self.lock} of process {held[0]} on {held[1]}, which is no longer "
                    "running (its run ended without removing it)"
                )
                try:
                    os.remove(self.lock)
                except FileNotFoundError:
                    pass  # another start removed it first; O_EXCL decides
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {_host()}\n")
            self._own_lock = True
            return
        raise OutputError(f"{self.setting} {self.folder!r}: another run took the lock {self.lock} first")

    def __enter__(self) -> "RunFolder":
        if not self.enabled:
            return self
        self._check_writable()
        self._note_state()
        try:
            self._take_lock()
        except OutputError:  # held by another run: what is in the folder is that run's
            raise
        except BaseException:
            self._roll_back()
            raise
        return self

    # ---- during the start ----

    def set_aside(self, names: Sequence[str]) -> Optional[str]:
        """Move the earlier run's entries ``names`` into ``.replaced-<time>/`` (moved back if the
        start fails); returns that folder (None when nothing was moved). Once per run."""
        if not self.enabled or not names:
            return None
        target, moved = set_aside_files(self.folder, names)
        self._aside = (target, moved)
        self.notes.append(
            f"--overwrite: the earlier run's {', '.join(moved)} moved to {target} (delete that folder when "
            "it is no longer needed)"
        )
        return target

    def announce(self, log: Optional[logging.Logger] = None) -> None:
        """Log the notes about the folder (a stale lock taken over, the earlier run set aside)
        once the run's log exists."""
        for note in self.notes:
            (log or logger).warning(note)

    def started(self) -> None:
        """The run is under way: from here an error no longer puts the folder back."""
        self._started = True

    # ---- leaving ----

    def _roll_back(self) -> None:
        """Put the folder back as it was noted on entering."""
        if self._created is not None:
            _remove(self._created)
            return
        if not os.path.isdir(self.folder):
            return
        if self._aside is not None:
            target, moved = self._aside
            for name in moved:
                _remove(os.path.join(self.folder, name))
                os.replace(os.path.join(target, name), os.path.join(self.folder, name))
            _remove(target)
        for name in os.listdir(self.folder):
            if name not in self._before:
                _remove(os.path.join(self.folder, name))
        for name, kept in self._before.items():
            path = os.path.join(self.folder, name)
            if kept is None:
                continue
            data, mtime_ns = kept
            current = None
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    current = f.read()
            if current is None:
                _remove(path)
                with open(path, "wb") as f:
                    f.write(data)
            elif current != data:  # in place: a log stream still open on the file (append mode) stays valid
                with open(path, "r+b") as f:
                    f.write(data)
                    f.truncate()
            os.utime(path, ns=(mtime_ns, mtime_ns))

    def _release(self) -> None:
        if not self._own_lock:
            return
        held = read_lock(self.lock)
        if held is not None and held == (os.getpid(), _host()):
            try:
                os.remove(self.lock)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    logger.warning("could not remove the run's lock %s: %s", self.lock, e)
        self._own_lock = False

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.enabled:
            return False
        if exc_type is not None and not self._started:
            self._roll_back()  # puts a stale lock back too, and removes ours
            self._own_lock = False
        else:
            self._release()
        return False
