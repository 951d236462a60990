"""Trace a (plain) student to TorchScript through Detectron2's deployment path, and check it.

``detectron2.export.TracingAdapter`` flattens the model's dict-and-``Instances`` inputs and outputs
to tensors, and ``torch.jit.trace`` records the forward on a sample image. The traced module takes
one image tensor (``float32 [3, H, W]``, in the config's ``INPUT.FORMAT``, already resized as at test
time) and returns a tuple of tensors; :func:`output_names` says which is which. An R-CNN is traced
without its final rescaling (``inference(..., do_postprocess=False)``, as Detectron2's
``tools/deploy/export_model.py`` does): its boxes are in the pixels of the resized input. A model
whose forward is traced as it is (RetinaNet, FCOS) returns boxes in the input's pixels too.

Tracing records one path through the code; :func:`compare` runs the traced and the eager model on
other images (another size too) and refuses a traced model whose detections differ.
"""

import logging
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..errors import ExportError

__all__ = [
    "ExportError",
    "inference_function",
    "prepare_image",
    "trace",
    "output_names",
    "compare",
    "detections",
    "random_image",
    "check_images",
]

logger = logging.getLogger(__name__)


def inference_function(model: nn.Module) -> Callable:
    """``fn(model, inputs) -> [{"instances": ...}]`` that is traced (and run eagerly for the
    comparison): ``GeneralizedRCNN.inference`` without the rescaling to the original image size,
    else the model's own forward."""
    from detectron2.modeling import GeneralizedRCNN

    if isinstance(model, GeneralizedRCNN):

        def rcnn(m, inputs):
            return [{"instances": m.inference(inputs, do_postprocess=False)[0]}]

        return rcnn
    return lambda m, inputs: m(inputs)


def prepare_image(image: np.ndarray, augmentations: Sequence, input_format: str = "BGR") -> torch.Tensor:
    """An ``HxWx3`` uint8 image in BGR (as OpenCV reads it) as the traced model's input: converted
    to ``input_format``, resized by the config's test-time ``augmentations``, ``float32 [3, H, W]``."""
    from detectron2.data import transforms as T

    if input_format == "RGB":
        image = image[:, :, ::-1]
    aug = T.AugInput(np.ascontiguousarray(image))
    T.AugmentationList(list(augmentations))(aug)
    return torch.as_tensor(aug.image.astype("float32").transpose(2, 0, 1))


def trace(model: nn.Module, image: torch.Tensor):
    """``(traced module, adapter)`` of ``model`` recorded on ``image``; the adapter's
    ``outputs_schema`` rebuilds the model's outputs from the traced tuple. ``model`` is put in
    eval mode with its parameters frozen (so the traced module's outputs carry no autograd graph)."""
    from detectron2.export import TracingAdapter

    model.eval().requires_grad_(False)
    with torch.no_grad(), warnings.catch_warnings():
        # Detectron2's shape asserts and Python ints in the graph warn at every trace; the
        # comparison on other images is the check that matters.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        adapter = TracingAdapter(model, [{"image": image}], inference_function(model))
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
    return traced, adapter


def _instances(outputs):
    return outputs[0]["instances"]


def output_names(adapter, traced_outputs: Sequence[torch.Tensor]) -> List[str]:
    """The names of the traced module's outputs, in order: the fields of the ``Instances`` (sorted,
    as ``detectron2.export.flatten`` orders them) then ``image_size``."""
    instances = _instances(adapter.outputs_schema(traced_outputs))
    names = [*sorted(instances.get_fields()), "image_size"]
    if len(names) != len(traced_outputs):  # another output structure: positions only
        return [f"output_{i}" for i in range(len(traced_outputs))]
    return names


def detections(instances) -> Dict[str, torch.Tensor]:
    """``{"boxes", "scores", "classes"}`` of Detectron2 ``Instances`` (on the CPU)."""
    instances = instances.to("cpu")
    return {
        "boxes": instances.pred_boxes.tensor.detach(),
        "scores": instances.scores.detach(),
        "classes": instances.pred_classes.detach(),
    }


def compare(
    model: nn.Module, traced, adapter, images: Sequence[torch.Tensor], atol: float = 1e-3
) -> List[Dict[str, float]]:
    """Run the eager ``model`` and the ``traced`` module on each image and compare their
    detections: the same number, the same classes, boxes (px) and scores within ``atol``.

    Returns:
        per image ``{"size": (H, W), "detections": n, "box_diff": max |box difference| in px,
        "score_diff": max |score difference|}``.
    Raises:
        ExportError: the traced model's detections differ (tracing recorded a path that does not
            hold for that image).
    """
    run = inference_function(model)
    report = []
    with torch.no_grad():
        for image in images:
            eager = detections(_instances(run(model, [{"image": image}])))
            got = detections(_instances(adapter.outputs_schema(traced(image))))
            size = tuple(image.shape[-2:])
            if len(got["scores"]) != len(eager["scores"]) or not torch.equal(got["classes"], eager["classes"]):
                raise ExportError(
                    f"the traced model finds {len(got['scores'])} detections on a {size[0]}x{size[1]} image, the "
                    f"eager model {len(eager['scores'])} (or other classes): tracing does not hold for this model"
                )
            box_diff = float((got["boxes"] - eager["boxes"]).abs().max()) if len(got["scores"]) else 0.0
            score_diff = float((got["scores"] - eager["scores"]).abs().max()) if len(got["scores"]) else 0.0
            if box_diff > atol * max(size) or score_diff > atol:
                raise ExportError(
                    f"the traced model's detections differ from the eager model's on a {size[0]}x{size[1]} image: "
                    f"boxes by up to {box_diff:.3g} px, scores by {score_diff:.3g} (tolerance {atol:g})"
                )
            report.append(
                {"size": size, "detections": len(got["scores"]), "box_diff": box_diff, "score_diff": score_diff}
            )
    return report


def random_image(height: int, width: int, seed: int = 0, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """A ``height x width`` BGR uint8 image of noise with a few filled rectangles (so that an
    untrained model still has a variety of proposals)."""
    import cv2

    rng = rng or np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for _ in range(4):
        x, y = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        w, h = int(rng.integers(width // 8, width // 3)), int(rng.integers(height // 8, height // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, -1)
    return image


def check_images(sample: np.ndarray, seed: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Two images to check a trace on besides its sample: the sample mirrored, and an image of
    another aspect ratio (its height and width swapped)."""
    height, width = sample.shape[:2]
    return np.ascontiguousarray(sample[:, ::-1]), random_image(width, height, seed=seed)
