#!/usr/bin/env python
"""Run a trained (or exported) student on an image or a folder; save the detections drawn.

    python tools/predict.py --config-file configs/demo/student_slimR18.yaml \
        --weights output/student.pth --input photos/ --output output/predictions \
        [--dataset my_val=data/val.json [--show-gt]] [--score-threshold 0.5] [KEY VALUE ...]

Each image is written as ``<output>/<name>.png`` with its detections drawn
(``defeat.analysis.detection_figures``: one colour per class, the same in every image; labels
sized to the image, on a box of their colour, kept inside the image; class names from
``--dataset``'s metadata, else from the config's first test or training set when its class
names are known, else class indices); ``--show-gt`` adds the dataset's ground-truth boxes,
dashed, in their class colour (crowd boxes, ``iscrowd: 1``, are regions, not objects: counted in
the log, not drawn). All detections go to
``<output>/predictions.json`` in Detectron2's COCO results format: a list of ``{"image_id",
"category_id", "bbox": [x, y, width, height], "score"}`` plus ``"file_name"`` and ``"category"``;
``category_id`` is the dataset's own category id when the classes are known (``--dataset``),
else the model's class index (a warning says so); ``image_id`` is the dataset's id of an image
the dataset lists, and a new id past the dataset's largest for the others (their position in the
input list without a dataset), so no two images share one. The class names that label the boxes
must be those of the model's training set (``DATASETS.TRAIN``, where its metadata names them):
another dataset's names are refused. Every input image is opened first as training does
(``--check-images``, default ``verify``: a missing, unreadable or truncated image is refused
before anything is written); an image that fails while predicting stops the run with
``predictions.json`` written for the images before it and the command to go on. The config is a YAML file or a
LazyConfig (``.py``); the model predicts like Detectron2's ``DefaultPredictor`` (test-time resize,
input format). A DeFeat config predicts with its student (the architecture without the
teacher). Weights are required (``--weights``, ``MODEL.WEIGHTS`` or ``train.init_checkpoint``)
and must cover every parameter of the model unless ``--allow-random-weights``. The output folder
may not be, or lie inside, the input folder or the dataset's image folder, nor be a file or
unwritable (checked before any work); existing output files are kept unless ``--overwrite``. A
dataset whose ``file_name`` entries resolve outside its image folder is refused.
"""

import argparse
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import ToolArgumentParser, setup_tool_logging
from defeat.config.paths import check_config_file
from defeat.data.datasets import IMAGE_CHECKS, check_dataset_specs
from defeat.engine.arguments import take_trailing_options
from defeat.engine.entry import run_entry_point
from defeat.engine.quiet import load_defeat
from defeat.errors import (
    ConfigFileError,
    DataCheckError,
    DatasetSpecError,
    DeFeatError,
    OutputError,
    OverrideError,
    WeightsError,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# LazyConfig keys of the models' own score thresholds (an R-CNN's, a dense detector's).
def _score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a score between 0 and 1, got {text}")
    return value


def parse_args(argv=None):
    p = ToolArgumentParser(prog="predict.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config-file", required=True, metavar="FILE", help="the student's (or DeFeat) YAML or LazyConfig (.py) config"
    )
    p.add_argument("--weights", default="", help="trained or exported student weights (default: MODEL.WEIGHTS)")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", default="output/predictions", help="folder for the drawn images (not the input's)")
    p.add_argument("--score-threshold", type=_score, default=0.5, help="detections below this score are not kept")
    p.add_argument("--overwrite", action="store_true", help="replace existing drawn images and predictions.json")
    p.add_argument(
        "--dataset",
        default="",
        metavar="NAME or NAME=ANNOTATIONS.json[:IMAGE_ROOT]",
        help="dataset whose class names label the detections",
    )
    p.add_argument(
        "--show-gt",
        action="store_true",
        help="draw --dataset's ground-truth boxes too (dashed, in their class colour; crowd boxes are not drawn) for "
        "the images it lists",
    )
    p.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="predict even without weights or with weights that leave parameters random",
    )
    p.add_argument(
        "--check-images",
        choices=IMAGE_CHECKS,
        default="verify",
        help="how the input images are read before predicting, as training reads its images",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (YAML), key=value (.py)")
    args = take_trailing_options(p, p.parse_args(argv))
    if args.show_gt and not args.dataset:
        p.error("--show-gt needs --dataset NAME or NAME=ANNOTATIONS.json[:IMAGE_ROOT] (the annotations to draw)")
    check_paths(args)
    return args


def check_paths(args) -> None:
    """What can be refused before the heavy imports, in the run's order and words: the config file,
    the input, a ``--dataset`` spec's files (and those of ``$DEFEAT_COCO_DATASETS``) missing."""
    try:
        check_config_file(args.config_file)
    except ConfigFileError as e:
        raise SystemExit(f"--config-file: {e}") from e
    if not os.path.exists(args.input):
        raise SystemExit(f"predict.py: error: --input not found: {args.input}")
    try:
        check_dataset_specs([args.dataset] if "=" in args.dataset else [])  # and $DEFEAT_COCO_DATASETS
    except DatasetSpecError as e:  # worded as resolve_dataset's
        raise SystemExit(f"predict.py: error: --dataset: {e}" if args.dataset else f"predict.py: error: {e}") from e


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_args, script="predict.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_image_to_rgb
from detectron2.structures import BoxMode

from defeat.analysis.detection_figures import draw_detections
from defeat.checkpoint import atomic_write, load_weights_strictly
from defeat.config.files import (
    image_format,
    inference_augmentations,
    load_config,
    model_weights,
    num_classes,
    prediction_dataset_names,
    set_run_values,
    set_score_threshold,
    train_dataset_names,
)
from defeat.data.checks import image_problem
from defeat.data.classes import category_ids_by_index, class_identity
from defeat.data.datasets import (
    check_images_under_root,
    dataset_from_argument,
    register_provided_datasets,
    setup_datasets,
)
from defeat.engine.outputs import check_distinct_outputs, check_output_dir, check_output_files
from defeat.engine.preflight import check_datasets
from defeat.modeling.meta_arch.common import build_student_model

logger = logging.getLogger("defeat.tools.predict")


def setup_cfg(args):
    """The config (YAML or LazyConfig, through the package's one loader) with the weights and the
    score threshold set."""
    try:
        cfg = load_config(args.config_file, args.opts)
    except (ConfigFileError, OverrideError) as e:
        raise SystemExit(f"--config-file: {e}") from e
    set_score_threshold(set_run_values(cfg, weights=args.weights), args.score_threshold)
    if not model_weights(cfg) and not args.allow_random_weights:
        raise SystemExit(
            "predict.py: error: no weights: MODEL.WEIGHTS is empty, so the model would predict with random weights; "
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
    """A :class:`Predictor` whose weights are checked to cover every parameter of the model
    (``defeat.checkpoint.load_weights_strictly``)."""
    model = build_student_model(cfg)
    weights = model_weights(cfg)
    if weights:
        try:
            load_weights_strictly(model, weights, "--weights", allow_random=allow_random)
        except WeightsError as e:
            raise SystemExit(f"predict.py: error: {e} (--allow-random-weights to predict anyway)") from e
    return Predictor(cfg, model)


def list_images(path: str) -> List[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SystemExit(f"predict.py: error: --input not found: {path}")
    images = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise SystemExit(f"predict.py: error: --input {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return images


def resolve_dataset(dataset: str) -> str:
    """The name of ``--dataset`` (registered if a spec), checked (``check_datasets``) before its
    json is loaded; ``""`` without one. The datasets of ``$DEFEAT_COCO_DATASETS`` are registered
    either way (a config's datasets may be named there)."""
    try:
        if not dataset:
            setup_datasets()
            return ""
        name = dataset_from_argument(dataset)
        register_provided_datasets([name])
        check_datasets([name], [], None, "")  # the one dataset check, before the json is loaded
    except (DataCheckError, DatasetSpecError) as e:
        raise SystemExit(f"predict.py: error: --dataset: {e}" if dataset else f"predict.py: error: {e}") from e
    return name


def metadata(cfg, name: str):
    """Metadata with ``thing_classes`` for the labels (None when none is known); ``name``: the
    ``--dataset`` (:func:`resolve_dataset`), else the config's datasets are tried."""
    if name:
        if not MetadataCatalog.get(name).get("thing_classes"):
            DatasetCatalog.get(name)  # a COCO json sets its class names when loaded
        meta = MetadataCatalog.get(name)
    else:
        names = prediction_dataset_names(cfg)
        meta = MetadataCatalog.get(names[0]) if names else None
    classes = meta.get("thing_classes") if meta is not None else None
    num, key = num_classes(cfg)
    if classes and len(classes) != num:
        if name:
            raise SystemExit(
                f"predict.py: error: dataset {meta.name} has {len(classes)} classes but the model {num} ({key})"
            )
        return None
    if classes:
        check_training_classes(cfg, meta.name, list(classes), "--dataset" if name else "the config's datasets")
    return meta if classes else None


def training_classes(cfg) -> Optional[Tuple[str, List[str]]]:
    """``(name, class names)`` of the config's first training set whose class names are known
    (``defeat.data.classes.class_identity``: its metadata, or its COCO json when it is a
    registered one); None when none is known (e.g. a dataset not registered here)."""
    for train in train_dataset_names(cfg):
        if train not in DatasetCatalog.list() and not MetadataCatalog.get(train).get("thing_classes", None):
            continue
        try:
            identity = class_identity(train)
        except DeFeatError:
            continue
        if identity is not None:
            return train, identity["names"]
    return None


def check_training_classes(cfg, name: str, classes: List[str], source: str) -> None:
    """Refuse labels from a dataset whose class names are not the model's training set's, in the
    same order (the model's class ``i`` is its training set's ``i``-th class)."""
    known = training_classes(cfg)
    if known is None or not known[1] or known[1] == list(classes):
        return

    def shown(names):
        return ", ".join(map(str, names[:6])) + (", ..." if len(names) > 6 else "")

    raise SystemExit(
        f"predict.py: error: {source}: dataset {name!r} names the classes {shown(classes)} but the model was trained "
        f"on {known[0]!r} (DATASETS.TRAIN) with {shown(known[1])}: the boxes would be labelled with another "
        f"dataset's names. Pass --dataset {known[0]} (or a dataset with the same classes in the same order)"
    )


def dataset_records(meta) -> Optional[List[dict]]:
    """The dicts of the labelling dataset when it is a registered json (None otherwise), refused
    when an image path resolves outside its image folder (the drawings are guarded against that
    folder only)."""
    if meta is None or meta.name not in DatasetCatalog.list() or not meta.get("json_file"):
        return None
    records = DatasetCatalog.get(meta.name)
    if meta.get("image_root"):
        try:
            check_images_under_root(records, meta.name, str(meta.image_root))
        except DatasetSpecError as e:
            raise SystemExit(f"predict.py: error: {e}") from e
    return records


def _dataset_ids(meta, records) -> Tuple[Optional[Dict[int, int]], Dict[str, int]]:
    """``(class index -> the dataset's category id, or None when unknown; image path -> image id)``."""
    if meta is None:
        return None, {}
    image_ids = {os.path.realpath(r["file_name"]): r["image_id"] for r in records or ()}
    return category_ids_by_index(class_identity(meta.name)), image_ids


def assign_image_ids(images: List[str], known: Dict[str, int]) -> Dict[str, int]:
    """``{input path: image id}``: the dataset's id of an image it lists (``known``, by real
    path), new ids past the dataset's largest for the others (0, 1, ... without a dataset), so
    that no two images share an id."""
    taken = [i for i in known.values() if isinstance(i, int)]
    fresh = max(taken, default=-1) + 1
    ids = {}
    for path in images:
        key = os.path.realpath(path)
        if key in known:
            ids[path] = known[key]
        else:
            ids[path] = fresh
            fresh += 1
    return ids


def ground_truth(name: str, images: List[str], records: Optional[List[dict]] = None) -> Dict[str, Tuple]:
    """``{real path of an input image: (boxes [M, 4] XYXY, class indices, crowd boxes left out)}``
    from dataset ``name`` (its images matched by real path; ``records``: its dicts when already
    loaded); crowd boxes (``iscrowd``) are regions, not objects, and are not drawn, only counted.
    Refuses a dataset that lists none of ``images`` and says which inputs it does not list."""
    by_path = {}
    for record in records if records is not None else DatasetCatalog.get(name):
        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        by_path[os.path.realpath(record["file_name"])] = (
            np.array(boxes, dtype=np.float64).reshape(-1, 4),
            [int(a["category_id"]) for a in anns],
            len(record.get("annotations", [])) - len(anns),
        )
    found = {os.path.realpath(p): by_path[os.path.realpath(p)] for p in images if os.path.realpath(p) in by_path}
    if not found:
        raise SystemExit(
            f"predict.py: error: --show-gt: dataset {name!r} lists none of the {len(images)} input images (matched "
            f"by path: its file_name entries, under image root {MetadataCatalog.get(name).get('image_root', '?')}); "
            "pass --input images of that dataset"
        )
    missing = [p for p in images if os.path.realpath(p) not in found]
    if missing:
        logger.warning(
            "--show-gt: dataset %s does not list %d of the %d input images; they are drawn without ground truth: %s",
            name,
            len(missing),
            len(images),
            ", ".join(os.path.basename(p) for p in missing[:5]) + (" ..." if len(missing) > 5 else ""),
        )
    return found


def _check_outputs(args, images: List[str], targets: List[str], meta, weights: str) -> None:
    """The output guard: the folder is not an input folder, no two images share a drawn file, no
    output is an input, existing outputs only with --overwrite."""
    input_dir = args.input if os.path.isdir(args.input) else os.path.dirname(os.path.abspath(args.input))
    folders = {"input folder (--input)": input_dir}
    if meta is not None and meta.get("image_root"):
        folders[f"image folder of dataset {meta.name!r}"] = str(meta.image_root)
    try:
        check_output_dir(args.output, folders)
        check_distinct_outputs(list(zip(images, targets)))
        json_file = meta.get("json_file") if meta is not None else None
        check_output_files(
            [*targets, os.path.join(args.output, "predictions.json")],
            {
                **{f"input image {p!r}": p for p in images},
                "config file": args.config_file,
                "weights": weights,
                "dataset's annotations": json_file or "",
            },
            args.overwrite,
        )
    except OutputError as e:
        raise SystemExit(f"predict.py: error: {e}") from e


def check_images(images: List[str], mode: str) -> None:
    """Open every input image as training opens its images (``defeat.data.checks.image_problem``:
    missing, unreadable, truncated, a pixel format Detectron2 mangles), before anything is written."""
    if mode == "none":
        return
    bad = [
        f"{path} ({problem})" for path in images for problem in [image_problem({"file_name": path}, mode)] if problem
    ]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise SystemExit(
            f"predict.py: error: --input: {len(bad)} of {len(images)} images cannot be read: {bad[0]}{more}; fix them "
            "or move them out of --input (--check-images none skips this check)"
        )


def main(argv=None) -> List[str]:
    """``argv``: the command line, or its parsed arguments (:func:`parse_args`)."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    setup_tool_logging()
    cfg = setup_cfg(args)
    images = list_images(args.input)
    out_dir = os.path.abspath(args.output)
    targets = [os.path.join(out_dir, os.path.splitext(os.path.basename(p))[0] + ".png") for p in images]
    dataset = resolve_dataset(args.dataset)
    meta = metadata(cfg, dataset)
    _check_outputs(args, images, targets, meta, model_weights(cfg))
    records = dataset_records(meta)
    check_images(images, args.check_images)
    gt = (
        ground_truth(dataset, images, records if meta is not None and meta.name == dataset else None)
        if args.show_gt
        else {}
    )
    category_ids, image_ids = _dataset_ids(meta, records)
    ids = assign_image_ids(images, image_ids)
    if category_ids is None:
        logger.warning(
            "the dataset's category ids are unknown (no --dataset with a COCO json): category_id in "
            "predictions.json is the model's class index (0..N-1)"
        )
    predictor = build_predictor(cfg, args.allow_random_weights)
    os.makedirs(out_dir, exist_ok=True)
    classes = meta.thing_classes if meta is not None else None
    written, records_out = [], []
    predictions = os.path.join(out_dir, "predictions.json")
    for index, (path, target) in enumerate(zip(images, targets)):
        try:
            records_out.extend(_predict_one(predictor, args, path, target, gt, classes, category_ids, ids[path]))
        except BaseException as e:
            atomic_write(predictions, lambda f: json.dump(records_out, f, indent=1), mode="w")
            if not isinstance(e, Exception):  # an interrupt: the images done are saved, then the interrupt propagates
                raise
            raise SystemExit(
                f"predict.py: error: image {index + 1} of {len(images)}, {path}, failed: {type(e).__name__}: {e}. "
                f"{predictions} holds the detections of the {index} images before it. Fix that image or move it "
                "out of --input, then run again with --overwrite"
            ) from e
        written.append(target)
    atomic_write(predictions, lambda f: json.dump(records_out, f, indent=1), mode="w")
    return written


def _predict_one(predictor, args, path, target, gt, classes, category_ids, image_id) -> List[dict]:
    """Predict on one image, write its drawing to ``target`` and return its detections as
    ``predictions.json`` records."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataCheckError(f"cannot read image {path}")
    instances = predictor(image)["instances"].to("cpu")  # BGR in; it converts to INPUT.FORMAT
    instances = instances[instances.scores >= args.score_threshold]
    gt_boxes, gt_classes, crowd = gt.get(os.path.realpath(path), (None, None, 0))
    drawn = draw_detections(
        convert_image_to_rgb(image, "BGR"),
        instances.pred_boxes.tensor.numpy(),
        instances.pred_classes.tolist(),
        instances.scores.tolist(),
        classes,
        instances.pred_masks.numpy() if instances.has("pred_masks") else None,
        gt_boxes,
        gt_classes,
    )[:, :, ::-1]
    if not cv2.imwrite(target, drawn):
        raise OutputError(f"could not write {target}")
    out = []
    for box, score, c in zip(instances.pred_boxes.tensor.tolist(), instances.scores, instances.pred_classes):
        x1, y1, x2, y2 = box
        out.append(
            {
                "image_id": image_id,
                "category_id": category_ids[int(c)] if category_ids else int(c),
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(score), 4),
                "file_name": path,
                **({"category": classes[int(c)]} if classes else {}),
            }
        )
    shown = f" ({len(gt_classes)} ground-truth boxes" if gt_classes is not None else ""
    shown += (f"; {crowd} crowd boxes not drawn)" if crowd else ")") if shown else ""
    logger.info("%s: %d detections%s -> %s", path, len(instances), shown, target)
    return out


if __name__ == "__main__":
    run_entry_point(main, ARGS, script="predict.py")
