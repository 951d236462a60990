"""``make demo``: teacher, student alone and DeFeat student on the embedded dataset, side by side.

    python -m defeat.demo [--family rcnn|retinanet] [--output output/demo] [--fresh-teacher]
                          [--student-iters N] [--teacher-iters N] [--teacher-processes N]
                          [--precision auto|fp32|bf16]

Runs ``train_net.py`` (from the current directory) with the configs in ``configs/demo`` (Faster
R-CNN by default, RetinaNet with ``--family retinanet``): the teacher first (data-parallel in two
one-thread processes by default; reused when a finished run of the same config exists), then both
students side by side, one CPU thread each. The RetinaNet teacher starts from the Faster R-CNN
demo teacher's weights, so that one is trained (or reused) before it.
Every run trains under bf16 autocast on a CPU that has native bf16 (``--precision auto``, the
default; ``SOLVER.AMP.ENABLED``, see ``defeat.engine.mixed_precision``), in fp32 elsewhere; a cached
teacher is reused whatever precision trained it. Writes ``results.json`` and ``results.md``
(``results_retinanet.*`` for RetinaNet) under the output folder and prints a model-zoo style table.
"""

import argparse
import json
import os
import sys
import time

from ..analysis.cli import at_least
from ..engine.mixed_precision import cpu_bf16_supported
from ..engine.outputs import check_writable
from ..errors import OutputError
from .experiments import (
    config_digest,
    elapsed,
    evaluate_job,
    file_digest,
    format_table,
    iters_opts,
    max_iter,
    read_stamp,
    record_box_metrics,
    run_job,
    run_parallel,
    write_stamp,
)
from .progress import Progress

CONFIGS = "configs/demo"


def _run(label, name):
    """(table row label, config file, output folder name) of one demo run."""
    return (label, f"{CONFIGS}/{name}.yaml", name)


# family -> (teacher, student alone, DeFeat student)
SUITES = {
    "rcnn": (
        _run("teacher R18-FPN", "teacher_R18"),
        _run("student slim-R18-FPN (alone)", "student_slimR18"),
        _run("student slim-R18-FPN + DeFeat", "defeat_slimR18_from_R18"),
    ),
    "retinanet": (
        _run("RetinaNet teacher R18-FPN", "retinanet_teacher_R18"),
        _run("RetinaNet student slim-R18-FPN (alone)", "retinanet_student_slimR18"),
        _run("RetinaNet student slim-R18-FPN + DeFeat", "defeat_retinanet_slimR18_from_R18"),
    ),
}
# family -> the demo teacher whose saved weights initialise the family's teacher (MODEL.WEIGHTS in
# its config): a RetinaNet from scratch learns far too slowly on these images (benchmarks/RESULTS.md).
INIT = {"retinanet": SUITES["rcnn"][0]}
# Seconds per iteration on 2 CPU cores (students: each on one core, side by side). Only used to
# estimate the total ETA of stages that have not started yet (RetinaNet: 2014 s for the teacher's
# 3600 iterations as two data-parallel processes, 333 s for the students' 600).
PRIOR_S_PER_ITER = {"rcnn": {"teacher": 0.60, "students": 0.55}, "retinanet": {"teacher": 0.56, "students": 0.55}}


PRECISIONS = ("auto", "fp32", "bf16")


def _without_precision(opts: list) -> list:
    """``opts`` without a ``SOLVER.AMP.ENABLED <value>`` pair."""
    out, i = [], 0
    while i < len(opts):
        if opts[i] == "SOLVER.AMP.ENABLED":
            i += 2
            continue
        out.append(opts[i])
        i += 1
    return out


def precision_opts(precision: str) -> list:
    """Overrides for ``--precision``: bf16 (``SOLVER.AMP.ENABLED True`` on the CPU) for ``bf16``, and
    for ``auto`` where the CPU has native bf16; none for fp32."""
    if precision == "bf16" or (precision == "auto" and cpu_bf16_supported()):
        return ["SOLVER.AMP.ENABLED", "True"]
    return []


def _ensure_teacher(run, opts, args, later_s, stage, remeasure=True, extra_digest="", fresh=False, defer=False):
    """Train the teacher ``run`` (label, config, folder) under ``args.output``, or reuse a finished
    one of the same config digest (``extra_digest``: the digest of the weights it starts from).
    Returns ``(metrics, weights, note, pending)``; a reused teacher is evaluated again when
    ``remeasure`` and ``args.eval_teacher``. With ``defer``, an evaluation that only the table
    needs (of a reused teacher, or of the saved weights after data-parallel training) is left
    to the caller as ``pending(threads) -> metrics`` (``metrics`` None), to run beside the
    students; otherwise ``pending`` is None."""
    out = os.path.join(args.output, run[2])
    weights = os.path.join(out, "model_final.pth")
    # The cache key leaves the precision out: a teacher trained in fp32 serves a bf16 demo and back.
    digest = config_digest(run[1], _without_precision(opts)) + extra_digest
    record = (None if fresh else read_stamp(out, digest)) or {}
    cached = bool(record)
    n = max_iter(run[1], opts)

    def evaluate(threads=None, after_training=False):
        t0 = time.time()
        metrics = evaluate_job(run[1], weights, os.path.join(out, "eval"), opts, threads=threads)
        if after_training:  # at model_final's iteration: the AP a later DeFeat run logs
            record_box_metrics(out, metrics, n - 1)
        write_stamp(out, digest, metrics)
        print(f"[{stage}] {weights} evaluated: AP {metrics['AP']:.2f} ({elapsed(t0)})", flush=True)
        return metrics

    if cached and (remeasure and args.eval_teacher or record.get("metrics") is None):
        # a cached teacher is measured again before use (or first measured: its evaluation was cut short)
        note = "evaluated on the test set " + ("beside the students" if defer else "before the students")
        print(f"[{stage}] reusing {weights}", flush=True)
        return (None, weights, note, evaluate) if defer else (evaluate(), weights, note, None)
    if cached:
        metrics = record["metrics"]
        print(f"[{stage}] reusing {out} (AP {metrics['AP']:.2f})", flush=True)
        return metrics, weights, "from the end of its training (not evaluated again)", None
    procs = f", {args.teacher_processes} processes" if args.teacher_processes > 1 else ""
    print(f"[{stage}] {run[0]}: {run[1]} ({n} iterations{procs})", flush=True)
    t0 = time.time()
    # Data-parallel processes keep their own BatchNorm running statistics, so an evaluation at
    # the end of training would mix them; the saved weights (the first process's) are what the
    # students see, and are evaluated once, after training, instead.
    parallel = args.teacher_processes > 1
    metrics = run_job(
        run[1],
        out,
        opts,
        on_progress=Progress(later_s).callback(stage, n, t0),
        processes=args.teacher_processes,
        evaluate=not parallel,
    )
    print(f"    {stage} done in {elapsed(t0)}" + ("" if parallel else f": AP {metrics['AP']:.2f}"), flush=True)
    if not parallel:
        write_stamp(out, digest, metrics)
        return metrics, weights, "evaluated on the test set at the end of its training", None
    write_stamp(out, digest, None)  # trained: reused from now on, and evaluated by whoever runs next if cut short here
    note = "its saved weights evaluated on the test set after training"
    if defer:
        return None, weights, note + ", beside the students", lambda threads: evaluate(threads, True)
    return evaluate(after_training=True), weights, note, None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(SUITES), default="rcnn", help="detector family of the demo")
    p.add_argument("--output", default="output/demo")
    p.add_argument("--teacher-iters", type=at_least(1), default=None, help="override SOLVER.MAX_ITER of the teacher")
    p.add_argument("--student-iters", type=at_least(1), default=None, help="override SOLVER.MAX_ITER of both students")
    p.add_argument("--fresh-teacher", action="store_true", help="retrain the teacher even if cached")
    p.add_argument(
        "--teacher-processes",
        type=int,
        default=2,
        help="train the teacher data-parallel in N one-thread processes (2 cores: about 20%% faster than "
        "one 2-thread process); 1 trains it in one process",
    )
    p.add_argument(
        "--no-eval-teacher",
        dest="eval_teacher",
        action="store_false",
        help="take a cached teacher's AP from its stamp instead of evaluating it on the test set again",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="bf16 autocast on a CPU with native bf16 (auto), or always fp32 / bf16",
    )
    args = p.parse_args(argv)
    if args.teacher_processes < 1:
        p.error(f"--teacher-processes must be >= 1, got {args.teacher_processes}")
    try:  # the runs and the results are written under it: refused before the first one trains
        check_writable(args.output, "--output", folder=True)
    except OutputError as e:
        p.error(str(e))
    TEACHER, BASELINE, DEFEAT = SUITES[args.family]
    prior = PRIOR_S_PER_ITER[args.family]
    t_start = time.time()
    amp = precision_opts(args.precision)
    teacher_opts, student_opts = iters_opts(args.teacher_iters) + amp, iters_opts(args.student_iters) + amp
    print(f"[demo] precision: {'bf16 autocast' if amp else 'fp32'} (--precision {args.precision})", flush=True)
    student_iters = max_iter(BASELINE[1], student_opts)
    students_s = student_iters * prior["students"]
    init_digest = ""
    if args.family in INIT:  # the teacher starts from another demo teacher's weights: that one first
        # its total ETA includes the family's teacher (a prior estimate; it may turn out cached)
        teacher_s = max_iter(TEACHER[1], teacher_opts) * prior["teacher"]
        _, init_weights, _, _ = _ensure_teacher(
            INIT[args.family], teacher_opts, args, teacher_s + students_s, "init", False
        )
        teacher_opts = teacher_opts + ["MODEL.WEIGHTS", init_weights]
        init_digest = file_digest(init_weights)  # other starting weights: another teacher
    cache = dict(extra_digest=init_digest, fresh=args.fresh_teacher)
    metrics, weights, teacher_note, pending = _ensure_teacher(
        TEACHER, teacher_opts, args, students_s, "teacher", defer=True, **cache
    )

    print(f"[students] side by side: {BASELINE[1]} and {DEFEAT[1]} ({student_iters} iterations)", flush=True)
    if pending is not None:
        print("    the teacher's evaluation follows the first student to finish", flush=True)
    t0 = time.time()
    progress = Progress(0.0)
    # The DeFeat student, the longest run, first; the teacher's evaluation takes the core the
    # student alone frees first, instead of running before both.
    jobs = [
        dict(
            config_file=DEFEAT[1],
            output_dir=os.path.join(args.output, DEFEAT[2]),
            opts=student_opts + ["MODEL.DEFEAT.TEACHER.WEIGHTS", weights],
            on_progress=progress.callback("defeat", student_iters, t0),
        ),
        dict(
            config_file=BASELINE[1],
            output_dir=os.path.join(args.output, BASELINE[2]),
            opts=student_opts,
            on_progress=progress.callback("baseline", student_iters, t0),
        ),
    ]
    kd, base, *evaluated = run_parallel(jobs + ([pending] if pending is not None else []))
    results = {TEACHER[0]: evaluated[0] if evaluated else metrics}
    print(f"    students done in {elapsed(t0)}", flush=True)
    results[BASELINE[0]], results[DEFEAT[0]] = base, kd
    results["gain (DeFeat - alone)"] = {k: kd[k] - base[k] for k in kd}
    gap = results[TEACHER[0]]["AP"] - base["AP"]
    closed = 100.0 * (kd["AP"] - base["AP"]) / gap if gap > 0 else float("nan")
    title = "DeFeat demo" + (" (RetinaNet)" if args.family == "retinanet" else "") + ": COCO box AP on defeat_demo_val"
    table = format_table(results, title)
    table += f"\n\nTeacher-baseline AP gap closed by DeFeat: {closed:.0f}%  (demo wall time {elapsed(t_start)})\n"
    table += f"Teacher: {TEACHER[1]}, weights {weights}, AP {results[TEACHER[0]]['AP']:.2f} ({teacher_note})\n"
    os.makedirs(args.output, exist_ok=True)
    suffix = "" if args.family == "rcnn" else f"_{args.family}"
    with open(os.path.join(args.output, f"results{suffix}.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.output, f"results{suffix}.json"), "w") as f:
        json.dump({"results": results, "gap_closed_percent": closed}, f, indent=2)
    print("\n" + table, flush=True)
    return results


if __name__ == "__main__":
    from ..engine.entry import run_entry_point

    sys.exit(0 if run_entry_point(main, script="python -m defeat.demo") else 1)
