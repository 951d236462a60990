"""Reading a Detectron2 ``metrics.json`` (``JSONWriter``: one JSON dict per line)."""

import json
from typing import Dict, List

__all__ = ["read_metrics"]


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
