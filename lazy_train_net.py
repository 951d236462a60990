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

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.engine.arguments import parse_command_line
from defeat.engine.entry import run_entry_point
from defeat.engine.quiet import load_defeat

if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_command_line, script="lazy_train_net.py")  # train_net.py's options

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
from detectron2.engine import default_setup

from defeat.analysis.evaluation import evaluate_weights, lazy_test
from defeat.config.files import OverrideError, check_overrides, load_training_config, num_classes  # noqa: F401 (kept public here)
from defeat.engine.lazy_trainer import amp_enabled, build_lazy_trainer
from defeat.engine.mixed_precision import check_amp
from defeat.engine.script import (  # noqa: F401 (parse_args: kept public)
    hold_log_records,
    hold_output_dir,
    launch_main,
    load_and_check_training_data,
    parse_args,
    preflight,
    register_datasets,
    resolve_data_settings,
    setup_defeat_logger,
)


def _names(dataset_cfg):
    """Dataset names of a ``get_detection_dataset_dicts`` node (a name or a list of them)."""
    names = dataset_cfg.names
    return [names] if isinstance(names, str) else list(names)


do_test = lazy_test  # COCO-style evaluation of a model on dataloader.test ({} without an evaluator)


def load_config(args):
    """The LazyConfig of ``--config-file`` with checked ``key=value`` overrides applied and its
    DeFeat settings (``model.defeat``, if any) through the settings gate; nothing is written."""
    return load_training_config(args.config_file, args.opts, lazy=True)


def setup(args, cfg=None, run=None):
    """The LazyConfig with ``key=value`` overrides applied (``cfg``: already loaded by
    :func:`load_config`, else loaded here); datasets, logging and seed set up. ``run``: the held
    output folder, as for ``train_net.setup``."""
    cfg = cfg if cfg is not None else load_config(args)
    if not args.eval_only:
        check_amp(amp_enabled(cfg), cfg.train.device, setting="train.amp.enabled")  # before anything is written
    names = [] if args.eval_only else _names(cfg.dataloader.train.dataset)
    if "test" in cfg.dataloader:
        names += _names(cfg.dataloader.test.dataset)
    register_datasets(args, names)  # in every process (each DDP worker too)
    preflight(cfg, args, run)  # outputs, batch, device, weights, datasets: before anything is written or built
    resolved = resolve_data_settings(cfg, args)  # SCALE_BASE auto -> a number, before config.yaml is saved
    default_setup(cfg, args)
    setup_defeat_logger(cfg.train.output_dir)  # and the one line on the known-harmless messages hidden
    if resolved is not None:
        resolved.log()  # in the run's log
    return cfg


def main(args):
    with hold_log_records() as held:  # the loader's notes, logged once the run's log exists
        cfg = load_config(args)
    # The folder's lock until the end; until run.started(), an error leaves the folder as it was.
    with hold_output_dir(cfg) as run:
        cfg = setup(args, cfg, run)
        held.replay()
        run.announce()
        if args.eval_only:
            # a DeFeat model evaluates its plain student; the weights load strictly
            return evaluate_weights(cfg, cfg.train.init_checkpoint, "train.init_checkpoint")
        images = getattr(args, "check_images", "verify")
        train_dicts = load_and_check_training_data(_names(cfg.dataloader.train.dataset), *num_classes(cfg), images)
        trainer, start_iter = build_lazy_trainer(cfg, args.resume, lambda m: do_test(cfg, m), train_dicts)
        run.started()
        trainer.train(start_iter, cfg.train.max_iter)  # evaluates once at the end (EvalHook)
    return None


if __name__ == "__main__":
    run_entry_point(launch_main, main, ARGS, script="lazy_train_net.py")
