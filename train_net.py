#!/usr/bin/env python
"""Train or evaluate a DeFeat student (or any plain Detectron2 model) with Detectron2's trainer.

    python train_net.py --config-file configs/demo/defeat_slimR18_from_R18.yaml
    python train_net.py --config-file configs/demo/student_slimR18.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file ... --num-gpus 8 --resume
    python train_net.py --config-file CONFIG --dataset my_train=data/train.json:data/images \
        --dataset my_val=data/val.json:data/images DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)'

``--dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT]`` names a COCO-format dataset (see
``defeat.datasets``); before training, the training sets are checked against the model
(``defeat.data_checks``; ``--check-images`` sets how thoroughly the images are read).
"""

import os

import detectron2.utils.comm as comm
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger

import defeat  # noqa: F401  (registers DeFeatRCNN)
from defeat import add_defeat_config
from defeat.checkpoint import AtomicDetectionCheckpointer, restore_on_failure
from defeat.config import merge_defeat_config_file
from defeat.data_checks import check_training_data, model_num_classes
from defeat.datasets import preloaded_datasets, setup_datasets
from defeat.demo.data import register_demo_dataset_if_used
from defeat.meta_arch.common import build_eval_model
from defeat.mixed_precision import check_amp
from defeat.script import argument_parser, launch_main, parse_args  # noqa: F401 (argument_parser: kept public)
from defeat.trainer import DeFeatTrainer

# The trainer lives in the package (``defeat.trainer``); the name is kept for scripts that import it.
Trainer = DeFeatTrainer


def register_demo_datasets(cfg, eval_only: bool = False):
    """Generate (main process first) and register the embedded demo dataset if cfg uses it
    (with ``eval_only``, only if a test set is one of its splits)."""
    names = tuple(cfg.DATASETS.TEST) if eval_only else (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)
    register_demo_dataset_if_used(names)


def load_config(args):
    """The frozen config of ``--config-file`` with the command-line ``opts`` merged."""
    cfg = get_cfg()
    add_defeat_config(cfg)
    merge_defeat_config_file(cfg, args.config_file, args.opts)
    cfg.freeze()
    return cfg


def setup(args):
    # Every process (each DDP worker too) registers the named datasets: --dataset travels in
    # ``args``, and $DEFEAT_COCO_DATASETS (exported here) reaches the processes started later.
    setup_datasets(getattr(args, "dataset", None))
    cfg = load_config(args)
    if not args.eval_only:
        check_amp(cfg.SOLVER.AMP.ENABLED, cfg.MODEL.DEVICE)  # before anything is written
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="defeat")
    register_demo_datasets(cfg, eval_only=args.eval_only)
    return cfg


def load_and_check_training_data(cfg, images="verify"):
    """The training sets' dicts, loaded once and checked against the model (main process only:
    a failed check stops the other processes too, as launch() ends them); None elsewhere."""
    if not comm.is_main_process():
        return None
    dicts = {name: DatasetCatalog.get(name) for name in cfg.DATASETS.TRAIN}
    check_training_data(dicts, *model_num_classes(cfg), images=images)
    return dicts


def main(args):
    # default_setup rewrites OUTPUT_DIR/config.yaml first; a resume refused while setting up
    # (another model than the checkpoint's, no readable checkpoint) puts the run's own back.
    saved_config = os.path.join(load_config(args).OUTPUT_DIR, "config.yaml")
    with restore_on_failure(saved_config, enabled=args.resume and comm.is_main_process()):
        cfg = setup(args)
        if args.eval_only:
            model = build_eval_model(cfg)  # a DeFeat config evaluates its student: no teacher needed
            checkpointer = AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict_resume=False)
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
            res = Trainer.test(cfg, model)
            if comm.is_main_process():
                verify_results(cfg, res)
            return res
        train_dicts = load_and_check_training_data(cfg, getattr(args, "check_images", "verify"))
        with preloaded_datasets(train_dicts):  # the train loader reuses the checked dicts
            trainer = Trainer(cfg)
        del train_dicts
        trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    launch_main(main, parse_args())
