"""``make demo``: teacher, student alone and DeFeat student on the embedded dataset, side by side.

    python -m defeat.demo [--output output/demo] [--fresh-teacher] [--student-iters N] [--teacher-iters N]

Stages run ``train_net.py`` (from the current directory) with the configs in ``configs/demo``;
the teacher is reused when a finished run of the same config exists. Writes ``results.json`` and
``results.md`` under the output folder and prints the table.
"""
import argparse
import json
import os
import sys
import time

from .experiments import config_digest, elapsed, format_table, run_job

CONFIGS = "configs/demo"
# Seconds per iteration measured on 2 CPU cores; only used for the overall ETA before a stage starts.
PRIOR_S_PER_ITER = {"teacher": 1.6, "baseline": 0.9, "defeat": 1.4}


def _stage(name, index, total, iters, config, out, opts, state):
    t0 = time.time()
    print(f"[{index}/{total}] {name}: {config} -> {out} ({iters} iterations)", flush=True)

    def progress(it, eta):
        if (it + 1) % 20 == 0 or it + 1 == iters:
            rate = (time.time() - t0) / (it + 1)
            later = sum(n * PRIOR_S_PER_ITER[s] * rate / PRIOR_S_PER_ITER[name] for s, n in state["todo"])
            left = (iters - it - 1) * rate + later
            print(f"    {name} iter {it + 1}/{iters}  stage eta {eta}  total eta {int(left // 60)}:{int(left % 60):02d}", flush=True)

    metrics = run_job(config, out, opts, on_progress=progress)
    print(f"    done in {elapsed(t0)}: AP {metrics['AP']:.2f}", flush=True)
    return metrics


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="output/demo")
    p.add_argument("--teacher-iters", type=int, default=None, help="override SOLVER.MAX_ITER of the teacher")
    p.add_argument("--student-iters", type=int, default=None, help="override SOLVER.MAX_ITER of both students")
    p.add_argument("--fresh-teacher", action="store_true", help="retrain the teacher even if cached")
    p.add_argument("--num-gpus", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    t_start = time.time()

    def iters_opts(n, default_cfg):
        steps = sorted({s for s in (int(n * 0.75), int(n * 0.9)) if 0 < s < n}) if n else []
        return ["SOLVER.MAX_ITER", str(n), "SOLVER.STEPS", "(" + "".join(f"{s}," for s in steps) + ")"] if n else []

    teacher_cfg = f"{CONFIGS}/teacher_R18.yaml"
    teacher_out = os.path.join(args.output, "teacher_R18")
    teacher_opts = iters_opts(args.teacher_iters, teacher_cfg)
    student_opts = iters_opts(args.student_iters, None)
    digest = config_digest(teacher_cfg, teacher_opts)
    stamp = os.path.join(teacher_out, "defeat_demo_teacher.json")
    cached = os.path.isfile(stamp) and json.load(open(stamp)).get("digest") == digest
    from detectron2.config import get_cfg  # after argparse: --help stays fast

    def max_iter(cfg_file, opts):
        from .config import add_defeat_config

        c = get_cfg()
        add_defeat_config(c)
        c.merge_from_file(cfg_file)
        c.merge_from_list(opts)
        return c.SOLVER.MAX_ITER

    stages = [
        ("baseline", f"{CONFIGS}/student_slimR18.yaml", os.path.join(args.output, "student_slimR18"), student_opts),
        ("defeat", f"{CONFIGS}/defeat_slimR18_from_R18.yaml", os.path.join(args.output, "defeat_slimR18_from_R18"), student_opts),
    ]
    if not (cached and not args.fresh_teacher):
        stages.insert(0, ("teacher", teacher_cfg, teacher_out, teacher_opts))
    todo = [(name, max_iter(cfg, opts)) for name, cfg, _, opts in stages]
    results = {}
    if cached and not args.fresh_teacher:
        results["teacher R18-FPN"] = json.load(open(stamp))["metrics"]
        print(f"[teacher] reusing {teacher_out} (AP {results['teacher R18-FPN']['AP']:.2f})", flush=True)
    names = {"teacher": "teacher R18-FPN", "baseline": "student slim-R18-FPN (alone)", "defeat": "student slim-R18-FPN + DeFeat"}
    weights = os.path.join(teacher_out, "model_final.pth")
    for i, (name, cfg, out, opts) in enumerate(stages):
        state = {"todo": todo[i + 1:]}
        extra = ["MODEL.DEFEAT.TEACHER.WEIGHTS", weights] if name == "defeat" else []
        metrics = _stage(name, i + 1, len(stages), todo[i][1], cfg, out, opts + extra, state)
        results[names[name]] = metrics
        if name == "teacher":
            with open(stamp, "w") as f:
                json.dump({"digest": digest, "metrics": metrics}, f)
    base, kd, teacher = (results[names[k]] for k in ("baseline", "defeat", "teacher"))
    results["gain (DeFeat - alone)"] = {k: kd[k] - base[k] for k in kd}
    gap = teacher["AP"] - base["AP"]
    closed = 100.0 * (kd["AP"] - base["AP"]) / gap if gap > 0 else float("nan")
    table = format_table(results, "DeFeat demo (COCO-style box AP on defeat_demo_val)")
    table += f"\n\nTeacher-baseline AP gap closed by DeFeat: {closed:.0f}%  (wall time {elapsed(t_start)})\n"
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump({"results": results, "gap_closed_percent": closed}, f, indent=2)
    print("\n" + table)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
