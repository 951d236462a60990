"""COCO evaluation of given weights: the ``--eval-only`` path of ``train_net.py`` and
``lazy_train_net.py``, as library functions.

:func:`evaluate_weights` is what both scripts run with ``--eval-only``: the config's evaluation
model (a DeFeat config's plain student, no teacher), the weights loaded strictly
(``defeat.checkpoint.load_weights_strictly``) and Detectron2's COCO evaluation on the
config's test sets. :func:`evaluation_config` and :func:`check_evaluation` do, for a tool, what
the scripts' ``setup`` does first: the config through the package's loader, the test set registered,
and the run's checks (output guard and datasets, ``defeat.engine.preflight.check_run``).
"""

import argparse
import logging
from typing import Dict, Optional

from ..checkpoint import load_weights_strictly
from ..config.files import load_config, test_dataset_names
from ..data.datasets import register_provided_datasets
from ..engine.preflight import check_run
from ..errors import SummaryError

__all__ = [
    "box_results",
    "check_evaluation",
    "evaluate_model",
    "evaluate_weights",
    "evaluation_config",
    "lazy_test",
]

logger = logging.getLogger(__name__)


def lazy_test(cfg, model) -> dict:
    """COCO-style evaluation of ``model`` on a LazyConfig's ``dataloader.test`` with its
    ``dataloader.evaluator``; ``{}`` without an evaluator."""
    import detectron2.utils.comm as comm
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset, print_csv_format

    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def evaluate_model(cfg, model) -> dict:
    """The evaluation results of ``model`` on the config's test sets: ``DeFeatTrainer.test`` for a
    YAML config (``{"bbox": {...}}`` for one test set), :func:`lazy_test` for a LazyConfig."""
    from detectron2.config import CfgNode

    if isinstance(cfg, CfgNode):
        from ..engine.trainer import DeFeatTrainer

        return DeFeatTrainer.test(cfg, model)
    return lazy_test(cfg, model)


def evaluate_weights(cfg, weights: str, setting: Optional[str] = None, model=None) -> dict:
    """Evaluate ``weights`` with the config's evaluation model on its test sets.

    Args:
        cfg: a YAML config (``CfgNode``) or a LazyConfig, set up (datasets registered).
        setting: the option or key that named ``weights``, for the messages (default
            ``MODEL.WEIGHTS`` / ``train.init_checkpoint``).
        model: the evaluation model, when the caller built it already; else built here
            (``build_student_model``: a DeFeat config's plain student).
    Raises:
        WeightsError: the weights are missing or leave tensors of the model random.
    """
    from detectron2.config import CfgNode

    from ..engine.ddp import create_ddp_model_any_device
    from ..modeling.meta_arch.common import build_student_model

    yaml_config = isinstance(cfg, CfgNode)
    setting = setting or ("MODEL.WEIGHTS" if yaml_config else "train.init_checkpoint")
    if model is None:
        model = build_student_model(cfg)
        if not yaml_config:
            model = create_ddp_model_any_device(model, **cfg.train.ddp)
    load_weights_strictly(model, weights, setting)
    return evaluate_model(cfg, model)


def evaluation_config(
    config_file: str,
    weights: str,
    output_dir: str,
    *,
    test_set: str = "",
    device: str = "",
    option: str = "--config-file",
):
    """The config of an evaluation of ``weights`` into ``output_dir``, through the package's loader;
    nothing is registered or checked yet (:func:`check_evaluation`).

    Args:
        test_set: the one dataset to evaluate on (default: the config's own test set, which must
            be one); device: ``MODEL.DEVICE`` / ``train.device`` (default: the config's).
        option: the option that named ``config_file`` (in messages).
    Raises:
        ConfigFileError, OverrideError, DeFeatConfigError: the config does not load.
        SummaryError: the evaluation would not be on exactly one test set.
    """
    from detectron2.config import CfgNode

    cfg = load_config(config_file)
    if isinstance(cfg, CfgNode):
        cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR = weights, output_dir
        cfg.DATASETS.TEST = (test_set,) if test_set else cfg.DATASETS.TEST
        cfg.MODEL.DEVICE = device or cfg.MODEL.DEVICE
    else:
        cfg.train.init_checkpoint, cfg.train.output_dir = weights, output_dir
        if test_set:
            cfg.dataloader.test.dataset.names = test_set
        if device:
            cfg.train.device = device
    names = test_dataset_names(cfg)
    if len(names) != 1:
        raise SummaryError(
            f"{option} {config_file!r} evaluates on {len(names)} test sets {names}; name one with --test-set NAME"
        )
    return cfg


def check_evaluation(cfg, config_file: str, overwrite: bool = False, option: str = "--config-file") -> None:
    """Register the test set of :func:`evaluation_config`'s ``cfg`` (a generated demo set is
    generated) and run the checks of ``train_net.py --eval-only`` before it builds anything.

    Raises:
        SummaryError: the test set is not a registered dataset.
        OutputError, DataCheckError: see ``defeat.engine.preflight.check_run``.
    """
    from detectron2.data import DatasetCatalog

    names = test_dataset_names(cfg)
    register_provided_datasets(names)
    missing = [n for n in names if n not in DatasetCatalog.list()]
    if missing:
        raise SummaryError(
            f"test set {missing[0]!r} (of {option} {config_file!r}, or --test-set) is not a registered dataset; "
            "name it with --dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT]"
        )
    args = argparse.Namespace(config_file=config_file, eval_only=True, resume=False, overwrite=overwrite)
    check_run(cfg, args)


def box_results(results: dict, source: str) -> Dict[str, float]:
    """The ``bbox`` entry of :func:`evaluate_weights`'s results (``{"bbox": {...}}``).

    Raises:
        SummaryError: there is none (the evaluator received no detections).
    """
    box = results.get("bbox") if isinstance(results, dict) else None
    if not box:
        raise SummaryError(
            f"the evaluation of {source} produced no bbox metrics (COCOEvaluator received no detections: "
            "check the weights and the score threshold)"
        )
    return {k: float(v) for k, v in box.items()}
