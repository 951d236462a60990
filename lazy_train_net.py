#!/usr/bin/env python
"""Train or evaluate a DeFeat student (or any Detectron2 model) from a LazyConfig (.py) file.

    python lazy_train_net.py --config-file configs/lazy/demo_defeat_slimR18_from_R18.py
    python lazy_train_net.py --config-file configs/lazy/demo_student_slimR18.py --eval-only \
        train.init_checkpoint=output/lazy/demo_defeat_slimR18_from_R18/model_final.pth
    python lazy_train_net.py --config-file ... --num-gpus 8 --resume model.defeat.neck.bg_weight=8

The config needs ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer``,
``lr_multiplier`` and ``train`` (Detectron2's ``common/train.py`` keys). Beyond those,
``train.clip_gradients`` (``enabled``, ``clip_type``, ``clip_value``, ``norm_type``, as
``SOLVER.CLIP_GRADIENTS``) clips gradients. Checkpoints are written atomically.

Overrides (``key=value``) must name keys the config has (Detectron2 would silently add a
misspelt one): every parent of the key must exist, and the key itself unless its parent is a
``LazyCall`` (a new argument); write ``+key=value`` (Hydra's explicit addition) to add keys. A value
must have the type of the one it replaces (a number for a number, a boolean for a boolean, a
mapping for a mapping, text for text: quote a number meant as text, ``key='5'``);
``model.defeat.*`` values are checked like every DeFeat setting.

``--dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT]`` names a COCO-format dataset, as for
``train_net.py``; the training sets are checked against ``model.roi_heads.num_classes`` (or
``model.num_classes``) before training.
"""

import logging
import os

import detectron2.utils.comm as comm
from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, OmegaConf

import defeat  # noqa: F401  (registers DeFeatRCNN)
from defeat.checkpoint import AtomicDetectionCheckpointer, restore_on_failure
from defeat.data_checks import check_training_data
from defeat.datasets import preloaded_datasets, setup_datasets
from defeat.ddp import create_ddp_model_any_device
from defeat.demo.data import register_demo_dataset_if_used
from defeat.meta_arch.common import lazy_eval_model_config
from defeat.mixed_precision import build_step_trainer, check_amp
from defeat.nonfinite import explain_nonfinite_losses
from defeat.script import launch_main, parse_args
from defeat.settings import resolve_settings

logger = logging.getLogger("defeat.lazy_train_net")


def _names(dataset_cfg):
    """Dataset names of a ``get_detection_dataset_dicts`` node (a name or a list of them)."""
    names = dataset_cfg.names
    return [names] if isinstance(names, str) else list(names)


def do_test(cfg, model):
    """COCO-style evaluation of ``model`` on ``dataloader.test``; {} without an evaluator."""
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def build_optimizer(cfg, model):
    """``cfg.optimizer`` on ``model``'s parameters, with ``train.clip_gradients`` applied."""
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_gradients")
    if clip and clip.get("enabled"):
        solver = CfgNode({"SOLVER": {"CLIP_GRADIENTS": {k.upper(): v for k, v in clip.items()}}})
        optimizer = maybe_add_gradient_clipping(solver, optimizer)
    return optimizer


def model_num_classes(cfg):
    """``(classes, config key)`` of a LazyConfig's model: ``roi_heads.num_classes`` of an R-CNN,
    ``num_classes`` of a dense detector; ``(None, "")`` when the config sets neither."""
    heads = cfg.model.get("roi_heads")
    if heads is not None and heads.get("num_classes") is not None:
        return heads.num_classes, "model.roi_heads.num_classes"
    if cfg.model.get("num_classes") is not None:
        return cfg.model.num_classes, "model.num_classes"
    return None, ""


def build_trainer(args, cfg, train_dicts=None):
    """``(trainer, start iteration)``: model, optimizer, data, hooks, weights loaded or resumed."""
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)  # a DeFeat teacher moves along (it is hidden, not dropped)
    optimizer = build_optimizer(cfg, model)
    with preloaded_datasets(train_dicts):  # the dicts checked in main(), not loaded again
        train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model_any_device(model, **cfg.train.ddp)
    trainer = build_step_trainer(
        model, train_loader, optimizer, amp=cfg.train.get("amp", {}).get("enabled", False), device=cfg.train.device
    )
    explain_nonfinite_losses(trainer)
    checkpointer = AtomicDetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    main_process = comm.is_main_process()
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main_process else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if main_process
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    return trainer, start_iter


class OverrideError(ValueError):
    """A ``key=value`` command-line override names no config key or has the wrong type."""


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


def load_config(args):
    """The LazyConfig of ``--config-file`` with checked ``key=value`` overrides applied and its
    DeFeat settings (``model.defeat``, if any) type- and range-checked; nothing is written."""
    cfg = LazyConfig.load(args.config_file)
    check_overrides(cfg, args.opts)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    if "defeat" in cfg.model:
        resolve_settings(cfg.model.defeat)  # raises DeFeatConfigError naming the key
    return cfg


def setup(args):
    """The LazyConfig with ``key=value`` overrides applied; logging, seed and demo data set up."""
    setup_datasets(getattr(args, "dataset", None))  # in every process, as in train_net.py
    cfg = load_config(args)
    if not args.eval_only:
        check_amp(
            cfg.train.get("amp", {}).get("enabled", False), cfg.train.device, setting="train.amp.enabled"
        )  # before anything is written
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="defeat")
    names = [] if args.eval_only else _names(cfg.dataloader.train.dataset)
    if "test" in cfg.dataloader:
        names += _names(cfg.dataloader.test.dataset)
    register_demo_dataset_if_used(names)
    return cfg


def main(args):
    # A resume refused while setting up leaves the run's own config.yaml in place (see train_net.py).
    saved_config = os.path.join(load_config(args).train.output_dir, "config.yaml")
    with restore_on_failure(saved_config, enabled=args.resume and comm.is_main_process()):
        cfg = setup(args)
        if args.eval_only:
            model = instantiate(lazy_eval_model_config(cfg.model))  # a DeFeat model evaluates its student
            model.to(cfg.train.device)
            model = create_ddp_model_any_device(model, **cfg.train.ddp)
            AtomicDetectionCheckpointer(model).load(cfg.train.init_checkpoint)
            return do_test(cfg, model)
        train_dicts = None
        if comm.is_main_process():  # a failed check stops the other processes too (launch() ends them)
            train_dicts = {name: DatasetCatalog.get(name) for name in _names(cfg.dataloader.train.dataset)}
            check_training_data(train_dicts, *model_num_classes(cfg), images=getattr(args, "check_images", "verify"))
        trainer, start_iter = build_trainer(args, cfg, train_dicts)
    trainer.train(start_iter, cfg.train.max_iter)  # evaluates once at the end (EvalHook)
    return None


if __name__ == "__main__":
    launch_main(main, parse_args())  # the same options as train_net.py
