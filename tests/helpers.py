"""Helpers the tests share: the repository's paths, tiny configs built through the package's
loader, synthetic batches, training-run arguments and readers, reference computations. Fixtures
live in ``conftest.py``."""

import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = os.path.join(REPO, "tests", "configs")

sys.path.insert(0, REPO)  # for `import train_net`


def make_cfg(config_file, *opts):
    """A Detectron2 config with DeFeat keys, merged from ``config_file`` and ``opts`` (the
    package's one loader)."""
    from defeat.config.files import load_config

    return load_config(str(config_file), [str(o) for o in opts])


def capture_sampled_rois(model):
    """Wrap ``model.roi_heads.forward`` so that each call stores the RoIs it sampled (its first
    output) in the returned dict under ``"rois"``."""
    captured = {}
    orig = model.roi_heads.forward

    def spy(*args, **kwargs):
        sampled, losses = orig(*args, **kwargs)
        captured["rois"] = sampled
        return sampled, losses

    model.roi_heads.forward = spy
    return captured


def save_random_weights(config_file, folder, name="t"):
    """Build ``config_file`` (YAML, or LazyConfig ``.py``) with seed 0 and save its random weights
    with ``DetectionCheckpointer`` as ``<folder>/<name>.pth``; returns that path."""
    from detectron2.checkpoint import DetectionCheckpointer

    from defeat.config.files import build_model_from_config, load_config

    cfg = load_config(str(config_file))  # the package's one loader
    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    DetectionCheckpointer(model, str(folder)).save(name)
    return os.path.join(str(folder), f"{name}.pth")


def defeat_cfg(teacher_weights, *opts):
    return make_cfg(os.path.join(CONFIGS, "tiny_defeat.yaml"), "MODEL.DEFEAT.TEACHER.WEIGHTS", teacher_weights, *opts)


def synthetic_batch(n=2, size=64, boxes_per_image=(3, 0), num_classes=10, seed=0):
    """Detectron2 training inputs: random images with random boxes (an image may have none)."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = boxes_per_image[i % len(boxes_per_image)]
        xy = torch.rand(k, 2, generator=g) * (size * 0.7)
        wh = torch.rand(k, 2, generator=g) * (size * 0.5) + 4
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.cat([xy, (xy + wh).clamp(max=size)], dim=1))
        inst.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
        image = torch.rand(3, size, size, generator=g) * 255
        out.append({"image": image, "instances": inst, "height": size, "width": size})
    return out


def assert_same_detections(expected, got):
    """Two lists of Detectron2 inference outputs hold identical instances, image by image."""
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        a, b = a["instances"], b["instances"]
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores)
        assert torch.equal(a.pred_classes, b.pred_classes)


# ---- train-then-evaluate round trips through the training scripts ----

TINY = ("tiny_shapes_train", "tiny_shapes_val")


def train_args(config, *opts, eval_only=False, resume=False):
    """The parsed command line of ``train_net.py`` / ``lazy_train_net.py`` (Detectron2's parser)."""
    from detectron2.engine import default_argument_parser

    argv = ["--config-file", str(config)] + (["--eval-only"] if eval_only else []) + (["--resume"] if resume else [])
    return default_argument_parser().parse_args(argv + [str(o) for o in opts])


def data_opts(out, names=TINY):
    """YAML overrides: the ``(train, test)`` sets ``names`` (default: :data:`TINY`), ``OUTPUT_DIR``
    and a score threshold of 0 (untrained models keep their low-score detections)."""
    return [
        "DATASETS.TRAIN",
        f"('{names[0]}',)",
        "DATASETS.TEST",
        f"('{names[1]}',)",
        "OUTPUT_DIR",
        out,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        0.0,
    ]


def metrics_rows(out):
    """The rows of ``<out>/metrics.json``."""
    import json

    with open(os.path.join(str(out), "metrics.json")) as f:
        return [json.loads(line) for line in f]


# ---- RetinaNet and LazyConfig models ----


def save_weights(model, folder, name):
    """``model`` saved with DetectionCheckpointer as ``<folder>/<name>.pth``; returns that path."""
    from detectron2.checkpoint import DetectionCheckpointer

    folder.mkdir(parents=True, exist_ok=True)
    DetectionCheckpointer(model, str(folder)).save(name)
    return str(folder / f"{name}.pth")


def retina_cfg(weights, *opts):
    return make_cfg(f"{CONFIGS}/tiny_retinanet_defeat.yaml", "MODEL.DEFEAT.TEACHER.WEIGHTS", weights, *opts)


def reference_sigmoid_kl(s, t, T):
    """Per-row binary KL summed over classes, written out with log-sigmoids, times T^2."""
    import torch.nn.functional as F

    ps, pt = torch.sigmoid(s / T), torch.sigmoid(t / T)
    log_ps, log_1ms = F.logsigmoid(s / T), F.logsigmoid(-s / T)
    kl = pt * (torch.log(pt) - log_ps) + (1 - pt) * (torch.log1p(-pt) - log_1ms)
    assert torch.isfinite(kl).all() and ps.shape == s.shape
    return kl.sum(1) * T * T


def lazy_cfg(path, *overrides):
    """A LazyConfig through the package's one loader, ``key=value`` overrides applied."""
    from defeat.config.files import load_config

    return load_config(str(path), list(overrides))


def lazy_defeat(teacher_weights, *overrides):
    """The tiny LazyConfig DeFeat model (teacher from tiny_teacher.py), instantiated."""
    from detectron2.config import instantiate

    cfg = lazy_cfg(f"{CONFIGS}/tiny_defeat.py", f"model.teacher.weights={teacher_weights}", *overrides)
    return instantiate(cfg.model)


def order_by_heavy_seconds(items) -> None:
    """The files whose ``heavy`` tests take longest first, the rest in their order: under `make
    test`'s ``--dist loadfile --no-loadscope-reorder`` the longest work units start first, so that
    the workers finish together. ``heavy(seconds=N)``: about N s under xdist on the 2-core CPU
    machine, a scheduling hint."""
    weight = {}
    for item in items:
        mark = item.get_closest_marker("heavy")
        if mark is not None and not isinstance(mark.kwargs.get("seconds"), (int, float)):
            raise pytest.UsageError(f"{item.nodeid}: write @pytest.mark.heavy(seconds=N), N its rough run time")
        weight[item.path] = weight.get(item.path, 0) + (mark.kwargs["seconds"] if mark else 0)
    items.sort(key=lambda item: -weight[item.path])  # stable: each file's tests keep their order


def worker_raising(index, kind, message):
    """A ``torch.multiprocessing`` worker that raises ``defeat.errors.<kind>(message)`` or, for
    ``kind`` "KeyError", a bug."""
    import defeat.errors

    raise (KeyError if kind == "KeyError" else getattr(defeat.errors, kind))(message)


def script_run_argv(config, dataset, out, iters, *extra, flags=()):
    """Arguments of ``train_net.py`` (a ``.yaml`` ``config``) or ``lazy_train_net.py`` (a ``.py``
    one) for a 2-class training run of ``iters`` iterations on ``dataset`` = ``(name, --dataset
    spec)`` into ``out``, evaluating on nothing (YAML) or on the same set (LazyConfig); ``flags``
    go before the overrides, ``extra`` overrides after them."""
    name, spec = dataset[0], dataset[1]
    head = ["--config-file", str(config), "--dataset", spec, *flags]
    if str(config).endswith(".py"):
        return head + [
            f"train.output_dir={out}",
            f"dataloader.train.dataset.names={name}",
            f"dataloader.test.dataset.names={name}",
            "model.roi_heads.num_classes=2",
            f"train.max_iter={iters}",
            *[str(e) for e in extra],
        ]
    return head + [
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        "()",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "2",
        "OUTPUT_DIR",
        str(out),
        "SOLVER.MAX_ITER",
        str(iters),
        *[str(e) for e in extra],
    ]


def script_main(script, argv):
    """``main(parse_args(argv))`` of the entry-point module ``script`` (e.g. ``"train_net"``)."""
    import importlib

    module = importlib.import_module(script)
    return module.main(module.parse_args(argv))
