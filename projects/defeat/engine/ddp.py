"""DDP wrapping that works for CPU (gloo) models as well as GPU ones."""

from detectron2.engine import create_ddp_model

__all__ = ["create_ddp_model_any_device"]


def create_ddp_model_any_device(model, **kwargs):
    """Detectron2's ``create_ddp_model``; a model whose parameters are all on the CPU gets
    ``device_ids=None`` (DDP rejects device ids for CPU modules, Detectron2 passes ``[rank]``)."""
    if all(p.device.type == "cpu" for p in model.parameters()):
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)
