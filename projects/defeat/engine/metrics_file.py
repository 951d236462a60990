"""Reading a Detectron2 ``metrics.json`` (``JSONWriter``: one JSON dict per line).

Detectron2 appends to ``metrics.json``: a second run started in the same ``OUTPUT_DIR`` (before
the output guard, or by hand) adds its rows after the first's. :func:`split_runs` tells the runs
apart (the iteration falls back to the start of the run or before it), so that a curve or an AP
belongs to one run; a resumed run's repeated iterations stay in that run (later rows win).
"""

import json
from typing import Dict, List

__all__ = ["read_metrics", "split_runs", "last_run"]


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
