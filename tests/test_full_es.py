"""Full-horizon ES: the estimator, shared episodes, workers, resume, schemas and bad input."""

import dataclasses
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler
from metalr.learned.train import full_es
from metalr.learned.train.config import MetaTrainConfig, flag
from metalr.learned.train.distribution import TaskDistribution
from metalr.learned.train.outer_loop import _claimed, meta_train_es
from metalr.trainer import TrainResult

ROOT = Path(__file__).resolve().parent.parent
# A run small enough for a test: cheap families, episodes of 20-40 steps.
TINY = dict(estimator="es", tasks="mnist1d-mlp,cancer-mlp", pairs=2, meta_steps=3, budget_min=20, budget_max=40,
            eval_every=0, save_every=1, meta_lr=0.05)


def test_antithetic_estimate_points_along_the_true_gradient_of_a_quadratic():
    dim = 20
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=gen)
    hess = a @ a.T / dim + torch.eye(dim)
    b = torch.randn(dim, generator=gen)
    theta = torch.randn(dim, generator=gen)
    sigma, n = 1e-3, 2000

    def f(x):
        return float(0.5 * x @ hess @ x + b @ x)

    seeds = [full_es.derive_seed(7, i) for i in range(n)]
    diffs = []
    for s in seeds:
        eps = full_es.noise(dim, s)
        diffs.append([f(theta + sigma * eps), f(theta - sigma * eps)])
    true = hess @ theta + b
    # raw differences: an unbiased estimate, magnitude included
    d = full_es.pair_differences(diffs)
    assert d == [a - b for a, b in diffs]
    estimate = full_es.gradient(dim, seeds, d, sigma)
    assert float(estimate.norm() / true.norm()) == pytest.approx(1.0, abs=0.25)
    assert float(estimate @ true / (estimate.norm() * true.norm())) > 0.9


def test_fitness_is_the_final_loss_relative_to_the_initial_one_capped_for_divergence():
    assert full_es.normalised(0.5, False, 2.0) == 0.25
    assert full_es.normalised(9.0, False, 2.0) == full_es.CAP  # made far worse: capped
    for loss, diverged in ((math.nan, False), (math.inf, False), (0.1, True)):
        assert full_es.normalised(loss, diverged, 2.0) == full_es.CAP
    assert full_es.normalised(0.5, False, math.nan) == full_es.CAP
    # a near-perfect classifier's last-bit swing weighs little, a collapse to chance a lot
    chance = math.log(10)
    small = full_es.normalised(0.01, False, chance) - full_es.normalised(0.02, False, chance)
    collapse = full_es.normalised(chance, False, chance) - full_es.normalised(0.3, False, chance)
    assert abs(small) < 0.005 and collapse > 0.85


def test_clipped_differences_bound_a_collapsing_pair_and_keep_the_small_ones():
    table = [[0.30, 0.31], [1.0, 0.2], [0.2, 1.0], [0.5, 0.5]]
    assert full_es.pair_differences(table, clip=0.05) == pytest.approx([-0.01, 0.05, -0.05, 0.0])
    assert full_es.pair_differences(table, clip=0.0) == pytest.approx([-0.01, 0.8, -0.8, 0.0])
    # a gradient of small smooth effects is unchanged by the clip: the quadratic's estimate
    dim, sigma = 5, 1e-3
    seeds = [full_es.derive_seed(3, i) for i in range(500)]
    rows = [[float((sigma * full_es.noise(dim, s)).sum()), float((-sigma * full_es.noise(dim, s)).sum())]
            for s in seeds]
    clipped = full_es.gradient(dim, seeds, full_es.pair_differences(rows, clip=0.05), sigma)
    assert torch.allclose(clipped, full_es.gradient(dim, seeds, full_es.pair_differences(rows), sigma))
    assert torch.allclose(clipped, torch.ones(dim), atol=0.2)


def test_fitness_over_the_last_evaluations_averages_their_ratios_and_caps_a_divergence():
    result = TrainResult("t", "p", 0, "accuracy", val_loss=[2.0, 1.0, 0.6, 0.2])
    assert full_es.fitness(result, 2.0) == pytest.approx(0.1)  # the final loss alone
    assert full_es.fitness(result, 2.0, evaluations=3) == pytest.approx((0.5 + 0.3 + 0.1) / 3)
    result.diverged = True
    assert full_es.fitness(result, 2.0, evaluations=3) == full_es.CAP
    # the averaged losses are the last 15% of the run, 5% apart; one evaluation: the last step
    assert full_es.fitness_steps(400, 4) == [340, 360, 380, 400]
    assert full_es.fitness_steps(37, 1) == [37]
    config = CONFIGS["default"]
    episode = TaskDistribution(["mnist1d-mlp"], 40, 40, 1.0, 1.0, 0.0, 0.0).sample(2)
    run = full_es.run_episode(full_es.network_at(config, full_es.flat(ScheduleNet(config))), episode,
                              evaluations=4)
    assert run.eval_step[-4:] == full_es.fitness_steps(40, 4)


def test_reference_loss_is_the_validation_loss_of_the_episodes_initial_model():
    dist = TaskDistribution(["mnist1d-mlp"], 30, 30, 1.0, 1.0, 0.0, 0.0)
    episode = dist.sample(5)
    reference = full_es.reference_loss(episode)
    full_es.reference_loss.cache_clear()
    torch.manual_seed(123)  # whatever the global RNG holds: a function of the episode alone
    assert reference == full_es.reference_loss(episode)
    # ten balanced classes at init: close to chance, log(10)
    assert reference == pytest.approx(math.log(10), rel=0.05)
    # a vanishing LR leaves the model at its init: the fitness of such a run is 1
    config = CONFIGS["default"]
    frozen = full_es.run_episode(full_es.network_at(config, full_es.flat(ScheduleNet(config))),
                                 dataclasses.replace(episode, lr=1e-12))
    assert full_es.fitness(frozen, reference) == pytest.approx(1.0, abs=1e-6)


def test_antithetic_members_share_init_batches_and_noise_but_not_lrs():
    dist = TaskDistribution(["mnist1d-mlp"], 30, 30, 1.0, 1.0, 0.4, 0.0)
    episode = dist.sample(3)
    config = CONFIGS["default"]
    theta = full_es.flat(ScheduleNet(config))
    eps = full_es.noise(theta.numel(), 11)
    plus = full_es.run_episode(full_es.network_at(config, theta + 0.5 * eps), episode)
    minus = full_es.run_episode(full_es.network_at(config, theta - 0.5 * eps), episode)
    # Same init and first batch: the first loss (before any LR acts) is identical; then the
    # different LRs the two networks emit make the runs differ.
    assert plus.train_loss[0] == minus.train_loss[0]
    assert plus.lr[1:] != minus.lr[1:]
    assert plus.train_loss[-1] != minus.train_loss[-1]
    # and the episode is a function of its seed alone
    assert dist.sample(3) == episode and dist.sample(4) != episode


def test_episodes_cover_the_distribution():
    dist = TaskDistribution(["mnist1d-mlp", "cancer-mlp"], 200, 5000, 0.1, 10.0, 0.4, 0.25)
    eps = [dist.sample(s) for s in range(400)]
    assert {e.family for e in eps} == {"mnist1d-mlp", "cancer-mlp"}
    assert {(e.optimizer, e.momentum) for e in eps} == {("sgd", 0.9), ("sgd", 0.0), ("adam", 0.0),
                                                         ("adamw", 0.0)}
    scales = sorted(e.lr_scale for e in eps)
    assert 0.1 <= scales[0] < 0.15 and 7 < scales[-1] <= 10
    assert 200 <= min(e.budget for e in eps) < 260 and 4000 < max(e.budget for e in eps) <= 5000
    assert 0.15 < sum(not e.show_budget for e in eps) / len(eps) < 0.35
    assert 0.35 < sum(e.noise > 0 for e in eps) / len(eps) < 0.65


def _weights(out: Path, name: str = "metalr-es") -> dict:
    net, _ = checkpoint.load(out / f"{name}.json")
    return net.state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_lone_process_runs_every_item_longest_budget_first():
    # Under torch.distributed the processes claim items in this order from a shared counter;
    # the two-worker test below checks that every item is run exactly once.
    assert list(_claimed([100, 900, 300, 900], "k")) == [1, 3, 2, 0]


def test_two_workers_give_the_same_network_as_one(tmp_path):
    one = meta_train_es(MetaTrainConfig(workers=1, **TINY), tmp_path / "one", progress=False)
    two = meta_train_es(MetaTrainConfig(workers=2, **TINY), tmp_path / "two", progress=False)
    assert one["workers"] == 1 and two["workers"] == 2
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert _same(a, b)
    assert not _same(a, ScheduleNet(CONFIGS["default"]).state_dict())  # and it moved


def _cli_args(out: Path, steps: int) -> list[str]:
    opts = {**TINY, "meta_steps": steps, "workers": 1}
    return [sys.executable, str(ROOT / "train_meta.py"), *(f"{flag(k)}={v}" for k, v in opts.items()),
            f"--out={out}"]


def test_a_killed_run_resumes_to_the_uninterrupted_network(tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(_cli_args(whole, 4), check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli_args(killed, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "metalr-es.state.safetensors"
    deadline = time.time() + 240
    while time.time() < deadline and not state.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (killed / "metalr-es.json").exists()
    out = subprocess.run(_cli_args(killed, 4), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert _same(_weights(whole), _weights(killed))
    steps = [line.split(",")[0] for line in (killed / "metalr-es.metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]  # rows of the lost interval are not duplicated


@pytest.mark.parametrize("name,schema", [("default", "hyper-v4"), ("capped", "hyper-v4"), ("knee", "hyper-v4"),
                                         ("knee-raise", "hyper-v5"), ("default-v3", "hyper-v3"),
                                         ("default-v2", "hyper-v2")])
def test_hyper_schemas_round_trip_through_a_checkpoint(tmp_path, name, schema):
    torch.manual_seed(1)
    net = ScheduleNet(CONFIGS[name])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
        net.head.bias.sub_(1.5)  # below the capped network's cap, so its LRs move too
    path = checkpoint.save(net, tmp_path / name)
    loaded, config = checkpoint.load(path)
    assert config["feature_schema"] == schema and config["net"]["skip"] is True
    assert _lrs(net, steps=50) == _lrs(loaded, steps=50)
    assert len(set(_lrs(net, steps=50))) > 5
    if schema != "hyper-v2":  # it reads the optimizer's kind; v2 cannot
        assert _lrs(net, steps=50, adam=True) != _lrs(net, steps=50)


def _lrs(net, steps=12, adam=False):
    param = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.Adam(param, lr=0.1) if adam else torch.optim.SGD(param, lr=0.1)
    sched = MetaLRScheduler(opt, net, total_steps=50)
    out = []
    for t in range(steps):
        opt.step()
        sched.step(2.3 * math.exp(-0.05 * t) + 0.1 * math.sin(t))
        out.append(sched.get_last_lr()[0])
    return out


def test_transfer_v1_networks_give_the_lrs_they_gave_before_the_v2_schema():
    # Computed with metalr 0.1.0 (commit 5aa9ecc), the same construction and loss stream.
    before = [0.0913866931163, 0.0817130006422, 0.0706849671408, 0.0646091216497, 0.0617512190363,
              0.0602176340734, 0.0593172837902, 0.0588158796004, 0.0586834687289, 0.0595501292227,
              0.0624023909697, 0.0677850609783]
    torch.manual_seed(0)
    net = ScheduleNet(CONFIGS["transfer-v1"])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert _lrs(net) == pytest.approx(before, rel=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--tasks=,"], "--tasks is empty"),
    (["--lr-scale-min=-1"], "--lr-scale-min must be a finite number > 0, got -1.0"),
    (["--lr-scale-min=3", "--lr-scale-max=2"], "--lr-scale-max (2.0) must be >= --lr-scale-min (3.0)"),
    (["--budget-min=500", "--budget-max=100"], "--budget-max (100) must be >= --budget-min (500)"),
    (["--workers=0"], "--workers must be a positive integer"),
    (["--estimator=pes"], "--estimator must be one of es, unroll, hybrid, lookahead"),
    (["--name=.."], "--name must be a plain file name"),
    (["--tasks=mnist1d-mlp:noise=2"], "noise"),
    (["--net=paper"], "--net=paper emits an absolute LR"),
    (["--diff-clip=-1"], "--diff-clip must be a finite number >= 0"),
    (["--fitness-evals=0"], "--fitness-evals must be an integer in [1, 20]"),
    (["--fitness-evals=21"], "--fitness-evals must be an integer in [1, 20]"),
])
def test_bad_options_are_one_line_and_exit_2(args, message, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train_meta.py"), *args, f"--out={tmp_path / 'o'}"],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_a_directory_holding_another_runs_state_is_refused(tmp_path):
    out = tmp_path / "run"
    subprocess.run(_cli_args(out, 1), check=True, capture_output=True, timeout=300)
    (out / "metalr-es.json").unlink()  # as if the run had been killed after its state write
    before = (out / "metalr-es.metrics.csv").read_text()
    proc = subprocess.run(_cli_args(out, 2) + ["--sigma=0.2"], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert "holds the state of another run (different sigma)" in lines[0]
    assert (out / "metalr-es.metrics.csv").read_text() == before  # nothing touched
