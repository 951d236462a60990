"""The results summary of one's own runs: teacher, student alone and DeFeat student side by side.

The same model-zoo table as ``python -m defeat.demo`` (:func:`format_table`), with the gain row
(DeFeat - alone) and the share of the teacher-student AP gap that DeFeat closes; optionally the
per-class AP that Detectron2's ``COCOEvaluator`` logs (``bbox/AP-<class>``). Each run's metrics
come from its folder's ``metrics.json`` (:func:`read_run`: the last ``bbox`` evaluation of the
last run in it) or from evaluating its weights (``defeat.analysis.evaluation``). Used by
``tools/summarize_runs.py``; every function here is pure apart from :func:`read_run`.
"""

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

from ..engine.metrics_file import METRICS, last_evaluation, read_metrics
from ..errors import SummaryError

__all__ = [
    "GAIN",
    "LABELS",
    "ROLES",
    "RunResult",
    "class_aps",
    "check_comparable",
    "format_summary",
    "format_table",
    "format_ap",
    "NO_DETECTIONS",
    "gap_closed",
    "read_run",
    "saved_test_sets",
    "summarize",
    "summary_json",
]

ROLES = ("teacher", "alone", "defeat")
LABELS = {"teacher": "teacher", "alone": "student alone", "defeat": "student + DeFeat"}
GAIN = "gain (DeFeat - alone)"


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


def saved_test_sets(run_dir: str) -> Optional[List[str]]:
    """The test sets named in a run folder's saved ``config.yaml`` (``DATASETS.TEST``, or
    ``dataloader.test.dataset.names`` of a LazyConfig run); None when the file or key is missing."""
    import yaml

    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            saved = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(saved, dict):
        return None
    names = (saved.get("DATASETS") or {}).get("TEST")
    if names is None:
        test = ((saved.get("dataloader") or {}).get("test") or {}).get("dataset") or {}
        names = test.get("names") if isinstance(test, dict) else None
    if names is None:
        return None
    return [names] if isinstance(names, str) else [str(n) for n in names]


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
    return RunResult(role, run_dir, metrics, saved_test_sets(run_dir), int(it) if isinstance(it, int) else None)


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


def gap_closed(teacher_ap: float, alone_ap: float, defeat_ap: float) -> Optional[float]:
    """``100 * (defeat - alone) / (teacher - alone)``, the share of the teacher-student AP gap
    that DeFeat closes, in percent; None when the teacher is not better than the student alone
    (or an AP is NaN): then the share means nothing."""
    if any(math.isnan(x) for x in (teacher_ap, alone_ap, defeat_ap)) or teacher_ap <= alone_ap:
        return None
    return 100.0 * (defeat_ap - alone_ap) / (teacher_ap - alone_ap)


def summarize(runs: Mapping[str, RunResult], per_class: bool = False) -> dict:
    """The summary of the three runs (``{role: RunResult}`` for every role of :data:`ROLES`).

    Returns:
        ``{"title", "rows": {label: {metric: value}} (the three runs, then GAIN),
        "gap_closed_percent" (None when meaningless), "warnings": [str], "runs": {role: {"label",
        "source", "test_sets", "iteration"}}}`` plus, with ``per_class``, ``"per_class": {class:
        {"teacher", "alone", "defeat", "gain"}}``.
    Raises:
        SummaryError: see :func:`check_comparable`.
    """
    check_comparable(runs, per_class)
    teacher, alone, defeat = (runs[role].metrics for role in ROLES)
    rows = {LABELS[role]: {k: runs[role].metrics[k] for k in METRICS} for role in ROLES}
    rows[GAIN] = {k: defeat[k] - alone[k] for k in METRICS}
    closed = gap_closed(teacher["AP"], alone["AP"], defeat["AP"])
    warnings = []
    if closed is None:
        warnings.append(
            f"the teacher (AP {teacher['AP']:.2f}) is not better than the student alone (AP {alone['AP']:.2f}): "
            "the share of the teacher-student gap closed by DeFeat is meaningless and left out"
        )
    test_sets = next((r.test_sets for r in runs.values() if r.test_sets), None)
    summary = {
        "title": "DeFeat results: COCO box AP" + (f" on {', '.join(test_sets)}" if test_sets else ""),
        "rows": rows,
        "gap_closed_percent": closed,
        "warnings": warnings,
        "runs": {
            role: {"label": LABELS[role], "source": r.source, "test_sets": r.test_sets, "iteration": r.iteration}
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
    lines.append(
        f"Teacher-baseline AP gap closed by DeFeat: {closed:.0f}%"
        if closed is not None
        else "Teacher-baseline AP gap closed by DeFeat: n/a"
    )
    lines += [f"Warning: {w}" for w in summary["warnings"]]
    lines.append("")
    for run in summary["runs"].values():
        where = f", evaluation at iteration {run['iteration']}" if run["iteration"] is not None else ""
        lines.append(f"- {run['label']}: {run['source']}{where}")
    if "per_class" in summary:
        labels = [LABELS[role] for role in ROLES]
        lines += ["", "#### Per-class AP", "", "| class | " + " | ".join(labels) + " | gain |"]
        lines.append("|" + "---|" * (len(labels) + 2))
        empty = {role: _no_detections(summary["rows"][LABELS[role]]) for role in ROLES}
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
