#!/usr/bin/env python
"""Train or evaluate a DeFeat student (or any plain Detectron2 model) with Detectron2's trainer.

    python train_net.py --config-file configs/demo/defeat_slimR18_from_R18.yaml
    python train_net.py --config-file configs/demo/student_slimR18.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file ... --num-gpus 8 --resume
"""
import os
import weakref

import detectron2.utils.comm as comm
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, verify_results

import defeat  # noqa: F401  (registers DeFeatRCNN)
from defeat import add_defeat_config
from defeat.checkpoint import AtomicDetectionCheckpointer
from defeat.data import DEMO_PREFIX, register_demo_dataset, settings_from_env


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the COCO evaluator and checkpoints that a kill cannot corrupt."""

    def build_hooks(self):
        # Called from DefaultTrainer.__init__ before the checkpoint hook is made: swap in ours.
        self.checkpointer = AtomicDetectionCheckpointer(
            self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        return super().build_hooks()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)


def register_demo_datasets(cfg):
    """Generate (main process first) and register the embedded demo dataset if cfg uses it."""
    if not any(n.startswith(DEMO_PREFIX) for n in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)):
        return
    settings = settings_from_env()
    if comm.is_main_process():
        register_demo_dataset(**settings)
    comm.synchronize()
    register_demo_dataset(**settings)


def setup(args):
    cfg = get_cfg()
    add_defeat_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    register_demo_datasets(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
