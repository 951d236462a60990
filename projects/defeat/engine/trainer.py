"""``DefaultTrainer`` for DeFeat runs (and any YAML-configured Detectron2 model)."""

import logging
import os
import weakref

import detectron2.utils.comm as comm
from detectron2.engine import DefaultTrainer, hooks
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import setup_logger

from ..checkpoint import AtomicDetectionCheckpointer
from ..data.box_levels import resolve_scale_base
from .ddp import create_ddp_model_any_device
from .kd_balance import KDBalanceHook, KDTargetRatioHook
from .mixed_precision import build_step_trainer, check_amp
from .nonfinite import explain_nonfinite_losses
from .start import load_or_resume, log_teacher_quality

__all__ = ["DeFeatTrainer"]


class DeFeatTrainer(DefaultTrainer):
    """``DefaultTrainer`` with the COCO evaluator, checkpoints that a kill cannot corrupt, resumes
    that skip damaged checkpoints, multi-process training on CPU (gloo) as well as on GPUs,
    ``SOLVER.AMP.ENABLED`` on a CPU as bf16 autocast (``defeat.engine.mixed_precision``), a NaN/inf
    loss reported with the term that went first, the balance of the KD and detection losses
    logged and, with ``MODEL.DEFEAT.BALANCE.TARGET_RATIO``, set (``defeat.engine.kd_balance``), and
    ``MODEL.DEFEAT.NECK.SCALE_BASE: auto`` resolved from the training set before the model is built
    (``defeat.data.box_levels.resolve_scale_base``; ``train_net.py`` resolves it earlier, so that
    the saved ``config.yaml`` holds the number).

    Its constructor is ``DefaultTrainer``'s, in the same order, with the DDP wrapper, the step loop
    and the checkpointer chosen here instead of patched in.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):  # setup_logger not yet called
            setup_logger()
        check_amp(cfg.SOLVER.AMP.ENABLED, cfg.MODEL.DEVICE)
        resolve_scale_base(cfg)  # SCALE_BASE auto -> a number (in place), before the model is built
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        log_teacher_quality(model)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model_any_device(model, broadcast_buffers=False)
        self._trainer = build_step_trainer(
            model, data_loader, optimizer, amp=cfg.SOLVER.AMP.ENABLED, device=cfg.MODEL.DEVICE
        )
        explain_nonfinite_losses(self._trainer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """``DefaultTrainer.resume_or_load`` through :func:`defeat.engine.start.load_or_resume` (a
        fresh DeFeat student inherits from its teacher)."""
        if load_or_resume(self.checkpointer, self.cfg.MODEL.WEIGHTS, resume):
            self.start_iter = self.iter + 1

    def build_hooks(self):
        """``DefaultTrainer``'s hooks with :class:`KDBalanceHook` before the writer (so each row of
        ``metrics.json`` has the ratio of its own iteration) and :class:`KDTargetRatioHook` before
        the checkpointer (so a checkpoint holds the factor set at its own iteration)."""
        ret = super().build_hooks()
        writer = next((i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)), len(ret))
        ret.insert(writer, KDBalanceHook())
        saver = next(
            (i for i, h in enumerate(ret) if isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook))), writer
        )
        ret.insert(saver, KDTargetRatioHook())
        return ret

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)
