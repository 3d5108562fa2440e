"""MetaLRScheduler: the LRScheduler contract, checkpoints, resume, bad losses, determinism."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from metalr.learned import checkpoint
from metalr.errors import MetalrError
from metalr.learned.network import CONFIGS, ScheduleNet, paper_gamma
from metalr.learned.scheduler import MetaLRScheduler


def _net(kind="default", seed=0):
    torch.manual_seed(seed)
    net = ScheduleNet(CONFIGS[kind])
    with torch.no_grad():  # move away from the init so the output actually varies
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net


def _losses(n, seed=0):
    g = np.random.default_rng(seed)
    return [float(2.3 * math.exp(-3 * i / n) * (1 + 0.1 * g.standard_normal())) for i in range(n)]


def _two_group_opt(kind="sgd", lrs=(0.1, 0.01)):
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    groups = [{"params": a.parameters(), "lr": lrs[0]}, {"params": b.parameters(), "lr": lrs[1]}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lrs[0])
    if kind == "sgd-momentum":
        return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind](groups, lr=lrs[0])


def _run(sched, opt, losses):
    lrs = []
    for loss in losses:
        opt.step()
        sched.step(loss)
        lrs.append(sched.get_last_lr())
    return lrs


@pytest.mark.parametrize("kind", ["sgd", "sgd-momentum", "adam", "adamw"])
def test_two_param_groups_keep_their_ratio(kind):
    opt = _two_group_opt(kind, (0.1, 0.01) if kind.startswith("sgd") else (1e-3, 5e-4))
    sched = MetaLRScheduler(opt, _net(), total_steps=60)
    lrs = _run(sched, opt, _losses(60))
    ratios = [a / b for a, b in lrs]
    assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-12)
    assert [g["lr"] for g in opt.param_groups] == lrs[-1]
    assert len({round(a, 12) for a, _ in lrs}) > 30, "the LR should move with the loss"
    lo, hi = CONFIGS["default"].lo, CONFIGS["default"].hi
    base = opt.param_groups[0]["initial_lr"]
    assert all(lo * base <= a <= hi * base for a, _ in lrs)


def test_first_step_runs_at_initial_lr_and_multiplier_scales_it():
    opt = _two_group_opt("sgd", (0.2, 0.05))
    sched = MetaLRScheduler(opt, _net(), total_steps=10)
    assert sched.get_last_lr() == [0.2, 0.05]
    opt2 = _two_group_opt("sgd", (20.0, 5.0))
    sched2 = MetaLRScheduler(opt2, _net(), total_steps=10)
    a, b = _run(sched, opt, _losses(10)), _run(sched2, opt2, _losses(10))
    np.testing.assert_allclose(np.array(b), 100 * np.array(a), rtol=1e-12)


def test_same_seed_same_trajectory_and_budget_changes_it():
    runs = [_run(MetaLRScheduler(o, _net(seed=3), total_steps=50), o, _losses(50, seed=1))
            for o in (_two_group_opt(), _two_group_opt())]
    assert runs[0] == runs[1]
    opt = _two_group_opt()
    unknown = _run(MetaLRScheduler(opt, _net(seed=3)), opt, _losses(50, seed=1))
    assert unknown != runs[0]


def test_checkpoint_round_trip_gives_identical_lrs(tmp_path):
    net = _net(seed=5)
    checkpoint.save(net, tmp_path / "ck", meta_training={"tasks": ["x"]})
    opt_a, opt_b = _two_group_opt(), _two_group_opt()
    a = _run(MetaLRScheduler(opt_a, net, total_steps=40), opt_a, _losses(40))
    loaded = MetaLRScheduler.from_pretrained(str(tmp_path / "ck.json"), opt_b, total_steps=40)
    assert _run(loaded, opt_b, _losses(40)) == a
    for p, q in zip(net.parameters(), loaded.net.parameters()):
        assert torch.equal(p, q)


def test_state_dict_resume_continues_identical_trajectory(tmp_path):
    checkpoint.save(_net(seed=2), tmp_path / "ck")
    losses = _losses(80, seed=4)
    opt = _two_group_opt("adam", (1e-3, 1e-4))
    full = _run(MetaLRScheduler.from_pretrained(str(tmp_path / "ck"), opt, total_steps=80), opt, losses)

    opt1 = _two_group_opt("adam", (1e-3, 1e-4))
    first = MetaLRScheduler.from_pretrained(str(tmp_path / "ck"), opt1, total_steps=80)
    head = _run(first, opt1, losses[:30])
    path = tmp_path / "state.pt"
    torch.save({"sched": first.state_dict(), "opt": opt1.state_dict()}, path)

    opt2 = _two_group_opt("adam", (1e-3, 1e-4))
    saved = torch.load(path, weights_only=True)
    opt2.load_state_dict(saved["opt"])
    resumed = MetaLRScheduler.from_pretrained(str(tmp_path / "ck"), opt2, total_steps=80)
    resumed.load_state_dict(saved["sched"])
    assert resumed.get_last_lr() == head[-1]
    assert head + _run(resumed, opt2, losses[30:]) == full


def test_state_from_another_checkpoint_is_refused(tmp_path):
    checkpoint.save(_net(seed=1), tmp_path / "a")
    checkpoint.save(_net(seed=2), tmp_path / "b")
    opt = _two_group_opt()
    a = MetaLRScheduler.from_pretrained(str(tmp_path / "a"), opt)
    b = MetaLRScheduler.from_pretrained(str(tmp_path / "b"), _two_group_opt())
    with pytest.raises(MetalrError, match="another checkpoint"):
        b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), -0.5, 0.0])
def test_bad_losses_hold_the_lr_and_warn_once(bad):
    opt = _two_group_opt()
    sched = MetaLRScheduler(opt, _net(), total_steps=30)
    _run(sched, opt, _losses(10))
    held = sched.get_last_lr()
    state = json.dumps(sched.state_dict()["features_state"])
    with pytest.warns(RuntimeWarning, match="Holding the last LR"):
        sched.step(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        sched.step(torch.tensor(bad))
    assert sched.get_last_lr() == held
    assert json.dumps(sched.state_dict()["features_state"]) == state
    after = _run(sched, opt, _losses(10))
    assert all(math.isfinite(a) and math.isfinite(b) for a, b in after)


def test_paper_network_follows_gamma_rule():
    opt = _two_group_opt("sgd", (0.1, 0.05))
    sched = MetaLRScheduler(opt, _net("paper"), num_classes=10)
    lrs = _run(sched, opt, _losses(20))
    gamma = paper_gamma(_losses(20)[0], 10)
    assert sched.gamma == pytest.approx(gamma)
    assert all(0 < a < gamma and b == pytest.approx(a / 2) for a, b in lrs)
    # CIFAR-10 at L0 = ln 10 gives about 0.67 (REFERENCE §1).
    assert paper_gamma(math.log(10), 10) == pytest.approx(0.67, abs=0.01)
    with pytest.raises(ValueError, match="L0 > 1/C"):
        paper_gamma(0.05, 10)
    with pytest.raises(MetalrError, match="num_classes"):
        MetaLRScheduler(_two_group_opt(), _net("paper"))


@pytest.mark.parametrize("kind", ["default", "transfer-v1", "paper"])
def test_numpy_fast_path_matches_torch_cell(kind):
    net = _net(kind).double()
    x = np.linspace(-0.3, 1.0, net.config.inputs)
    state_np = net.initial_state(numpy=True)
    state_t = net.initial_state()
    state_t = tuple(s.double() for s in state_t)
    for _ in range(5):
        u_np, state_np = net.cell(x, state_np, net.weights(numpy=True))
        u_t, state_t = net.cell(torch.from_numpy(x), state_t)
        assert float(u_np) == pytest.approx(u_t.detach().item(), rel=1e-12)


def test_bad_total_steps_rejected():
    with pytest.raises(MetalrError, match="total_steps"):
        MetaLRScheduler(_two_group_opt(), _net(), total_steps=0)


def test_shipped_checkpoint_in_a_training_run_is_deterministic():
    import metalr

    runs = [metalr.train("mnist1d-mlp:epochs=2", "metalr", seed=s, eval_points=1) for s in (3, 3, 4)]
    assert runs[0].lr == runs[1].lr and runs[0].train_loss == runs[1].train_loss
    assert runs[0].lr != runs[2].lr
    base = runs[0].lr[0]
    assert base == 0.1 and all(1e-3 * base <= lr <= 2 * base for lr in runs[0].lr)
    assert len(set(runs[0].lr)) > 10
