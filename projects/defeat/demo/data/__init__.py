"""Embedded demo datasets: procedurally generated objects in COCO format.

Three styles, selected by name: ``shapes`` (the default; registered as ``defeat_demo_{train,val}``),
``glyphs`` (``defeat_glyphs_{train,val}``; other object kinds in random colours, unlabelled decoys)
and ``photos`` (``defeat_photos_{train,val}``; objects cut from real photographs onto real ones,
from scikit-image's bundled sample photos). ``generate_dataset`` writes the files (numpy + OpenCV,
imported on first use; scikit-image for ``photos``); ``register_demo_dataset`` also
registers the splits in Detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.
"""

import logging
import os

from ...errors import EnvironmentVariableError
from .names import (
    CLASS_NAMES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_CLASSES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    DEFAULT_STYLE,
    GENERATOR_VERSION,
    STYLES,
    check_style,
)

logger = logging.getLogger(__name__)

DEMO_PREFIX = "defeat_demo"
DEMO_TRAIN = f"{DEMO_PREFIX}_train"
DEMO_VAL = f"{DEMO_PREFIX}_val"
DEMO_CLASSES = CLASS_NAMES
# The folder the generated demo datasets are written to and read from (default ./datasets);
# ``DEFEAT_DATASETS``, its earlier name, is still read when it is unset.
DEMO_ROOT_ENV = "DEFEAT_DEMO_ROOT"
OLD_DEMO_ROOT_ENV = "DEFEAT_DATASETS"
DATASETS_ENV = DEMO_ROOT_ENV  # the earlier name of the constant
# generator style -> the name prefix of its registered splits (and of its folder)
STYLE_PREFIXES = {"shapes": DEMO_PREFIX, "glyphs": "defeat_glyphs", "photos": "defeat_photos"}

__all__ = [
    "CLASS_NAMES",
    "DATASETS_ENV",
    "DEMO_ROOT_ENV",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "DEFAULT_STYLE",
    "DEMO_CLASSES",
    "DEMO_PREFIX",
    "DEMO_TRAIN",
    "DEMO_VAL",
    "GENERATOR_VERSION",
    "STYLES",
    "STYLE_PREFIXES",
    "dataset_stats",
    "default_root",
    "generate_dataset",
    "register_demo_dataset",
    "register_demo_dataset_if_used",
    "register_datasets_if_used",
    "render_image",
    "settings_from_env",
    "style_class_names",
]


# The generators and the writer import numpy and OpenCV: these four import them on first use, so
# that the names above (the choices of ``python -m defeat.demo.data`` and ``benchmarks/accuracy.py``)
# come without them.


def render_image(*args, **kwargs):
    """``defeat.demo.data.synthetic.render_image``: one image of the shapes dataset."""
    from .synthetic import render_image as render

    return render(*args, **kwargs)


def generate_dataset(*args, **kwargs):
    """``defeat.demo.data.writer.generate_dataset``: write a dataset of a style (if not up to date)."""
    from .writer import generate_dataset as generate

    return generate(*args, **kwargs)


def dataset_stats(*args, **kwargs):
    """``defeat.demo.data.writer.dataset_stats``: images, objects per size and per class of a json."""
    from .writer import dataset_stats as stats

    return stats(*args, **kwargs)


def style_class_names(*args, **kwargs):
    """``defeat.demo.data.writer.style_class_names``: the class names of a style."""
    from .writer import style_class_names as names

    return names(*args, **kwargs)


def default_root(style=DEFAULT_STYLE):
    """``$DEFEAT_DEMO_ROOT/<prefix>`` (``./datasets/<prefix>`` when unset), the prefix of
    ``style``: ``defeat_demo`` for ``shapes``, ``defeat_glyphs`` for ``glyphs``, ``defeat_photos``
    for ``photos``."""
    check_style(style)  # names the styles on a typo
    root = os.environ.get(DEMO_ROOT_ENV) or os.environ.get(OLD_DEMO_ROOT_ENV) or "datasets"
    return os.path.join(root, STYLE_PREFIXES[style])


def settings_from_env():
    """Generator overrides from ``DEFEAT_DEMO_NUM_TRAIN`` / ``DEFEAT_DEMO_NUM_VAL`` (for smoke runs)."""
    out = {}
    for key, env in (("num_train", "DEFEAT_DEMO_NUM_TRAIN"), ("num_val", "DEFEAT_DEMO_NUM_VAL")):
        text = os.environ.get(env, "").strip()
        if text:
            try:
                out[key] = int(text)
            except ValueError:
                out[key] = -1
            if out[key] < 1:
                raise EnvironmentVariableError(
                    f"environment variable {env}={text!r} is not a positive number of images: set it to an "
                    f"integer such as 100, or unset it (unset {env}) for the default"
                )
    return out


def register_demo_dataset(root=None, name_prefix=None, style=DEFAULT_STYLE, **gen_kwargs):
    """Generate the dataset of ``style`` if needed and register ``<prefix>_train`` /
    ``<prefix>_val`` (``name_prefix`` defaults to the style's, see :data:`STYLE_PREFIXES`).

    ``gen_kwargs`` go to :func:`generate_dataset` (num_train, num_val, image_size, seed,
    num_classes (default: all of the style's), force).  Names already in ``DatasetCatalog`` are left untouched.
    Returns ``(train_name, val_name)``.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    class_names = style_class_names(style)
    name_prefix = name_prefix or STYLE_PREFIXES[style]
    paths = generate_dataset(root if root is not None else default_root(style), style=style, **gen_kwargs)
    num_classes = gen_kwargs.get("num_classes") or len(class_names)
    names = []
    for split in ("train", "val"):
        name = f"{name_prefix}_{split}"
        json_file = paths[f"{split}_json"]
        if name in DatasetCatalog.list():
            registered = MetadataCatalog.get(name).get("json_file")
            if registered != json_file:
                logger.warning("%s already registered with %s; not re-registering with %s", name, registered, json_file)
        else:
            meta = {"thing_classes": list(class_names[:num_classes])}
            register_coco_instances(name, meta, json_file, paths[f"{split}_images"])
            logger.info("registered %s (%s)", name, json_file)
        names.append(name)
    return tuple(names)


def register_demo_dataset_if_used(names) -> None:
    """Generate (the first process of each machine, while the others wait: every machine has
    its own disk) and register each demo dataset that one of the dataset ``names`` is a split
    of; generator overrides come from the environment."""
    from detectron2.utils import comm

    settings = settings_from_env()
    for style, prefix in STYLE_PREFIXES.items():
        if not any(str(n).startswith(prefix + "_") for n in names):
            continue
        if comm.get_local_rank() == 0:
            register_demo_dataset(style=style, **settings)
        comm.synchronize()
        register_demo_dataset(style=style, **settings)


# The provider hook that ``defeat.data.datasets.PROVIDED_DATASETS`` names.
register_datasets_if_used = register_demo_dataset_if_used
