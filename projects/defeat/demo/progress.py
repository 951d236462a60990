"""Progress lines of training runs that go side by side: each run's iteration and ETA, and the ETA
of all of them.

Shared by ``python -m defeat run`` (and so the demo) and ``benchmarks/accuracy.py``: a run's ``on_start`` and
``on_progress`` callbacks (``defeat.demo.experiments.run_job``) come from one :class:`Progress`.
"""

import heapq
import threading
import time
from typing import Callable, Dict, List, Optional

__all__ = ["Progress", "clock_text", "finish_time"]


def clock_text(seconds: float) -> str:
    """``M:SS`` (minutes not wrapped into hours)."""
    s = max(int(seconds), 0)
    return f"{s // 60}:{s % 60:02d}"


def finish_time(running_left: List[float], queued_s: List[float], workers: Optional[int] = None) -> float:
    """Seconds until the last run ends: the running runs end after ``running_left``; the queued
    ones (``queued_s``: their lengths, in queue order) each start on the first of ``workers`` to
    free up, as ``run_parallel``'s pool takes them (``None``: as many workers as runs)."""
    workers = workers or len(running_left) + len(queued_s)
    free = list(running_left) + [0.0] * max(workers - len(running_left), 0)
    heapq.heapify(free)
    for seconds in queued_s:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free, default=0.0)


class Progress:
    """Prints ``<name> iter i/n  eta <run's ETA>  total eta M:SS`` every ``every`` iterations of a
    run and at its last.

    ``eta`` is Detectron2's own for the run (from its log line). The total ETA is measured: a run's
    seconds per iteration are the time from its start to its last line over its iterations done
    then (its start-up counts); a running run ends after its iterations left at that rate, less
    the time since its last line; runs not started yet (:meth:`add`) take the mean rate of the
    measured ones and start on the first free of ``workers`` (:func:`finish_time`); ``later_s``
    seconds of stages that follow are added. Callbacks may come from several threads.
    """

    def __init__(
        self,
        later_s: float = 0.0,
        workers: Optional[int] = None,
        every: int = 20,
        clock: Callable[[], float] = time.time,
        write: Callable[[str], None] = lambda line: print(line, flush=True),
    ):
        self.later_s, self.workers, self.every, self.clock, self.write = later_s, workers, every, clock, write
        self.lock = threading.Lock()
        self.jobs: Dict[str, dict] = {}  # name -> {"total", "start" (None: queued), "done", "last" (time)}

    def add(self, name: str, total: int) -> None:
        """A run of ``total`` iterations, queued until :meth:`start` (or its first progress line)."""
        with self.lock:
            self.jobs.setdefault(name, {"total": int(total), "start": None, "done": 0, "last": None})

    def start(self, name: str, t0: Optional[float] = None) -> None:
        """Run ``name`` started at ``t0`` (default: now)."""
        with self.lock:
            self.jobs[name]["start"] = self.clock() if t0 is None else t0

    def total_left(self, now: float) -> float:
        """Seconds until every run added has ended, plus ``later_s`` (call with the lock held)."""
        rates = {n: (j["last"] - j["start"]) / j["done"] for n, j in self.jobs.items() if j["done"]}
        mean = sum(rates.values()) / len(rates) if rates else 0.0
        running, queued = [], []
        for name, j in self.jobs.items():
            if j["start"] is None:
                queued.append(j["total"] * mean)
            elif name in rates:  # its iterations left at its own rate, less the time since its last line
                running.append(max((j["total"] - j["done"]) * rates[name] - (now - j["last"]), 0.0))
            else:  # started, no line yet: the mean length less the time it has run
                running.append(max(j["total"] * mean - (now - j["start"]), 0.0))
        return finish_time(running, queued, self.workers) + self.later_s

    def callback(self, name: str, total: int, t0: Optional[float] = None) -> Callable[[int, str], None]:
        """The ``on_progress(iteration, eta)`` of run ``name`` (``total`` iterations); added if new,
        started at ``t0`` when given."""
        self.add(name, total)
        if t0 is not None:
            self.start(name, t0)

        def on_progress(it: int, eta: str) -> None:
            now = self.clock()
            with self.lock:
                job = self.jobs[name]
                if job["start"] is None:  # no on_start: its clock starts at its first line
                    job["start"] = now
                job["done"], job["last"] = it + 1, now
                if (it + 1) % self.every and it + 1 != job["total"]:
                    return
                left = self.total_left(now)
                self.write(f"    {name:>8} iter {it + 1}/{job['total']}  eta {eta}  total eta {clock_text(left)}")

        return on_progress
