"""``python -m defeat demo`` trains exactly what the demo trained before it became a front of
``python -m defeat run``: the same trainings and evaluations, each with the same effective config
(overrides and seeds included), number of processes, threads and test set.

Every training (``run_job``) and evaluation (``evaluate_job``) the demo starts is captured, nothing
is trained, and the list is put in a canonical form (:func:`canonical_jobs`): each job's effective
config tree as its subprocess loads it (config file, overrides, ``OUTPUT_DIR``, the empty test set
of a run trained without evaluation, the weights evaluated), with the paths that name this run's
folders replaced by what they point to: weights by the training that wrote them, the DeFeat
student's ``TEACHER.CONFIG_FILE`` by a digest of the teacher config it builds its teacher from
(less the teacher's own training settings, :data:`NOT_BUILT`). The list is compared with
``demo_jobs.json``, recorded once from the demo runner as it was before (``defeat.demo.runner`` at
commit e8fedcb, which trained the README's table) by :func:`record_jobs` and :func:`canonical_jobs`
of this file, on the same :data:`CASES`: ``record_jobs(runner.main, argv, bf16)`` in a fresh folder
for each case, the output written with ``json.dump(..., indent=1, sort_keys=True)``.
"""

import hashlib
import json
import os

import pytest
from helpers import REPO

from defeat.config.files import config_tree, load_with_yaml_overrides
from defeat.engine.metrics_file import METRICS

FIXTURE = os.path.join(REPO, "tests", "demo", "demo_jobs.json")
# name -> (the demo's arguments, a CPU with native bf16 (--precision auto))
CASES = {
    "rcnn": ([], True),  # make demo on the machine of the README's table
    "rcnn-fp32": (["--precision", "fp32"], True),
    "rcnn-auto-no-bf16": ([], False),
    "rcnn-short-one-process": (["--teacher-iters", "7", "--student-iters", "3", "--teacher-processes", "1"], True),
    "retinanet": (["--family", "retinanet"], True),
    "retinanet-short": (["--family", "retinanet", "--teacher-iters", "6", "--student-iters", "4"], False),
}
# Keys the package added after the recording, at the values that leave training as it was: dropped
# from a job's config when they hold exactly these (another value is a difference). The KD balance
# is off at a target ratio of 0 (MODEL.DEFEAT.BALANCE, defeat.config.validation.RULES).
ADDED_SINCE = {"MODEL.DEFEAT.BALANCE.TARGET_RATIO": 0.0, "MODEL.DEFEAT.BALANCE.ITERS": 20}
# The teacher config's parts that a DeFeat student does not build its teacher from: the teacher's
# own training (schedule, precision) and folder.
NOT_BUILT = ("SOLVER", "OUTPUT_DIR")


def _fake_training(calls, output_dir, evaluate, max_iter):
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "model_final.pth"), "wb") as f:
        f.write(f"weights {len(calls)}".encode())
    if evaluate:
        row = {"iteration": max_iter - 1, **{f"bbox/{k}": 1.0 for k in METRICS}}
        with open(os.path.join(output_dir, "metrics.json"), "a") as f:
            f.write(json.dumps(row) + "\n")
    return dict.fromkeys(METRICS, 1.0) if evaluate else {}


def record_jobs(monkeypatch, main, argv, bf16, modules):
    """Run ``main(argv)`` with every training and evaluation replaced by a record of its call (a
    training leaves a ``model_final.pth`` and, when it evaluates, an AP-1 evaluation in its
    ``metrics.json``); ``cpu_bf16_supported`` answers ``bf16``. ``modules``: the modules whose
    ``run_job``, ``evaluate_job`` and ``cpu_bf16_supported`` are replaced. Returns the calls."""
    from defeat.demo.experiments import max_iter

    calls = []

    def run_job(config_file, output_dir, opts=(), threads=None, processes=1, evaluate=True, **kw):
        calls.append(("train", config_file, list(opts), output_dir, processes, threads, evaluate))
        return _fake_training(calls, output_dir, evaluate, max_iter(config_file, opts))

    def evaluate_job(config_file, weights, output_dir, opts=(), threads=None, **kw):
        calls.append(("eval", config_file, list(opts), output_dir, weights, threads))
        return dict.fromkeys(METRICS, 1.0)

    for module in modules:
        for name, fake in (("run_job", run_job), ("evaluate_job", evaluate_job)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, fake)
        if hasattr(module, "cpu_bf16_supported"):
            monkeypatch.setattr(module, "cpu_bf16_supported", lambda: bf16)
    main(argv)
    return calls


def _get(tree, dotted):
    for part in dotted.split("."):
        tree = tree.get(part, {}) if isinstance(tree, dict) else {}
    return tree


def _set(tree, dotted, value):
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[leaf] = value


def without_added(tree):
    """``tree`` without the :data:`ADDED_SINCE` keys that hold their recorded-neutral value (and
    without sections that this leaves empty)."""
    for dotted, neutral in ADDED_SINCE.items():
        *parents, last = dotted.split(".")
        node = _get(tree, ".".join(parents))
        if isinstance(node, dict) and last in node and node[last] == neutral:
            del node[last]
            if not node:
                del _get(tree, ".".join(parents[:-1]))[parents[-1]]
    return tree


def canonical_jobs(calls):
    """The recorded ``calls`` as a sorted list of ``{"kind", "config", ...}`` records (see the module
    docstring); a weights path of one of the trainings becomes ``"weights of <digest>"``, the digest
    of that training's record."""
    from defeat.modeling.teacher import load_teacher_config

    trainings = {os.path.realpath(c[3]): c for c in calls if c[0] == "train"}
    done = {}

    def weights_ref(path):
        folder = os.path.realpath(os.path.dirname(path)) if path else ""
        if folder not in trainings:
            return path
        text = json.dumps(record(trainings[folder]), sort_keys=True)
        return "weights of " + hashlib.sha1(text.encode()).hexdigest()[:12]

    def tree_of(config_file, opts):
        tree = without_added(config_tree(load_with_yaml_overrides(config_file, opts), blank=("output_dir",)))
        for key in ("MODEL.WEIGHTS", "MODEL.DEFEAT.TEACHER.WEIGHTS"):
            if isinstance(_get(tree, key), str):
                _set(tree, key, weights_ref(_get(tree, key)))
        teacher = _get(tree, "MODEL.DEFEAT.TEACHER.CONFIG_FILE")
        if isinstance(teacher, str) and teacher:  # the teacher the student builds, wherever its file is
            built = without_added(config_tree(load_teacher_config(teacher)))
            built = json.dumps({k: v for k, v in built.items() if k not in NOT_BUILT}, sort_keys=True)
            _set(tree, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", "teacher " + hashlib.sha1(built.encode()).hexdigest()[:12])
        return tree

    def record(call):
        key = id(call)
        if key not in done:
            if call[0] == "train":
                _, config_file, opts, output_dir, processes, threads, evaluate = call
                test_set = [] if evaluate else ["DATASETS.TEST", "()"]  # run_job's training without evaluation
                tree = tree_of(config_file, [*opts, *test_set, "OUTPUT_DIR", output_dir])
                done[key] = {"kind": "train", "config": tree, "processes": processes, "threads": threads}
                done[key]["evaluate"] = evaluate
            else:
                _, config_file, opts, output_dir, weights, threads = call
                tree = tree_of(config_file, ["OUTPUT_DIR", output_dir, *opts, "MODEL.WEIGHTS", weights])
                done[key] = {"kind": "eval", "config": tree, "threads": threads}
        return done[key]

    return sorted((record(c) for c in calls), key=lambda r: json.dumps(r, sort_keys=True))


def flat(tree, prefix=""):
    """A nested config tree as ``{dotted key: value}``."""
    out = {}
    for k, v in tree.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _digest(flat_tree):
    return hashlib.sha1(json.dumps(flat_tree, sort_keys=True).encode()).hexdigest()[:12]


def fixture_form(cases):
    """``{case: canonical jobs}`` as stored in :data:`FIXTURE`: each distinct config once, as its
    keys that differ from the first one's (``"base"``), and the jobs naming their config's digest."""
    configs = {_digest(flat(r["config"])): flat(r["config"]) for jobs in cases.values() for r in jobs}
    base = configs[min(configs)]
    stored = {
        d: {"set": {k: v for k, v in c.items() if base.get(k, base) != v}, "unset": sorted(set(base) - set(c))}
        for d, c in configs.items()
    }
    jobs = {n: [dict(r, config=_digest(flat(r["config"]))) for r in rs] for n, rs in cases.items()}
    return {"base": base, "configs": stored, "cases": jobs}


def expand(fixture):
    """:func:`fixture_form`'s output back as ``{case: jobs}``, each config a flat tree."""
    base = fixture["base"]

    def config(d):
        c = dict(base, **fixture["configs"][d]["set"])
        return {k: v for k, v in c.items() if k not in fixture["configs"][d]["unset"]}

    return {n: [dict(r, config=config(r["config"])) for r in rs] for n, rs in fixture["cases"].items()}


def _fields(job):
    """A job's fields and its config's keys, in one flat dict."""
    return {**{k: v for k, v in job.items() if k != "config"}, **job["config"]}


def _differences(expected, got):
    """For each job of ``got`` that ``expected`` lacks: what differs from the closest expected job."""
    lines = []
    for job in got:
        if job in expected:
            continue
        new = _fields(job)
        olds = [_fields(old) for old in expected]
        differ = [sorted(k for k in {*old, *new} if old.get(k, "-") != new.get(k, "-")) for old in olds]
        closest = min(range(len(olds)), key=lambda i: len(differ[i]))
        changes = (f"{k}: {olds[closest].get(k, '-')!r} -> {new.get(k, '-')!r}" for k in differ[closest])
        lines.append(f"{job['kind']} job: " + "; ".join(changes))
    return "\n".join(lines) or f"{len(expected)} jobs expected, {len(got)} run"


@pytest.mark.heavy(seconds=60)
@pytest.mark.parametrize("case", sorted(CASES))
def test_demo_trains_what_it_trained_before(case, tmp_path, monkeypatch, demo_data):
    from defeat.demo import experiments, pipeline, runner

    monkeypatch.setattr(pipeline, "deploy", lambda *a, **k: None)  # nothing to export from fake weights
    argv, bf16 = CASES[case]
    modules = [runner, pipeline, experiments]
    calls = record_jobs(monkeypatch, runner.main, ["--output", str(tmp_path / "demo"), *argv], bf16, modules)
    expected = expand(json.load(open(FIXTURE)))[case]
    got = [dict(r, config=flat(r["config"])) for r in canonical_jobs(calls)]
    order = lambda jobs: sorted(jobs, key=lambda r: json.dumps(r, sort_keys=True))  # noqa: E731
    assert order(got) == order(expected), _differences(expected, got)
