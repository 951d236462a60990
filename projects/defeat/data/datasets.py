"""Name a COCO-format dataset (a json and an image folder) without writing code.

A dataset is named by a spec ``NAME=ANNOTATIONS.json[:IMAGE_ROOT]``: ``file_name`` entries of
the json are relative to ``IMAGE_ROOT``, which defaults to the json's own folder. Specs come
from the repeatable ``--dataset`` option of every script and from the environment variable
``DEFEAT_COCO_DATASETS`` (specs separated by ``;``). A script exports the specs it was given
to that variable, so the processes it starts (DDP workers, ``train_net.py`` runs of
``benchmarks/accuracy.py``) register the same names. Registration goes through Detectron2's
``register_coco_instances`` (``DatasetCatalog`` + ``MetadataCatalog``, ``evaluator_type="coco"``).
"""

import argparse
import contextlib
import functools
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from ..config.paths import expand_path
from ..errors import DatasetSpecError, EnvironmentVariableError

__all__ = [
    "DATASETS_ENV",
    "NAMED_DATASETS_ENV",
    "CocoDatasetSpec",
    "DatasetSpecError",
    "DatasetsVariableError",
    "IMAGE_CHECKS",
    "check_dataset_files",
    "check_dataset_specs",
    "check_images_under_root",
    "add_dataset_argument",
    "dataset_from_argument",
    "expand_path",
    "PROVIDED_DATASETS",
    "register_provided_datasets",
    "export_dataset_specs",
    "parse_dataset_spec",
    "preloaded_datasets",
    "register_coco_dataset",
    "register_dataset_specs",
    "register_env_specs",
    "setup_datasets",
    "specs_from_env",
    "take_dataset_options",
]

logger = logging.getLogger(__name__)

# The datasets named on a command line (``--dataset`` specs, ``;``-separated), exported to the
# processes a script starts.
NAMED_DATASETS_ENV = "DEFEAT_COCO_DATASETS"
DATASETS_ENV = NAMED_DATASETS_ENV  # the earlier name of the constant
SPEC_FORMAT = "NAME=ANNOTATIONS.json[:IMAGE_ROOT]"
# How thoroughly the images of a dataset are read before a run uses them (``--check-images``;
# ``defeat.data.checks.check_dataset_images`` says what each costs).
IMAGE_CHECKS = ("verify", "full", "none")
_SPEC = re.compile(r"^(?P<name>[^=;]+)=(?P<json>[^;]+?\.json)(?::(?P<root>[^;]+))?$", re.IGNORECASE)


class DatasetsVariableError(EnvironmentVariableError, DatasetSpecError):
    """``$DEFEAT_COCO_DATASETS`` holds a spec that cannot be read or registered; the message names
    the variable, so a tool that was given no ``--dataset`` says where the spec came from."""


@dataclass(frozen=True)
class CocoDatasetSpec:
    """A named COCO-format dataset: absolute paths of its json and image folder."""

    name: str
    json_file: str
    image_root: str

    def __str__(self) -> str:
        return f"{self.name}={self.json_file}:{self.image_root}"


def parse_dataset_spec(text: str) -> CocoDatasetSpec:
    """Parse ``NAME=ANNOTATIONS.json[:IMAGE_ROOT]``; paths are made absolute (against the cwd).

    Raises:
        DatasetSpecError: the text does not have that form.
    """
    m = _SPEC.match(text.strip())
    if not m or not m.group("name").strip():
        raise DatasetSpecError(
            f"cannot read dataset spec {text!r}: expected {SPEC_FORMAT} (e.g. "
            "my_train=data/train.json:data/images); the annotation file must end in .json"
        )
    json_file = os.path.abspath(expand_path(m.group("json")))
    root = m.group("root")
    image_root = os.path.abspath(expand_path(root)) if root else os.path.dirname(json_file)
    return CocoDatasetSpec(m.group("name").strip(), json_file, image_root)


def _load_coco_json(spec: CocoDatasetSpec):
    """Detectron2's ``load_coco_json``, with a clear error for a json without categories."""
    from detectron2.data.datasets import load_coco_json

    try:
        return load_coco_json(spec.json_file, spec.image_root, spec.name)
    except Exception as e:
        # Diagnose only on failure: reading the json again costs nothing on the success path.
        try:
            with open(spec.json_file) as f:
                categories = json.load(f).get("categories")
        except Exception:  # not json at all: the original error says more
            categories = True
        if not categories:
            raise DatasetSpecError(
                f"dataset {spec.name!r}: {spec.json_file} has no 'categories'; a COCO json needs "
                'a list like [{"id": 1, "name": "cat"}, ...] naming every class'
            ) from e
        raise DatasetSpecError(f"dataset {spec.name!r}: cannot load {spec.json_file}: {type(e).__name__}: {e}") from e


def check_dataset_files(spec: CocoDatasetSpec) -> CocoDatasetSpec:
    """``spec`` when its json is a file and its image folder a folder.

    Raises:
        DatasetSpecError: naming the dataset and the missing file or folder, or the folder given as
            the json, the file given as the image folder.
    """
    name, json_file, image_root = spec.name, spec.json_file, spec.image_root
    if os.path.isdir(json_file):
        raise DatasetSpecError(f"dataset {name!r}: {json_file} is a folder; give the annotation .json file in it")
    if not os.path.isfile(json_file):
        raise DatasetSpecError(f"dataset {name!r}: annotation file not found: {json_file}")
    if os.path.exists(image_root) and not os.path.isdir(image_root):
        raise DatasetSpecError(
            f"dataset {name!r}: the image folder {image_root} is a file; give the folder the json's file_name "
            f"entries are relative to ({name}={json_file}:IMAGE_ROOT)"
        )
    if not os.path.isdir(spec.image_root):
        raise DatasetSpecError(
            f"dataset {spec.name!r}: image folder not found: {spec.image_root} (give it as "
            f"{spec.name}={spec.json_file}:IMAGE_ROOT)"
        )
    return spec


def register_coco_dataset(name: str, json_file: str, image_root: Optional[str] = None) -> CocoDatasetSpec:
    """Register a COCO-format dataset under ``name``; registering the same files again is a no-op.

    Args:
        json_file: COCO instances json (``~`` and ``$VARS`` expanded, relative to the cwd).
        image_root: folder that the json's ``file_name`` entries are relative to; default: the
            json's folder.
    Raises:
        DatasetSpecError: the name is empty or holds ``=`` or ``;``, the json or the image folder
            is missing (or a folder / a file), or ``name`` is already registered with other files
            (e.g. a Detectron2 builtin name).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if not isinstance(name, str) or not name.strip() or any(c in name for c in "=;"):
        raise DatasetSpecError(
            f"dataset name {name!r}: give a non-empty name without '=' or ';' (they separate the parts and the "
            f"specs of {NAMED_DATASETS_ENV}, where the name is passed to the processes a script starts)"
        )
    json_file = os.path.abspath(expand_path(json_file))
    image_root = os.path.abspath(expand_path(image_root)) if image_root else os.path.dirname(json_file)
    spec = check_dataset_files(CocoDatasetSpec(name, json_file, image_root))
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        known = (meta.get("json_file"), meta.get("image_root"))
        if all(known) and tuple(os.path.abspath(str(p)) for p in known) == (json_file, image_root):
            return spec
        raise DatasetSpecError(
            f"dataset name {name!r} is already registered with other files (json_file={known[0]}, "
            f"image_root={known[1]}); choose another name for {json_file}"
        )
    # What Detectron2's register_coco_instances does, with the categories check of _load_coco_json.
    DatasetCatalog.register(name, lambda: _load_coco_json(spec))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    logger.info("registered dataset %s: %s (images in %s)", name, json_file, image_root)
    return spec


def specs_from_env(environ=None) -> List[str]:
    """The specs in ``$DEFEAT_COCO_DATASETS`` (``;``-separated), in order."""
    value = (environ if environ is not None else os.environ).get(NAMED_DATASETS_ENV, "")
    return [s.strip() for s in value.split(";") if s.strip()]


def register_dataset_specs(specs: Iterable[str]) -> List[CocoDatasetSpec]:
    """Parse and register each spec; return them (with absolute paths)."""
    out = []
    for text in specs:
        spec = parse_dataset_spec(text)
        out.append(register_coco_dataset(spec.name, spec.json_file, spec.image_root))
    return out


def register_env_specs(environ=None) -> List[CocoDatasetSpec]:
    """Parse and register the specs of ``$DEFEAT_COCO_DATASETS``.

    Raises:
        DatasetsVariableError: a spec there is malformed or names missing files; the message
            names the variable and how to fix or unset it.
    """
    try:
        return register_dataset_specs(specs_from_env(environ))
    except DatasetSpecError as e:
        raise _variable_error(e, environ) from e


def _variable_error(error: DatasetSpecError, environ=None) -> DatasetsVariableError:
    value = (environ if environ is not None else os.environ).get(NAMED_DATASETS_ENV, "")
    return DatasetsVariableError(
        f"environment variable {NAMED_DATASETS_ENV}={value!r}: {error}. Fix the spec there ({SPEC_FORMAT}, "
        f"';'-separated) or unset it (unset {NAMED_DATASETS_ENV}) and name the dataset with --dataset"
    )


def check_dataset_specs(
    cli_specs: Optional[Iterable[str]] = (), environ=None, environment: bool = True
) -> List[CocoDatasetSpec]:
    """What :func:`setup_datasets` refuses that needs no Detectron2, in its order, registering
    nothing (a command's checks before its heavy imports): each spec of ``$DEFEAT_COCO_DATASETS``
    (unless ``environment`` is False), then of ``cli_specs``, parses and names a json and an image
    folder that exist.

    Raises:
        DatasetsVariableError: a spec of the variable (the message names it), as :func:`register_env_specs`.
        DatasetSpecError: a spec of ``cli_specs``.
    """
    try:
        env = specs_from_env(environ) if environment else []
        specs = [check_dataset_files(parse_dataset_spec(text)) for text in env]
    except DatasetSpecError as e:
        raise _variable_error(e, environ) from e
    return specs + [check_dataset_files(parse_dataset_spec(text)) for text in cli_specs or ()]


def export_dataset_specs(specs: Sequence[CocoDatasetSpec]) -> None:
    """Add ``specs`` to ``$DEFEAT_COCO_DATASETS`` (absolute paths) for the processes started later."""
    current = specs_from_env()
    added = [str(s) for s in specs if str(s) not in current]
    if added:
        os.environ[NAMED_DATASETS_ENV] = ";".join(current + added)


# Names that a module supplies on first use (generated data, e.g. the embedded demo datasets):
# name prefix -> the module (by name, imported only when such a name is used) whose
# ``register_datasets_if_used(names)`` generates (one process per machine) and registers them.
PROVIDED_DATASETS = {
    "defeat_demo_": "defeat.demo.data",
    "defeat_glyphs_": "defeat.demo.data",
    "defeat_photos_": "defeat.demo.data",
}


def register_provided_datasets(names: Iterable[str]) -> None:
    """Register the dataset ``names`` that a module of :data:`PROVIDED_DATASETS` supplies (the
    provider leaves names already registered as they are); call it in every process, the
    provider synchronises them. Other names are left to Detectron2 and ``--dataset``."""
    import importlib

    by_module: Dict[str, List[str]] = {}
    for name in map(str, names):
        for prefix, module in PROVIDED_DATASETS.items():
            if name.startswith(prefix):
                by_module.setdefault(module, []).append(name)
    for module, used in by_module.items():
        importlib.import_module(module).register_datasets_if_used(used)


def setup_datasets(cli_specs: Optional[Iterable[str]] = ()) -> List[CocoDatasetSpec]:
    """Register the datasets of ``$DEFEAT_COCO_DATASETS`` and ``cli_specs`` (``--dataset``),
    then export all of them to the environment. Call it in every process (e.g. in ``setup()``).
    """
    specs = [*register_env_specs(), *register_dataset_specs(cli_specs or ())]
    export_dataset_specs(specs)
    return specs


def add_dataset_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the repeatable ``--dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT]`` option to ``parser``."""
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar=SPEC_FORMAT,
        help="name a COCO-format dataset (repeatable); IMAGE_ROOT defaults to the json's folder. "
        f"Also read from ${NAMED_DATASETS_ENV} (';'-separated)",
    )
    return parser


def take_dataset_options(args: argparse.Namespace) -> argparse.Namespace:
    """Move ``--dataset X`` (or ``--dataset=X``) that argparse left among the trailing config
    overrides (``args.opts``, an ``argparse.REMAINDER``) into ``args.dataset``."""
    opts, rest = list(getattr(args, "opts", None) or []), []
    found = list(getattr(args, "dataset", None) or [])
    i = 0
    while i < len(opts):
        item = opts[i]
        if item == "--dataset":
            if i + 1 >= len(opts):
                raise DatasetSpecError(f"--dataset needs a value: {SPEC_FORMAT}")
            found.append(opts[i + 1])
            i += 2
            continue
        if item.startswith("--dataset="):
            found.append(item[len("--dataset=") :])
        else:
            rest.append(item)
        i += 1
    args.opts, args.dataset = rest, found
    return args


@contextlib.contextmanager
def preloaded_datasets(dicts_by_name: Optional[Dict[str, list]]):
    """While active, ``DatasetCatalog.get(name)`` returns the given, already loaded dicts.

    Lets a script check a training set and then build Detectron2's train loader
    (``get_detection_dataset_dicts``: filtering, histogram, ...) from the same list, instead of
    loading a large annotation file twice. ``None`` or ``{}`` changes nothing.
    """
    from detectron2.data import DatasetCatalog

    saved = {name: DatasetCatalog[name] for name in (dicts_by_name or {})}
    try:
        for name, dicts in (dicts_by_name or {}).items():
            DatasetCatalog[name] = functools.partial(_same, dicts)  # UserDict item: no re-register check
        yield
    finally:
        for name, loader in saved.items():
            DatasetCatalog[name] = loader


def _same(value):
    return value


def check_images_under_root(dataset_dicts: Iterable[Dict], dataset_name: str, image_root: str) -> None:
    """Refuse a dataset whose image paths (``file_name``, as Detectron2 joined it to the image
    folder) resolve outside ``image_root``, such as ``../../etc/x.png`` or an absolute path
    elsewhere: a tool that writes beside the dataset's images guards their folder, not the files
    outside it. Paths are compared after normalising ``..``; links are not followed.

    Raises:
        DatasetSpecError: naming the dataset, the first such ``file_name``, the count and the fix.
    """
    root = os.path.normpath(os.path.abspath(image_root))
    outside = []
    for record in dataset_dicts:
        path = os.path.normpath(os.path.abspath(str(record.get("file_name", ""))))
        if path != root and not path.startswith(root.rstrip(os.sep) + os.sep):
            outside.append((record.get("file_name"), path))
    if outside:
        more = f" ({len(outside)} images in all)" if len(outside) > 1 else ""
        raise DatasetSpecError(
            f"dataset {dataset_name!r}: image {outside[0][0]!r} resolves to {outside[0][1]!r}, outside its image "
            f"folder (IMAGE_ROOT) {root!r}{more}; give file_name relative to IMAGE_ROOT without '..' in the "
            f"annotations, or name the folder that holds every image as IMAGE_ROOT ({SPEC_FORMAT})"
        )


def dataset_from_argument(value: str) -> str:
    """The dataset a one-dataset tool works on: ``value`` is a name already known (a Detectron2
    builtin, the demo set, one in ``$DEFEAT_COCO_DATASETS``) or a spec that names it now.
    Registers the environment's datasets too; returns the name.

    Raises:
        DatasetSpecError: a name that no one registered, or a spec that cannot be registered.
    """
    from detectron2.data import DatasetCatalog

    setup_datasets()
    if "=" in value:
        (spec,) = register_dataset_specs([value])
        export_dataset_specs([spec])
        return spec.name
    register_provided_datasets([value])
    if value not in DatasetCatalog.list():
        raise DatasetSpecError(
            f"dataset {value!r} is not registered (not a Detectron2 builtin, a generated demo set or one in "
            f"${NAMED_DATASETS_ENV}); name it with its files: {value}=ANNOTATIONS.json[:IMAGE_ROOT]"
        )
    return value
