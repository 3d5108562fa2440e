"""metalr bench: metrics on hand-made curves, the store, the report, resume after kills, CLI errors."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from metalr.bench import metrics as M
from metalr.bench.report import write_report
from metalr.bench.store import Store
from metalr.bench.summary import summarize
from metalr.bench.worker import downsample
from metalr.cli import main as cli_main
from metalr.errors import MetalrError
from metalr.tasks.base import Split, accuracy, cross_entropy
from metalr.trainer import evaluate

# --- metrics on hand-made curves -----------------------------------------------------------


def test_steps_and_time_to_target_higher_is_better():
    steps, times, acc = [10, 20, 30, 40], [1.0, 2.0, 3.0, 4.0], [0.1, 0.5, 0.7, 0.9]
    assert M.steps_to_target(steps, acc, 0.7, higher=True) == 30  # reaching means >=
    assert M.time_to_target(times, acc, 0.7, higher=True) == 3.0
    assert M.steps_to_target(steps, acc, 0.05, higher=True) == 10
    assert M.steps_to_target(steps, acc, 0.95, higher=True) is None  # never reached
    assert M.time_to_target(times, acc, 0.95, higher=True) is None


def test_steps_to_target_lower_is_better_and_nan():
    steps, bits = [10, 20, 30, 40], [3.0, 2.5, 2.0, 2.2]
    assert M.steps_to_target(steps, bits, 2.2, higher=False) == 30  # reaching means <=
    assert M.steps_to_target(steps, bits, 2.5, higher=False) == 20
    assert M.steps_to_target(steps, bits, 1.9, higher=False) is None
    assert M.steps_to_target(steps, [math.nan] * 4, 10.0, higher=False) is None
    assert M.steps_to_target(steps, [0.2, math.nan, 0.9, 0.8], 0.85, higher=True) == 30
    assert not M.reached(math.inf, 1.0, higher=True)


def test_best_value_gap_mean():
    assert M.best_value([0.2, math.nan, 0.9, 0.8], higher=True) == 0.9
    assert M.best_value([3.0, 2.0, math.nan], higher=False) == 2.0
    assert math.isnan(M.best_value([math.nan], higher=True))
    assert M.gap({"test_loss": 1.5, "train_loss": 0.25}) == 1.25
    assert M.mean([1.0, 2.0, 4.0]) == pytest.approx(7 / 3)
    assert math.isnan(M.mean([]))


def test_robustness_spread_and_seed_variance():
    assert M.spread([0.9, 0.7, 0.8]) == pytest.approx(0.2)
    assert M.spread([0.5]) is None
    assert M.spread([0.9, math.nan]) == math.inf  # a diverged grid point
    assert M.seed_std([1.0, 2.0, 3.0]) == pytest.approx(1.0)  # sample std, ddof=1
    assert M.seed_std([0.5]) is None
    assert math.isnan(M.seed_std([1.0, math.nan]))


def test_ranks_and_selection():
    assert M.ranks({"a": 0.9, "b": 0.8, "c": 0.9, "d": math.nan}, higher=True) == \
        {"a": 1.5, "c": 1.5, "b": 3.0, "d": 4.0}
    assert M.ranks({"a": 2.0, "b": 1.5}, higher=False) == {"b": 1.0, "a": 2.0}
    assert M.ranks({"a": 1.0, "b": math.nan, "c": math.nan}, higher=True) == \
        {"a": 1.0, "b": 2.5, "c": 2.5}
    assert M.select({0.3: 0.8, 1.0: 0.9, 3.0: 0.9}, higher=True) == 1.0  # first on ties
    assert M.select({0.3: 2.1, 1.0: 1.9, 3.0: math.nan}, higher=False) == 1.0
    assert M.select({1.0: math.nan}, higher=True) is None


def test_confidence_is_mean_max_softmax_on_correct_samples():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    labels = torch.tensor([0, 1, 1, 2])  # rows 0, 1 and 3 correct
    split = Split(probs.log(), labels, torch.arange(4))
    task = SimpleNamespace(loss_fn=cross_entropy, metric=accuracy, metric_name="accuracy")
    out = evaluate(torch.nn.Identity(), task, split, "cpu")
    assert out["confidence"] == pytest.approx((0.7 + 0.6 + 0.6) / 3, abs=1e-6)
    assert out["metric"] == pytest.approx(0.75)


def test_downsample_keeps_ends_and_averages():
    steps, sampled, averaged = downsample(list(range(1000)), max_points=500)
    assert len(steps) <= 500 and steps[0] == 1 and steps[-1] == 1000
    assert sampled[0] == 0 and sampled[-1] == 999
    assert averaged[0] == pytest.approx(0.5)  # the mean of values 0 and 1
    assert downsample([1.0, 2.0], max_points=500) == ([1, 2], [1.0, 2.0], [1.0, 2.0])


# --- hand-made records: selection on validation, targets, ranks -----------------------------

def record(task, policy, scale, seed, test, val=None, *, higher=True, category="hand",
           steps=(10, 20, 30, 40), status="ok", metric="accuracy", wall=2.0):
    """A stored record whose test curve is ``test`` and validation curve ``val`` (default test)."""
    val = list(test) if val is None else list(val)
    return {
        "task": task, "policy": policy, "scale": scale, "seed": seed, "category": category,
        "base_lr": 0.1 * scale, "fingerprint": "", "status": status, "metric_name": metric,
        "higher_is_better": higher, "optimizer": "sgd", "total_steps": steps[-1],
        "steps_run": steps[-1], "wall_time": wall,
        "final": {"step": steps[-1], "train_loss": 0.5, "val_loss": 1.0, "val_metric": val[-1],
                  "test_loss": 1.0 + seed, "test_metric": test[-1],
                  **({"confidence": 0.8 + 0.01 * seed} if metric == "accuracy" else {})},
        "curves": {"eval_step": list(steps), "eval_time": [s / 10 for s in steps],
                   "val_loss": [1.0] * len(steps), "val_metric": val,
                   "test_loss": [1.0] * len(steps), "test_metric": list(test),
                   "lr_step": list(steps), "lr": [0.1 * scale] * len(steps),
                   "loss_step": list(steps), "train_loss": [0.5] * len(steps)},
        "warnings": [],
    }


def small_records():
    """Task A (accuracy): cosine's test prefers x3 but validation prefers x1; knee beats it
    early. Task B (bits, lower is better): a learned default and a peer."""
    A, B = "taskA", "taskB"
    recs = []
    for seed in (0, 1):
        recs += [
            record(A, "cosine", 1.0, seed, [0.5, 0.6, 0.7, 0.80 + 0.02 * seed],
                   val=[0.5, 0.6, 0.7, 0.9]),
            record(A, "cosine", 3.0, seed, [0.5, 0.6, 0.7, 0.90], val=[0.5, 0.6, 0.7, 0.8]),
            record(A, "knee", 1.0, seed, [0.6, 0.82, 0.85, 0.86]),
            record(A, "knee", 3.0, seed, [0.6, 0.7, 0.75, 0.5 + 0.1 * seed]),
            record(B, "cosine", 1.0, seed, [3.0, 2.5, 2.0, 1.9], higher=False, metric="bits"),
            record(B, "metalr", 1.0, seed, [3.0, 2.0, 1.8, 1.7], higher=False, metric="bits",
                   category="learned"),
            record(B, "metalr", 3.0, seed, [3.0, math.nan, math.nan, math.nan], higher=False,
                   metric="bits", category="learned", status="diverged"),
            record(B, "dog", 1.0, seed, [3.0, 2.9, 2.8, 2.7], higher=False, metric="bits",
                   category="peer"),
        ]
    recs.append({**{k: recs[0][k] for k in ("task", "scale", "category", "base_lr",
                                            "fingerprint")},
                 "policy": "step", "seed": 0, "status": "error", "error": "ValueError: boom"})
    return recs


def test_summary_selects_on_validation_and_measures_the_target():
    a, b = summarize(small_records(), order=["taskA", "taskB", "cosine", "knee"])
    cos = next(r for r in a.rows if r.policy == "cosine")
    assert cos.scale == 1.0 and cos.selection == "tuned"  # validation, not test, decides
    assert a.target == pytest.approx(0.81)  # mean final test metric of the selected cosine
    assert cos.final_std == pytest.approx(math.sqrt(2 * 0.01 ** 2))
    knee = next(r for r in a.rows if r.policy == "knee")
    assert knee.scale == 1.0 and knee.steps_to_target == 20 and knee.reached == 2
    assert knee.time_to_target == pytest.approx(2.0)
    assert cos.reached == 1 and cos.steps_to_target == 40  # seed 0 ends at 0.80 < 0.81
    # robustness: spread of the seed-mean final test metric over the grid
    assert knee.robustness == pytest.approx(0.86 - 0.55)
    assert cos.robustness == pytest.approx(0.90 - 0.81)
    assert knee.rank == 1.0 and cos.rank == 2.0
    assert cos.confidence == pytest.approx(0.805)
    assert cos.gap == pytest.approx(1.5 - 0.5)
    assert [e["policy"] for e in a.errors] == ["step"]

    assert not b.higher and b.target == pytest.approx(1.9)
    rows = {(r.policy, r.selection): r for r in b.rows}
    learned = rows[("metalr", "default")]
    assert learned.ranked and learned.scale == 1.0 and learned.steps_to_target == 30
    assert learned.rank == 1.0  # 1.7 bits beats cosine's 1.9 and dog's 2.7
    assert learned.robustness == math.inf  # diverged at x3
    assert not rows[("metalr", "tuned")].ranked and rows[("metalr", "tuned")].scale == 1.0
    dog = rows[("dog", "default")]
    assert dog.steps_to_target is None and dog.reached == 0 and dog.robustness is None
    assert dog.rank == 3.0


# --- the store and the report ---------------------------------------------------------------

def test_store_keeps_one_row_per_cell_and_retries_errors(tmp_path):
    recs = small_records()
    with Store(tmp_path / "s.sqlite") as store:
        assert store.put(recs[0]) and not store.put({**recs[0], "wall_time": 99.0})
        error = {**recs[0], "policy": "x", "status": "error", "error": "E"}
        assert store.put(error) and store.put({**error, "status": "ok"})
        assert store.count() == 2 and store.integrity() == "ok"
        assert store.records()[0]["wall_time"] == 2.0
        assert ("taskA", "x", 1.0, 0) in store.finished()
    with Store(tmp_path / "s.sqlite") as store:  # a diverged cell's NaN must not break a later bench
        assert store.put({**recs[0], "policy": "y", "status": "diverged", "final_test_loss": math.nan,
                          "fingerprint": "abc"})
        assert store.fingerprints()["y"] == {"abc"}
        assert math.isnan([r for r in store.records() if r["policy"] == "y"][0]["final_test_loss"])
    (tmp_path / "junk.sqlite").write_text("not a database at all, just text" * 10)
    with pytest.raises(MetalrError, match="not a metalr results store"):
        Store(tmp_path / "junk.sqlite")
    with pytest.raises(MetalrError, match="no results store"):
        Store(tmp_path / "missing.sqlite", create=False)


def test_report_from_a_small_store(tmp_path):
    recs = small_records()
    with Store(tmp_path / "r.sqlite") as store:
        for r in recs:
            store.put(r)
        store.set_meta("config", {"title": "tiny", "notes": {"taskB": "a text task"},
                                  "tasks": ["taskA", "taskB"], "policies": ["cosine"]})
    paths = write_report(tmp_path / "r.sqlite", tmp_path / "rep")
    for name in ("lr_curves", "val_curves", "lr_sensitivity", "steps_to_target"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert text.startswith("# tiny") and "### taskB: a text task" in text
    assert "ValueError: boom" in text and "![lr_curves](lr_curves.png)" in text
    rows = list(csv.DictReader(open(paths["cells"])))
    assert len(rows) == len(recs)
    stored = {(r["task"], r["policy"], r["scale"], r["seed"]): r for r in recs}
    for row in rows:
        rec = stored[(row["task"], row["policy"], float(row["scale"]), int(row["seed"]))]
        assert row["status"] == rec["status"]
        if rec["status"] == "error":
            continue
        assert float(row["final_test_metric"]) == rec["final"]["test_metric"] or \
            math.isnan(rec["final"]["test_metric"])
        assert float(row["final_test_loss"]) == rec["final"]["test_loss"]
        assert float(row["wall_time"]) == rec["wall_time"]
    summary = {(r["task"], r["policy"], r["selection"]): r
               for r in csv.DictReader(open(paths["summary"]))}
    assert float(summary[("taskA", "cosine", "tuned")]["final_test_metric"]) == \
        pytest.approx(0.81)
    assert summary[("taskB", "metalr", "default")]["rank"] == "1.0"
    assert cli_main(["report", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "re")]) == 0
    assert (tmp_path / "re" / "cells.csv").read_text() == paths["cells"].read_text()
    # a bench sharing the store reports its own cells only (here: seed 0), and its means are theirs
    own = {(r["task"], r["policy"], r["scale"], r["seed"]) for r in recs if r["seed"] == 0}
    assert len(own) < len(recs)
    mine = write_report(tmp_path / "r.sqlite", tmp_path / "mine", cells=own)
    assert {(r["task"], r["policy"], float(r["scale"]), int(r["seed"]))
            for r in csv.DictReader(open(mine["cells"]))} == own
    assert {r["seeds"] for r in csv.DictReader(open(mine["summary"])) if r["seeds"]} == {"1"}


def test_wandb_logs_cells_and_only_warns_on_failure(tmp_path, monkeypatch):
    from metalr.bench.wandb_log import WandbCells

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbCells("metalr-test", "bench-test", tmp_path)
    assert logger.mode == "disabled"
    logger(small_records()[0])
    assert logger.wandb is not None

    def broken(**kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(logger.wandb, "init", broken)
    with pytest.warns(UserWarning, match="no network"):
        logger(small_records()[1])
    assert logger.wandb is None
    logger(small_records()[2])  # off for the rest of the bench: no second warning


# --- a real bench: resume after kills -------------------------------------------------------

TASK = "mnist1d-mlp:epochs=1"
POLICIES = ["cosine", "knee", "metalr:checkpoint=ck.json", "sf-sgd"]


def bench_args(store="runs/r.sqlite"):
    return [sys.executable, "-m", "metalr.cli", "bench", "--tasks", TASK, "--policies",
            *POLICIES, "--seeds", "2", "--lr-grid", "0.5,2", "--workers", "1",
            "--eval-points", "50", "--store", store, "--no-progress"]


def expected_keys():
    keys = set()
    for seed in (0, 1):
        keys |= {(TASK, p, s, seed) for p in ("cosine", "knee") for s in (0.5, 2.0)}
        keys |= {(TASK, POLICIES[2], s, seed) for s in (0.5, 1.0, 2.0)}
        keys.add((TASK, "sf-sgd", 1.0, seed))
    return keys


def stored_count(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for(proc: subprocess.Popen, path: Path, count: int) -> int:
    """Wait until the store at ``path`` holds at least ``count`` cells; return how many."""
    deadline = time.time() + 60
    while (n := stored_count(path)) < count:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, f"fewer than {count} cells stored within 60 s"
        time.sleep(0.02)
    return n


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def check_store(path: Path) -> list[dict]:
    with Store(path, create=False) as store:
        assert store.integrity() == "ok"
        recs = store.records()
    keys = [(r["task"], r["policy"], r["scale"], r["seed"]) for r in recs]
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys()
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    return recs


@pytest.fixture
def checkpoint_dir(tmp_path):
    from metalr.learned import checkpoint
    from metalr.learned.network import CONFIGS, ScheduleNet

    torch.manual_seed(0)
    checkpoint.save(ScheduleNet(CONFIGS["default"]), tmp_path / "ck")
    return tmp_path


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_resume_after_killing_a_worker_and_the_bench(checkpoint_dir, capsys, monkeypatch):
    tmp_path = checkpoint_dir
    store_path = tmp_path / "runs/r.sqlite"
    proc = subprocess.Popen(bench_args(), cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    n = wait_for(proc, store_path, 1)
    server = [c for c in children(proc.pid)
              if b"forkserver" in Path(f"/proc/{c}/cmdline").read_bytes()]
    workers = children(server[0])  # workers are forked by the forkserver
    assert len(workers) == 1 and n < len(expected_keys())
    os.kill(workers[0], signal.SIGKILL)  # one worker dies: the bench restarts its pool
    wait_for(proc, store_path, stored_count(store_path) + 1)
    os.killpg(proc.pid, signal.SIGKILL)  # then the bench and its workers, all at once
    proc.wait()
    assert "a worker process died; restarting the pool" in proc.stdout.read()
    before = stored_count(store_path)
    assert 2 <= before < len(expected_keys()), "the kill must land mid-run"
    with Store(store_path, create=False) as store:
        assert store.integrity() == "ok"
        kept = {(r["policy"], r["scale"], r["seed"]): r["wall_time"] for r in store.records()}

    rerun = subprocess.run(bench_args(), cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{before} already stored" in rerun.stdout
    recs = check_store(store_path)
    for r in recs:  # cells stored before the kill were skipped, not rerun
        key = (r["policy"], r["scale"], r["seed"])
        if key in kept:
            assert r["wall_time"] == kept[key]
    learned = [r for r in recs if r["category"] == "learned"]
    assert {r["fingerprint"] for r in learned} == \
        {json.loads((tmp_path / "ck.json").read_text())["sha256"]}
    assert (tmp_path / "runs" / "report.md").exists()

    monkeypatch.chdir(tmp_path)  # the same command once more, in-process: nothing left to run
    assert cli_main(bench_args()[3:]) == 0
    assert f"{len(expected_keys())} already stored, 0 run" in capsys.readouterr().out


# --- CLI errors: one line, exit 2 -----------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--tasks", "mnist1d-mlp", "--policies", "nosuch"], "unknown policy 'nosuch'"),
    (["--tasks", "nosuch", "--policies", "cosine"], "unknown task 'nosuch'"),
    (["--tasks", "mnist1d-mlp", "--policies", "cosine", "--lr-grid", "0.3,abc"], "--lr-grid"),
    (["--tasks", "mnist1d-mlp", "--policies", "cosine", "--lr-grid", "0,1"], "--lr-grid"),
    (["--tasks", "mnist1d-mlp", "--policies", "cosine", "--seeds", "0"], "--seeds"),
    (["--tasks", "mnist1d-mlp", "--policies", "knee:nope=1"], "has no parameter"),
    (["--tasks", "mnist1d-mlp", "--policies", "metalr:checkpoint=missing.json"],
     "no checkpoint"),
    (["--config", "missing.json"], "bench configuration missing.json is missing"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, extra, message):
    code = cli_main(["bench", "--store", str(tmp_path / "s.sqlite"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("metalr:")
    assert not (tmp_path / "s.sqlite").exists()


def test_cli_report_errors_and_checkpoint_change(checkpoint_dir, capsys, monkeypatch):
    tmp_path = checkpoint_dir
    assert cli_main(["report", str(tmp_path / "none.sqlite")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with Store(tmp_path / "s.sqlite") as store:
        store.put({**record(TASK, POLICIES[2], 1.0, 0, [0.5]), "fingerprint": "0" * 64})
    monkeypatch.chdir(tmp_path)
    code = cli_main(["bench", "--tasks", TASK, "--policies", POLICIES[2], "--store", "s.sqlite"])
    err = capsys.readouterr().err
    assert code == 2 and "another checkpoint" in err and err.count("\n") == 1


def test_plan_checks_policies_at_each_tasks_budget_and_reads_checkpoint_paths():
    from metalr.bench.plan import BenchConfig, expand, fingerprint

    long_part = "composite:parts=tri(l=100;ratio=4)/exp(gamma=0.999),boundaries=500"
    assert len(expand(BenchConfig(tasks=["mnist1d-mlp"], policies=[long_part], seeds=1))) == 3
    with pytest.raises(MetalrError):  # the boundary lies past cancer-mlp's 480 steps
        expand(BenchConfig(tasks=["mnist1d-mlp", "cancer-mlp"], policies=[long_part], seeds=1))
    from metalr.learned.checkpoint import DEFAULT_CHECKPOINT

    path = Path(__file__).resolve().parent.parent / "pretrained" / f"{DEFAULT_CHECKPOINT}.json"
    assert fingerprint(f"metalr:checkpoint={path}") == fingerprint("metalr")
