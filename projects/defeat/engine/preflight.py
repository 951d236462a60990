"""What every training or evaluation run checks before it writes anything or builds a model.

:func:`check_run` is called by ``train_net.py`` and ``lazy_train_net.py`` (and so by the
benchmarks and the demo, which run them) on the main process: the output guard
(``defeat.engine.outputs``), the batch against the number of processes, and every dataset the
run uses, training and test, against its json (``defeat.data.coco_json``), the model's
classes and each other (:func:`check_datasets`), after the machine's device and the weights
it would download (``defeat.engine.machine``), and the local weight files it loads (readable
and of the right kind: :func:`check_run_weights`). The training sets' dicts are checked after
loading by ``defeat.data.checks``.
"""

import logging
import os
from typing import Dict, List, Optional, Sequence

from ..checkpoint import check_weights_file
from ..config.files import (
    expand_path,
    key_of,
    masks_needed,
    model_weights,
    num_classes,
    output_dir,
    run_counts,
    run_value,
    teacher_files,
    test_dataset_names,
    train_dataset_names,
)
from ..data.coco_json import CocoSummary, check_coco_json
from ..errors import DataCheckError
from .machine import check_machine
from .outputs import check_run_output, run_inputs

__all__ = [
    "check_batch",
    "check_datasets",
    "check_dataset_names",
    "check_class_count",
    "check_run_counts",
    "check_run",
    "check_run_weights",
    "dataset_classes",
]

logger = logging.getLogger(__name__)


def _shown(names: Sequence[str]) -> str:
    return ", ".join(map(str, names[:10])) + (", ..." if len(names) > 10 else "")


def _summary(name: str, needs_masks: bool) -> Optional[CocoSummary]:
    """The checks of a registered dataset's json; None for a dataset without one. A builtin
    dataset whose json is not under ``$DETECTRON2_DATASETS`` is named as such."""
    from detectron2.data import MetadataCatalog

    json_file = MetadataCatalog.get(name).get("json_file")
    if not json_file:
        return None
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    under_root = os.path.normpath(str(json_file)).startswith(os.path.normpath(root) + os.sep)
    if under_root and not os.path.isfile(str(json_file)):
        raise DataCheckError(
            f"dataset {name!r}: its annotation file {json_file} does not exist. It is one of Detectron2's builtin "
            f"datasets, which it looks for under $DETECTRON2_DATASETS ({root!r} now; ./datasets when unset): set "
            "DETECTRON2_DATASETS to the folder that holds it before starting (docs/coco.md), or name your own "
            "dataset with --dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT]"
        )
    return check_coco_json(str(json_file), name, needs_masks)


def dataset_classes(name: str, summary: Optional[CocoSummary] = None) -> Optional[List[str]]:
    """The class names of a dataset in Detectron2's order: from its json, else its metadata."""
    from detectron2.data import MetadataCatalog

    if summary is not None:
        return list(summary.classes)
    classes = MetadataCatalog.get(name).get("thing_classes")
    return list(classes) if classes is not None else None


def _count_error(name: str, classes: List[str], empty: List[str], num: int, key: str, what: str) -> DataCheckError:
    if empty and len(classes) - len(empty) == num:
        return DataCheckError(
            f"{what} dataset {name!r} has {len(classes)} categories ({_shown(classes)}) but the model "
            f"{num} ({key}); {_shown(empty)} has no boxes to train on (none, or crowd boxes only), like the "
            "placeholder category some labelling tools export: remove it from the json's categories (or set "
            f"{key} to {len(classes)} and keep a class that is never trained)"
        )
    if what == "test":
        return DataCheckError(
            f"test dataset {name!r} has {len(classes)} categories ({_shown(classes)}) but the model {num} "
            f"({key}); evaluate on a test set of the classes the model was trained on"
        )
    return DataCheckError(
        f"dataset {name!r} has {len(classes)} categories ({_shown(classes)}) but the model has {num} classes "
        f"({key}); set {key} to {len(classes)} (a DeFeat teacher must then detect the same classes for the "
        "head loss)"
    )


def check_datasets(
    train_names: Sequence[str], test_names: Sequence[str], num: Optional[int], key: str, needs_masks: bool = False
) -> Dict[str, Optional[CocoSummary]]:
    """Check every dataset's json, and each dataset's classes against the model's ``num``
    (``key``: its config key) and the test sets' against the training sets' (same names, same
    order: Detectron2 maps categories to class indices by sorted id).

    Returns:
        ``{name: CocoSummary or None}`` (None: no json to read).
    Raises:
        DataCheckError: naming the dataset, its json, and what to change.
    """
    summaries = {name: _summary(name, needs_masks) for name in dict.fromkeys([*train_names, *test_names])}
    train_classes = None
    for name in train_names:
        classes = dataset_classes(name, summaries[name])
        if classes is None:
            continue
        empty = summaries[name].empty_categories if summaries[name] else []
        if num is not None and len(classes) != num:
            raise _count_error(name, classes, empty, num, key, "training")
        if empty:
            logger.warning(
                "dataset %r: categories %s have no boxes to train on (none, or crowd boxes only, which Detectron2 "
                "drops while training); the model keeps a class for each that is never trained",
                name,
                _shown(empty),
            )
        if train_classes is not None and classes != train_classes[1]:
            raise DataCheckError(
                f"training datasets {train_classes[0]!r} and {name!r} name their classes differently "
                f"({_shown(train_classes[1])} vs {_shown(classes)}); give them the same categories in the same order"
            )
        train_classes = (name, classes)
    for name in test_names:
        classes = dataset_classes(name, summaries[name])
        if classes is None:
            continue
        if train_classes is not None and classes != train_classes[1]:
            raise DataCheckError(
                f"test dataset {name!r} names or orders its classes differently from the training dataset "
                f"{train_classes[0]!r}: {_shown(classes)} vs {_shown(train_classes[1])}. Class indices would "
                "be compared across different categories; use a test json with the training json's categories"
            )
        if num is not None and len(classes) != num:
            raise _count_error(name, classes, [], num, key, "test")
    return summaries


def check_batch(cfg, world_size: int) -> None:
    """Refuse a total batch that does not divide among the ``world_size`` processes."""
    total, key = run_value(cfg, "batch"), key_of(cfg, "batch")
    if total is None or world_size <= 1:
        return
    if not isinstance(total, int) or isinstance(total, bool) or total < world_size or total % world_size:
        raise DataCheckError(
            f"{key} = {total!r} does not divide among {world_size} processes (--num-gpus x --num-machines); "
            f"set it to a multiple of {world_size}"
        )


def _names_key(cfg, split: str) -> str:
    return key_of(cfg, f"{split}_sets")


def _check_listed_once(cfg, split: str, names: Sequence[str]) -> None:
    """Refuse an empty name among others, or a name listed twice (Detectron2 would join the set
    to itself: each image twice in a training epoch, each test set evaluated twice)."""
    key = _names_key(cfg, split)
    blank = [n for n in names if not str(n).strip()]
    if blank:
        raise DataCheckError(f"{key} = {list(names)!r} holds an empty dataset name; remove it or name the dataset")
    repeated = sorted({str(n) for n in names if list(names).count(n) > 1})
    if repeated:
        raise DataCheckError(
            f"{key} = {list(names)!r} lists {', '.join(map(repr, repeated))} more than once; list each dataset once"
        )


def check_dataset_names(cfg, eval_only: bool = False) -> None:
    """Refuse a run without the datasets it needs: a training run without a training set, an
    evaluation without a test set (the placeholders of ``configs/custom/`` left unfilled); and a
    list of datasets with an empty name or a name twice.

    Raises:
        DataCheckError: naming the key to set and how.
    """
    split, names = ("test", test_dataset_names(cfg)) if eval_only else ("train", train_dataset_names(cfg))
    if [n for n in names if n]:
        _check_listed_once(cfg, split, names)
        if not eval_only:
            _check_listed_once(cfg, "test", test_dataset_names(cfg))
        return
    key = _names_key(cfg, split)
    example = f"{key} '(\"mine_{split}\",)'" if key.startswith("DATASETS") else f"{key}=mine_{split}"
    what = "an evaluation (--eval-only) needs a test set" if eval_only else "training needs a training set"
    raise DataCheckError(
        f"{key} is empty: {what}. Name yours, e.g. {example} with --dataset mine_{split}=ANNOTATIONS.json"
        "[:IMAGE_ROOT] (docs/custom_dataset.md), or fill in the config's placeholder"
    )


def check_run_counts(cfg) -> None:
    """Refuse a training run whose length, batch or periods (``defeat.config.files.run_counts``)
    are not whole numbers of at least 1: Detectron2 would fail on them at its first step or
    schedule (a period of 0 divides by zero after the run has started).

    Raises:
        DataCheckError: naming the key and its value.
    """
    for key, value in run_counts(cfg):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataCheckError(f"{key} = {value!r}: a training run needs a whole number of at least 1 there")


def check_class_count(cfg) -> None:
    """Refuse a model of fewer than one class (the ``NUM_CLASSES: 0`` placeholder of
    ``configs/custom/``), whatever datasets it is given.

    Raises:
        DataCheckError: naming the key.
    """
    num, key = num_classes(cfg)
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise DataCheckError(
            f"{key} = {num!r}: set it to the number of categories of your dataset (the 'categories' of its "
            "json; tools/inspect_dataset.py lists them), or fill in the config's placeholder"
        )


def _resumable(folder: str) -> bool:
    import glob

    return os.path.isfile(os.path.join(folder, "last_checkpoint")) or bool(
        glob.glob(os.path.join(folder, "model_[0-9]*.pth"))
    )


def check_run_weights(cfg, resume: bool = False, eval_only: bool = False) -> None:
    """The local weight files a run loads, before it touches anything
    (``defeat.checkpoint.check_weights_file``; URLs are ``defeat.engine.machine``'s):
    ``MODEL.WEIGHTS`` / ``train.init_checkpoint`` unless ``resume`` finds a checkpoint in the
    output folder, and a DeFeat config's teacher weights when training.

    Raises:
        WeightsError: naming the key, the file and the fix.
    """
    if not (resume and _resumable(output_dir(cfg))):
        check_weights_file(model_weights(cfg), key_of(cfg, "weights"))
    teacher = teacher_files(cfg)
    if teacher is not None and not eval_only and teacher[1]:
        check_weights_file(expand_path(teacher[1]), key_of(cfg, "teacher_weights"))


def check_run(cfg, args, world_size: int = 1) -> List[str]:
    """Everything a run of ``cfg`` checks before it writes or builds (main process): the datasets
    named, the device and the weights to download (``defeat.engine.machine``), the output guard
    (``args``: ``config_file``, ``resume``, ``eval_only``, ``overwrite``), the run's length, batch and
    periods, the batch against the processes, every dataset,
    the number of classes and the local weight files. Datasets must be registered already.
    Nothing is written or moved.

    Returns:
        With ``--overwrite``, the earlier run's entries to move aside (``check_run_output``).
    Raises:
        MachineError, OutputError, DataCheckError, WeightsError: with the setting or file and the fix.
    """
    from detectron2.data import DatasetCatalog

    eval_only = bool(getattr(args, "eval_only", False))
    check_dataset_names(cfg, eval_only)  # a config-only check: before the output guard touches anything
    resumes = bool(getattr(args, "resume", False)) and _resumable(output_dir(cfg))
    check_machine(cfg, model_weights_used=not resumes, teacher_used=not eval_only)  # the device, URL weights
    train_names = train_dataset_names(cfg)
    if eval_only:  # what the model was trained on, where it is known here
        train_names = [n for n in train_names if n in DatasetCatalog.list()]
    test_names = test_dataset_names(cfg)
    config_file = str(getattr(args, "config_file", "") or "")
    replaced = check_run_output(
        output_dir(cfg),
        run_inputs(cfg, config_file, [*train_names, *test_names]),
        resume=bool(getattr(args, "resume", False)),
        eval_only=eval_only,
        overwrite=bool(getattr(args, "overwrite", False)),
        setting=key_of(cfg, "output_dir"),
    )
    if not eval_only:
        check_run_counts(cfg)
        check_batch(cfg, world_size)
    num, key = num_classes(cfg)
    check_datasets(train_names, test_names, num, key, masks_needed(cfg))  # names the count of a json
    check_class_count(cfg)
    check_run_weights(cfg, bool(getattr(args, "resume", False)), eval_only)  # local files: readable, a checkpoint
    return replaced
