"""Hardening (issue 11): bad invocations are one clean line and exit 2 before any work, nothing
hangs, a killed bench leaves no workers, wandb falls back to offline. The crafted checkpoints
and the atomic-save kill test are in test_checkpoint.py."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest

from metalr.bench import BenchConfig
from metalr.cli import main as cli_main
from metalr.errors import MetalrError

REPO = Path(__file__).resolve().parents[1]


def _prepare(tmp: Path) -> None:
    """Files the invocations below refer to (relative to the working directory ``tmp``)."""
    (tmp / "adir").mkdir()
    (tmp / "dir.png").mkdir()
    (tmp / "afile").write_text("x")
    (tmp / "empty.sqlite").write_bytes(b"")
    (tmp / "text.sqlite").write_text("not a database\n" * 10)
    db = sqlite3.connect(tmp / "other.sqlite")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    os.mkfifo(tmp / "fifo.json")
    os.symlink("/dev/zero", tmp / "zero.json")
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp / "ck.json").mkdir()
    (tmp / "ck.safetensors").write_bytes(b"x")
    for name, content in {
        "null_grid.json": {"tasks": ["cancer-mlp"], "policies": ["constant"], "lr_grid": None},
        "null_store.json": {"tasks": ["cancer-mlp"], "policies": ["constant"], "store": None},
        "num_store.json": {"tasks": ["cancer-mlp"], "policies": ["constant"], "store": 5},
        "notes.json": {"tasks": ["cancer-mlp"], "policies": ["constant"], "notes": 5},
        "task_str.json": {"tasks": "cancer-mlp", "policies": ["constant"]},
        "seeds_big.json": {"tasks": ["cancer-mlp"], "policies": ["constant"], "seeds": 10 ** 9},
        "seeds_float.json": {"tasks": ["cancer-mlp"], "policies": ["constant"], "seeds": 2.5},
        "evals_zero.json": {"tasks": ["cancer-mlp"], "policies": ["constant"],
                            "eval_points": {"default": 0}},
        "grid_str.json": {"tasks": ["cancer-mlp"], "policies": ["constant"], "lr_grid": 5},
        "target_null.json": {"tasks": ["cancer-mlp"], "policies": ["constant"],
                             "target_policy": None},
        "unknown_key.json": {"tasks": ["cancer-mlp"], "evil": 1},
        "array.json": [1, 2],
    }.items():
        (tmp / name).write_text(json.dumps(content))


BENCH = ["bench", "--tasks", "cancer-mlp", "--policies", "constant", "--no-progress"]
STORE = ["--store", "s/r.sqlite"]
PLOT = ["plot-policy", "cosine", "--steps", "10", "--out", "p/x.png"]

# (class of probe from the issue, argv). Every one must exit 2 with one line on stderr, no
# traceback, and create nothing.
BAD = [
    # impossible or unwritable output locations
    ("output", [*BENCH, *STORE, "--out", "/proc/nope"]),
    ("output", [*BENCH, "--store", "/proc/nope/r.sqlite"]),
    ("output", [*BENCH, "--store", "/proc/nope"]),
    ("output", [*BENCH, "--store", "adir"]),
    ("output", [*BENCH, *STORE, "--out", "afile"]),
    ("output", [*BENCH, *STORE, "--out", "afile/sub"]),
    ("output", [*BENCH, "--store", "x" * 5000 + "/r.sqlite"]),
    ("output", [*BENCH, "--store", "/dev/null/r.sqlite"]),
    ("output", ["report", "other.sqlite", "--out", "/proc/nope"]),
    ("output", ["plot-policy", "cosine", "--steps", "10", "--out", "/proc/nope/x.png"]),
    ("output", ["plot-policy", "cosine", "--steps", "10", "--out", "adir"]),
    ("output", ["plot-policy", "cosine", "--steps", "10", "--out", "dir.png"]),
    ("output", ["plot-policy", "cosine", "--steps", "10", "--out", "afile/x.png"]),
    # numbers out of range: seeds, counts that would hang, LR
    ("number", [*PLOT, "--seed", str(2 ** 64)]),
    ("number", [*PLOT, "--seed", str(10 ** 30)]),
    ("number", [*PLOT, "--seed", "-1"]),
    ("number", [*BENCH, *STORE, "--seeds", str(2 ** 70)]),
    ("number", [*BENCH, *STORE, "--seeds", "0"]),
    ("number", [*BENCH, *STORE, "--seeds", "-3"]),
    ("number", [*BENCH, *STORE, "--seeds", "1e3"]),
    ("hang", [*BENCH, *STORE, "--seeds", "1000000000"]),
    ("hang", [*BENCH, *STORE, "--eval-points", "1000000000"]),
    ("hang", [*BENCH, *STORE, "--workers", "1000000"]),
    ("hang", [*BENCH, *STORE, "--lr-grid", ",".join(str(1 + i / 1000) for i in range(999)),
              "--seeds", "1000"]),
    ("hang", ["plot-policy", "cosine", "--steps", str(10 ** 12), "--out", "p/x.png"]),
    ("hang", ["plot-policy", "lrtuner", "--steps", str(10 ** 9), "--out", "p/x.png"]),
    ("number", [*PLOT, "--base-lr", "-1"]),
    ("number", [*PLOT, "--base-lr", "0"]),
    ("number", [*PLOT, "--base-lr", "nan"]),
    ("number", [*PLOT, "--base-lr", "inf"]),
    ("number", [*PLOT, "--base-lr", "-inf"]),
    ("number", [*PLOT, "--base-lr", "1e999"]),
    ("number", ["plot-policy", "cosine", "--steps", "0", "--out", "p/x.png"]),
    ("number", ["plot-policy", "cosine", "--steps", "1e12", "--out", "p/x.png"]),
    ("number", [*BENCH, *STORE, "--lr-grid", "nan"]),
    # bad configuration files
    ("config", [*BENCH, *STORE, "--config", "null_grid.json"]),
    ("config", [*BENCH, "--config", "null_store.json"]),
    ("config", [*BENCH, "--config", "num_store.json"]),
    ("config", [*BENCH, *STORE, "--config", "notes.json"]),
    ("config", ["bench", *STORE, "--config", "task_str.json"]),
    ("config", [*BENCH, *STORE, "--config", "seeds_big.json"]),
    ("config", [*BENCH, *STORE, "--config", "seeds_float.json"]),
    ("config", [*BENCH, *STORE, "--config", "evals_zero.json"]),
    ("config", [*BENCH, *STORE, "--config", "grid_str.json"]),
    ("config", [*BENCH, *STORE, "--config", "target_null.json"]),
    ("config", [*BENCH, *STORE, "--config", "unknown_key.json"]),
    ("config", [*BENCH, *STORE, "--config", "array.json"]),
    ("config", [*BENCH, *STORE, "--config", "adir"]),
    ("config", [*BENCH, *STORE, "--config", "fifo.json"]),
    ("config", [*BENCH, *STORE, "--config", "zero.json"]),
    ("config", [*BENCH, *STORE, "--config", "deep.json"]),
    ("config", [*BENCH, *STORE, "--config", "missing.json"]),
    # wrongly accepted
    ("accepted", [*BENCH, *STORE, "--target-policy", "nosuch"]),
    ("accepted", [*BENCH, *STORE, "--target-policy", "knee:nope=1"]),
    ("accepted", ["report", "other.sqlite", "--target-policy", "nosuch"]),
    ("accepted", ["report", "empty.sqlite"]),
    ("accepted", ["report", "text.sqlite"]),
    ("accepted", ["report", "other.sqlite"]),
    ("accepted", ["report", "adir"]),
    ("accepted", ["report", "fifo.json"]),
    ("accepted", ["report", "missing.sqlite"]),
    ("accepted", [*BENCH, "--store", "empty.sqlite"]),
    ("accepted", [*BENCH, "--store", "text.sqlite"]),
    ("accepted", ["bench", *STORE, "--tasks", "cancer-mlp:", "cancer-mlp", "--policies", "constant"]),
    ("accepted", ["bench", *STORE, "--tasks", "cancer-mlp", "--policies", "cosine:", "cosine"]),
    ("accepted", ["bench", *STORE, "--tasks", "cancer-mlp:epochs", "--policies", "constant"]),
    ("accepted", ["bench", *STORE, "--tasks", "cancer-mlp:", "--policies", "constant"]),
    # meta-train: options refused before an --out is made (issue 17)
    ("meta-train", ["meta-train", "--estimator=lookahead", "--out=afile/run"]),
    ("meta-train", ["meta-train", "--estimator=lookahead", "--out=/proc/nope/run"]),
    ("meta-train", ["meta-train", "--out=afile/run"]),
    ("meta-train", ["meta-train", "--seed=99999999999999999999999", "--out=o"]),
    ("meta-train", ["meta-train", "--estimator=lookahead", "--seed=99999999999999999999999", "--out=o"]),
    ("meta-train", ["meta-train", "--seed=-1", "--out=o"]),
    ("meta-train", ["meta-train", "--estimator=lookahead", "--seed=-1", "--out=o"]),
    ("meta-train", ["meta-train", "--hide-budget=1.5", "--out=o"]),
    ("meta-train", ["meta-train", "--tasks=", "--out=o"]),
    ("meta-train", ["meta-train", "--estimator=lookahead", "--tasks=", "--out=o"]),
    ("meta-train", ["meta-train", "--meta-lr=0", "--out=o"]),
    ("meta-train", ["meta-train", "--estimator=lookahead", "--epochs=1000000000", "--out=o"]),
    ("meta-train", ["meta-train", "--estimator=lookahead", "--val-batch=1000000000", "--out=o"]),
    ("meta-train", ["meta-train", "--tasks=cancer-mlp:", "--out=o"]),
    ("meta-train", ["meta-train", "--meta-steps=1", "--nope", "--out=o"]),
    # checkpoints named on the command line
    ("checkpoint", ["plot-policy", "metalr:checkpoint=ck.json", "--steps", "10", "--out", "p/x.png"]),
    ("checkpoint", ["plot-policy", "metalr:checkpoint=zero.json", "--steps", "10", "--out", "p/x.png"]),
    ("checkpoint", ["plot-policy", "metalr:checkpoint=fifo.json", "--steps", "10", "--out", "p/x.png"]),
    ("checkpoint", ["plot-policy", "metalr:checkpoint=deep.json", "--steps", "10", "--out", "p/x.png"]),
    ("checkpoint", [*BENCH[:3], "--policies", "metalr:checkpoint=ck.json", *STORE]),
    ("checkpoint", [*BENCH[:3], "--policies", "metalr:checkpoint=adir", *STORE]),
    ("checkpoint", [*BENCH[:3], "--policies", "metalr:checkpoint=", *STORE]),
    # argparse-level
    ("usage", ["plot-policy", "cosine"]),
    ("usage", ["bench", "--nope"]),
    ("usage", ["report"]),
    ("usage", ["nosuch"]),
]


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("kind,argv", BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD)])
def test_bad_invocation_is_one_line_exit_2_and_creates_nothing(tmp_path, monkeypatch, capsys,
                                                               kind, argv):
    _prepare(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)

    def hang(*_):
        raise TimeoutError(f"{argv} still running after 30 s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(30)
    try:
        code = cli_main(argv)
    except SystemExit as exit_:  # argparse's own exit
        code = exit_.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and err.startswith("metalr"), err
    assert "Traceback" not in err
    assert _listing(tmp_path) == before, "the invocation created or changed files"


def test_bad_invocations_from_a_shell_print_no_traceback(tmp_path):
    """The same through a real process: exit status 2 and one stderr line."""
    _prepare(tmp_path)
    for argv in (["report", "empty.sqlite"], [*BENCH, *STORE, "--out", "/proc/nope"],
                 [*PLOT, "--base-lr", "nan"]):
        proc = subprocess.run([sys.executable, "-m", "metalr.cli", *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (tmp_path / "empty.sqlite").read_bytes() == b""


def test_specs_are_stored_in_one_spelling_and_a_stray_colon_or_comma_is_refused():
    config = BenchConfig(tasks=["cancer-mlp", " digits-mlp : epochs = 3 "],
                         policies=["cosine", "knee:explore=0.3"])
    assert config.tasks == ["cancer-mlp", "digits-mlp:epochs=3"]
    assert config.policies == ["cosine", "knee:explore=0.3"]
    for tasks, policies, message in ((["cancer-mlp:"], ["cosine"], "ends in ':' with no parameters"),
                                     (["cancer-mlp"], ["cosine: "], "ends in ':' with no parameters"),
                                     (["cancer-mlp"], ["knee:explore=0.3,"], "empty parameter")):
        with pytest.raises(MetalrError, match=message):
            BenchConfig(tasks=tasks, policies=policies)


def test_eval_points_capped_at_the_task_steps():
    from metalr.bench.plan import expand

    cells = expand(BenchConfig(tasks=["cancer-mlp:epochs=1"], policies=["constant"], seeds=1,
                               lr_grid=[1], eval_points=100_000))
    assert cells[0].eval_points == cells[0].total_steps < 100


def test_plot_policy_keeps_checkpoint_paths(tmp_path, capsys):
    out = tmp_path / "m.png"
    code = cli_main(["plot-policy", "metalr:checkpoint=pretrained/metalr-mnist1d.json",
                     "--steps", "30", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 read the loss" in captured.err  # said up front
    assert out.is_file() and out.with_suffix(".csv").is_file()


def test_report_leaves_a_non_store_untouched(tmp_path):
    from metalr.bench import write_report

    for name, data in (("zero.sqlite", b""), ("text.sqlite", b"hello\n")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(MetalrError, match="not a metalr results store"):
            write_report(path)
        assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.sqlite", "zero.sqlite"]


# ---- Orphans: SIGKILL the bench process while its workers train; none may outlive it by 5 s.

def test_sigkilled_bench_leaves_no_workers(tmp_path):
    argv = [sys.executable, "-m", "metalr.cli", "bench", "--tasks", "mnist1d-mlp:epochs=400",
            "--policies", "constant", "--seeds", "2", "--lr-grid", "1", "--workers", "2",
            "--store", str(tmp_path / "s.sqlite"), "--no-progress"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline and proc.poll() is None:
            family = parent.children(recursive=True)
            # the pool's workers run the cells: children of the forkserver, busy on a CPU
            workers = [p for p in family if p.ppid() != proc.pid]
            if len(workers) >= 2 and all(p.cpu_times().user > 0.5 for p in workers):
                break
            time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert len(workers) >= 2, f"no workers seen: {parent.children(recursive=True)}"
        family = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(5)
        alive = []
        for p in family:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append((p.pid, p.name(), p.cmdline()[-2:]))
            except psutil.NoSuchProcess:
                pass
        assert not alive, f"processes of the killed bench still running 5 s later: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bench_announces_runs_and_steps(tmp_path, capsys):
    cli_main(["bench", "--tasks", "cancer-mlp:epochs=1", "--policies", "constant", "--seeds", "1",
              "--lr-grid", "1", "--workers", "1", "--store", str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err
    assert "bench: 1 cells, 0 already stored; running 1 (" in err and "optimizer steps" in err


# ---- wandb: an online start that fails falls back to offline, says so, and says where.

def test_wandb_online_failure_falls_back_to_offline(tmp_path, monkeypatch, capsys):
    wandb = pytest.importorskip("wandb")
    from metalr.runlog import RunLog

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("WANDB_API_KEY", "bogus" * 8)
    monkeypatch.setenv("WANDB_SILENT", "true")
    real_init, modes = wandb.init, []

    def init(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        if kwargs.get("mode") == "online":  # fail at once instead of after wandb's timeout
            raise wandb.errors.CommError("bogus key for http://127.0.0.1:9")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = RunLog(tmp_path / "run" / "metrics.csv", ["step", "loss"], use_wandb=True,
                     project="metalr-test", name="fallback")
        log.log({"step": 1, "loss": 0.5})
        log.close()
    assert modes == ["online", "offline"]
    assert any("falling back to offline" in str(w.message) for w in caught)
    err = capsys.readouterr().err
    assert "offline run data in" in err and "wandb sync" in err
    run_dir = Path(err.split("offline run data in ")[1].split(";")[0])
    assert run_dir.name.startswith("offline-run-") and run_dir.is_dir()


def test_wandb_bench_logger_falls_back_to_offline(tmp_path, monkeypatch, capsys):
    wandb = pytest.importorskip("wandb")
    from metalr.bench.wandb_log import WandbCells

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_SILENT", "true")
    real_init = wandb.init

    def init(*args, **kwargs):
        if kwargs.get("mode") == "online":
            raise wandb.errors.CommError("unreachable")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = WandbCells("metalr-test", "g", tmp_path / "report")
    record = {"task": "t", "policy": "p", "scale": 1.0, "seed": 0, "status": "ok",
              "curves": {"eval_step": [], "lr_step": [1], "lr": [0.1], "train_loss": [1.0]}}
    with pytest.warns(UserWarning, match="falling back to offline"):
        logger(record)
    logger({**record, "seed": 1})
    assert logger.mode == "offline" and logger.wandb is not None
    err = capsys.readouterr().err
    assert err.count("wandb sync") == 1
    # wandb's files go beside the report, not into the working directory
    assert len(list((tmp_path / "report" / "wandb").glob("offline-run-*"))) == 2
    assert not (tmp_path / "wandb").exists()
