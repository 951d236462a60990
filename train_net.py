#!/usr/bin/env python
"""Train or evaluate a DeFeat student (or any plain Detectron2 model) with Detectron2's trainer.

    python train_net.py --config-file configs/demo/defeat_slimR18_from_R18.yaml
    python train_net.py --config-file configs/demo/student_slimR18.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file ... --num-gpus 8 --resume
    python train_net.py --config-file CONFIG --dataset my_train=data/train.json:data/images \
        --dataset my_val=data/val.json:data/images DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)'

``--dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT]`` names a COCO-format dataset (see
``defeat.data.datasets``); before training, the training sets are checked against the model
(``defeat.data.checks``; ``--check-images`` sets how thoroughly the images are read).
"""

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.engine.arguments import parse_command_line
from defeat.engine.entry import run_entry_point
from defeat.engine.quiet import load_defeat

if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_command_line, script="train_net.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
import detectron2.utils.comm as comm
from detectron2.engine import default_setup
from detectron2.evaluation import verify_results

from defeat.analysis.evaluation import evaluate_weights
from defeat.checkpoint import AtomicDetectionCheckpointer
from defeat.config.files import load_training_config, num_classes
from defeat.data.datasets import preloaded_datasets
from defeat.engine.mixed_precision import check_amp
from defeat.engine.script import (  # noqa: F401 (argument_parser: kept public)
    argument_parser,
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
from defeat.engine.trainer import DeFeatTrainer
from defeat.modeling.meta_arch.common import build_eval_model

Trainer = DeFeatTrainer  # the trainer lives in the package (defeat.engine.trainer)


def load_config(args):
    """The frozen config of ``--config-file`` with the command-line ``opts`` merged."""
    cfg = load_training_config(args.config_file, args.opts, lazy=False)
    cfg.freeze()
    return cfg


def setup(args, cfg=None, run=None):
    """The run's config (``cfg``: already loaded by :func:`load_config`, else loaded here), with
    AMP checked, the datasets registered, and Detectron2's set-up (output folder, logs, seed) done.
    ``run``: the held output folder (:func:`hold_output_dir`), which sets aside an earlier run
    replaced by ``--overwrite`` until the start succeeds."""
    cfg = cfg if cfg is not None else load_config(args)
    if not args.eval_only:
        check_amp(cfg.SOLVER.AMP.ENABLED, cfg.MODEL.DEVICE)  # before anything is written
    used = cfg.DATASETS.TEST if args.eval_only else (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)
    register_datasets(args, used)  # in every process (each DDP worker too)
    preflight(cfg, args, run)  # outputs, batch, device, weights, datasets: before anything is written or built
    resolved = resolve_data_settings(cfg, args)  # SCALE_BASE auto -> a number, before config.yaml is saved
    default_setup(cfg, args)
    setup_defeat_logger(cfg.OUTPUT_DIR)  # and the one line on the known-harmless messages hidden
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
            model = build_eval_model(cfg)  # a DeFeat config evaluates its student: no teacher needed
            checkpointer = AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict_resume=False)
            resumed = args.resume and checkpointer.has_checkpoint()
            weights = checkpointer.get_checkpoint_file() if resumed else cfg.MODEL.WEIGHTS
            res = evaluate_weights(cfg, weights, model=model)  # strict loading, then Trainer.test
            if comm.is_main_process():
                verify_results(cfg, res)
            return res
        images = getattr(args, "check_images", "verify")
        train_dicts = load_and_check_training_data(cfg.DATASETS.TRAIN, *num_classes(cfg), images=images)
        with preloaded_datasets(train_dicts):  # the train loader reuses the checked dicts
            trainer = Trainer(cfg)
        del train_dicts
        trainer.resume_or_load(resume=args.resume)
        run.started()
        return trainer.train()


if __name__ == "__main__":
    run_entry_point(launch_main, main, ARGS, script="train_net.py")
