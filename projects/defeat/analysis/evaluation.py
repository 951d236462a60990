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
from ..config.files import key_of, load_config, set_run_values, test_dataset_names, test_pipelines
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


def evaluate_model(cfg, model) -> dict:
    """The evaluation results of ``model`` on each of the config's test sets
    (``defeat.config.files.test_pipelines``), as ``DefaultTrainer.test`` gives them: the results
    of the one test set (``{"bbox": {...}}``), or ``{name: results}`` for several; ``{}`` without
    an evaluator."""
    import detectron2.utils.comm as comm
    from detectron2.evaluation import inference_on_dataset, print_csv_format

    results = {}
    for name, loader, evaluator in test_pipelines(cfg):
        results[name] = inference_on_dataset(model, loader, evaluator)
        if comm.is_main_process():
            logger.info("Evaluation results for %s in csv format:", name)
            print_csv_format(results[name])
    return next(iter(results.values())) if len(results) == 1 else results


def lazy_test(cfg, model) -> dict:
    """:func:`evaluate_model` (the evaluation hook of a LazyConfig run)."""
    return evaluate_model(cfg, model)


def evaluate_weights(cfg, weights: str, setting: Optional[str] = None, model=None) -> dict:
    """Evaluate ``weights`` with the config's evaluation model on its test sets.

    Args:
        cfg: a YAML config or a LazyConfig, set up (datasets registered).
        setting: the option or key that named ``weights``, for the messages (default
            ``MODEL.WEIGHTS`` / ``train.init_checkpoint``).
        model: the evaluation model, when the caller built it already; else built here
            (``build_student_model``: a DeFeat config's plain student, wrapped for the processes).
    Raises:
        WeightsError: the weights are missing or leave tensors of the model random.
    """
    from ..engine.ddp import create_ddp_model_any_device
    from ..modeling.meta_arch.common import build_student_model

    setting = setting or key_of(cfg, "weights")
    if model is None:
        model = create_ddp_model_any_device(build_student_model(cfg))
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
    cfg = set_run_values(
        load_config(config_file),
        weights=weights,
        output_dir=output_dir,
        test_sets=(test_set,) if test_set else None,
        device=device,
    )
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
