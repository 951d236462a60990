"""The speed benchmark runs and writes well-formed JSON (its timings are not asserted)."""
import importlib.util
import json
import os

from conftest import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_step_time_short_run_writes_json(tmp_path):
    out = tmp_path / "st.json"
    _load("step_time").main(["--preset", "tiny", "--boxes", "3", "40", "--steps", "1", "--warmup", "0", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["preset"] == "tiny" and set(res["per_boxes"]) == {"3", "40"}
    for row in res["per_boxes"].values():
        for key in ("a_student_step_s", "b_teacher_forward_s", "c_defeat_step_s", "d_masks_and_losses_s"):
            assert row[key] > 0
        assert row["c_over_a_plus_b"] == row["c_defeat_step_s"] / (row["a_student_step_s"] + row["b_teacher_forward_s"])
        assert row["d_over_c"] == row["d_masks_and_losses_s"] / row["c_defeat_step_s"]


def test_accuracy_benchmark_arguments():
    acc = _load("accuracy")
    args = acc.parse_args(["--variants", "baseline", "coupled", "--seeds", "0", "--opts", "SOLVER.BASE_LR", "0.01"])
    assert args.variants == ["baseline", "coupled"] and args.opts == ["SOLVER.BASE_LR", "0.01"]
    assert set(acc.VARIANTS) == {"baseline", "defeat", "neck", "head", "coupled"}


def test_accuracy_benchmark_defines_variants():
    acc = _load("accuracy")
    base = list(acc.VARIANTS["defeat"][1])
    acc.parse_args(["--define", "kd_T2:defeat:MODEL.DEFEAT.HEAD.TEMPERATURE=2,MODEL.DEFEAT.HEAD.OBJ_WEIGHT=0.5",
                    "--variants", "kd_T2"])
    extra = ["MODEL.DEFEAT.HEAD.TEMPERATURE", "2", "MODEL.DEFEAT.HEAD.OBJ_WEIGHT", "0.5"]
    assert acc.VARIANTS["kd_T2"] == ("defeat", base + extra)
