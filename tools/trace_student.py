#!/usr/bin/env python
"""Trace a trained (or exported) student to TorchScript with Detectron2's deployment path.

    python tools/trace_student.py --config-file configs/demo/student_slimR18.yaml \
        --weights output/student_final.pth --output output/student.ts [--image photo.jpg] [KEY VALUE ...]

The model is wrapped in ``detectron2.export.TracingAdapter`` and recorded with ``torch.jit.trace``
on a sample image (``--image``, else a generated one), resized as at test time. Before anything is
written the traced module is run beside the eager model on the sample, the sample mirrored and an
image of another aspect ratio: their detections (boxes, scores, classes) must agree. The file holds
``defeat_trace.json`` (``torch.jit.load(path, _extra_files=...)``) with the input format, the
test-time sizes, the output names and the classes: ``classes`` (names) and ``category_ids`` (the
dataset's own ids), item ``i`` of each the model's class ``i``, from ``--dataset``, else the
weights' ``"classes"`` (an export of ``tools/export_student.py``), else the config's registered
training or test set; null when none is known (a warning says so). A DeFeat config traces its
student. The computation is ``defeat.analysis.deploy``.
"""

import argparse
import json
import logging
import os
import sys

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import ToolArgumentParser, add_overwrite_argument, input_file_problem
from defeat.config.paths import check_config_file
from defeat.data.datasets import check_dataset_specs
from defeat.engine.arguments import take_trailing_options
from defeat.engine.entry import run_entry_point
from defeat.engine.outputs import check_output_files
from defeat.engine.quiet import load_defeat
from defeat.errors import (
    ConfigFileError,
    DatasetSpecError,
    DeFeatConfigError,
    ExportError,
    OutputError,
    OverrideError,
    WeightsError,
)


def _tolerance(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def parse_args(argv=None):
    p = ToolArgumentParser(prog="trace_student.py", description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="the student's (or DeFeat) YAML or .py config")
    p.add_argument("--weights", default="", help="trained or exported student weights (default: MODEL.WEIGHTS)")
    p.add_argument("--output", required=True, help="the TorchScript file to write (e.g. output/student.ts)")
    p.add_argument("--image", default="", help="sample image to trace on (default: a generated one)")
    p.add_argument(
        "--atol", type=_tolerance, default=1e-3, help="largest score difference allowed (boxes: times the image side)"
    )
    p.add_argument(
        "--allow-random-weights", action="store_true", help="trace even without weights that cover every tensor"
    )
    p.add_argument(
        "--dataset",
        default="",
        metavar="NAME or NAME=ANNOTATIONS.json[:IMAGE_ROOT]",
        help="the dataset the student was trained on: its class names and category ids go into defeat_trace.json",
    )
    add_overwrite_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (YAML), key=value (.py)")
    args = take_trailing_options(p, p.parse_args(argv))
    if os.path.isdir(args.output):
        p.error(f"--output {args.output!r} is a folder; give a file path such as {args.output}/student.ts")
    problem = input_file_problem(args.image, "--image") if args.image else None
    if problem:
        p.error(problem)
    inputs = {"config file": args.config_file, "weights": args.weights, "sample image (--image)": args.image}
    try:
        check_output_files([args.output], inputs, args.overwrite, "--output")
    except OutputError as e:
        p.error(str(e))
    try:  # before the heavy imports, in the words main would use
        check_config_file(args.config_file)
    except ConfigFileError as e:
        raise SystemExit(f"trace_student.py: error: --config-file: {e}") from e
    try:
        check_dataset_specs([args.dataset] if "=" in args.dataset else [], environment=False)
    except DatasetSpecError as e:
        raise SystemExit(f"trace_student.py: error: --dataset: {e}; nothing written") from e
    return args


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_args, script="trace_student.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
import cv2
import torch

from defeat.analysis import deploy
from defeat.analysis.export import check_export_classes, export_classes
from defeat.checkpoint import atomic_write, load_weights_strictly
from defeat.config.files import (
    image_format,
    inference_augmentations,
    load_config,
    model_device,
    model_weights,
    num_classes,
    set_run_values,
    test_dataset_names,
    train_dataset_names,
)
from defeat.modeling.meta_arch.common import build_student_model

logger = logging.getLogger("defeat.tools.trace_student")

INFO_FILE = "defeat_trace.json"  # the extra file inside the TorchScript archive


def load(args):
    """The config (weights set) and its student model with the weights loaded strictly."""
    try:
        cfg = load_config(args.config_file, args.opts)
    except (ConfigFileError, OverrideError, DeFeatConfigError) as e:
        raise SystemExit(f"trace_student.py: error: --config-file: {e}") from e
    set_run_values(cfg, weights=args.weights)
    weights = model_weights(cfg)
    if not weights and not args.allow_random_weights:
        raise SystemExit(
            "trace_student.py: error: no weights: pass --weights STUDENT.pth (or --allow-random-weights "
            "to trace an untrained model)"
        )
    model = build_student_model(cfg)
    if weights:
        try:
            load_weights_strictly(model, weights, "--weights", allow_random=args.allow_random_weights)
        except WeightsError as e:
            raise SystemExit(f"trace_student.py: error: {e} (--allow-random-weights to trace anyway)") from e
    return cfg, model.eval()


def main(argv=None) -> dict:
    """``argv``: the command line, or its parsed arguments (:func:`parse_args`)."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg, model = load(args)
    try:
        names = [*train_dataset_names(cfg), *test_dataset_names(cfg)]
        classes, source = export_classes(args.dataset, names, model_weights(cfg))
        check_export_classes(classes, source, *num_classes(cfg))
    except ExportError as e:
        raise SystemExit(f"trace_student.py: error: {e}; nothing written") from e
    if classes is None:
        logger.warning(
            "%s carries no class names or category ids (no --dataset, no classes in the weights, no registered "
            "dataset in the config); pass --dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT] to keep them",
            INFO_FILE,
        )
    if args.image:
        sample = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if sample is None:
            raise SystemExit(f"trace_student.py: error: cannot read --image {args.image}")
    else:
        sample = deploy.random_image(480, 640)
    augmentations, fmt = inference_augmentations(cfg), image_format(cfg)
    device = torch.device(model_device(cfg))
    images = [deploy.prepare_image(im, augmentations, fmt).to(device) for im in (sample, *deploy.check_images(sample))]
    traced, adapter = deploy.trace(model, images[0])
    try:
        report = deploy.compare(model, traced, adapter, images, atol=args.atol)
    except ExportError as e:
        raise SystemExit(f"trace_student.py: error: {e}; nothing written") from e
    with torch.no_grad():
        names = deploy.output_names(adapter, traced(images[0]))
    info = {
        "config_file": args.config_file,
        "weights": model_weights(cfg),
        "architecture": type(model).__name__,
        "device": str(device),
        "input": f"float32 [3, H, W] in {fmt}, resized as at test time",
        "input_format": fmt,
        "test_resize": [repr(a) for a in augmentations],
        "outputs": names,
        "boxes": "x1, y1, x2, y2 in the pixels of the resized input",
        "classes": classes["names"] if classes else None,
        "category_ids": classes["category_ids"] if classes else None,
        "classes_from": source or None,
    }
    folder = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(folder, exist_ok=True)
    extra = {INFO_FILE: json.dumps(info, indent=1)}
    atomic_write(args.output, lambda f: torch.jit.save(traced, f, _extra_files=extra))
    for r in report:
        print(
            f"checked on {r['size'][0]}x{r['size'][1]}: {r['detections']} detections agree "
            f"(boxes within {r['box_diff']:.2g} px, scores within {r['score_diff']:.2g})"
        )
    print(f"wrote {args.output}: {type(model).__name__} traced on {device}; outputs {', '.join(names)}")
    return {"report": report, "info": info}


if __name__ == "__main__":
    run_entry_point(main, ARGS, script="trace_student.py")
    sys.exit(0)
