"""The results summary of one's own runs: teacher, student alone and DeFeat student side by side.

The same model-zoo table as ``python -m defeat run`` and the demo (:func:`format_table`), with the gain row
(DeFeat - alone) and the share of the teacher-student AP gap that DeFeat closes; optionally the
per-class AP that Detectron2's ``COCOEvaluator`` logs (``bbox/AP-<class>``). Each run's metrics
come from its folder's ``metrics.json`` (:func:`read_run`: the last ``bbox`` evaluation of the
last run in it) or from evaluating its weights (``defeat.analysis.evaluation``). Each run's role
is read from its saved config (:func:`config_identity`, :func:`check_roles`: the teacher and the
student alone are not DeFeat runs, the DeFeat run is one, and the student alone and the DeFeat
run build the same student), and a run folder whose training is still going on, or stopped
before its final evaluation, is named as such (:func:`run_progress`). A gap share outside
0-100 % and a run without detections (AP NaN) are named in the summary, not printed as numbers.
Used by ``tools/summarize_runs.py``; every function here is pure apart from :func:`read_run`,
:func:`saved_config` and :func:`run_progress`, which read a run folder.
"""

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..engine.metrics_file import METRICS, last_evaluation, read_metrics
from ..engine.run_folder import LOCK_NAME, live_lock
from ..errors import SummaryError

__all__ = [
    "GAIN",
    "LABELS",
    "ROLES",
    "RUN_LOCK",
    "RunIdentity",
    "RunResult",
    "class_aps",
    "check_comparable",
    "check_roles",
    "config_identity",
    "gap_problem",
    "format_summary",
    "format_table",
    "format_ap",
    "NO_DETECTIONS",
    "gap_closed",
    "read_run",
    "run_progress",
    "saved_config",
    "saved_test_sets",
    "summarize",
    "summary_json",
]

ROLES = ("teacher", "alone", "defeat")
LABELS = {"teacher": "teacher", "alone": "student alone", "defeat": "student + DeFeat"}
GAIN = "gain (DeFeat - alone)"
RUN_LOCK = LOCK_NAME  # the lock file a live training run holds in its OUTPUT_DIR


@dataclass
class RunIdentity:
    """What a run's config says about its role: ``defeat``: whether it trains a DeFeat model
    (None: unknown, e.g. an architecture not registered here); ``architecture``: the config's
    architecture; ``student``: ``{key: value}`` that identify the student it trains or evaluates
    (the plain student class and its backbone); ``max_iter``: the run's length (None: unknown)."""

    defeat: Optional[bool]
    architecture: str = "?"
    student: Dict[str, Any] = field(default_factory=dict)
    max_iter: Optional[int] = None
    origin: str = "the config"  # where it was read, for messages: "--teacher 'DIR' (its config.yaml)"


@dataclass
class RunResult:
    """One run's ``bbox`` evaluation: ``metrics`` holds :data:`METRICS` and any ``AP-<class>``
    (prefix ``bbox/`` left out); ``test_sets``: the datasets it was evaluated on (None: unknown);
    ``source``: where it was read (a folder, or the weights and config evaluated)."""

    role: str
    source: str
    metrics: Dict[str, float]
    test_sets: Optional[List[str]] = None
    iteration: Optional[int] = None
    identity: Optional[RunIdentity] = None
    in_progress: Optional[str] = None  # why the run is not finished (None: finished or unknown)


NO_DETECTIONS = "no detections"  # a row whose every AP is NaN: COCO found no detection to evaluate
NOT_COMPUTED = "n/a"  # one NaN AP in a row: no ground truth of that size or class in the test set


def format_ap(value: float, signed: bool = False, no_detections: bool = False) -> str:
    """An AP with two decimals (``signed``: with its sign); a NaN, which Detectron2's COCO
    evaluation gives for every metric when the model detected nothing ("No predictions from the
    model!") and for a size or class without ground truth, as :data:`NO_DETECTIONS` when
    ``no_detections`` (the whole row is NaN), else :data:`NOT_COMPUTED`."""
    if isinstance(value, float) and math.isnan(value):
        return NO_DETECTIONS if no_detections else NOT_COMPUTED
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _no_detections(metrics: Mapping[str, float]) -> bool:
    values = [metrics.get(k) for k in METRICS]
    return all(isinstance(v, float) and math.isnan(v) for v in values)


def format_table(rows: Mapping[str, Mapping[str, float]], title: str = "") -> str:
    """A model-zoo style Markdown table of ``{name: {metric: value}}`` (:data:`METRICS` columns);
    rows whose name starts with ``gain`` are signed; NaN APs as :func:`format_ap` writes them
    (a model that detected nothing: ``no detections`` in every column)."""
    head = "| model | " + " | ".join(METRICS) + " |"
    sep = "|" + "---|" * (len(METRICS) + 1)
    lines = ([f"### {title}", ""] if title else []) + [head, sep]
    for name, m in rows.items():
        empty = not name.startswith("gain") and _no_detections(m)
        lines.append(
            f"| {name} | " + " | ".join(format_ap(m[k], name.startswith("gain"), empty) for k in METRICS) + " |"
        )
    return "\n".join(lines)


def saved_config(run_dir: str) -> Optional[dict]:
    """A run folder's saved ``config.yaml`` as a plain dict (a YAML run's CfgNode dump, or a
    LazyConfig run's, whose Python objects such as a ``ShapeSpec`` are read as their fields:
    nothing is imported or built); None when it is missing or unreadable."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def fields(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", fields)
    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            saved = yaml.load(f, Loader=Loader)  # a SafeLoader: Python tags read as plain data
    except (OSError, yaml.YAMLError):
        return None
    return saved if isinstance(saved, dict) else None


def saved_test_sets(run_dir: str) -> Optional[List[str]]:
    """The test sets named in a run folder's saved ``config.yaml`` (``DATASETS.TEST``, or
    ``dataloader.test.dataset.names`` of a LazyConfig run); None when the file or key is missing."""
    saved = saved_config(run_dir)
    if saved is None:
        return None
    names = (saved.get("DATASETS") or {}).get("TEST")
    if names is None:
        test = ((saved.get("dataloader") or {}).get("test") or {}).get("dataset") or {}
        names = test.get("names") if isinstance(test, dict) else None
    if names is None:
        return None
    return [names] if isinstance(names, str) else [str(n) for n in names]


def config_identity(config: Any) -> Optional[RunIdentity]:
    """The :class:`RunIdentity` of a config: a saved ``config.yaml`` as a dict (:func:`saved_config`),
    a loaded CfgNode or a LazyConfig. A DeFeat run is a DeFeat architecture (``has_defeat_teacher``)
    with ``MODEL.DEFEAT`` (a LazyConfig: its ``model._target_``). None when the config names no
    model."""
    from ..config.files import is_defeat_architecture, saved_form, saved_model_fields
    from ..modeling.meta_arch.common import student_class

    if config is None:
        return None
    fields = saved_model_fields(config if type(config) is dict else saved_form(config))
    if fields is None:
        return None
    name, cls = fields.name.rsplit(".", 1)[-1], fields.cls
    if cls is None:
        defeat = None if fields.defeat_keys else False
        student = name
    else:
        defeat = is_defeat_architecture(cls) and fields.defeat_keys
        student = student_class(cls).__name__
    return RunIdentity(defeat, name, {"architecture": student, **fields.student}, fields.max_iter)


def run_progress(run_dir: str, iteration: Optional[int], identity: Optional[RunIdentity]) -> Optional[str]:
    """Why the run in ``run_dir``, last evaluated at ``iteration``, is not finished, or None: a live
    lock file (:data:`RUN_LOCK`, its process alive or not named), a ``last_checkpoint`` of a later
    iteration than the evaluation, or an evaluation before the run's last iteration (``max_iter``
    of ``identity``)."""
    held = live_lock(run_dir)
    if held is not None:
        pid, host = held
        return f"a run holds its lock file {RUN_LOCK}" + (f" (process {pid} on {host})" if pid else "")
    try:
        with open(os.path.join(run_dir, "last_checkpoint")) as f:
            checkpoint = f.read().strip()
    except OSError:
        checkpoint = ""
    found = re.fullmatch(r"model_(\d+)\.pth", os.path.basename(checkpoint))
    if found and iteration is not None and int(found.group(1)) > iteration:
        return (
            f"its last checkpoint ({checkpoint}, iteration {int(found.group(1))}) is newer than its last "
            f"evaluation (iteration {iteration}): it is still training, or stopped before its final evaluation"
        )
    max_iter = identity.max_iter if identity is not None else None
    if max_iter and iteration is not None and iteration < max_iter - 1:
        return (
            f"its last evaluation is at iteration {iteration} of {max_iter} (SOLVER.MAX_ITER / train.max_iter), "
            "not its final one: it is still training, or stopped before its end"
        )
    return None


def read_run(run_dir: str, role: str, option: str) -> RunResult:
    """The last ``bbox`` evaluation of the last run in ``<run_dir>/metrics.json``.

    Args:
        role: one of :data:`ROLES`; option: the command-line option that named the folder.
    Raises:
        SummaryError: no such folder, no ``metrics.json`` in it, or no ``bbox`` evaluation (the
            message says how to evaluate the run's weights instead).
    """
    if not os.path.isdir(run_dir):
        raise SummaryError(f"{option} {run_dir!r}: no such folder; give the OUTPUT_DIR of the {LABELS[role]}'s run")
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise SummaryError(
            f"{option} {run_dir!r} has no metrics.json: it is not the OUTPUT_DIR of a Detectron2 training run "
            f"(or the run has logged nothing yet); give the run's folder, or evaluate weights with "
            f"{option}-weights FILE {option}-config CONFIG"
        )
    row = last_evaluation(read_metrics(path))
    if row is None:
        raise SummaryError(
            f"{option}: {path} has no bbox evaluation in its last run (no bbox/AP): the run had no test set "
            "(DATASETS.TEST) or stopped before its final evaluation. Evaluate its weights with the "
            f"--eval-only path of train_net.py: {option}-weights {os.path.join(run_dir, 'model_final.pth')} "
            f"{option}-config {os.path.join(run_dir, 'config.yaml')}"
        )
    metrics = {k[len("bbox/") :]: float(v) for k, v in row.items() if k.startswith("bbox/")}
    missing = [k for k in METRICS if k not in metrics]
    if missing:
        raise SummaryError(f"{option}: the last bbox evaluation in {path} lacks {missing}")
    it = row.get("iteration")
    iteration = int(it) if isinstance(it, int) else None
    saved = saved_config(run_dir)
    identity = config_identity(saved) if saved is not None else None
    if identity is not None:
        identity.origin = f"{option} {run_dir!r} (its config.yaml)"
    return RunResult(
        role,
        run_dir,
        metrics,
        saved_test_sets(run_dir),
        iteration,
        identity,
        run_progress(run_dir, iteration, identity),
    )


def class_aps(metrics: Mapping[str, float]) -> Dict[str, float]:
    """``{class name: AP}`` from the ``AP-<class>`` entries of a run's metrics, in their order."""
    return {k[len("AP-") :]: v for k, v in metrics.items() if k.startswith("AP-")}


def _describe(run: RunResult) -> str:
    return f"{LABELS[run.role]} ({run.source})"


def check_comparable(runs: Mapping[str, RunResult], per_class: bool = False) -> None:
    """Refuse runs evaluated on different test sets, as far as that can be told: the test set
    names they were evaluated on, or the classes of their per-class AP; with ``per_class``, a
    run without per-class AP.

    Raises:
        SummaryError: naming the runs and what differs.
    """
    named = {role: tuple(r.test_sets) for role, r in runs.items() if r.test_sets}
    if len(set(named.values())) > 1:
        raise SummaryError(
            "the runs were evaluated on different test sets: "
            + "; ".join(f"{_describe(runs[role])} on {list(names)}" for role, names in named.items())
            + ". Their APs cannot be compared: evaluate all three on one test set (with weights: --test-set NAME)"
        )
    # as sets: metrics.json keeps its keys sorted, an evaluation returns them in the dataset's order
    classes = {role: tuple(sorted(class_aps(r.metrics))) for role, r in runs.items() if class_aps(r.metrics)}
    if len(set(classes.values())) > 1:
        raise SummaryError(
            "the runs' per-class AP name different classes, so they were evaluated on different test sets: "
            + "; ".join(f"{_describe(runs[role])}: {', '.join(names)}" for role, names in classes.items())
            + ". Evaluate all three on one test set (with weights: --test-set NAME)"
        )
    if per_class:
        lacking = [_describe(r) for role, r in runs.items() if role not in classes]
        if lacking:
            raise SummaryError(
                f"--per-class: {', '.join(lacking)} has no per-class AP (bbox/AP-<class>); Detectron2's "
                "COCOEvaluator logs it only when the test set's metadata names its classes (thing_classes)"
            )


def check_roles(runs: Mapping[str, RunResult]) -> None:
    """Refuse runs whose saved configs contradict the roles they were given: one run given for two
    roles; a DeFeat run as the teacher or as the student alone; a run that is not a DeFeat run as
    the DeFeat student; a student alone and a DeFeat run that build different students (their
    architecture and backbone keys, :data:`defeat.config.files.STUDENT_KEYS`, compared where both name them). A run
    whose config is unknown (``identity`` None, or its ``defeat`` None) is not checked for that.

    Raises:
        SummaryError: one line naming the run, what its config says and the fix.
    """
    folders: Dict[str, str] = {}
    for role, run in runs.items():
        if os.path.isdir(run.source):
            key = os.path.realpath(run.source)
            if key in folders:
                raise SummaryError(
                    f"--{folders[key]} and --{role} are the same run folder {run.source!r}: the summary compares "
                    "three different runs; give each role its own run"
                )
            folders[key] = role
    ids = {role: run.identity for role, run in runs.items() if run.identity is not None}
    teacher, alone, defeat = (ids.get(role) for role in ROLES)
    if teacher is not None and teacher.defeat:
        raise SummaryError(
            f"{teacher.origin} is a DeFeat run ({teacher.architecture} with MODEL.DEFEAT), not a teacher: a teacher "
            "is trained without DeFeat. Give the teacher's own run folder (or weights and config) as --teacher, "
            "and this run as --defeat"
        )
    if alone is not None and alone.defeat:
        raise SummaryError(
            f"{alone.origin} is a DeFeat run ({alone.architecture} with MODEL.DEFEAT), not the student alone: give "
            "the student's run without DeFeat as --alone, and this run as --defeat"
        )
    if defeat is not None and defeat.defeat is False:
        raise SummaryError(
            f"{defeat.origin} is not a DeFeat run ({defeat.architecture}, not a DeFeat architecture with "
            "MODEL.DEFEAT): give the DeFeat student's run as --defeat"
        )
    if alone is not None and defeat is not None:
        differ = [
            f"{key} {alone.student[key]!r} vs {defeat.student[key]!r}"
            for key in alone.student
            if key in defeat.student and alone.student[key] != defeat.student[key]
        ]
        if differ:
            raise SummaryError(
                f"the student alone and the DeFeat run train different students ({'; '.join(differ)}; from "
                f"{alone.origin} and {defeat.origin}): the gain compares one student with and without DeFeat. "
                "Give runs of the same student config"
            )


def gap_problem(closed: Optional[float], aps: Mapping[str, float]) -> Optional[str]:
    """Why a gap share ``closed`` (percent) outside 0-100 % cannot be read as a share, or None:
    above 100 the DeFeat student beats its teacher, below 0 it is worse than the student alone;
    both usually mean runs given in the wrong roles. ``aps``: ``{role: AP}``."""
    if closed is None or 0.0 <= closed <= 100.0:
        return None
    if closed > 100.0:
        what = f"the DeFeat student (AP {aps['defeat']:.2f}) is better than the teacher (AP {aps['teacher']:.2f})"
    else:
        what = f"the DeFeat student (AP {aps['defeat']:.2f}) is worse than the student alone (AP {aps['alone']:.2f})"
    return (
        f"the share of the teacher-student gap closed by DeFeat is {closed:.0f}%, outside 0-100 %: {what}; "
        "check that each run was given in its role (--teacher, --alone, --defeat)"
    )


def gap_closed(teacher_ap: float, alone_ap: float, defeat_ap: float) -> Optional[float]:
    """``100 * (defeat - alone) / (teacher - alone)``, the share of the teacher-student AP gap
    that DeFeat closes, in percent; None when the teacher is not better than the student alone
    (or an AP is NaN): then the share means nothing."""
    if any(math.isnan(x) for x in (teacher_ap, alone_ap, defeat_ap)) or teacher_ap <= alone_ap:
        return None
    return 100.0 * (defeat_ap - alone_ap) / (teacher_ap - alone_ap)


def summarize(
    runs: Mapping[str, RunResult], per_class: bool = False, labels: Optional[Mapping[str, str]] = None
) -> dict:
    """The summary of the three runs (``{role: RunResult}`` for every role of :data:`ROLES`), their
    rows named by ``labels`` (``{role: label}``, default :data:`LABELS`).

    Returns:
        ``{"title", "rows": {label: {metric: value}} (the three runs, then GAIN),
        "gap_closed_percent" (None when meaningless), "gap_closed_out_of_range" (outside 0-100 %,
        :func:`gap_problem`), "warnings": [str], "runs": {role: {"label", "source", "test_sets",
        "iteration", "in_progress" (why it is not finished, or None), "no_detections"}}}`` plus,
        with ``per_class``, ``"per_class": {class: {"teacher", "alone", "defeat", "gain"}}``.
    Raises:
        SummaryError: see :func:`check_comparable` and :func:`check_roles`.
    """
    check_comparable(runs, per_class)
    check_roles(runs)
    teacher, alone, defeat = (runs[role].metrics for role in ROLES)
    names = {**LABELS, **(labels or {})}
    rows = {names[role]: {k: runs[role].metrics[k] for k in METRICS} for role in ROLES}
    rows[GAIN] = {k: defeat[k] - alone[k] for k in METRICS}
    closed = gap_closed(teacher["AP"], alone["AP"], defeat["AP"])
    warnings = []
    empty = [role for role in ROLES if _no_detections(runs[role].metrics)]
    for role in empty:
        warnings.append(
            f"the {LABELS[role]} has {NO_DETECTIONS} (every AP NaN: COCO found no detection to score): "
            "check its weights, its score threshold (MODEL.ROI_HEADS.SCORE_THRESH_TEST) and its test set"
        )
    if empty:
        warnings.append("the share of the teacher-student gap closed by DeFeat is left out: a run has no detections")
    elif closed is None:
        warnings.append(
            f"the teacher (AP {teacher['AP']:.2f}) is not better than the student alone (AP {alone['AP']:.2f}): "
            "the share of the teacher-student gap closed by DeFeat is meaningless and left out"
        )
    flag = gap_problem(closed, {role: runs[role].metrics["AP"] for role in ROLES})
    if flag:
        warnings.append(flag)
    for role in ROLES:
        if runs[role].in_progress:
            warnings.append(
                f"the {LABELS[role]} run {runs[role].source} is not finished: {runs[role].in_progress}; its AP is "
                "that of an intermediate evaluation"
            )
    test_sets = next((r.test_sets for r in runs.values() if r.test_sets), None)
    summary = {
        "title": "DeFeat results: COCO box AP" + (f" on {', '.join(test_sets)}" if test_sets else ""),
        "rows": rows,
        "gap_closed_percent": closed,
        "gap_closed_out_of_range": flag is not None,
        "warnings": warnings,
        "runs": {
            role: {
                "label": names[role],
                "source": r.source,
                "test_sets": r.test_sets,
                "iteration": r.iteration,
                "in_progress": r.in_progress,
                "no_detections": role in empty,
            }
            for role, r in runs.items()
        },
    }
    if per_class:
        aps = {role: class_aps(runs[role].metrics) for role in ROLES}
        summary["per_class"] = {
            name: {**{role: aps[role][name] for role in ROLES}, "gain": aps["defeat"][name] - aps["alone"][name]}
            for name in aps["teacher"]
        }
    return summary


def format_summary(summary: dict) -> str:
    """The Markdown of a :func:`summarize` result: the model-zoo table, the gap closed, the
    warnings, where each run was read and, if present, the per-class table."""
    closed = summary["gap_closed_percent"]
    lines = [format_table(summary["rows"], summary["title"]), ""]
    if closed is None:
        lines.append("Teacher-baseline AP gap closed by DeFeat: n/a")
    elif summary.get("gap_closed_out_of_range"):
        lines.append(f"Teacher-baseline AP gap closed by DeFeat: {closed:.0f}% (OUTSIDE 0-100 %: see the warning)")
    else:
        lines.append(f"Teacher-baseline AP gap closed by DeFeat: {closed:.0f}%")
    lines += [f"Warning: {w}" for w in summary["warnings"]]
    lines.append("")
    for run in summary["runs"].values():
        where = f", evaluation at iteration {run['iteration']}" if run["iteration"] is not None else ""
        state = " (NOT FINISHED: see the warning)" if run.get("in_progress") else ""
        lines.append(f"- {run['label']}: {run['source']}{where}{state}")
    if "per_class" in summary:
        labels = [summary["runs"][role]["label"] for role in ROLES]
        lines += ["", "#### Per-class AP", "", "| class | " + " | ".join(labels) + " | gain |"]
        lines.append("|" + "---|" * (len(labels) + 2))
        empty = {role: _no_detections(summary["rows"][label]) for role, label in zip(ROLES, labels)}
        for name, ap in summary["per_class"].items():
            cells = [format_ap(ap[r], no_detections=empty[r]) for r in ROLES]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {format_ap(ap['gain'], signed=True)} |")
    return "\n".join(lines) + "\n"


def _finite(x):
    """``x`` with every NaN or infinity (an AP COCO could not compute) as None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def summary_json(summary: dict) -> str:
    """A :func:`summarize` result as JSON; an AP that COCO could not compute (NaN) is ``null``."""
    return json.dumps(_finite(summary), indent=2, allow_nan=False)
