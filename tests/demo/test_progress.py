"""The progress printer of the demo and benchmarks/accuracy.py: lines, ETAs, the queue of runs."""

import functools
import itertools

import pytest
from test_benchmarks import _load, _Planned

from defeat.demo.progress import Progress, clock_text, finish_time


class Clock:
    """A settable clock for :class:`Progress`."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _brute_force_finish(running, queued, workers):
    """Step time by one unit: each worker runs its job down; a free worker takes the next queued
    job (first in, first out). Integer lengths only."""
    left = list(running) + [0] * (workers - len(running))
    queue, t = list(queued), 0
    while True:
        for i in range(len(left)):
            if left[i] == 0 and queue:
                left[i] = queue.pop(0)
        if not any(left) and not queue:
            return t
        left = [max(x - 1, 0) for x in left]
        t += 1


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_finish_time_schedules_the_queue_like_a_pool(workers):
    for running in itertools.product([0, 3, 7], repeat=min(workers, 2)):
        for queued in ([], [5], [4, 9, 2], [1, 1, 8, 3]):
            assert finish_time(list(running), queued, workers) == _brute_force_finish(running, queued, workers)
    assert finish_time([4.0, 9.0], [], None) == 9.0  # no worker count: every run at once


def test_clock_text():
    assert [clock_text(s) for s in (0, 59.9, 60, 3725, -3)] == ["0:00", "0:59", "1:00", "62:05", "0:00"]


def test_progress_lines_and_total_eta_of_a_queue():
    """Three runs, two workers: a and b start at 0, c waits for the first free worker."""
    clock, lines = Clock(), []
    p = Progress(workers=2, every=5, clock=clock, write=lines.append)
    for name, total in (("a", 10), ("b", 10), ("c", 20)):
        p.add(name, total)
    p.start("a", 0.0)
    p.start("b", 0.0)
    on_a, on_b, on_c = (p.callback(n, t) for n, t in (("a", 10), ("b", 10), ("c", 20)))
    clock.now = 10.0
    on_a(3, "0:00:30")  # 4 of 10: not a multiple of 5, nothing printed
    assert lines == []
    on_a(4, "0:00:12")
    # a: 5 its in 10 s -> 2 s/it, 5 left = 10 s. b: no line yet, mean length 10 x 2 = 20 s, ran 10 s -> 10 s.
    # c: 20 x 2 = 40 s on the first worker free at 10 s -> ends at 50 s.
    assert lines[-1] == "           a iter 5/10  eta 0:00:12  total eta 0:50"
    clock.now = 15.0
    on_b(4, "0:00:15")
    # b: 15 s for 5 -> 3 s/it, 5 left = 15 s. a: 10 s left at its last line 5 s ago -> 5 s.
    # c: 20 x mean(2, 3) = 50 s from the first free worker (5 s) -> 55 s.
    assert lines[-1] == "           b iter 5/10  eta 0:00:15  total eta 0:55"
    clock.now = 20.0
    on_a(9, "0:00:00")  # a done at 20 s: 2 s/it; c from its worker at 0 s: 20 x 2.5 = 50; b 15 - 5 = 10
    assert lines[-1] == "           a iter 10/10  eta 0:00:00  total eta 0:50"
    p.start("c")
    clock.now = 50.0
    on_c(9, "0:00:30")  # 10 of 20, started at 20 s
    # c: 30 s for 10 -> 3 s/it, 10 left = 30 s; b: 15 s left at its line 35 s ago -> 0.
    assert lines[-1] == "           c iter 10/20  eta 0:00:30  total eta 0:30"
    assert len(lines) == 4


def test_progress_of_the_demo_students_and_later_stages():
    """The demo's use: runs started at a stage's start, no queue, the later stages' seconds added."""
    clock, lines = Clock(), []
    p = Progress(later_s=100.0, clock=clock, write=lines.append)
    on_base, on_kd = p.callback("baseline", 40, 0.0), p.callback("defeat", 40, 0.0)
    clock.now = 40.0
    on_base(19, "0:00:40")  # 2 s/it, 20 left: 40 s; defeat (mean 2 s/it, ran 40 s): 40 s; + 100
    clock.now = 60.0
    on_kd(19, "0:01:00")  # 3 s/it, 20 left: 60 s; baseline 40 - 20 = 20 s; + 100
    assert lines == [
        "    baseline iter 20/40  eta 0:00:40  total eta 2:20",
        "      defeat iter 20/40  eta 0:01:00  total eta 2:40",
    ]


def test_accuracy_prints_each_runs_progress_and_the_total_eta(tmp_path, monkeypatch, capsys):
    """benchmarks/accuracy.py gives each planned run a start and a progress callback of one
    printer that knows the queue (--jobs 1: the second run waits for the first)."""
    acc = _load("accuracy")
    clock = Clock()
    monkeypatch.setattr(acc, "Progress", functools.partial(Progress, clock=clock))
    timeline = {"baseline_seed0": (0.0, 2.0), "defeat_seed0": (85.0, 3.0)}  # start, seconds per iteration

    def fake_run_parallel(todo, workers):
        assert workers == 1 and [j["output_dir"].rsplit("/", 1)[1] for j in todo] == list(timeline)
        for job in todo:
            start, rate = timeline[job["output_dir"].rsplit("/", 1)[1]]
            clock.now = start
            job["on_start"]()
            for it in (19, 39):  # Detectron2's progress lines of a 40-iteration run
                clock.now = start + (it + 1) * rate
                job["on_progress"](it, f"eta{it}")
        raise _Planned

    monkeypatch.setattr(acc, "run_parallel", fake_run_parallel)
    teacher = tmp_path / "t.pth"
    teacher.write_bytes(b"")
    argv = ["--teacher-weights", str(teacher), "--no-eval-teacher", "--seeds", "0", "--iters", "40"]
    with pytest.raises(_Planned):
        acc.main(argv + ["--variants", "baseline", "defeat", "--jobs", "1", "--output", str(tmp_path / "out")])
    lines = [line for line in capsys.readouterr().out.splitlines() if " iter " in line]
    # baseline at 40 s: 20 left x 2 s = 40 s, then defeat queued: 40 x 2 s = 80 s -> 2:00.
    # baseline done at 80 s: defeat still 80 s -> 1:20. defeat (started at 85 s) at 145 s: 3 s/it,
    # 20 left -> 1:00; done -> 0:00.
    assert lines == [
        "    baseline_seed0 iter 20/40  eta eta19  total eta 2:00",
        "    baseline_seed0 iter 40/40  eta eta39  total eta 1:20",
        "    defeat_seed0 iter 20/40  eta eta19  total eta 1:00",
        "    defeat_seed0 iter 40/40  eta eta39  total eta 0:00",
    ]
