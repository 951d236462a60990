"""The step loop of a LazyConfig run (``lazy_train_net.py``): Detectron2's ``common/train.py`` keys
plus ``train.clip_gradients`` and ``train.amp`` on a CPU (bf16), with atomic checkpoints and the
KD/detection loss balance logged and, with ``model.defeat.balance.target_ratio``, set
(``defeat.engine.kd_balance``)."""

import logging
from typing import Callable, Dict, List, Optional, Tuple

import detectron2.utils.comm as comm
from detectron2.config import CfgNode, instantiate
from detectron2.engine import SimpleTrainer, default_writers, hooks
from detectron2.solver.build import maybe_add_gradient_clipping

from ..checkpoint import AtomicDetectionCheckpointer
from ..data.box_levels import resolve_scale_base
from ..data.datasets import preloaded_datasets
from .ddp import create_ddp_model_any_device
from .kd_balance import KDBalanceHook, KDTargetRatioHook
from .mixed_precision import build_step_trainer
from .nonfinite import explain_nonfinite_losses
from .start import load_or_resume, log_teacher_quality

__all__ = ["amp_enabled", "build_optimizer", "build_lazy_trainer"]

logger = logging.getLogger(__name__)


def amp_enabled(cfg):
    """``train.amp.enabled`` (``False`` when the config has no ``train.amp``)."""
    return cfg.train.get("amp", {}).get("enabled", False)


def build_optimizer(cfg, model):
    """``cfg.optimizer`` on ``model``'s parameters, with ``train.clip_gradients`` applied
    (``enabled``, ``clip_type``, ``clip_value``, ``norm_type``, as ``SOLVER.CLIP_GRADIENTS``)."""
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_gradients")
    if clip and clip.get("enabled"):
        solver = CfgNode({"SOLVER": {"CLIP_GRADIENTS": {k.upper(): v for k, v in clip.items()}}})
        optimizer = maybe_add_gradient_clipping(solver, optimizer)
    return optimizer


def build_lazy_trainer(
    cfg, resume: bool, test: Callable, train_dicts: Optional[Dict[str, List[dict]]] = None
) -> Tuple[SimpleTrainer, int]:
    """``(trainer, start iteration)`` of a LazyConfig: model, optimizer, data (``train_dicts``:
    checked dicts reused instead of loading them again), hooks (``test(model)`` at
    ``train.eval_period`` and at the end), weights loaded or resumed. A
    ``model.defeat.neck.scale_base = "auto"`` is resolved first (from ``train_dicts`` where given;
    ``lazy_train_net.py`` resolves it earlier, so that the saved ``config.yaml`` holds the number)."""
    resolve_scale_base(cfg, train_dicts)
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    log_teacher_quality(model)
    model.to(cfg.train.device)  # a DeFeat teacher moves along (it is hidden, not dropped)
    optimizer = build_optimizer(cfg, model)
    with preloaded_datasets(train_dicts):
        train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model_any_device(model, **cfg.train.ddp)
    trainer = build_step_trainer(model, train_loader, optimizer, amp=amp_enabled(cfg), device=cfg.train.device)
    explain_nonfinite_losses(trainer)
    checkpointer = AtomicDetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    main_process = comm.is_main_process()
    writers = default_writers(cfg.train.output_dir, cfg.train.max_iter)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            KDTargetRatioHook(),  # before the checkpointer: a checkpoint holds the factor set at its iteration
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main_process else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: test(model)),
            KDBalanceHook(),  # before the writer: the ratio is written with its iteration's losses
            hooks.PeriodicWriter(writers, period=cfg.train.log_period) if main_process else None,
        ]
    )
    start_iter = (
        trainer.iter + 1
        if load_or_resume(checkpointer, cfg.train.init_checkpoint, resume, "train.init_checkpoint")
        else 0
    )
    return trainer, start_iter
