#!/usr/bin/env python
"""Show DeFeat's object/background split: GT boxes and the object mask of every FPN level.

    python tools/visualize_masks.py --config-file configs/demo/defeat_slimR18_from_R18.yaml \
        --num-images 4 --output output/vis_masks
    # + the per-level teacher-student feature difference that the neck loss penalises:
    python tools/visualize_masks.py --config-file configs/demo/defeat_slimR18_from_R18.yaml \
        --teacher-diff --weights output/demo/runs/student_defeat/model_final.pth

The config may be YAML or a LazyConfig ``.py`` file (overrides ``KEY VALUE`` or ``key=value``).
One PNG per image: the image with its GT boxes, then one panel per ``NECK.IN_FEATURES`` level
with the object cells in green (the distiller's own mask code: ``MASK_ASSIGN``, ``SCALE_BASE``,
the backbone's strides) and the boxes assigned to that level in yellow. ``--teacher-diff``
builds the full DeFeat model (teacher from ``MODEL.DEFEAT.TEACHER`` / ``model.teacher``, student
and adapters from ``--weights``, which must load completely unless ``--allow-random-weights``)
and adds a row of heat maps of ``mean_c (adapter(S) - T)^2`` on one colour scale shared by all
levels, with its colour bar (captions give the mean over object and background cells).
Images are resized as at test time and shown in the padded frame the masks live in.
"""

import argparse
import logging
import os
from typing import List

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import ToolArgumentParser, add_overwrite_argument, setup_tool_logging
from defeat.config.paths import check_config_file
from defeat.data.datasets import check_dataset_specs
from defeat.engine.entry import run_entry_point
from defeat.engine.quiet import load_defeat
from defeat.errors import ConfigFileError, DataCheckError, DatasetSpecError, OutputError, WeightsError

MIN_PANEL_SIZE = 32


def build_parser():
    p = ToolArgumentParser(prog="visualize_masks.py", description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="YAML or LazyConfig (.py) config")
    p.add_argument(
        "--dataset",
        default="",
        metavar="NAME or NAME=ANNOTATIONS.json[:IMAGE_ROOT]",
        help="dataset to show: a known name or a COCO json named on the spot "
        "(default: the config's first training set)",
    )
    p.add_argument("--num-images", type=int, default=4, help="how many images, at least 1")
    p.add_argument("--start", type=int, default=0, help="index of the first image in the dataset")
    p.add_argument("--output", default="output/vis_masks", help="folder for the PNGs (created)")
    p.add_argument(
        "--panel-size", type=int, default=256, help=f"longer side of each panel in pixels, at least {MIN_PANEL_SIZE}"
    )
    p.add_argument("--teacher-diff", action="store_true", help="add the teacher-student difference row")
    add_overwrite_argument(p)
    p.add_argument(
        "--weights",
        default="",
        help="DeFeat student checkpoint for --teacher-diff (default MODEL.WEIGHTS / train.init_checkpoint)",
    )
    p.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="with --teacher-diff: draw even if the student weights are missing or load only in part",
    )
    p.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="OVERRIDE",
        help="config overrides: KEY VALUE pairs (YAML) or key=value (LazyConfig)",
    )
    return p


def parse_command_line(argv=None):
    """The arguments with the checks that need no torch (before the heavy imports): a bad one
    exits with a one-line message (code 2). ``args.parser`` is the parser."""
    p = build_parser()
    args = p.parse_intermixed_args(argv)
    if args.num_images < 1:
        p.error(f"--num-images {args.num_images} must be at least 1")
    if args.start < 0:
        p.error(f"--start {args.start} must be >= 0 (an index into the dataset)")
    if args.panel_size < MIN_PANEL_SIZE:
        p.error(f"--panel-size {args.panel_size} must be at least {MIN_PANEL_SIZE} (pixels)")
    if os.path.isfile(args.output):
        p.error(f"--output {args.output!r} is a file; give a folder for the PNGs")
    if args.weights and not args.teacher_diff:
        p.error("--weights is only used with --teacher-diff (the masks need no weights)")
    try:
        check_config_file(args.config_file)
        check_dataset_specs([args.dataset] if "=" in args.dataset else [], environment=False)
    except ValueError as e:  # a missing config file, a malformed spec or one naming missing files
        p.error(str(e))
    args.parser = p
    return args


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_command_line, script="visualize_masks.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
import numpy as np
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.structures import ImageList

from defeat import DeFeatDistiller
from defeat.analysis.loss_figures import save_figure
from defeat.analysis.mask_figures import LevelView, mask_figure
from defeat.checkpoint import load_weights_strictly
from defeat.config.files import (
    architecture,
    build_backbone_from_config,
    build_model_from_config,
    defeat_settings,
    image_format,
    inference_augmentations,
    is_defeat_config,
    load_config,
    model_device,
    model_weights,
    pixel_stats,
    set_defeat_setting,
    train_dataset_names,
)
from defeat.data.datasets import check_images_under_root, dataset_from_argument, register_provided_datasets
from defeat.engine.outputs import check_distinct_outputs, check_output_dir, check_output_files
from defeat.engine.preflight import check_datasets
from defeat.modeling.align import align_to_grid
from defeat.modeling.masks import assign_levels

logger = logging.getLogger("defeat.tools.visualize_masks")


def parse_args(argv=None):
    """Arguments, checked before any work (:func:`parse_command_line`, then the config and the
    dataset read); a bad one exits with a one-line message (code 2). ``argv``: the command line,
    or the arguments :func:`parse_command_line` returned."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_command_line(argv)
    p = args.parser
    try:
        args.cfg = load_config(args.config_file, args.opts)
    except ConfigFileError as e:
        p.error(str(e))
    if not args.dataset:
        names = train_dataset_names(args.cfg)
        if not names:
            p.error(f"{args.config_file} names no training dataset; pass --dataset NAME")
        args.dataset = names[0]
    try:
        args.dataset = dataset_from_argument(args.dataset)
    except ValueError as e:  # a malformed or clashing spec, missing files
        p.error(str(e))
    try:
        args.records = load_records(args.dataset)
    except KeyError as e:
        p.error(f"dataset {args.dataset!r} is not registered ({e})")
    except (DataCheckError, DatasetSpecError) as e:
        p.error(str(e))
    if args.start >= len(args.records):
        p.error(f"--start {args.start} is past the end of dataset {args.dataset!r} ({len(args.records)} images)")
    return args


def enable_neck(cfg) -> None:
    """The masks are the neck loss's: build the distiller with the neck on."""
    set_defeat_setting(cfg, ("neck", "enabled"), True)


def load_records(name: str) -> List[dict]:
    """The dataset dicts of ``name`` (a generated dataset is registered on demand), its json
    checked first (``defeat.engine.preflight.check_datasets``) and its images refused when one
    lies outside its image folder (``check_images_under_root``: the figures are guarded against
    that folder only)."""
    register_provided_datasets([name])
    check_datasets([name], [], None, "")
    records = DatasetCatalog.get(name)
    root = MetadataCatalog.get(name).get("image_root", None)
    if root:
        check_images_under_root(records, name, str(root))
    return records


def load_student(model: torch.nn.Module, weights: str, allow_random: bool) -> None:
    """Load the DeFeat student (and its adapters) from ``weights``; refuse a partial load
    (``defeat.checkpoint.load_weights_strictly``).

    Raises:
        SystemExit: no weights, a missing file, or tensors left at their random initialisation,
            unless ``allow_random`` (then it only warns).
    """
    hint = (
        "pass --weights with the DeFeat run's checkpoint (model_final.pth), or "
        "--allow-random-weights to draw an untrained student"
    )
    if not weights:
        if not allow_random:
            raise SystemExit(f"--teacher-diff needs the DeFeat student's trained weights: {hint}")
        logger.warning("--allow-random-weights: the student and adapters are untrained")
        return
    if "://" not in weights and not os.path.isfile(os.path.expanduser(weights)):
        raise SystemExit(f"student weights not found: {weights!r}")
    try:
        load_weights_strictly(model, weights, "--weights", allow_random)
    except WeightsError as e:
        raise SystemExit(f"visualize_masks.py: error: {e}; {hint}") from e


class MaskViewer:
    """The student backbone + distiller of a config (and with ``teacher_diff`` the whole model)."""

    def __init__(self, cfg, teacher_diff: bool = False, weights: str = "", allow_random_weights: bool = False):
        self.cfg = cfg
        self.model = None
        enable_neck(cfg)
        if teacher_diff:
            if not is_defeat_config(cfg):
                raise SystemExit(f"--teacher-diff needs a DeFeat config, got {architecture(cfg).__name__}")
            self.model = build_model_from_config(cfg)
            load_student(self.model, weights or model_weights(cfg), allow_random_weights)
            self.model.eval()
            self.backbone, self.distiller = self.model.backbone, self.model.distiller
        else:  # masks need only the student's levels and strides: no weights required
            self.backbone = build_backbone_from_config(cfg)
            shapes = self.backbone.output_shape()
            settings = defeat_settings(cfg)
            settings["neck"]["enabled"] = True
            self.distiller = DeFeatDistiller.from_settings(settings, shapes, shapes)
        self.device = model_device(cfg)
        self.format = image_format(cfg)
        self.mapper = DatasetMapper(
            is_train=True,  # keeps the annotations; the augmentation is the test-time resize
            augmentations=inference_augmentations(cfg),
            image_format=self.format,
        )

    def _images(self, inputs) -> ImageList:
        if self.model is not None:
            return self.model.preprocess_image(inputs)
        mean, std = (torch.tensor(v).view(-1, 1, 1) for v in pixel_stats(self.cfg))
        x = [((d["image"].float() - mean) / std).to(self.device) for d in inputs]
        return ImageList.from_tensors(
            x, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )

    @torch.no_grad()
    def render(self, record: dict, panel_size: int):
        """The figure (``matplotlib.figure.Figure``) of one dataset record."""
        d = self.mapper(record)
        images = self._images([d])
        gt = d["instances"].to(images.tensor.device)
        feats = self.backbone(images.tensor)
        boxes = gt.gt_boxes.tensor
        masks = self.distiller.masks([boxes], feats)
        height, width = images.tensor.shape[-2:]
        image = _rgb(d["image"], self.format, height, width)
        on_level = _boxes_per_level(boxes.cpu(), self.distiller)
        d_ = self.distiller
        teacher = self.model.teacher_features([d], images)[1] if self.model is not None else None
        levels = []
        for lvl, (f, s, m) in enumerate(zip(d_.in_features, d_.strides, masks)):
            m = m[0]
            view = LevelView(
                f,
                s,
                m.cpu().numpy(),
                on_level[lvl],
                f"{f} /{s}: {int(on_level[lvl].sum())} boxes, obj {100 * float(m.mean()):.0f}%",
            )
            if teacher is not None:
                t_map = align_to_grid(teacher[f], feats[f].shape[-2:], self.model.teacher_input_scale)
                diff = (d_.adapters[f](feats[f]) - t_map).pow(2).mean(1)[0]
                view.diff = diff.float().cpu().numpy()
                view.diff_caption = f"{f}: obj {_region_mean(diff, m > 0)} bg {_region_mean(diff, m == 0)}"
            levels.append(view)
        title = f"{os.path.basename(record['file_name'])}: {len(boxes)} GT boxes"
        return mask_figure(image, boxes.cpu().numpy(), levels, title, panel_size)


def _rgb(image: torch.Tensor, fmt: str, height: int, width: int) -> np.ndarray:
    """A ``[C, h, w]`` mapped image as an RGB uint8 array zero-padded to ``[height, width]``."""
    img = image.permute(1, 2, 0).numpy()
    if fmt == "BGR":
        img = img[:, :, ::-1]
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[: img.shape[0], : img.shape[1]] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _region_mean(values: torch.Tensor, region: torch.Tensor) -> str:
    """Mean of ``values`` over a bool region as short text, ``-`` for an empty region."""
    return f"{float(values[region].mean()):.3g}" if bool(region.any()) else "-"


def _boxes_per_level(boxes: torch.Tensor, distiller) -> List[np.ndarray]:
    """Per level, a bool ``[K]`` array: which GT boxes the level's object mask is drawn from."""
    num = len(distiller.in_features)
    if distiller.mask_assign == "scale":
        levels = assign_levels(boxes, num, distiller.scale_base).numpy()
        return [levels == lvl for lvl in range(num)]
    everywhere = distiller.mask_assign == "all"  # "coupled": the whole map is one region
    return [np.full(len(boxes), everywhere) for _ in range(num)]


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    setup_tool_logging()
    records = args.records[args.start : args.start + args.num_images]
    if len(records) < args.num_images:
        logger.info(
            "dataset %r has %d images from index %d (asked for %d)",
            args.dataset,
            len(records),
            args.start,
            args.num_images,
        )
    suffix = "_masks_diff.png" if args.teacher_diff else "_masks.png"
    targets = [
        os.path.join(args.output, os.path.splitext(os.path.basename(r["file_name"]))[0] + suffix) for r in records
    ]
    try:  # the one output guard: not into the dataset's images, no two images to one file, no silent overwrite
        meta = MetadataCatalog.get(args.dataset)
        check_output_dir(args.output, {f"image folder of dataset {args.dataset!r}": meta.get("image_root", "")})
        check_distinct_outputs([(r["file_name"], t) for r, t in zip(records, targets)])
        images = {f"image {r['file_name']!r} of dataset {args.dataset!r}": r["file_name"] for r in args.records}
        check_output_files(targets, images, args.overwrite)
    except OutputError as e:
        raise SystemExit(f"visualize_masks.py: error: {e}") from e
    viewer = MaskViewer(args.cfg, args.teacher_diff, args.weights, args.allow_random_weights)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for record, path in zip(records, targets):
        save_figure(viewer.render(record, args.panel_size), path)
        logger.info("wrote %s", path)
        written.append(path)
    return written


if __name__ == "__main__":
    run_entry_point(main, ARGS, script="visualize_masks.py")
