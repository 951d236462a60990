"""Embedded demo dataset: procedurally generated shapes in COCO format.

``generate_dataset`` writes the files (numpy + OpenCV only); ``register_demo_dataset``
also registers the splits in Detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.
"""

import logging
import os

from .synthetic import (
    CLASS_NAMES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_CLASSES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    dataset_stats,
    generate_dataset,
    render_image,
)

logger = logging.getLogger(__name__)

DEMO_PREFIX = "defeat_demo"
DEMO_TRAIN = f"{DEMO_PREFIX}_train"
DEMO_VAL = f"{DEMO_PREFIX}_val"
DEMO_CLASSES = CLASS_NAMES
DATASETS_ENV = "DEFEAT_DATASETS"

__all__ = [
    "CLASS_NAMES",
    "DATASETS_ENV",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "DEMO_CLASSES",
    "DEMO_PREFIX",
    "DEMO_TRAIN",
    "DEMO_VAL",
    "GENERATOR_VERSION",
    "dataset_stats",
    "default_root",
    "generate_dataset",
    "register_demo_dataset",
    "register_demo_dataset_if_used",
    "render_image",
    "settings_from_env",
]


def default_root():
    """``$DEFEAT_DATASETS/defeat_demo``, or ``./datasets/defeat_demo`` when unset."""
    return os.path.join(os.environ.get(DATASETS_ENV, "datasets"), DEMO_PREFIX)


def settings_from_env():
    """Generator overrides from ``DEFEAT_DEMO_NUM_TRAIN`` / ``DEFEAT_DEMO_NUM_VAL`` (for smoke runs)."""
    out = {}
    for key, env in (("num_train", "DEFEAT_DEMO_NUM_TRAIN"), ("num_val", "DEFEAT_DEMO_NUM_VAL")):
        if os.environ.get(env):
            out[key] = int(os.environ[env])
    return out


def register_demo_dataset(root=None, name_prefix=DEMO_PREFIX, **gen_kwargs):
    """Generate the dataset if needed and register ``<prefix>_train`` / ``<prefix>_val``.

    ``gen_kwargs`` go to :func:`generate_dataset` (num_train, num_val, image_size, seed,
    num_classes, force).  Names already in ``DatasetCatalog`` are left untouched.
    Returns ``(train_name, val_name)``.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    paths = generate_dataset(root if root is not None else default_root(), **gen_kwargs)
    num_classes = gen_kwargs.get("num_classes", DEFAULT_NUM_CLASSES)
    names = []
    for split in ("train", "val"):
        name = f"{name_prefix}_{split}"
        json_file = paths[f"{split}_json"]
        if name in DatasetCatalog.list():
            registered = MetadataCatalog.get(name).get("json_file")
            if registered != json_file:
                logger.warning("%s already registered with %s; not re-registering with %s", name, registered, json_file)
        else:
            meta = {"thing_classes": list(CLASS_NAMES[:num_classes])}
            register_coco_instances(name, meta, json_file, paths[f"{split}_images"])
            logger.info("registered %s (%s)", name, json_file)
        names.append(name)
    return tuple(names)


def register_demo_dataset_if_used(names) -> None:
    """Generate (main process first, others wait) and register the demo dataset if any of the
    dataset ``names`` is one of its splits; generator overrides come from the environment."""
    from detectron2.utils import comm

    if not any(str(n).startswith(DEMO_PREFIX) for n in names):
        return
    settings = settings_from_env()
    if comm.is_main_process():
        register_demo_dataset(**settings)
    comm.synchronize()
    register_demo_dataset(**settings)
