#!/usr/bin/env python
"""Run a trained (or exported) student on an image or a folder; save the detections drawn.

    python tools/predict.py --config-file configs/demo/student_slimR18.yaml \
        --weights output/student.pth --input photos/ --output output/predictions \
        [--dataset my_val=data/val.json] [--score-threshold 0.5] [KEY VALUE ...]

Each image is written as ``<output>/<name>.png`` with its detections drawn by Detectron2's
``Visualizer`` (class names from ``--dataset``'s metadata, else from the config's first test or
training set when its class names are known, else class indices), and all detections go to
``<output>/predictions.json``. The config is a YAML file or a LazyConfig (``.py``); the model
predicts like Detectron2's ``DefaultPredictor`` (test-time resize, input format). A DeFeat config
predicts with its student (the architecture without the teacher). Weights are required
(``--weights``, ``MODEL.WEIGHTS`` or ``train.init_checkpoint``) and must cover every parameter of
the model unless ``--allow-random-weights``; the output folder must differ from the input's
folder, so inputs are never overwritten.
"""

import argparse
import json
import logging
import os
from typing import List

import cv2
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_image_to_rgb
from detectron2.utils.visualizer import Visualizer
from omegaconf import OmegaConf

import defeat  # noqa: F401  (registers the DeFeat meta-architectures)
from defeat.config.files import (
    architecture,
    image_format,
    inference_augmentations,
    load_config,
    model_weights,
    num_classes,
    train_dataset_names,
)
from defeat.engine.checkpoint import RecordingCheckpointer
from defeat.engine.datasets import dataset_from_argument, register_provided_datasets
from defeat.errors import ConfigFileError, OverrideError
from defeat.modeling.meta_arch.common import build_student_model

logger = logging.getLogger("defeat.tools.predict")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# LazyConfig keys of the models' own score thresholds (an R-CNN's, a dense detector's).
LAZY_THRESHOLDS = ("model.roi_heads.box_predictor.test_score_thresh", "model.test_score_thresh")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config-file", required=True, metavar="FILE", help="the student's (or DeFeat) YAML or LazyConfig (.py) config"
    )
    p.add_argument("--weights", default="", help="trained or exported student weights (default: MODEL.WEIGHTS)")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", default="output/predictions", help="folder for the drawn images (not the input's)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detections below this score are not kept")
    p.add_argument(
        "--dataset",
        default="",
        metavar="NAME or NAME=ANNOTATIONS.json[:IMAGE_ROOT]",
        help="dataset whose class names label the detections",
    )
    p.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="predict even without weights or with weights that leave parameters random",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (YAML), key=value (.py)")
    return p.parse_args(argv)


def setup_cfg(args):
    """The config (YAML or LazyConfig, through the package's one loader) with the weights and the
    score threshold set."""
    try:
        cfg = load_config(args.config_file, args.opts)
    except (ConfigFileError, OverrideError) as e:
        raise SystemExit(f"--config-file: {e}") from e
    if isinstance(cfg, CfgNode):
        if args.weights:
            cfg.MODEL.WEIGHTS = args.weights
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.score_threshold
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.score_threshold
        cfg.freeze()
    else:
        if args.weights:
            cfg.train.init_checkpoint = args.weights
        for key in LAZY_THRESHOLDS:
            if OmegaConf.select(cfg, key, default=None) is not None:
                OmegaConf.update(cfg, key, args.score_threshold)
    if not model_weights(cfg) and not args.allow_random_weights:
        raise SystemExit(
            "no weights: MODEL.WEIGHTS is empty, so the model would predict with random weights; "
            "pass --weights STUDENT.pth (or --allow-random-weights to see an untrained model)"
        )
    return cfg


class Predictor:
    """The config's student model in eval mode with its test-time resize and input format; called
    on a BGR image (as OpenCV reads it), like Detectron2's ``DefaultPredictor``."""

    def __init__(self, cfg, model: torch.nn.Module):
        self.model = model.eval()
        self.resize = T.AugmentationList(inference_augmentations(cfg))
        self.input_format = image_format(cfg)

    def __call__(self, bgr_image):
        with torch.no_grad():
            image = bgr_image[:, :, ::-1] if self.input_format == "RGB" else bgr_image
            height, width = image.shape[:2]
            aug = T.AugInput(image)
            self.resize(aug)
            tensor = torch.as_tensor(aug.image.astype("float32").transpose(2, 0, 1))
            return self.model([{"image": tensor, "height": height, "width": width}])[0]


def build_predictor(cfg, allow_random: bool = False) -> Predictor:
    """A :class:`Predictor` whose weights are checked to cover every parameter of the model."""
    model = build_student_model(cfg)
    weights = model_weights(cfg)
    if weights:
        checkpointer = RecordingCheckpointer(model)
        checkpointer.load(weights)
        found = checkpointer.incompatible
        missing = [] if found is None else found.missing_keys + [k for k, _, _ in found.incorrect_shapes]
        if (found is None or missing) and not allow_random:
            what = (
                "holds no model weights"
                if found is None
                else (f"leaves {len(missing)} tensors at random: {', '.join(missing[:5])}")
            )
            raise SystemExit(
                f"weights {weights} {what}; they are not a trained model of "
                f"{architecture(cfg).__name__} for this config (--allow-random-weights to predict anyway)"
            )
    return Predictor(cfg, model)


def list_images(path: str) -> List[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SystemExit(f"--input not found: {path}")
    images = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise SystemExit(f"--input {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return images


def metadata(cfg, dataset: str):
    """Metadata with ``thing_classes`` for the labels (None when none is known)."""
    if dataset:
        name = dataset_from_argument(dataset)
        register_provided_datasets([name])
        if not MetadataCatalog.get(name).get("thing_classes"):
            DatasetCatalog.get(name)  # a COCO json sets its class names when loaded
        meta = MetadataCatalog.get(name)
    else:
        names = [*(cfg.DATASETS.TEST if isinstance(cfg, CfgNode) else []), *train_dataset_names(cfg)]
        meta = MetadataCatalog.get(names[0]) if names else None
    classes = meta.get("thing_classes") if meta is not None else None
    num, key = num_classes(cfg)
    if classes and len(classes) != num:
        if dataset:
            raise SystemExit(f"dataset {meta.name} has {len(classes)} classes but the model {num} ({key})")
        return None
    return meta if classes else None


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = setup_cfg(args)
    images = list_images(args.input)
    out_dir = os.path.abspath(args.output)
    input_dir = os.path.abspath(args.input if os.path.isdir(args.input) else os.path.dirname(args.input))
    if out_dir == input_dir:
        raise SystemExit(
            f"--output {args.output} is the input's folder: choose another one (inputs are never overwritten)"
        )
    meta = metadata(cfg, args.dataset)
    predictor = build_predictor(cfg, args.allow_random_weights)
    os.makedirs(out_dir, exist_ok=True)
    written, records = [], []
    for path in images:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read image {path}")
        instances = predictor(image)["instances"].to("cpu")  # BGR in; it converts to INPUT.FORMAT
        instances = instances[instances.scores >= args.score_threshold]
        rgb = convert_image_to_rgb(image, "BGR")
        drawn = Visualizer(rgb, meta).draw_instance_predictions(instances).get_image()[:, :, ::-1]
        target = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        if not cv2.imwrite(target, drawn):
            raise SystemExit(f"could not write {target}")
        written.append(target)
        classes = meta.thing_classes if meta is not None else None
        records.append(
            {
                "file_name": path,
                "detections": [
                    {
                        "bbox_xyxy": [round(float(v), 2) for v in b],
                        "score": round(float(s), 4),
                        "category_id": int(c),
                        **({"category": classes[int(c)]} if classes else {}),
                    }
                    for b, s, c in zip(instances.pred_boxes.tensor, instances.scores, instances.pred_classes)
                ],
            }
        )
        logger.info("%s: %d detections -> %s", path, len(instances), target)
    with open(os.path.join(out_dir, "predictions.json"), "w") as f:
        json.dump(records, f, indent=1)
    return written


if __name__ == "__main__":
    main()
