"""Reading a Detectron2 ``metrics.json`` (``JSONWriter``: one JSON dict per line).

Detectron2 appends to ``metrics.json``: a second run started in the same ``OUTPUT_DIR`` (before
the output guard, or by hand) adds its rows after the first's. :func:`split_runs` tells the runs
apart (the iteration falls back to the start of the run or before it), so that a curve or an AP
belongs to one run; a resumed run's repeated iterations stay in that run (later rows win).

Evaluations: Detectron2's ``EvalHook`` writes a COCO evaluation as ``bbox/AP``, ``bbox/AP50``, ...
and, when the test set's classes are known, ``bbox/AP-<class>`` per class, in the row of the
iteration it ran at. :func:`last_evaluation` finds the last one of the last run.
"""

import json
import math
import os
from typing import Dict, List, Optional

__all__ = [
    "METRICS",
    "read_metrics",
    "split_runs",
    "last_run",
    "last_evaluation",
    "read_box_metrics",
    "record_box_metrics",
    "recorded_box_ap",
    "measured_box_ap",
    "teacher_ap_line",
]

# The COCO box metrics of a model-zoo table, in its column order.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def read_metrics(path: str) -> List[Dict]:
    """The dicts of a ``metrics.json``; blank or truncated lines (a killed run) are skipped.

    Raises:
        OSError: the file cannot be read.
    """
    rows = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def split_runs(rows: List[Dict]) -> List[List[Dict]]:
    """The rows of each run in the file, in order.

    A row starts a new run when its iteration is at or below the first iteration of the current
    run (a run restarted from scratch); a resume goes back less far (to its last checkpoint) and
    stays in the run. Rows without an iteration stay with the run before them.
    """
    runs: List[List[Dict]] = []
    first = None
    for row in rows:
        it = row.get("iteration")
        if isinstance(it, (int, float)) and (first is None or it <= first) and runs and runs[-1]:
            if any(isinstance(r.get("iteration"), (int, float)) for r in runs[-1]):
                runs.append([])
                first = None
        if not runs:
            runs.append([])
        if first is None and isinstance(it, (int, float)):
            first = it
        runs[-1].append(row)
    return runs


def last_run(rows: List[Dict]) -> List[Dict]:
    """The rows of the last run in ``rows`` (:func:`split_runs`); ``[]`` for none."""
    runs = split_runs(rows)
    return runs[-1] if runs else []


def last_evaluation(rows: List[Dict], task: str = "bbox") -> Optional[Dict]:
    """The last row of the last run (:func:`last_run`) that holds a ``<task>/AP`` evaluation;
    None when that run evaluated nothing."""
    evaluated = [row for row in last_run(rows) if f"{task}/AP" in row]
    return evaluated[-1] if evaluated else None


def read_box_metrics(output_dir: str) -> Dict[str, float]:
    """The :data:`METRICS` of the last ``bbox/*`` evaluation in ``<output_dir>/metrics.json``.

    Raises:
        OSError: the file cannot be read.
        RuntimeError: the run has no bbox evaluation.
    """
    path = os.path.join(output_dir, "metrics.json")
    last = last_evaluation(read_metrics(path))
    if last is None:
        raise RuntimeError(f"{path} has no bbox metrics: did the run finish its final evaluation?")
    return {k: float(last[f"bbox/{k}"]) for k in METRICS}


def record_box_metrics(output_dir: str, metrics: Dict[str, float], iteration: int) -> None:
    """Append ``metrics`` (``{"AP": ..., ...}``) to ``<output_dir>/metrics.json`` as a ``bbox/*``
    row at ``iteration``, the way Detectron2's ``EvalHook`` records an evaluation, so that later
    readers (:func:`read_box_metrics`, the teacher line in DeFeat logs) take it as the run's last."""
    row = {"iteration": int(iteration), **{f"bbox/{k}": float(v) for k, v in metrics.items()}}
    with open(os.path.join(output_dir, "metrics.json"), "a") as f:
        f.write(json.dumps(row) + "\n")


def recorded_box_ap(weights: str, iteration: Optional[int] = None) -> Optional[float]:
    """The ``bbox/AP`` that the Detectron2 run which wrote ``weights`` logged for them in the
    ``metrics.json`` of the same folder (last run in that file); None for remote weights or when
    there is none, and NaN when that evaluation found no detections.

    ``iteration``: the iteration stored in the checkpoint (an AP of another checkpoint of the
    folder is not theirs). Detectron2 saves ``model_final.pth`` at iteration ``MAX_ITER - 1`` and
    evaluates it after training at ``MAX_ITER``: an evaluation at ``iteration + 1`` is taken when
    it is the last row of the run (nothing was trained after the checkpoint). None: the run's last AP.
    """
    if not weights or "://" in weights:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(weights)), "metrics.json")
    try:
        run = last_run(read_metrics(path))
    except OSError:
        return None
    rows = [r for r in run if "bbox/AP" in r]
    if iteration is not None:
        last_iteration = max(
            (r["iteration"] for r in run if isinstance(r.get("iteration"), (int, float))), default=None
        )
        at = [r for r in rows if r.get("iteration") == iteration]
        after = [r for r in rows if r.get("iteration") == iteration + 1 == last_iteration]
        rows = at or after
    return float(rows[-1]["bbox/AP"]) if rows else None


def measured_box_ap(weights: str) -> Optional[float]:
    """The box AP that the run which wrote ``weights`` measured on these very weights (the
    evaluation of the checkpoint's iteration in the ``metrics.json`` beside them); None otherwise."""
    from ..checkpoint import checkpoint_iteration  # torch: this module stays light (the demo's commands)

    iteration = checkpoint_iteration(weights)
    return recorded_box_ap(weights, iteration) if iteration is not None else None


def teacher_ap_line(weights: str, iteration: Optional[int] = None) -> str:
    """What the DeFeat log says of the teacher's quality: its recorded box AP, "no detections"
    for an AP of NaN, or why it is unknown. ``iteration``: the checkpoint's, when the caller
    loaded it already; None reads it from ``weights`` (:func:`measured_box_ap`)."""
    ap = recorded_box_ap(weights, iteration) if iteration is not None else measured_box_ap(weights)
    if ap is None:
        return (
            f"teacher {weights}: its AP is unknown here (no evaluation of these weights in a metrics.json beside them)"
        )
    if math.isnan(ap):
        return (
            f"teacher {weights}: its training run's evaluation of these weights found no detections (AP nan): "
            "a student learns little from it; check the teacher's run (diverged loss, too short a schedule)"
        )
    return f"teacher {weights}: box AP {ap:.2f} as its training run evaluated these weights (metrics.json beside them)"
