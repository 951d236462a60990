"""Read a Detectron2 YAML or LazyConfig (``.py``) file and build its model: what the tools share.

``get_config_file`` finds the configs that ship with the package (``configs/`` of the
repository, copied into an installed wheel as ``defeat/configs``), like
``detectron2.model_zoo.get_config_file``.

A YAML config becomes a ``CfgNode`` with DeFeat's keys (overrides ``KEY VALUE`` pairs, as
``train_net.py``); a ``.py`` file becomes a LazyConfig (overrides ``key=value``, as
``lazy_train_net.py``). The accessors below read the same facts from either form, so a tool
never needs to know which one it was given.
"""

import contextlib
import copy
import dataclasses
import logging
import os
import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import yaml
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigFileError, OverrideError
from .iterations import check_yaml_schedule, lazy_schedule, rescale_lazy, rescale_yaml, settle_lazy_schedule
from .paths import check_config_file, expand_path, is_lazy_config

__all__ = [
    "ConfigFileError",
    "expand_path",
    "check_config_file",
    "resolve_teacher_config_file",
    "merge_defeat_config_file",
    "words_or_numbers",
    "configs_root",
    "get_config_file",
    "is_lazy_config",
    "load_config",
    "load_training_config",
    "file_is_lazy",
    "TRAINING_SCRIPTS",
    "check_overrides",
    "num_classes",
    "output_dir",
    "teacher_files",
    "test_dataset_names",
    "OverrideError",
    "architecture",
    "model_node_class",
    "is_defeat_architecture",
    "is_defeat_config",
    "build_model_from_config",
    "build_backbone_from_config",
    "model_weights",
    "model_device",
    "train_dataset_names",
    "inference_augmentations",
    "image_format",
    "pixel_stats",
    "defeat_settings",
    "RUN_KEYS",
    "key_of",
    "set_run_values",
    "for_building",
    "architecture_name",
    "build_model_as",
    "test_pipelines",
    "run_value",
    "run_counts",
    "override_text",
    "masks_needed",
    "set_defeat_setting",
    "LAZY_SCORE_THRESHOLDS",
    "set_score_threshold",
    "prediction_dataset_names",
    "lazy_overrides",
    "load_with_yaml_overrides",
    "script_for",
    "script_overrides",
    "config_tree",
    "STUDENT_KEYS",
    "SavedModel",
    "saved_form",
    "saved_model_fields",
    "saved_run_setting",
]

Config = Union[CfgNode, DictConfig]

logger = logging.getLogger(__name__)


def _base_path(base: str, including_file: str) -> str:
    """Where fvcore looks for ``_BASE_: base`` of ``including_file``."""
    if base.startswith("~"):
        base = os.path.expanduser(base)
    if not base.startswith(("/", "https://", "http://")):
        base = os.path.join(os.path.dirname(including_file), base)
    return base


def _setter_of(config_file: str, keys: Sequence[str]) -> Optional[Tuple[str, Any]]:
    """``(file, value)`` of the file of ``config_file``'s ``_BASE_`` chain whose value of the
    nested ``keys`` wins the merge (the file itself, else its last base that sets it)."""
    try:
        with open(config_file) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):  # a URL or an unsafe-YAML base: no setter found there
        return None
    node = data
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    if node is not None:
        return config_file, node
    bases = data.get("_BASE_") or []
    for base in reversed(bases if isinstance(bases, list) else [bases]):
        found = _setter_of(_base_path(base, config_file), keys)
        if found is not None:
            return found
    return None


def resolve_teacher_config_file(cfg, config_file: str) -> None:
    """Make ``MODEL.DEFEAT.TEACHER.CONFIG_FILE`` relative to the config file that sets it.

    Call right after ``cfg.merge_from_file(config_file)``. A relative value is looked up beside
    the file of the ``_BASE_`` chain that set it (as ``_BASE_`` paths are), after expanding
    ``~`` and ``$VARS``; if no file is there, the value stays relative to the working directory
    (the loader checks it then). ``model_zoo:`` names and URLs are left alone.
    """
    if "DEFEAT" not in cfg.MODEL:
        return
    value = cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE
    if not value or value.startswith("model_zoo:") or "://" in value:
        return
    expanded = expand_path(value)
    if os.path.isabs(expanded) or config_file.endswith(".py"):
        return
    found = _setter_of(config_file, ("MODEL", "DEFEAT", "TEACHER", "CONFIG_FILE"))
    if found is None or found[1] != value:
        return
    beside = os.path.join(os.path.dirname(os.path.abspath(found[0])), expanded)
    if os.path.isfile(beside):
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE = beside
        if frozen:
            cfg.freeze()


def floats_where_expected(cfg, opts: Sequence[str]) -> List[str]:
    """``KEY VALUE`` overrides with a whole number given for a float key written as a float
    (``MODEL.DEFEAT.BOX.WEIGHT 0`` -> ``0.0``): yacs refuses an int where the default is a float."""
    import ast

    out = [str(o) for o in opts]
    for i in range(0, len(out) - 1, 2):
        node = cfg
        for part in out[i].split("."):
            node = node.get(part) if isinstance(node, CfgNode) else None
        if isinstance(node, float):
            try:
                value = ast.literal_eval(out[i + 1])
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                out[i + 1] = repr(float(value))
    return out


@contextlib.contextmanager
def words_or_numbers(cfg):
    """While active, the ``MODEL.DEFEAT`` keys that take a word as well as a number (the settings
    table's ``words``: ``NECK.SCALE_BASE: auto``) accept either from a file or an override: yacs
    refuses a value of another type than the key's, except where the key holds None. On exit a key
    left None gets its value back and a whole number becomes a float. A config without
    ``MODEL.DEFEAT`` is left alone."""
    from .validation import RULES

    held = []
    defeat = cfg.MODEL.get("DEFEAT", None) if isinstance(cfg, CfgNode) else None
    if defeat is not None:
        for path, rule in RULES.items():
            if not rule.words:
                continue
            node = defeat
            for key in path[:-1]:
                node = node[key.upper()]
            held.append((node, path[-1].upper(), node[path[-1].upper()]))
            node[path[-1].upper()] = None
    try:
        yield
    finally:
        for node, key, before in held:
            value = node[key]
            if value is None:
                node[key] = before
            elif isinstance(value, int) and not isinstance(value, bool):
                node[key] = float(value)


def merge_defeat_config_file(cfg, config_file: str, opts: Sequence[str] = ()):
    """``cfg.merge_from_file(config_file)``, the teacher config path resolved
    (:func:`resolve_teacher_config_file`), then ``cfg.merge_from_list(opts)``; returns ``cfg``.
    ``NECK.SCALE_BASE`` takes ``auto`` in either (:func:`words_or_numbers`)."""
    with words_or_numbers(cfg):
        cfg.merge_from_file(config_file)
    resolve_teacher_config_file(cfg, config_file)
    opts = floats_where_expected(cfg, opts)
    with words_or_numbers(cfg):
        cfg.merge_from_list(opts)
    return cfg


def configs_root() -> str:
    """The folder of the bundled configs: ``defeat/configs`` in an installed package, else the
    ``configs/`` folder of the source checkout the package is imported from."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package folder
    for root in (os.path.join(here, "configs"), os.path.join(os.path.dirname(os.path.dirname(here)), "configs")):
        if os.path.isdir(root):
            return root
    raise ConfigFileError(f"no bundled configs next to the package {here}: reinstall defeat-detectron2")


def get_config_file(config_path: str) -> str:
    """Absolute path of a bundled config, e.g. ``"Base-DeFeat-RCNN-FPN.yaml"`` or
    ``"COCO-Detection/defeat_R50_FPN_1x_from_R101_FPN_3x.yaml"`` (``_BASE_`` chains resolve
    inside the same folder).

    Raises:
        ConfigFileError: no such bundled config (the message lists where it looked).
    """
    root = configs_root()
    path = os.path.normpath(os.path.join(root, config_path))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise ConfigFileError(f"{config_path!r} is not one of DeFeat's bundled configs (in {root})")
    return path


def load_config(
    path: str, opts: Sequence[str] = (), *, lazy: Optional[bool] = None, check_settings: bool = True
) -> Config:
    """The config of ``path`` with ``opts`` applied: the loader of the scripts, tools,
    benchmarks, the teacher and the tests.

    YAML: ``get_cfg()`` + ``add_defeat_config`` + the file (``MODEL.DEFEAT.TEACHER.CONFIG_FILE``
    made relative to the file that sets it) + ``opts`` as ``KEY VALUE`` pairs.
    ``.py``: ``LazyConfig.load`` + ``opts`` as ``key=value`` strings, each checked first
    (:func:`check_overrides`: Detectron2 would add a misspelt key silently); ``model.defeat``
    (if any) then goes through the settings gate (unless ``check_settings`` is False: a teacher's
    config is loaded only to be built or refused). ``lazy``: the file is a LazyConfig (a ``.py``
    file, or the ``config.yaml`` that ``lazy_train_net.py`` saves); ``None`` decides by the name.
    A run length changed by the overrides (``SOLVER.MAX_ITER``, ``train.max_iter``) scales the
    config's schedule (``defeat.config.iterations``: LR steps and warm-ups, one INFO line); then
    every iteration count is derived from and checked against the run's length (unless
    ``check_settings`` is False): LR steps, LR and KD warm-ups, ``num_updates``,
    ``model.defeat.max_iter``.

    Raises:
        ConfigFileError: the file does not exist, does not parse, or an override does not apply;
            the message names the file (or the override).
        ConfigFileError: also an LR schedule that contradicts the run's length (steps outside it
            or not increasing, a warm-up longer than it, milestones without their values).
        OverrideError: a LazyConfig override names no key of the config or has another type.
        DeFeatConfigError: a ``model.defeat`` setting of a LazyConfig is invalid, or the KD
            warm-up or schedule length contradicts the run's length.
    """
    check_config_file(path)
    opts = [str(o) for o in opts]
    if lazy or (lazy is None and is_lazy_config(path)):
        try:
            cfg = LazyConfig.load(path)
        except Exception as e:  # syntax errors, failing imports
            raise ConfigFileError(f"cannot load LazyConfig {path!r}: {type(e).__name__}: {e}") from e
        if "model" not in cfg:
            raise ConfigFileError(f"LazyConfig {path!r} has no 'model' entry")
        bad = [o for o in opts if "=" not in o]
        if bad:
            raise ConfigFileError(f"overrides of a LazyConfig are key=value, got {bad} for {path!r}")
        check_overrides(cfg, opts)
        schedule = lazy_schedule(cfg)  # in iterations of the file's train.max_iter
        try:
            cfg = LazyConfig.apply_overrides(cfg, opts)
        except Exception as e:
            raise ConfigFileError(f"cannot apply overrides {opts} to {path!r}: {type(e).__name__}: {e}") from e
        _log_rescale(rescale_lazy(cfg, schedule, opts))
        if check_settings:  # a teacher's schedule is not run
            _log_rescale(settle_lazy_schedule(cfg, opts))
        if check_settings and "defeat" in cfg.model:
            from .settings import resolve_settings

            resolve_settings(cfg.model.defeat)  # raises DeFeatConfigError naming the key
        return cfg
    from .defaults import add_defeat_config

    if _empty_yaml(path):
        raise ConfigFileError(
            f"config file {path!r} is empty (or only comments): a YAML config needs at least a _BASE_ or MODEL entry"
        )
    cfg = get_cfg()
    add_defeat_config(cfg)
    try:
        with words_or_numbers(cfg):  # NECK.SCALE_BASE: auto
            cfg.merge_from_file(path)
        resolve_teacher_config_file(cfg, path)  # relative to the file that sets it, as _BASE_
    except Exception as e:  # yaml errors, unknown keys, bad _BASE_ paths
        raise ConfigFileError(f"cannot read config {path!r}: {_reason(e)}") from e
    file_max_iter = cfg.SOLVER.MAX_ITER
    try:
        opts = floats_where_expected(cfg, opts)
        with words_or_numbers(cfg):
            cfg.merge_from_list(opts)
    except Exception as e:  # odd count, unknown key, wrong type
        raise ConfigFileError(f"cannot apply overrides {opts} to {path!r}: {_reason(e)}") from e
    _log_rescale(rescale_yaml(cfg, file_max_iter, opts))
    if check_settings:  # a teacher's schedule is not run
        check_yaml_schedule(cfg)
    return cfg


def _empty_yaml(path: str) -> bool:
    """Whether the YAML file ``path`` holds nothing (empty, or only comments)."""
    try:
        with open(path) as f:
            return yaml.safe_load(f) is None
    except (OSError, yaml.YAMLError):  # the merge reports it
        return False


# yacs's refusal of a value of another type than the config's: the old and new types, values, key.
_MISMATCH = re.compile(
    r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) for config key: (\S+)",
    re.DOTALL,
)


def _reason(error: BaseException) -> str:
    """What went wrong in a YAML merge, for a message: yacs's type mismatch as the key, the value
    given and how to write it; anything else as ``Type: message``."""
    m = _MISMATCH.search(str(error))
    if not m:
        return f"{type(error).__name__}: {error}"
    old, new, old_value, value, key = m.groups()
    if old == "float" and new == "int":
        fix = f"write it with a decimal point ({value}.0)"
    elif old == "int" and new == "float":
        fix = "write a whole number (no decimal point or exponent)"
    elif old == "bool":
        fix = "write True or False"
    elif old in ("tuple", "list"):
        names = [n.strip(" '\"") for n in value.strip("()[] ").split(",") if n.strip(" '\"")]
        example = "(" + ", ".join(repr(n) for n in names) + ("," if len(names) == 1 else "") + ")"
        fix = f'write a {old} with each item quoted, e.g. {example} (on the command line in quotes: "{example}")'
    else:
        fix = f"give {_a(old)} like {old_value}"
    return f"{key} = {value} is {_a(new)}, but the config holds {_a(old)} there ({old_value}): {fix}"


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _log_rescale(note: Optional[str]) -> None:
    if note:
        logger.info(note)


TRAINING_SCRIPTS = {False: "train_net.py", True: "lazy_train_net.py"}


def file_is_lazy(path: str) -> bool:
    """Whether ``path`` is a LazyConfig: a ``.py`` file, or a YAML file with a lowercase ``model``
    and no ``MODEL`` at its top level (the ``config.yaml`` a LazyConfig run saves)."""
    if is_lazy_config(path):
        return True
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):  # the loader reports it
        return False
    top = set(re.findall(r"^([A-Za-z_]\w*):", text, re.MULTILINE))  # not parsed: objects are saved as python tags
    return "model" in top and "MODEL" not in top


def load_training_config(path: str, opts: Sequence[str], lazy: bool) -> Config:
    """:func:`load_config` for the training script of one kind of config (``lazy``: the
    script is ``lazy_train_net.py``, else ``train_net.py``), which also reads a LazyConfig run's
    saved ``config.yaml``.

    Raises:
        ConfigFileError: the file is of the other kind, naming the script that trains it.
        (and what :func:`load_config` raises)
    """
    if os.path.isfile(path) and file_is_lazy(path) != lazy:
        what = "a YAML config (Detectron2's CfgNode)" if lazy else "a LazyConfig"
        form = "KEY VALUE pairs" if lazy else "key=value"
        raise ConfigFileError(
            f"{path!r} is {what}, which {TRAINING_SCRIPTS[lazy]} does not train: run "
            f"{TRAINING_SCRIPTS[not lazy]} with it (the same options; its overrides are {form})"
        )
    return load_config(path, opts, lazy=lazy)


def num_classes(cfg: Config) -> Tuple[Optional[int], str]:
    """``(classes, config key)`` of the config's detector: ``MODEL.RETINANET.NUM_CLASSES`` or
    ``MODEL.ROI_HEADS.NUM_CLASSES``; ``model.roi_heads.num_classes`` or ``model.num_classes`` of a
    LazyConfig (``(None, "")`` when it sets neither)."""
    if isinstance(cfg, CfgNode):
        if "RetinaNet" in cfg.MODEL.META_ARCHITECTURE:
            return cfg.MODEL.RETINANET.NUM_CLASSES, "MODEL.RETINANET.NUM_CLASSES"
        return cfg.MODEL.ROI_HEADS.NUM_CLASSES, "MODEL.ROI_HEADS.NUM_CLASSES"
    heads = cfg.model.get("roi_heads")
    if heads is not None and heads.get("num_classes") is not None:
        return heads.num_classes, "model.roi_heads.num_classes"
    if cfg.model.get("num_classes") is not None:
        return cfg.model.num_classes, "model.num_classes"
    return None, ""


# ---- LazyConfig command-line overrides ----

_ABSENT = object()


def _select(cfg, key):
    """The (resolved) value at dotted ``key``; ``_ABSENT`` if there is none."""
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)


def _type_problem(old, new):
    """Why ``new`` cannot replace ``old`` (None if it can): same kind of value as the config's."""

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if isinstance(old, bool):
        ok, kind = isinstance(new, bool), "True or False"
    elif isinstance(old, int) and not isinstance(old, bool):
        ok, kind = isinstance(new, int) and not isinstance(new, bool), "an integer"
    elif isinstance(old, float):
        ok, kind = is_num(new), "a number"
    elif isinstance(old, DictConfig):
        ok, kind = isinstance(new, (dict, DictConfig)), "a mapping"
    elif isinstance(old, str):  # a path, a name, a device: a number or bool there is a slip
        ok, kind = not (is_num(new) or isinstance(new, bool)), "text (quote a number meant as text: key='5')"
    else:
        return None
    return None if ok else f"the config's value is {old!r}, so it must be {kind}"


def check_overrides(cfg, overrides):
    """Refuse overrides that Detectron2's ``apply_overrides`` would silently get wrong.

    Raises:
        OverrideError: a key with a missing parent (``modle.defeat...``), a new key under a plain
            mapping (``train.max_itr``) not written ``+key=...``, or a value of another type
            (``train.max_iter=abc``).
    """
    for o in overrides:
        if "=" not in o:
            raise OverrideError(f"override {o!r} is not of the form key=value")
        key, value = o.split("=", 1)
        key = key.strip()
        if key.startswith("~"):
            raise OverrideError(f"override {o!r}: deleting keys is not supported")
        if key.startswith("+"):
            continue  # Hydra's explicit addition (+key=value): a new key on purpose
        parts = key.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            node = _select(cfg, parent)
            if node is _ABSENT:
                above = _select(cfg, ".".join(parts[: i - 1])) if i > 1 else cfg
                known = sorted(above.keys()) if isinstance(above, DictConfig) else []
                raise OverrideError(
                    f"override {o!r}: {parent!r} is not in the config (known keys there: {known}); check the spelling"
                )
        if parts[:2] == ["model", "defeat"] and len(parts) > 2:
            continue  # DeFeat settings: names, types and ranges checked by resolve_settings in load_config
        old = _select(cfg, key)
        if old is _ABSENT:
            parent = _select(cfg, ".".join(parts[:-1])) if len(parts) > 1 else cfg
            is_call = isinstance(parent, DictConfig) and "_target_" in parent
            if not is_call:
                known = sorted(parent.keys()) if isinstance(parent, DictConfig) else []
                raise OverrideError(
                    f"override {o!r}: {key!r} is not in the config (known keys there: {known}); check the "
                    f"spelling, or write +{key}=... to add a new key"
                )
            continue
        if value.strip().startswith("${"):
            continue  # an interpolation: its target is checked where it is used
        new = _select(LazyConfig.apply_overrides(OmegaConf.create({}), [f"{key}={value}"]), key)
        problem = _type_problem(old, new)
        if problem:
            raise OverrideError(f"override {o!r}: {key} got {new!r} ({type(new).__name__}); {problem}")


def architecture(cfg: Config) -> type:
    """The model class a config builds (not built): ``META_ARCHITECTURE`` or ``model._target_``
    (the architecture lookup; :func:`model_node_class` for a LazyConfig's ``model`` node)."""
    if isinstance(cfg, CfgNode):
        from detectron2.modeling import META_ARCH_REGISTRY

        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return model_node_class(cfg.model)


def model_node_class(model_cfg) -> Any:
    """The class (or callable) of a LazyConfig ``model`` node's ``_target_`` (``None`` if unset)."""
    target = model_cfg.get("_target_", None)
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        target = locate(target)
    return target


def is_defeat_architecture(cls) -> bool:
    """Whether ``cls`` is a DeFeat model (anything with a teacher of its own, marked by the
    ``has_defeat_teacher`` class attribute of ``TeacherMixin``), whatever its name."""
    return isinstance(cls, type) and bool(getattr(cls, "has_defeat_teacher", False))


def is_defeat_config(cfg: Config) -> bool:
    """Whether the config builds a DeFeat model (a student with a teacher), whatever its name."""
    return is_defeat_architecture(architecture(cfg))


def model_device(cfg: Config) -> str:
    """``MODEL.DEVICE`` or ``train.device`` (``cpu`` if the LazyConfig has no ``train``)."""
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.DEVICE
    return cfg.get("train", {}).get("device", "cpu")


def build_model_from_config(cfg: Config) -> nn.Module:
    """The config's model on its device: ``build_model(cfg)`` or ``instantiate(cfg.model)``.

    A DeFeat config builds its teacher too (``MODEL.DEFEAT.TEACHER`` / ``model.teacher``).
    """
    if isinstance(cfg, CfgNode):
        from detectron2.modeling import build_model

        return build_model(cfg)
    return instantiate(cfg.model).to(model_device(cfg))


def build_backbone_from_config(cfg: Config) -> nn.Module:
    """Only the config's backbone (no teacher, no heads), in eval mode on the config's device."""
    if isinstance(cfg, CfgNode):
        from detectron2.modeling import build_backbone

        backbone = build_backbone(cfg)
    else:
        backbone = instantiate(cfg.model.backbone)
    return backbone.to(model_device(cfg)).eval()


def model_weights(cfg: Config) -> str:
    """The weights the config starts from: ``MODEL.WEIGHTS`` or ``train.init_checkpoint``."""
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.WEIGHTS
    return cfg.get("train", {}).get("init_checkpoint", "") or ""


def teacher_files(cfg: Config) -> Optional[Tuple[str, str]]:
    """``(config file, weights)`` of a DeFeat config's teacher (``MODEL.DEFEAT.TEACHER`` or the
    ``config_file``/``weights`` of ``model.teacher``); None for other configs."""
    if isinstance(cfg, CfgNode):
        if not is_defeat_config(cfg):
            return None
        return cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE, cfg.MODEL.DEFEAT.TEACHER.WEIGHTS
    teacher = cfg.get("model", {}).get("teacher", None) if hasattr(cfg, "get") else None
    if teacher is None or not hasattr(teacher, "get"):
        return None
    return str(teacher.get("config_file", "") or ""), str(teacher.get("weights", "") or "")


def output_dir(cfg: Config) -> str:
    """``OUTPUT_DIR`` or ``train.output_dir`` (``""`` for a LazyConfig's ``null``)."""
    if isinstance(cfg, CfgNode):
        return cfg.OUTPUT_DIR
    value = cfg.train.output_dir
    return "" if value is None else str(value)


def test_dataset_names(cfg: Config) -> List[str]:
    """``DATASETS.TEST`` or the names of ``dataloader.test.dataset`` (none without one)."""
    if isinstance(cfg, CfgNode):
        return list(cfg.DATASETS.TEST)
    try:
        names = cfg.dataloader.test.dataset.names
    except Exception:  # no test loader in the file
        return []
    return [names] if isinstance(names, str) else list(names)


def train_dataset_names(cfg: Config) -> List[str]:
    """``DATASETS.TRAIN`` or the names of ``dataloader.train.dataset``."""
    if isinstance(cfg, CfgNode):
        return list(cfg.DATASETS.TRAIN)
    try:
        names = cfg.dataloader.train.dataset.names
    except Exception:  # no dataloader in the file
        return []
    return [names] if isinstance(names, str) else list(names)


def inference_augmentations(cfg: Config) -> List[Any]:
    """The test-time resize: ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``
    or the augmentations of ``dataloader.test.mapper`` (instantiated)."""
    if isinstance(cfg, CfgNode):
        from detectron2.data import transforms as T

        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
    return list(instantiate(cfg.dataloader.test.mapper.augmentations))


def image_format(cfg: Config) -> str:
    """``INPUT.FORMAT`` or the model's ``input_format`` (``BGR`` if unset)."""
    if isinstance(cfg, CfgNode):
        return cfg.INPUT.FORMAT
    return cfg.model.get("input_format", None) or "BGR"


def pixel_stats(cfg: Config) -> Tuple[List[float], List[float]]:
    """``(pixel_mean, pixel_std)`` the model normalises its input with."""
    if isinstance(cfg, CfgNode):
        return list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    return list(cfg.model.pixel_mean), list(cfg.model.pixel_std)


def defeat_settings(cfg: Config) -> Dict[str, Any]:
    """Every DeFeat setting of the config in the nested lowercase form of ``defeat.config.settings``."""
    from .settings import resolve_settings, settings_from_cfg

    if isinstance(cfg, CfgNode):
        return settings_from_cfg(cfg)
    return resolve_settings(cfg.model.get("defeat", None))


# What a run's config holds under another key in each kind: meaning -> (YAML key, LazyConfig key).
RUN_KEYS = {
    "weights": ("MODEL.WEIGHTS", "train.init_checkpoint"),
    "output_dir": ("OUTPUT_DIR", "train.output_dir"),
    "device": ("MODEL.DEVICE", "train.device"),
    "max_iter": ("SOLVER.MAX_ITER", "train.max_iter"),
    "train_sets": ("DATASETS.TRAIN", "dataloader.train.dataset.names"),
    "test_sets": ("DATASETS.TEST", "dataloader.test.dataset.names"),
    "batch": ("SOLVER.IMS_PER_BATCH", "dataloader.train.total_batch_size"),
    "teacher_weights": ("MODEL.DEFEAT.TEACHER.WEIGHTS", "model.teacher.weights"),
}


def key_of(cfg: Config, meaning: str) -> str:
    """The config's key for ``meaning`` (a key of :data:`RUN_KEYS`), for messages: ``MODEL.WEIGHTS``
    in a YAML config, ``train.init_checkpoint`` in a LazyConfig."""
    return RUN_KEYS[meaning][0 if isinstance(cfg, CfgNode) else 1]


def run_value(cfg: Config, meaning: str) -> Any:
    """The config's value for ``meaning`` (a key of :data:`RUN_KEYS`); None where the config has
    no such node (a LazyConfig without a ``train`` loader or a teacher)."""
    node = cfg
    for key in key_of(cfg, meaning).split("."):
        try:
            node = node[key]
        except (KeyError, AttributeError, TypeError):
            return None
    return node


def run_counts(cfg: Config) -> List[Tuple[str, Any]]:
    """``[(key, value)]`` of the counts a training run needs to be at least 1: its length
    (``SOLVER.MAX_ITER`` / ``train.max_iter``), its batch (``SOLVER.IMS_PER_BATCH`` /
    ``dataloader.train.total_batch_size``) and the periods it divides the iteration by
    (``SOLVER.CHECKPOINT_PERIOD`` / ``train.checkpointer.period``, a LazyConfig's
    ``train.log_period``); the ones the config does not have are left out."""
    if isinstance(cfg, CfgNode):
        keys = ["SOLVER.MAX_ITER", "SOLVER.IMS_PER_BATCH", "SOLVER.CHECKPOINT_PERIOD"]
    else:
        keys = ["train.max_iter", "dataloader.train.total_batch_size", "train.checkpointer.period", "train.log_period"]
    out = []
    for key in keys:
        node = cfg
        for part in key.split("."):
            try:
                node = node[part]
            except (KeyError, AttributeError, TypeError):
                node = _ABSENT
                break
        if node is not _ABSENT:
            out.append((key, node))
    return out


def override_text(cfg: Config, key: str, value: Any) -> str:
    """How to set ``key`` on the command line of the config's script: ``KEY VALUE`` for a YAML
    config, ``key=value`` for a LazyConfig (for messages that say how to fix a setting)."""
    return f"{key} {value}" if isinstance(cfg, CfgNode) else f"{key}={value}"


def masks_needed(cfg: Config) -> bool:
    """Whether the config's model trains a mask head (``MODEL.MASK_ON``, or a LazyConfig's
    ``model.roi_heads.mask_head``)."""
    if isinstance(cfg, CfgNode):
        return bool(cfg.MODEL.MASK_ON)
    model = cfg.model
    return model.get("roi_heads", {}).get("mask_head", None) is not None if hasattr(model, "get") else False


def set_run_values(cfg: Config, **values) -> Config:
    """Put run values into the config by meaning (``weights``, ``output_dir``, ``device``,
    ``test_sets``: a sequence of names); a value of None or ``""`` leaves the config's. A
    LazyConfig without the node (no ``train``) gets it. Returns the config."""
    unknown = sorted(set(values) - set(RUN_KEYS))
    if unknown:
        raise KeyError(f"not a run value: {unknown}; known: {sorted(RUN_KEYS)}")
    for meaning, value in values.items():
        if value is None or (isinstance(value, (str, tuple, list)) and not value):
            continue
        if meaning.endswith("_sets"):
            value = tuple(value) if isinstance(cfg, CfgNode) else (value[0] if len(value) == 1 else list(value))
        *parents, last = key_of(cfg, meaning).split(".")
        target = cfg
        for key in parents:
            if key not in target:
                target[key] = {}
            target = target[key]
        target[last] = value
    return cfg


# Where a LazyConfig model keeps its test score threshold (two-stage heads, dense detectors).
LAZY_SCORE_THRESHOLDS = ("model.roi_heads.box_predictor.test_score_thresh", "model.test_score_thresh")


def set_score_threshold(cfg: Config, value: float) -> Config:
    """The detections' test score threshold: ``MODEL.ROI_HEADS`` / ``MODEL.RETINANET``
    ``SCORE_THRESH_TEST`` of a YAML config (then frozen), the threshold nodes of a LazyConfig's
    model that exist (:data:`LAZY_SCORE_THRESHOLDS`). Returns the config."""
    if isinstance(cfg, CfgNode):
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = value
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = value
        cfg.freeze()
        return cfg
    for key in LAZY_SCORE_THRESHOLDS:
        if OmegaConf.select(cfg, key, default=None) is not None:
            OmegaConf.update(cfg, key, value)
    return cfg


def prediction_dataset_names(cfg: Config) -> List[str]:
    """The datasets whose class names may label a config's detections, in order: a YAML config's
    test sets, then the training sets (a LazyConfig: the training sets)."""
    return [*(list(cfg.DATASETS.TEST) if isinstance(cfg, CfgNode) else []), *train_dataset_names(cfg)]


def set_defeat_setting(cfg: Config, path: Sequence[str], value: Any) -> Config:
    """Set one DeFeat setting (nested lowercase ``path``, e.g. ``("neck", "enabled")``):
    ``MODEL.DEFEAT.NECK.ENABLED`` in a YAML config (frozen again afterwards if it was frozen),
    ``model.defeat.neck.enabled`` in a LazyConfig that has ``model.defeat`` (one without it takes
    every default). Returns the config."""
    if isinstance(cfg, CfgNode):
        frozen = cfg.is_frozen()
        cfg.defrost()
        node = cfg.MODEL.DEFEAT
        for key in path[:-1]:
            node = node[key.upper()]
        node[path[-1].upper()] = value
        if frozen:
            cfg.freeze()
    elif cfg.model.get("defeat", None) is not None:
        node = cfg.model.defeat
        for key in path[:-1]:
            if key not in node:
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return cfg


def saved_run_setting(cfg: Config, path: Sequence[str]) -> Tuple[Any, str]:
    """``(value, file)`` of the DeFeat setting ``path`` (nested lowercase) in the config that the
    run of ``cfg`` saved in its output folder (``OUTPUT_DIR/config.yaml``, written at every start
    by Detectron2's ``default_setup``; read as a config of the same kind, its settings unchecked):
    ``MODEL.DEFEAT.<PATH>`` or ``model.defeat.<path>``. The value is None when the file is
    missing, unreadable or lacks the key."""
    file = os.path.join(output_dir(cfg), "config.yaml")
    yaml_kind = isinstance(cfg, CfgNode)
    if not os.path.isfile(file):
        return None, file
    try:
        saved = load_config(file, lazy=not yaml_kind, check_settings=False)
    except (ConfigFileError, OverrideError):
        return None, file
    if yaml_kind:
        node = saved.MODEL.get("DEFEAT", None)
        for key in path:
            node = node.get(key.upper(), None) if isinstance(node, CfgNode) else None
        return node, file
    return OmegaConf.select(saved, "model.defeat." + ".".join(path), default=None), file


def for_building(cfg: Config, device: str) -> Config:
    """The config ready to build a model that is loaded afterwards (a teacher): a YAML config
    on ``device`` with no ``MODEL.WEIGHTS``, frozen; a LazyConfig with ``train.device`` set to
    ``device`` where it has a ``train`` node (its ``model`` node holds no weights)."""
    if isinstance(cfg, CfgNode):
        cfg.MODEL.DEVICE = device
        cfg.MODEL.WEIGHTS = ""
        cfg.freeze()
    elif "train" in cfg:
        cfg.train.device = device
    return cfg


def architecture_name(cfg: Config) -> str:
    """``MODEL.META_ARCHITECTURE``, or the class name of a LazyConfig's ``model._target_``."""
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.META_ARCHITECTURE
    target = cfg.model.get("_target_", "")
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return name.rsplit(".", 1)[-1]


def build_model_as(cfg: Config, cls: Any, drop: Sequence[str] = ()) -> nn.Module:
    """The model of class ``cls`` (instead of the config's own architecture) from the config's
    arguments, on the config's device: ``cls(cfg)`` for a YAML config (Detectron2's
    ``@configurable`` classes), the ``model`` node with ``_target_`` replaced and the ``drop``
    keys left out for a LazyConfig."""
    if isinstance(cfg, CfgNode):
        return cls(cfg).to(torch.device(cfg.MODEL.DEVICE))
    node = copy.deepcopy(cfg.model)
    node._target_ = cls
    for key in drop:
        node.pop(key, None)
    return instantiate(node).to(model_device(cfg))


def test_pipelines(cfg: Config) -> List[Tuple[str, Any, Any]]:
    """``(dataset name, data loader, evaluator)`` of each of the config's test sets: Detectron2's
    test loader and ``COCOEvaluator`` (into ``OUTPUT_DIR/inference``) for each of
    ``DATASETS.TEST``; a LazyConfig's ``dataloader.test`` with its ``dataloader.evaluator`` (none
    without an evaluator)."""
    if isinstance(cfg, CfgNode):
        from detectron2.data import build_detection_test_loader
        from detectron2.evaluation import COCOEvaluator

        folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        return [
            (name, build_detection_test_loader(cfg, name), COCOEvaluator(name, output_dir=folder))
            for name in cfg.DATASETS.TEST
        ]
    if "evaluator" not in cfg.dataloader:
        return []
    name = ",".join(test_dataset_names(cfg))
    return [(name, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))]


# YAML keys (as ``train_net.py`` overrides) and the LazyConfig overrides that mean the same for the
# package's LazyConfigs. ``SOLVER.STEPS`` has none: a LazyConfig's LR steps follow ``train.max_iter`` by
# the loader's one rule (``defeat.config.iterations``), or are set with ``lr_multiplier.*`` overrides.
_LAZY_KEYS = {
    "SOLVER.MAX_ITER": "train.max_iter",
    "SOLVER.BASE_LR": "optimizer.lr",
    "SOLVER.IMS_PER_BATCH": "dataloader.train.total_batch_size",
    "SEED": "train.seed",
    "OUTPUT_DIR": "train.output_dir",
    "MODEL.DEVICE": "train.device",
    "MODEL.WEIGHTS": "train.init_checkpoint",
    "MODEL.DEFEAT.TEACHER.WEIGHTS": "model.teacher.weights",
    "MODEL.DEFEAT.TEACHER.CONFIG_FILE": "model.teacher.config_file",
    "MODEL.DEFEAT.TEACHER.INPUT_SCALE": "model.defeat.teacher_input_scale",
    "DATALOADER.NUM_WORKERS": "dataloader.train.num_workers",
}


def _dataset_name(value: str) -> str:
    names = [n.strip(" '\"") for n in value.strip("()[] ").split(",") if n.strip(" '\"")]
    if len(names) != 1:
        raise ValueError(f"a LazyConfig run takes one dataset name, got {value!r}")
    return names[0]


def lazy_overrides(opts: Sequence[str]) -> List[str]:
    """``KEY VALUE`` pairs of YAML overrides as LazyConfig ``key=value`` overrides.

    ``MODEL.DEFEAT.*`` keys map to ``model.defeat.*`` in lowercase; ``DATASETS.TRAIN/TEST`` to the
    data loaders' dataset names; the others through a fixed table. Raises ValueError for a key
    without a LazyConfig counterpart.
    """
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs, got {list(opts)}")
    out = []
    for key, value in zip(opts[0::2], opts[1::2]):
        key, value = str(key), str(value)
        if key in _LAZY_KEYS:
            out.append(f"{_LAZY_KEYS[key]}={value}")
        elif key == "DATASETS.TRAIN":
            out.append(f"dataloader.train.dataset.names={_dataset_name(value)}")
        elif key == "DATASETS.TEST":
            out.append(f"dataloader.test.dataset.names={_dataset_name(value)}")
        elif key.startswith("MODEL.DEFEAT."):
            out.append(f"model.defeat.{key[len('MODEL.DEFEAT.') :].lower()}={value}")
        else:
            raise ValueError(f"no LazyConfig counterpart for the override {key}; give LazyConfig overrides instead")
    return out


def load_with_yaml_overrides(path: str, opts: Sequence[str] = (), lazy: Optional[bool] = None) -> Config:
    """:func:`load_config` with ``opts`` in the YAML form (``KEY VALUE`` pairs) for either kind of
    config: translated (:func:`lazy_overrides`) for a LazyConfig. ``lazy`` as for :func:`load_config`."""
    if lazy or (lazy is None and is_lazy_config(path)):
        return load_config(path, lazy_overrides(opts), lazy=True)
    return load_config(path, opts)


def script_for(path: str, yaml_script: str = "train_net.py") -> str:
    """The script that trains a config file: ``lazy_train_net.py`` for a LazyConfig given the
    default ``train_net.py``; ``yaml_script`` otherwise."""
    return "lazy_train_net.py" if is_lazy_config(path) and yaml_script == "train_net.py" else yaml_script


def script_overrides(path: str, opts: Sequence[str]) -> List[str]:
    """YAML-form ``opts`` (``KEY VALUE`` pairs) as the command line of ``path``'s script takes
    them: as they are for a YAML config, translated for a LazyConfig (:func:`lazy_overrides`;
    a key without a LazyConfig counterpart, such as ``DATASETS.TEST ()``, raises ValueError)."""
    return lazy_overrides(opts) if is_lazy_config(path) else list(opts)


def _tree(x, key=None):
    if isinstance(x, dict):
        return {k: _tree(v, k) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_tree(v) for v in x]
    if key == "_target_":  # an object in a ``.py`` config, its import path in a saved one
        from detectron2.utils.registry import locate

        obj = locate(x) if isinstance(x, str) else x
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)}"
    return x


def config_tree(cfg: Config, blank: Sequence[str] = ()) -> Dict[str, Any]:
    """The config as nested dicts and lists in a canonical form (a YAML config's values, a
    LazyConfig's unresolved tree with every ``_target_`` as ``module.qualname``), for hashing;
    the run values named in ``blank`` (keys of :data:`RUN_KEYS`, e.g. ``output_dir``) set to ``""``."""
    if isinstance(cfg, CfgNode):
        tree = _tree(cfg)
    else:
        tree = _tree(OmegaConf.to_container(cfg, resolve=False))
    for meaning in blank:
        *parents, last = key_of(cfg, meaning).split(".")
        node = tree
        for key in parents:
            node = node.get(key, {})
        if last in node:
            node[last] = ""
    return tree


# The YAML keys that make two configs the same student: its backbone's shape (the architecture is
# compared as the plain student class, so a DeFeat run's is its student's). A LazyConfig's student
# is its whole ``model.backbone`` node.
STUDENT_KEYS = (
    "MODEL.BACKBONE.NAME",
    "MODEL.RESNETS.DEPTH",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "MODEL.RESNETS.NUM_GROUPS",
    "MODEL.FPN.OUT_CHANNELS",
)


def _named(value: Any) -> Any:
    """A config value with classes and functions as their full dotted names (``_target_`` strings
    too, which ``LazyConfig.save`` may have shortened to another import path), dataclasses and
    named tuples as their fields: a loaded LazyConfig in the form its saved file reads back as."""
    if isinstance(value, Mapping):
        return {
            str(k): _canonical(v) if k == "_target_" and isinstance(v, str) else _named(v) for k, v in value.items()
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. a ShapeSpec, saved as its fields
        return {f.name: _named(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return _named(value._asdict())
    if isinstance(value, (list, tuple)):
        return [_named(v) for v in value]
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    return value


def _canonical(target: str) -> str:
    """``module.qualname`` of the object a ``_target_`` string names; the string when it cannot be
    imported here."""
    from detectron2.utils.registry import locate

    try:
        found = locate(target)
    except Exception:  # not importable here: compared as written
        return target
    return _named(found) if callable(found) else target


def saved_form(cfg: Config) -> Dict[str, Any]:
    """A loaded config as plain data, the way its run folder's ``config.yaml`` reads back (a YAML
    config's dump; a LazyConfig's unresolved tree with objects as their dotted names and fields)."""
    if isinstance(cfg, CfgNode):
        return yaml.safe_load(cfg.dump())
    return _named(OmegaConf.to_container(cfg, resolve=False))


class SavedModel(NamedTuple):
    """The model a config in :func:`saved_form` names. ``name``: ``MODEL.META_ARCHITECTURE`` or
    ``model._target_``; ``cls``: the class it names here (None: not registered, not importable);
    ``student``: the values that identify the student's backbone (:data:`STUDENT_KEYS`, or
    ``model.backbone``); ``max_iter``: the run's length (None: not an int); ``defeat_keys``: the
    config carries DeFeat settings (``MODEL.DEFEAT``; a LazyConfig's model node holds them)."""

    name: str
    cls: Optional[type]
    student: Dict[str, Any]
    max_iter: Optional[int]
    defeat_keys: bool


_MISSING = object()


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _class_named(name: str, lazy: bool) -> Optional[type]:
    try:
        if lazy:
            from detectron2.utils.registry import locate

            found = locate(name)
            return found if isinstance(found, type) else None
        from detectron2.modeling import META_ARCH_REGISTRY

        return META_ARCH_REGISTRY.get(name)
    except Exception:  # unknown name
        return None


def saved_model_fields(saved: Mapping[str, Any]) -> Optional[SavedModel]:
    """The :class:`SavedModel` of a config in :func:`saved_form`; None when it names no model."""
    if isinstance(_get(saved, "MODEL.META_ARCHITECTURE"), str):
        name = _get(saved, "MODEL.META_ARCHITECTURE")
        student = {k: _get(saved, k) for k in STUDENT_KEYS if _get(saved, k) is not _MISSING}
        max_iter, defeat_keys, lazy = _get(saved, "SOLVER.MAX_ITER"), _get(saved, "MODEL.DEFEAT") is not _MISSING, False
    elif isinstance(_get(saved, "model._target_"), str):
        name = _get(saved, "model._target_")
        found = _get(saved, "model.backbone")
        student = {"model.backbone": _named(found)} if isinstance(found, Mapping) else {}
        max_iter, defeat_keys, lazy = _get(saved, "train.max_iter"), True, True
    else:
        return None
    max_iter = max_iter if isinstance(max_iter, int) and not isinstance(max_iter, bool) else None
    return SavedModel(name, _class_named(name, lazy), student, max_iter, defeat_keys)
