"""Mixed precision without CUDA: ``SOLVER.AMP.ENABLED`` (``train.amp.enabled``) on a CPU trains
under bf16 autocast.

Detectron2's ``AMPTrainer`` needs CUDA (fp16 with a gradient scaler). On a CPU, the same switch
selects :class:`CPUAutocastTrainer`: the model's forward (student, teacher and adapters alike)
runs under ``torch.autocast("cpu", dtype=torch.bfloat16)``; parameters, gradients and optimizer
state stay fp32, and DeFeat's losses are computed in fp32 (``defeat.modeling.losses`` casts its inputs),
as under GPU AMP. bf16 has fp32's exponent range, so no gradient scaler is needed. Everything
else is ``SimpleTrainer``'s: gradient clipping (a wrapped optimizer), hooks, checkpoints, resume.
Evaluation runs in fp32, as Detectron2's does.
"""

import logging
import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from ..errors import AMPUnsupportedError

__all__ = ["AMPUnsupportedError", "CPUAutocastTrainer", "check_amp", "cpu_bf16_supported", "build_step_trainer"]

logger = logging.getLogger(__name__)


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX, as oneDNN reports it).

    Without it, bf16 autocast still runs but emulates bf16 and is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _device_type(device) -> str:
    return torch.device(device).type


def check_amp(enabled, device, setting: str = "SOLVER.AMP.ENABLED") -> None:
    """Refuse mixed precision the device cannot run, before anything is built.

    Args:
        enabled: the config's AMP switch (must be a real bool: LazyConfig values arrive untyped).
        device: ``MODEL.DEVICE`` / ``train.device``.
        setting: the key named in the message.

    Raises:
        AMPUnsupportedError: a non-bool switch, CUDA asked for without a CUDA device, or bf16 asked
            for on a CPU without native bf16.
    """
    if not isinstance(enabled, bool):
        raise AMPUnsupportedError(f"{setting} = {enabled!r} must be True or False (a boolean, not a string or number)")
    if not enabled:
        return
    kind = _device_type(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise AMPUnsupportedError(
                f"{setting} is on for device {device!r}, but CUDA is not available; set MODEL.DEVICE cpu "
                "(train.device='cpu') to train under bf16 on the CPU, or turn AMP off"
            )
        return
    if kind != "cpu":
        raise AMPUnsupportedError(
            f"{setting} is on for device {device!r}; mixed precision is supported on cuda and cpu"
        )
    if not cpu_bf16_supported():
        raise AMPUnsupportedError(
            f"{setting} is on for the CPU, but this CPU has no native bf16 (no AVX-512 BF16 or AMX; "
            "`lscpu` lists avx512_bf16 / amx_bf16 where it has): emulated bf16 is slower than fp32. "
            f"Set {setting} False"
        )


class CPUAutocastTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose forward (and the loss sum) runs under CPU autocast (bf16).

    ``state_dict`` is ``SimpleTrainer``'s: a run can resume with AMP on or off either way.
    """

    def __init__(self, model, data_loader, optimizer, precision: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            # Each term in fp32 before the sum: a bf16 detector loss must not round the total.
            loss_dict = {k: v.float() for k, v in loss_dict.items()}
            losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()  # outside autocast: gradients flow in the dtypes of the forward's ops
        self.after_backward()

        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def build_step_trainer(model, data_loader, optimizer, *, amp: bool, device) -> SimpleTrainer:
    """The step loop for a config: ``SimpleTrainer`` (fp32), Detectron2's ``AMPTrainer`` (fp16 on
    CUDA) or :class:`CPUAutocastTrainer` (bf16 on a CPU). Call :func:`check_amp` first."""
    if not amp:
        return SimpleTrainer(model, data_loader, optimizer)
    if _device_type(device) == "cuda":
        return AMPTrainer(model, data_loader, optimizer)
    logger.info("Mixed precision on the CPU: forward under bf16 autocast, weights and DeFeat losses in fp32")
    return CPUAutocastTrainer(model, data_loader, optimizer)
