"""Every command answers ``--help``, a bad argument and a missing file before its heavy imports.

Each case runs the real command line in a process of its own, with a ``sitecustomize`` that makes
an import of torch, Detectron2, torchvision, fvcore, matplotlib, numpy or OpenCV fail and records
it: a heavy import put back at the top of a script, or into a module its parser imports, fails
the case. Then the
package's waiting start itself: a light start imports no torch and registers everything on first
use, and ``python -m`` of another package that imports ``defeat`` registers at once.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import REPO

HEAVY = ("torch", "detectron2", "torchvision", "fvcore", "matplotlib", "numpy", "cv2")

BLOCKER = """
import os, sys

BLOCKED = tuple(os.environ["DEFEAT_TEST_BLOCKED"].split(","))
LOG = os.environ["DEFEAT_TEST_BLOCKED_LOG"]


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(LOG, "a") as f:  # recorded even if a caller swallows the ImportError
                f.write(name + "\\n")
            raise ImportError(f"heavy import before the arguments are read: {name}")
        return None


sys.meta_path.insert(0, _Blocker())
"""

# (command, arguments, exit status, text in the output); "{tmp}": a fresh folder.
CASES = [
    (["train_net.py"], ["--help"], 0, "--check-images"),
    (["train_net.py"], ["--num-gpus", "x"], 2, "argument --num-gpus: invalid int value: 'x'"),
    (["train_net.py"], ["--config-file", "nope.yaml"], 1, "train_net.py: error: config file not found: 'nope.yaml'"),
    (
        ["train_net.py"],
        ["--config-file", "configs/demo/student_slimR18.yaml", "--dataset", "d=nope.json"],
        1,
        "train_net.py: error: dataset 'd': annotation file not found",
    ),
    (["lazy_train_net.py"], ["--help"], 0, "--dataset"),
    (["lazy_train_net.py"], ["--check-images", "all"], 2, "argument --check-images: invalid choice: 'all'"),
    (["lazy_train_net.py"], ["--config-file", "nope.py"], 1, "lazy_train_net.py: error: config file not found"),
    (["tools/predict.py"], ["--help"], 0, "--show-gt"),
    (["tools/predict.py"], ["--config-file", "a", "--input", "b", "--score-threshold", "2"], 2, "between 0 and 1"),
    (["tools/predict.py"], ["--config-file", "nope.yaml", "--input", "x"], 1, "--config-file: config file not found"),
    (
        ["tools/predict.py"],
        ["--config-file", "configs/demo/student_slimR18.yaml", "--input", "nope"],
        1,
        "predict.py: error: --input not found: nope",
    ),
    (["tools/export_student.py"], ["--help"], 0, "--verify-config"),
    (["tools/export_student.py"], [], 2, "the following arguments are required: checkpoint, output"),
    (["tools/export_student.py"], ["nope.pth", "{tmp}/s.pth"], 2, "checkpoint not found: 'nope.pth'"),
    (["tools/inspect_dataset.py"], ["--help"], 0, "--config-file"),
    (["tools/inspect_dataset.py"], [], 2, "the following arguments are required: --config-file"),
    (["tools/inspect_dataset.py"], ["--config-file", "nope.yaml"], 1, "--config-file: config file not found"),
    (["tools/plot_losses.py"], ["--help"], 0, "metrics.json"),
    (["tools/plot_losses.py"], ["m.json", "--width", "x"], 2, "argument --width: invalid int value"),
    (["tools/plot_losses.py"], ["nope.json"], 2, "metrics file not found: 'nope.json'"),
    (["tools/summarize_runs.py"], ["--help"], 0, "--per-class"),
    (["tools/summarize_runs.py"], [], 2, "the teacher run is missing"),
    (["tools/trace_student.py"], ["--help"], 0, "--atol"),
    (["tools/trace_student.py"], ["--config-file", "a", "--output", "o.ts", "--atol", "2"], 2, "between 0 and 1"),
    (
        ["tools/trace_student.py"],
        ["--config-file", "nope.yaml", "--output", "{tmp}/s.ts"],
        1,
        "trace_student.py: error: --config-file: config file not found",
    ),
    (["tools/visualize_masks.py"], ["--help"], 0, "--teacher-diff"),
    (["tools/visualize_masks.py"], ["--config-file", "a", "--num-images", "0"], 2, "must be at least 1"),
    (["tools/visualize_masks.py"], ["--config-file", "nope.yaml"], 2, "config file not found: 'nope.yaml'"),
    (["benchmarks/accuracy.py"], ["--help"], 0, "--variants"),
    (["benchmarks/accuracy.py"], ["--jobs", "0"], 2, "argument --jobs: must be at least 1"),
    (["benchmarks/accuracy.py"], ["--dataset", "d=nope.json"], 1, "annotation file not found"),
    (["benchmarks/step_time.py"], ["--help"], 0, "--precisions"),
    (["benchmarks/step_time.py"], ["--steps", "0"], 2, "argument --steps: must be at least 1"),
    (["benchmarks/cascade_stages.py"], ["--help"], 0, "--defeat-config"),
    (["benchmarks/cascade_stages.py"], ["--batches", "x"], 2, "argument --batches: invalid int value"),
    (["benchmarks/head_kl_analysis.py"], ["--help"], 0, "--settings"),
    (["benchmarks/head_kl_analysis.py"], ["--batches", "x"], 2, "argument --batches: invalid int value"),
    (["-m", "defeat"], ["--help"], 0, "python -m defeat run"),
    (["-m", "defeat"], ["nope"], 2, "unknown command 'nope'"),
    (["-m", "defeat", "run"], ["--help"], 0, "--teacher-config"),
    (
        ["-m", "defeat", "run"],
        ["--train", "a=a.json", "--val", "b=b.json", "--output", "o", "--iters", "0"],
        2,
        "argument --iters: must be at least 1, got 0",
    ),
    (
        ["-m", "defeat", "run"],
        ["--train", "a=nope.json", "--val", "b=nope2.json", "--output", "{tmp}/report"],
        1,
        "python -m defeat run: error: dataset 'a': annotation file not found",
    ),
    (["-m", "defeat", "demo"], ["--help"], 0, "--family"),
    (["-m", "defeat", "demo"], ["--teacher-processes", "0"], 2, "--teacher-processes: must be at least 1, got 0"),
    (["-m", "defeat.demo"], ["--help"], 0, "--family"),
    (["-m", "defeat.demo"], ["--family", "yolo"], 2, "argument --family: invalid choice: 'yolo'"),
    (["-m", "defeat.demo.data"], ["--help"], 0, "--num-classes"),
    (["-m", "defeat.demo.data"], ["--dataset", "cats"], 2, "argument --dataset: invalid choice: 'cats'"),
]


def _run_blocked(command, args, folder):
    """Run ``python COMMAND ARGS`` from the repository root with the blocker; returns
    ``(exit status, stdout + stderr, the blocked imports it tried)``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    log = folder / "blocked.txt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), os.path.join(REPO, "projects")]),
        "DEFEAT_TEST_BLOCKED": ",".join(HEAVY),
        "DEFEAT_TEST_BLOCKED_LOG": str(log),
    }
    env.pop("DEFEAT_COCO_DATASETS", None)
    args = [a.replace("{tmp}", str(folder)) for a in args]
    proc = subprocess.run(
        [sys.executable, *command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    tried = log.read_text().split() if log.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, tried


def test_every_command_answers_before_its_heavy_imports(tmp_path):
    # three at a time: each takes a fraction of a second once torch is out of the way
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(lambda i: _run_blocked(CASES[i][0], CASES[i][1], tmp_path / f"case{i}"), range(len(CASES)))
        )
    failures = []
    for (command, args, status, text), (code, output, tried) in zip(CASES, results):
        what = " ".join(["python", *command, *args])
        if tried:
            failures.append(f"{what}: imported {sorted(set(tried))} before answering")
        elif code != status or text not in output or "Traceback" in output:
            failures.append(f"{what}: exit {code} (expected {status}, {text!r}):\n{output[-1500:]}")
    assert not failures, "\n".join(failures)


def test_the_blocker_blocks(tmp_path):
    """The check is not vacuous: an import of torch (even one whose ImportError is swallowed) is
    recorded, and a script that imports it at its top fails its ``--help``."""
    script = tmp_path / "late.py"
    script.write_text(
        "try:\n    import torch\nexcept ImportError:\n    pass\n"
        "import argparse\nargparse.ArgumentParser().parse_args()\n"
    )
    code, output, tried = _run_blocked([str(script)], ["--help"], tmp_path / "swallowed")
    assert code == 0 and tried == ["torch"]
    code, output, tried = _run_blocked(["-c", "import numpy"], [], tmp_path / "arrays")
    assert code == 1 and "heavy import before the arguments are read: numpy" in output and tried == ["numpy"]


def test_dash_m_module_names():
    from defeat import _module_after_dash_m

    assert _module_after_dash_m(["python", "-X", "importtime", "-m", "defeat", "run", "-m", "x"]) == "defeat"
    assert _module_after_dash_m(["python", "-mdefeat.demo.data", "--help"]) == "defeat.demo.data"
    assert _module_after_dash_m(["python", "-c", "pass"]) == ""


@pytest.mark.heavy(seconds=30)
def test_a_light_start_registers_everything_on_first_use_and_other_packages_wait_for_nothing(tmp_path):
    """``DEFEAT_LIGHT_START`` in ``__main__``: ``import defeat`` and its light modules load no torch;
    the first use of a public name imports the rest and registers the models and backbones. And
    ``python -m mypkg`` whose ``__init__`` imports ``defeat`` gets the registries filled at once
    (the waiting start is for the package's own commands only)."""
    light = (
        "DEFEAT_LIGHT_START = True\n"
        "import sys\n"
        "import defeat, defeat.engine.arguments, defeat.analysis.cli, defeat.demo.pipeline\n"
        "assert 'torch' not in sys.modules and 'detectron2' not in sys.modules, sorted(sys.modules)\n"
        "rcnn = defeat.DeFeatRCNN\n"
        "from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY\n"
        "assert META_ARCH_REGISTRY.get('DeFeatRCNN') is rcnn\n"
        "assert 'build_slim_resnet_fpn_backbone' in BACKBONE_REGISTRY\n"
        "missing = [n for n in defeat.__all__ if n not in vars(defeat)]\n"
        "assert not missing, missing\n"
        "print('light start ok')\n"
    )
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import defeat\nfrom detectron2.modeling import META_ARCH_REGISTRY\n"
        "REGISTERED = 'DeFeatRCNN' in META_ARCH_REGISTRY\n"
    )
    (package / "__main__.py").write_text("from mypkg import REGISTERED\nprint('registered at import:', REGISTERED)\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.path.join(REPO, "projects")]),
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run([sys.executable, "-c", light], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "light start ok" in out.stdout, out.stderr[-3000:]
    out = subprocess.run([sys.executable, "-m", "mypkg"], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "registered at import: True" in out.stdout, out.stderr[-3000:]


def test_the_train_scripts_light_parser_is_detectron2s():
    """``defeat.engine.arguments.detectron2_argument_parser`` (built without Detectron2) has the
    options, defaults, types and help of Detectron2's ``default_argument_parser``."""
    from detectron2.engine import default_argument_parser

    from defeat.engine.arguments import detectron2_argument_parser

    def described(parser):
        return (
            parser.epilog,
            parser.formatter_class,
            [
                (
                    a.option_strings,
                    a.dest,
                    a.default,
                    a.type,
                    a.nargs,
                    a.const,
                    a.choices,
                    a.required,
                    a.help,
                    a.metavar,
                )
                for a in parser._actions
            ],
        )

    assert described(detectron2_argument_parser()) == described(default_argument_parser())
    assert described(detectron2_argument_parser("x")) == described(default_argument_parser("x"))
