#!/usr/bin/env python
"""Show DeFeat's object/background split: GT boxes and the object mask of every FPN level.

    python tools/visualize_masks.py --config-file configs/demo/defeat_slimR18_from_R18.yaml \
        --num-images 4 --output output/vis_masks
    # + the per-level teacher-student feature difference that the neck loss penalises:
    python tools/visualize_masks.py --config-file configs/demo/defeat_slimR18_from_R18.yaml \
        --teacher-diff --weights output/demo/defeat_slimR18_from_R18/model_final.pth

One PNG per image: the image with its GT boxes, then one panel per ``NECK.IN_FEATURES`` level
with the object cells in green (the distiller's own mask code: ``MASK_ASSIGN``, ``SCALE_BASE``,
the backbone's strides) and the boxes assigned to that level in yellow. ``--teacher-diff``
builds the full DeFeat model (teacher weights from ``MODEL.DEFEAT.TEACHER.WEIGHTS``, student
weights from ``--weights``) and adds a row of heat maps of ``mean_c (adapter(S) - T)^2``
(each scaled to its own maximum; captions give its mean over object and background cells).
Images are resized as at test time and shown in the padded frame the masks live in.
"""
import argparse
import logging
import os
from typing import List

import cv2
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import ImageList

from defeat import DeFeatDistiller, add_defeat_config
from defeat.align import align_to_grid
from defeat.meta_arch.common import TeacherMixin
from defeat.demo.data import DEMO_PREFIX, register_demo_dataset, settings_from_env
from defeat.masks import assign_levels
from defeat.visualize import OTHER_BOX_COLOR, draw_boxes, grid, heat_panel, mask_panel, titled

logger = logging.getLogger("defeat.tools.visualize_masks")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--dataset", default="", help="registered dataset (default: the config's first DATASETS.TRAIN)")
    p.add_argument("--num-images", type=int, default=4)
    p.add_argument("--start", type=int, default=0, help="index of the first image in the dataset")
    p.add_argument("--output", default="output/vis_masks", help="folder for the PNGs")
    p.add_argument("--panel-size", type=int, default=256, help="longer side of each panel in pixels")
    p.add_argument("--teacher-diff", action="store_true", help="add the teacher-student difference row")
    p.add_argument("--weights", default="", help="student weights for --teacher-diff (default MODEL.WEIGHTS)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return p.parse_args(argv)


def setup_cfg(args):
    cfg = get_cfg()
    add_defeat_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEFEAT.NECK.ENABLED = True  # the masks are the neck loss's
    cfg.freeze()
    return cfg


def load_records(name: str, start: int, count: int) -> List[dict]:
    """Dataset dicts ``start:start+count`` of ``name`` (the demo dataset is registered on demand)."""
    if name.startswith(DEMO_PREFIX) and name not in DatasetCatalog.list():
        register_demo_dataset(**settings_from_env())
    return DatasetCatalog.get(name)[start:start + count]


class MaskViewer:
    """The student backbone + distiller of a config (and with ``teacher_diff`` the whole model)."""

    def __init__(self, cfg, teacher_diff: bool = False, weights: str = ""):
        self.cfg = cfg
        self.model = None
        if teacher_diff:
            self.model = build_model(cfg)
            if not (isinstance(self.model, TeacherMixin) and hasattr(self.model, "distiller")):
                raise SystemExit(f"--teacher-diff needs a DeFeat config, got {cfg.MODEL.META_ARCHITECTURE}")
            DetectionCheckpointer(self.model).load(weights or cfg.MODEL.WEIGHTS)
            self.model.eval()
            self.backbone, self.distiller = self.model.backbone, self.model.distiller
        else:  # masks need only the student's levels and strides: no teacher weights required
            self.backbone = build_backbone(cfg).to(cfg.MODEL.DEVICE).eval()
            shapes = self.backbone.output_shape()
            self.distiller = DeFeatDistiller(cfg, shapes, shapes)
        self.mapper = DatasetMapper(
            is_train=True,  # keeps the annotations; the augmentation is the test-time resize
            augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
            image_format=cfg.INPUT.FORMAT,
        )

    def _images(self, inputs) -> ImageList:
        if self.model is not None:
            return self.model.preprocess_image(inputs)
        mean = torch.tensor(self.cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1)
        std = torch.tensor(self.cfg.MODEL.PIXEL_STD).view(-1, 1, 1)
        x = [((d["image"].float() - mean) / std).to(self.cfg.MODEL.DEVICE) for d in inputs]
        return ImageList.from_tensors(x, self.backbone.size_divisibility,
                                      padding_constraints=self.backbone.padding_constraints)

    @torch.no_grad()
    def render(self, record: dict, panel_size: int) -> np.ndarray:
        """The figure of one dataset record as a BGR image."""
        d = self.mapper(record)
        images = self._images([d])
        gt = d["instances"].to(images.tensor.device)
        feats = self.backbone(images.tensor)
        boxes = gt.gt_boxes.tensor
        masks = self.distiller.masks([boxes], feats)
        height, width = images.tensor.shape[-2:]
        image = _bgr(d["image"], self.cfg.INPUT.FORMAT, height, width)
        scale = panel_size / max(height, width)
        size = (int(round(width * scale)), int(round(height * scale)))
        on_level = _boxes_per_level(boxes.cpu(), self.distiller)
        box_np = boxes.cpu().numpy()

        def panel(img, lvl=None, others=True):
            out = cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)
            if lvl is None:
                return draw_boxes(out, box_np, scale=scale)
            if others:  # boxes of other levels in grey
                out = draw_boxes(out, box_np[~on_level[lvl]], OTHER_BOX_COLOR, scale=scale)
            return draw_boxes(out, box_np[on_level[lvl]], scale=scale)

        d_ = self.distiller
        row = [titled(panel(image), f"{os.path.basename(record['file_name'])}: {len(box_np)} GT boxes")]
        for lvl, (f, s, m) in enumerate(zip(d_.in_features, d_.strides, masks)):
            m = m[0].cpu().numpy()
            row.append(titled(panel(mask_panel(image, m, s), lvl),
                              f"{f} /{s}: {int(on_level[lvl].sum())} boxes, obj {100 * m.mean():.0f}%"))
        rows = [row]
        if self.model is not None:
            _, teacher = self.model._teacher_features([d], images)
            diff_row = [titled(panel((image * 0.35).astype(np.uint8)), "mean_c (adapter(S) - T)^2")]
            for lvl, (f, s, m) in enumerate(zip(d_.in_features, d_.strides, masks)):
                t_map = align_to_grid(teacher[f], feats[f].shape[-2:], self.model.teacher_input_scale)
                diff = (d_.adapters[f](feats[f]) - t_map).pow(2).mean(1)[0]
                obj, bg = _region_mean(diff, m[0] > 0), _region_mean(diff, m[0] == 0)
                heat = heat_panel(diff.cpu().numpy(), s, height, width)
                diff_row.append(titled(panel(heat, lvl, others=False), f"{f}: obj {obj} bg {bg}"))
            rows.append(diff_row)
        return grid(rows)


def _bgr(image: torch.Tensor, fmt: str, height: int, width: int) -> np.ndarray:
    """A ``[C, h, w]`` mapped image as a BGR uint8 array zero-padded to ``[height, width]``."""
    img = image.permute(1, 2, 0).numpy()
    if fmt == "RGB":
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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = setup_cfg(args)
    viewer = MaskViewer(cfg, args.teacher_diff, args.weights)
    name = args.dataset or cfg.DATASETS.TRAIN[0]
    os.makedirs(args.output, exist_ok=True)
    written = []
    for record in load_records(name, args.start, args.num_images):
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        path = os.path.join(args.output, f"{stem}_masks{'_diff' if args.teacher_diff else ''}.png")
        if not cv2.imwrite(path, viewer.render(record, args.panel_size)):
            raise SystemExit(f"could not write {path}")
        logger.info("wrote %s", path)
        written.append(path)
    return written


if __name__ == "__main__":
    main()
