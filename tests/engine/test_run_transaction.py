"""A run is a transaction, and every entry point ends a user's mistake in one line.

The output folder: a live run's lock refuses a second run there, a stale lock is taken over and
named, the lock goes when the run ends (also on error); a start that fails leaves the folder
byte for byte as it was (``--overwrite`` included: the earlier run is moved aside only for a
run that gets under way). The entry points: a DeFeat error or an expected file error is one line
``<script>: error: ...`` on stderr, exit status 1, no traceback (``DEFEAT_TRACEBACK=1`` keeps it);
every script's ``__main__`` block goes through :func:`defeat.engine.entry.run_entry_point`.
"""

import ast
import glob
import hashlib
import os
import socket
import subprocess
import sys
import uuid
import zipfile

import pytest
import torch
from coco_files import write_coco
from helpers import CONFIGS, REPO, save_random_weights, script_main, script_run_argv

from defeat.checkpoint import check_weights_file
from defeat.engine import run_folder
from defeat.engine.entry import error_line, run_entry_point
from defeat.engine.run_folder import LOCK_NAME, RunFolder, read_lock
from defeat.errors import DataCheckError, DeFeatConfigError, OutputError, WeightsError

# ---- helpers ----


def snapshot(folder):
    """``{relative path: sha256}`` of every file under ``folder`` and ``relative path/`` for every
    folder; None when ``folder`` does not exist."""
    if not os.path.exists(folder):
        return None
    out = {}
    for root, _dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        out[rel + "/"] = ""
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.join(rel, f)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def earlier_run(folder):
    """A folder holding an earlier run's records (and a file of the user's)."""
    os.makedirs(folder, exist_ok=True)
    files = {
        "metrics.json": '{"iteration": 3, "total_loss": 1.0}\n',
        "last_checkpoint": "model_final.pth",
        "config.yaml": "OUTPUT_DIR: earlier\n",
        "log.txt": "the earlier run's log\n",
        "events.out.tfevents.1.host": "events",
        "model_final.pth": "weights",
        "notes.txt": "mine",
    }
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return str(folder)


def _dataset(tmp_path):
    json_file, images = write_coco(str(tmp_path / "data"))
    name = f"txn_{uuid.uuid4().hex[:8]}"
    return name, f"{name}={json_file}:{images}"


def _train_argv(tmp_path, out, *extra, flags=()):
    return script_run_argv(f"{CONFIGS}/tiny_base.yaml", _dataset(tmp_path), out, 1, *extra, flags=flags)


def _lazy_argv(tmp_path, out, *extra, flags=()):
    return script_run_argv(f"{CONFIGS}/tiny_base.py", _dataset(tmp_path), out, 1, *extra, flags=flags)


def _main(script, argv):
    return script_main(script, argv)


def junk_zip(path):
    """A zip file that is no checkpoint: passes the quick kind check, fails in torch.load."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"not a pickle")
    return str(path)


def truncated_checkpoint(tmp_path):
    """A real tiny checkpoint cut to half its size."""
    path = tmp_path / "cut.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def dead_pid():
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- one line for every entry point ----


def _main_block(tree):
    """The module's ``if __name__ == ...`` blocks as one (a script that reads its arguments before
    its heavy imports has two); None without one."""
    blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    ]
    return ast.Module(body=blocks, type_ignores=[]) if blocks else None


def _name(func):
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def entry_point_files():
    """Every Python file of the repository outside tests/ with an ``if __name__ == ...`` block."""
    found = []
    for path in glob.glob(os.path.join(REPO, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, REPO)
        if rel.split(os.sep)[0] in ("tests", ".venv", "build", "output") or "site-packages" in rel:
            continue
        with open(path) as f:
            text = f.read()
        if "__main__" in text:
            block = _main_block(ast.parse(text))
            if block is not None:
                found.append((rel, block))
    return found


def test_every_entry_point_ends_errors_through_run_entry_point():
    files = entry_point_files()
    names = {rel for rel, _ in files}
    assert {"train_net.py", "lazy_train_net.py", "tools/predict.py", "tools/trace_student.py"} <= names
    assert {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "tools", "*.py"))} <= names
    for rel, block in files:
        wrapped = [n for n in ast.walk(block) if isinstance(n, ast.Call) and _name(n.func) == "run_entry_point"]
        assert wrapped, f"{rel}: its __main__ block does not call run_entry_point (defeat.engine.entry)"
        inside = {id(n) for call in wrapped for arg in [*call.args, *call.keywords] for n in ast.walk(arg)}
        for node in ast.walk(block):
            if isinstance(node, ast.Call) and id(node) not in inside:
                assert _name(node.func) in ("run_entry_point", "exit"), (
                    f"{rel}: {ast.unparse(node)} runs outside run_entry_point in its __main__ block"
                )


@pytest.mark.parametrize(
    "error, line",
    [
        (DeFeatConfigError("MODEL.DEFEAT.X = 3: set it to 1"), "t.py: error: MODEL.DEFEAT.X = 3: set it to 1"),
        (
            FileNotFoundError(2, "No such file or directory", "a/b.json"),
            "t.py: error: No such file or directory: 'a/b.json'; check the path",
        ),
        (IsADirectoryError(21, "Is a directory", "out"), "t.py: error: Is a directory: 'out'; give a file"),
        (PermissionError(13, "Permission denied", "/x"), "t.py: error: Permission denied: '/x'; change its"),
        (SystemExit("--input not found: x"), "t.py: error: --input not found: x"),
        (SystemExit("t.py: error: already prefixed"), "t.py: error: already prefixed"),
        (OutputError("two\nlines   here"), "t.py: error: two lines here"),
    ],
)
def test_expected_errors_are_one_line_and_status_1(error, line, capsys, monkeypatch):
    monkeypatch.delenv("DEFEAT_TRACEBACK", raising=False)

    def main():
        raise error

    with pytest.raises(SystemExit) as e:
        run_entry_point(main, script="t.py")
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line) and "Traceback" not in err


def test_results_argparse_exits_and_bugs_pass_through(capsys, monkeypatch):
    monkeypatch.delenv("DEFEAT_TRACEBACK", raising=False)
    assert run_entry_point(lambda x: x + 1, 1, script="t.py") == 2

    def argparse_exit():
        raise SystemExit(2)

    with pytest.raises(SystemExit) as e:
        run_entry_point(argparse_exit, script="t.py")
    assert e.value.code == 2

    def bug():
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        run_entry_point(bug, script="t.py")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["1", "true", "on"])
def test_defeat_traceback_lets_the_error_through(value, monkeypatch):
    monkeypatch.setenv("DEFEAT_TRACEBACK", value)

    def main():
        raise DataCheckError("dataset 'x': no boxes")

    with pytest.raises(DataCheckError, match="no boxes"):
        run_entry_point(main, script="t.py")


def test_defeat_traceback_not_a_boolean_is_named_on_the_same_line(capsys, monkeypatch):
    monkeypatch.setenv("DEFEAT_TRACEBACK", "maybe")

    def main():
        raise WeightsError("MODEL.WEIGHTS: gone")

    with pytest.raises(SystemExit) as e:
        run_entry_point(main, script="t.py")
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1
    assert err.startswith("t.py: error: MODEL.WEIGHTS: gone [environment variable DEFEAT_TRACEBACK='maybe'")


def test_error_line_of_an_os_error_without_strerror():
    assert error_line("s.py", FileNotFoundError("just a message")) == "s.py: error: just a message"


def _spawned(kind, message):
    """The ``ProcessRaisedException`` of a real spawned worker (as ``detectron2.engine.launch``
    with ``--num-gpus`` > 1 gives it to the parent) raising ``kind(message)``."""
    import torch.multiprocessing as mp
    from helpers import worker_raising

    with pytest.raises(Exception) as raised:
        mp.start_processes(worker_raising, args=(kind, message), nprocs=1, start_method="spawn")
    return raised.value


@pytest.mark.heavy(seconds=20)
def test_a_users_mistake_in_a_worker_process_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("DEFEAT_TRACEBACK", raising=False)
    error = _spawned("DeFeatConfigError", "MODEL.DEFEAT.NECK.BG_WEIGHT = -1 is below 0\nset it to 0 or more")
    assert type(error).__name__ == "ProcessRaisedException" and "Traceback" in str(error)

    def main():
        raise error

    with pytest.raises(SystemExit) as e:
        run_entry_point(main, script="t.py")
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err == "t.py: error: (worker 0) MODEL.DEFEAT.NECK.BG_WEIGHT = -1 is below 0 set it to 0 or more\n"

    bug = _spawned("KeyError", "a bug in a worker")
    with pytest.raises(type(bug)):  # a bug keeps its traceback
        run_entry_point(lambda: (_ for _ in ()).throw(bug), script="t.py")
    monkeypatch.setenv("DEFEAT_TRACEBACK", "1")
    with pytest.raises(type(error)):
        run_entry_point(main, script="t.py")


def test_worker_error_reads_only_expected_errors():
    from defeat.engine.entry import worker_error

    class ProcessRaisedException(Exception):
        error_index = 3

    trace = "\n\n-- Process 3 terminated with the following error:\nTraceback (most recent call last):\n  File x\n"
    found = worker_error(ProcessRaisedException(trace + "defeat.errors.DataCheckError: no boxes"))
    assert found == "(worker 3) no boxes"
    assert worker_error(ProcessRaisedException(trace + "FileNotFoundError: [Errno 2] gone: 'a'")) == (
        "(worker 3) [Errno 2] gone: 'a'"
    )
    assert worker_error(ProcessRaisedException(trace + "ValueError: a bug")) is None
    assert worker_error(ProcessRaisedException(trace + "no.such.module.Error: x")) is None
    assert worker_error(ValueError(trace + "defeat.errors.DataCheckError: no boxes")) is None


# ---- weights checked before anything is touched ----


def test_weights_files_of_the_wrong_kind_are_refused_naming_the_key(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "config.yaml").write_text("MODEL: {}\n")
    cases = [
        (str(tmp_path / "missing.pth"), r"MODEL.WEIGHTS: '.*missing.pth' is not a file.*'' to start from scratch"),
        (str(tmp_path), r"is a folder; give the checkpoint file in it"),
        (str(tmp_path / "empty.pth"), r"'.*empty.pth' is empty"),
        (str(tmp_path / "config.yaml"), r"is not a checkpoint .*or is truncated"),
        (truncated_checkpoint(tmp_path), r"cut.pth' is not a checkpoint .*copy it again"),
    ]
    for path, match in cases:
        with pytest.raises(WeightsError, match=match):
            check_weights_file(path, "MODEL.WEIGHTS")
    good = tmp_path / "good.pth"
    torch.save({"model": {}}, str(good))
    check_weights_file(str(good), "MODEL.WEIGHTS")
    (tmp_path / "old.pkl").write_bytes(b"(dp0\n.")  # a protocol-0 pickle: its reader judges it
    check_weights_file(str(tmp_path / "old.pkl"), "MODEL.WEIGHTS")
    check_weights_file("", "MODEL.WEIGHTS")  # from scratch
    check_weights_file("detectron2://ImageNetPretrained/MSRA/R-50.pkl")  # defeat.engine.machine checks URLs


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: connections are refused at once


# ---- the lock ----


def test_a_live_runs_lock_refuses_a_second_run_and_leaves_the_folder(tmp_path):
    out = earlier_run(tmp_path / "run")
    with RunFolder(out) as first:
        held = read_lock(first.lock)
        assert held == (os.getpid(), socket.gethostname())
        before = snapshot(out)
        with pytest.raises(OutputError, match=rf"OUTPUT_DIR '{out}' is in use by another run \(process {os.getpid()}"):
            with RunFolder(out):
                pass
        assert snapshot(out) == before
    assert not os.path.exists(os.path.join(out, LOCK_NAME))  # removed at the end


def test_a_lock_of_another_host_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{dead_pid()} some-other-host\n")
    with pytest.raises(OutputError, match=r"process \d+ on some-other-host .*remove the lock file"):
        with RunFolder(str(out), "train.output_dir"):
            pass
    assert (out / LOCK_NAME).exists()


def test_a_stale_lock_is_named_and_taken_over_and_removed_at_the_end(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    pid = dead_pid()
    (out / LOCK_NAME).write_text(f"{pid} {socket.gethostname()}\n")
    with RunFolder(str(out)) as run:
        assert read_lock(run.lock) == (os.getpid(), socket.gethostname())
        run.started()
        with caplog.at_level("WARNING", logger="defeat.engine.run_folder"):
            run.announce()
    assert f"took over the stale lock {out / LOCK_NAME} of process {pid}" in caplog.text
    assert os.listdir(out) == []


def test_the_lock_is_removed_after_a_run_that_fails(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunFolder(str(out)) as run:
            run.started()
            (out / "metrics.json").write_text("{}\n")
            raise RuntimeError("iteration 3 failed")
    assert os.listdir(out) == ["metrics.json"]  # the run's records stay; the lock is gone


# ---- a failed start leaves the folder as it was ----


def test_a_failed_start_puts_everything_back(tmp_path):
    out = earlier_run(tmp_path / "run")
    os.makedirs(os.path.join(out, "inference"))
    stale = os.path.join(out, LOCK_NAME)
    with open(stale, "w") as f:
        f.write(f"{dead_pid()} {socket.gethostname()}\n")
    before = snapshot(out)
    with pytest.raises(WeightsError):
        with RunFolder(out) as run:
            aside = run.set_aside(["metrics.json", "last_checkpoint", "config.yaml", "log.txt", "inference"])
            assert os.path.basename(aside).startswith(".replaced-") and not os.path.exists(f"{out}/metrics.json")
            with open(os.path.join(out, "config.yaml"), "w") as f:
                f.write("the new run's config\n")
            open(os.path.join(out, "metrics.json"), "w").close()  # the 0-byte metrics.json of a writer
            with open(os.path.join(out, "log.txt"), "a") as f:
                f.write("the new run's log\n")
            open(os.path.join(out, "events.out.tfevents.2.host"), "w").close()
            raise WeightsError("MODEL.WEIGHTS: cannot read")
    assert snapshot(out) == before  # the stale lock too


def test_a_failed_start_into_a_new_folder_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(DataCheckError):
        with RunFolder(str(out)):
            (out / "config.yaml").write_text("x")
            raise DataCheckError("no boxes")
    assert not (tmp_path / "new").exists()


def test_output_path_must_be_a_writable_folder(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"OUTPUT_DIR '.*file' is a file, not a folder"):
        RunFolder(str(tmp_path / "file")).__enter__()
    with pytest.raises(OutputError, match=r"lies under the file '.*file', not a folder"):
        RunFolder(str(tmp_path / "file" / "run")).__enter__()
    monkeypatch.setattr(run_folder.os, "access", lambda path, mode: False)  # tests may run as root
    with pytest.raises(OutputError, match=r"cannot be written \(permissions\); set train.output_dir to a folder"):
        RunFolder(str(tmp_path / "run"), "train.output_dir").__enter__()
    assert sorted(os.listdir(tmp_path)) == ["file"]


# ---- through the training scripts ----


def test_a_run_into_a_folder_with_another_runs_fresh_start_is_refused(tmp_path):
    """A run that has written only config.yaml, log.txt and its event file is a run."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "log.txt", "events.out.tfevents.1.host"):
        (out / name).write_text("fresh")
    before = snapshot(str(out))
    with pytest.raises(OutputError, match=r"already holds a run \(config.yaml, log.txt, events.out.tfevents.1.host\)"):
        _main("train_net", _train_argv(tmp_path, out))
    assert snapshot(str(out)) == before


def test_a_live_run_in_the_folder_refuses_train_net(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    before = snapshot(str(out))
    with pytest.raises(OutputError, match=rf"in use by another run \(process {os.getpid()}"):
        _main("lazy_train_net", ["--config-file", f"{CONFIGS}/tiny_base.py", f"train.output_dir={out}"])
    assert snapshot(str(out)) == before


@pytest.mark.parametrize("script", ["train_net", "lazy_train_net"])
def test_overwrite_that_fails_to_start_keeps_the_earlier_run_byte_for_byte(script, tmp_path):
    """Unreadable weights that pass the quick check: the start fails after Detectron2 wrote its
    config.yaml, log.txt and metrics.json, and the folder is put back."""
    out = earlier_run(tmp_path / "run")
    weights = junk_zip(tmp_path / "junk.pth")
    before = snapshot(out)
    if script == "train_net":
        argv = _train_argv(tmp_path, out, "MODEL.WEIGHTS", weights, flags=["--overwrite"])
        key = "MODEL.WEIGHTS"
    else:
        argv = _lazy_argv(tmp_path, out, f"train.init_checkpoint={weights}", flags=["--overwrite"])
        key = "train.init_checkpoint"
    with pytest.raises(WeightsError, match=rf"{key}: cannot read the weights '{weights}' .* set {key} to another"):
        _main(script, argv)
    assert snapshot(out) == before


@pytest.mark.heavy(seconds=5)
def test_overwrite_moves_the_earlier_run_aside_once_the_run_is_under_way(tmp_path):
    out = earlier_run(tmp_path / "run")
    old = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
    stale = dead_pid()
    with open(os.path.join(out, LOCK_NAME), "w") as f:
        f.write(f"{stale} {socket.gethostname()}\n")
    _main("train_net", _train_argv(tmp_path, out, flags=["--overwrite"]))
    aside = [n for n in os.listdir(out) if n.startswith(".replaced-")]
    assert len(aside) == 1 and not os.path.exists(os.path.join(out, LOCK_NAME))
    moved = os.path.join(out, aside[0])
    assert sorted(os.listdir(moved)) == sorted(n for n in old if n != "notes.txt")
    for name in os.listdir(moved):
        assert open(os.path.join(moved, name), "rb").read() == old[name]
    assert open(os.path.join(out, "notes.txt")).read() == "mine"
    log = open(os.path.join(out, "log.txt")).read()
    assert f"moved to {moved}" in log and f"took over the stale lock {out}/{LOCK_NAME} of process {stale}" in log
    assert "the earlier run" not in open(os.path.join(out, "metrics.json")).read()


def test_lock_is_removed_when_training_fails_after_the_start(tmp_path, monkeypatch):
    import train_net

    def fail(self):
        raise FloatingPointError("Loss became infinite or NaN at iteration=0")

    monkeypatch.setattr(train_net.Trainer, "train", fail)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError):
        _main("train_net", _train_argv(tmp_path, out))
    assert not (out / LOCK_NAME).exists() and (out / "config.yaml").exists()  # a started run keeps its records


# ---- the scripts as users run them: one line, status 1, the folder untouched ----


def _run(script, *argv, env=None):
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "projects"), "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("DEFEAT_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), *[str(a) for a in argv]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )


def _one_line(proc, script, *parts):
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"{script}: error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.mark.heavy(seconds=15)
def test_train_net_with_a_truncated_checkpoint_is_one_line_and_keeps_the_folder(tmp_path):
    out = earlier_run(tmp_path / "run")
    weights = truncated_checkpoint(tmp_path)
    before = snapshot(out)
    proc = _run("train_net.py", *_train_argv(tmp_path, out, "MODEL.WEIGHTS", weights, flags=["--overwrite"]))
    _one_line(proc, "train_net.py", "MODEL.WEIGHTS", weights, "copy it again")
    assert snapshot(out) == before


@pytest.mark.heavy(seconds=15)
def test_lazy_train_net_with_an_unreachable_download_is_one_line_at_once(tmp_path):
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{_closed_port()}/detectron2/model_final.pth"
    argv = _lazy_argv(tmp_path, out, f"train.init_checkpoint={url}")
    proc = _run("lazy_train_net.py", *argv, env={"FVCORE_CACHE": str(tmp_path / "cache")})
    _one_line(proc, "lazy_train_net.py", "train.init_checkpoint", url, "cannot be reached", "give the local file")
    assert not out.exists()


@pytest.mark.heavy(seconds=15)
def test_predict_with_a_bad_defeat_override_is_one_line(tmp_path):
    """The case of the issue: a LazyConfig override that the settings gate refuses."""
    weights = save_random_weights(f"{CONFIGS}/tiny_base.py", str(tmp_path), "w")
    proc = _run(
        "tools/predict.py",
        "--config-file",
        f"{CONFIGS}/tiny_defeat.py",
        "--input",
        tmp_path,
        "--output",
        tmp_path / "pred",
        "--weights",
        weights,
        "model.defeat.neck.obj_weight=abc",
    )
    _one_line(proc, "predict.py", "NECK.OBJ_WEIGHT", "'abc'")
    assert not (tmp_path / "pred").exists()


@pytest.mark.heavy(seconds=15)
def test_train_net_into_a_live_runs_folder_is_one_line_naming_the_folder_and_pid(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    before = snapshot(str(out))
    proc = _run("train_net.py", *_train_argv(tmp_path, out))
    _one_line(proc, "train_net.py", f"OUTPUT_DIR '{out}' is in use by another run (process {os.getpid()}")
    assert snapshot(str(out)) == before
