"""The classes a detector predicts as its dataset names them: the class names and the dataset's
own category ids, in the order of the model's class indices (0..K-1).

Detectron2 maps a COCO json's category ids to contiguous indices when it loads the json (sorted
by id; ``thing_dataset_id_to_contiguous_id`` and ``thing_classes`` in ``MetadataCatalog``): a
json of ids 5, 9 and 12 is trained as classes 0, 1 and 2. The exported checkpoint
(``tools/export_student.py``, under :data:`CHECKPOINT_KEY`), ``defeat_trace.json``
(``tools/trace_student.py``) and ``predictions.json`` (``tools/predict.py``) carry the mapping of
:func:`class_identity`, so that a model's class indices can be turned back into names and ids
without the dataset.
"""

from typing import Any, Dict, List, Mapping, Optional

__all__ = ["CHECKPOINT_KEY", "class_identity", "category_ids_by_index", "identity_from_checkpoint", "describe"]

CHECKPOINT_KEY = "classes"  # the entry of an exported checkpoint beside "model"


def class_identity(name: str) -> Optional[Dict[str, Any]]:
    """``{"dataset": name, "names": [...], "category_ids": [...] or None}`` of a dataset: item
    ``i`` of each list is the model's class ``i``; ``category_ids`` is None for a dataset without
    an id map (not a COCO json). A registered COCO json is loaded when its metadata lacks the map
    (Detectron2 sets it on loading). None when the dataset's classes are unknown.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    meta = MetadataCatalog.get(name)
    if name in DatasetCatalog.list() and meta.get("json_file"):
        if not meta.get("thing_classes") or meta.get("thing_dataset_id_to_contiguous_id") is None:
            DatasetCatalog.get(name)
    classes = meta.get("thing_classes")
    if not classes:
        return None
    to_contiguous = meta.get("thing_dataset_id_to_contiguous_id")
    ids = None
    if to_contiguous:
        by_index = {int(index): int(category) for category, index in to_contiguous.items()}
        if sorted(by_index) == list(range(len(classes))):
            ids = [by_index[i] for i in range(len(classes))]
    return {"dataset": str(name), "names": [str(c) for c in classes], "category_ids": ids}


def category_ids_by_index(identity: Optional[Mapping[str, Any]]) -> Optional[Dict[int, int]]:
    """``{class index: the dataset's category id}`` of a :func:`class_identity` result; None when
    the ids are unknown."""
    ids = identity.get("category_ids") if identity else None
    return dict(enumerate(ids)) if ids else None


def identity_from_checkpoint(data: Any) -> Optional[Dict[str, Any]]:
    """The :data:`CHECKPOINT_KEY` entry of a loaded checkpoint (a dict), when it is one that
    :func:`class_identity` wrote: a list of names and ids of the same length (or no ids)."""
    entry = data.get(CHECKPOINT_KEY) if isinstance(data, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    names, ids = entry.get("names"), entry.get("category_ids")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return None
    if ids is not None and (not isinstance(ids, list) or len(ids) != len(names)):
        return None
    return {"dataset": str(entry.get("dataset", "")), "names": list(names), "category_ids": ids and list(ids)}


def describe(identity: Mapping[str, Any]) -> str:
    """``name (id 5), ...`` of a :func:`class_identity` result, for logs and messages."""
    names: List[str] = list(identity["names"])
    ids = identity.get("category_ids")
    shown = [f"{n} (id {i})" for n, i in zip(names, ids)] if ids else names
    return ", ".join(shown[:10]) + (", ..." if len(shown) > 10 else "")
