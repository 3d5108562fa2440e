"""Meta-training end to end, the clean validation split, and the command line's errors."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metalr.learned import checkpoint
from metalr.learned.train.config import MetaTrainConfig, main as train_meta_main
from metalr.learned.train.lookahead import meta_train_lookahead as meta_train
from metalr.learned.scheduler import MetaLRScheduler
from metalr.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["mnist1d-mlp", "mnist1d-cnn"])
def test_validation_split_is_disjoint_from_training(name):
    task = get_task(name)
    train, val, test = (set(s.index.tolist()) for s in (task.train, task.val, task.test))
    assert not train & val and not train & test and not val & test
    assert len(val) == 500 and len(train) == 3500 and len(test) == 1000
    # and disjoint by content, not just by bookkeeping: no validation signal appears in training
    rows = {tuple(x.tolist()) for x in task.train.x}
    assert not any(tuple(x.tolist()) in rows for x in task.val.x)


def test_meta_training_writes_a_run_and_moves_the_network(tmp_path):
    cfg = MetaTrainConfig(estimator="lookahead", net="transfer-v1", epochs=3, runs_per_task=1, unroll=3, meta_interval=10, name="tiny",
                          meta_lr=1e-2)
    torch.manual_seed(cfg.seed)
    result = meta_train(cfg, tmp_path, command="python train_meta.py --epochs=3", progress=False)
    net, config = checkpoint.load(result["checkpoint"])
    assert config["meta_training"]["tasks"] == ["mnist1d-mlp", "mnist1d-cnn"]
    assert config["meta_training"]["inner_runs"] == 2
    assert config["meta_training"]["config"]["unroll"] == 3
    assert Path(result["plot"]).stat().st_size > 10_000
    with open(result["metrics"]) as fh:
        rows = list(csv.DictReader(fh))
    finals = [r for r in rows if r["test_metric"]]
    assert len(finals) == 2 and all(0.2 < float(r["test_metric"]) <= 1 for r in finals)
    meta = [float(r["meta_val_loss"]) for r in rows if r["meta_val_loss"] not in ("", "nan")]
    assert len(meta) > 10
    # the network has been updated: a step no longer emits the untrained multiplier of 1
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    sched = MetaLRScheduler(opt, net, total_steps=100)
    opt.step()
    sched.step(2.0)
    assert abs(sched.get_last_lr()[0] / 0.1 - 1.0) > 1e-3


def test_meta_training_is_deterministic(tmp_path):
    cfg = dict(estimator="lookahead", epochs=1, runs_per_task=1, unroll=2, meta_interval=5, tasks="mnist1d-mlp")
    a = meta_train(MetaTrainConfig(name="a", **cfg), tmp_path, progress=False)
    b = meta_train(MetaTrainConfig(name="b", **cfg), tmp_path, progress=False)
    net_a, _ = checkpoint.load(a["checkpoint"])
    net_b, _ = checkpoint.load(b["checkpoint"])
    for k, v in net_a.state_dict().items():
        assert torch.equal(v, net_b.state_dict()[k])


def test_existing_checkpoint_is_not_overwritten(tmp_path):
    cfg = MetaTrainConfig(estimator="lookahead", epochs=1, runs_per_task=1, tasks="mnist1d-mlp", unroll=2, meta_interval=10)
    meta_train(cfg, tmp_path, progress=False)
    before = (tmp_path / f"{cfg.name}.safetensors").read_bytes()
    assert train_meta_main(["--estimator=lookahead", "--epochs=1", "--runs-per-task=1", "--tasks=mnist1d-mlp", "--unroll=2",
                            f"--out={tmp_path}"]) == 2
    assert (tmp_path / f"{cfg.name}.safetensors").read_bytes() == before


def _cli(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--tasks=imagenet"], "unknown task 'imagenet'; accepted:"),
    (["--unroll=abc"], "argument --unroll: invalid int value: 'abc'"),
    (["--unroll=0"], "--unroll must be a positive integer"),
    (["--meta-lr=nan"], "--meta-lr must be a finite number > 0"),
    (["--tasks=mnist1d-mlp:epochs=x"], "epochs='x'"),
    (["--net=big"], "--net must be one of paper, default, capped, knee, knee-raise, knee-ceiling, knee-ceiling-adaptive, knee-lock, knee-lock-015, knee-floor, knee-raise-v4, default-v3, default-v2, transfer-v1"),
])
def test_cli_errors_are_one_line_and_exit_2(args, message):
    proc = _cli("train_meta.py", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_metalr_cli_lists_and_refuses_missing_checkpoint():
    proc = _cli("-m", "metalr.cli", "list", "pretrained")
    assert proc.returncode == 0 and "metalr-mnist1d" in proc.stdout
    proc = _cli("-m", "metalr.cli", "meta-train", "--help")
    assert proc.returncode == 0 and "--meta-interval" in proc.stdout and "--first-order" in proc.stdout
    proc = _cli("-c", "import metalr, torch; "
                "metalr.MetaLRScheduler.from_pretrained('missing.json', torch.optim.SGD([torch.zeros(1)], lr=1))")
    assert proc.returncode == 1 and "MetalrError: no checkpoint 'missing.json'" in proc.stderr


def test_wandb_flag_goes_offline_without_a_key_and_does_not_block(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    import time

    wandb.teardown()  # wandb keeps process-wide settings (its directory) from earlier runs

    from metalr.runlog import wandb_mode

    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert wandb_mode() == "offline"
    start = time.perf_counter()
    result = meta_train(MetaTrainConfig(estimator="lookahead", epochs=1, runs_per_task=1, tasks="mnist1d-mlp",
                                        unroll=2, meta_interval=10, wandb=True), tmp_path / "run", progress=False)
    assert time.perf_counter() - start < 60
    assert Path(result["metrics"]).exists()
    # beside the run's other logs in --out, not in the working directory
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert not (tmp_path / "wandb").exists()


def test_trainer_eval_time_leaves_evaluations_out():
    import metalr

    res = metalr.train("mnist1d-mlp:epochs=2", None, seed=0, eval_points=4)
    assert len(res.eval_time) == len(res.eval_step) == 4
    assert all(b > a for a, b in zip(res.eval_time, res.eval_time[1:]))
    assert 0 < res.eval_time[-1] < res.wall_time
