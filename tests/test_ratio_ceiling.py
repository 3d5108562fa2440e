"""NetConfig.max_ratio: a raise above the base LR only while the update-to-weight ratio is small."""

import dataclasses
import math

import pytest
import torch

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet, log_ceiling
from metalr.learned.scheduler import MetaLRScheduler
from metalr.learned.train import full_es
from metalr.learned.train.distribution import Episode

CEILING = CONFIGS["knee-ceiling"]



def test_the_config_refuses_a_ceiling_it_cannot_apply():
    assert CEILING == dataclasses.replace(CONFIGS["knee-raise"], max_ratio=0.01)
    for bad, why in [(dict(max_ratio=0.0), "in \\(0, 1\\]"), (dict(max_ratio=2.0), "in \\(0, 1\\]"),
                     (dict(max_ratio="0.01"), "in \\(0, 1\\]"),
                     (dict(features="hyper-v4"), "needs a default net on a schema that reads it"),
                     (dict(max_multiplier=None), "needs a default net on a schema that reads it"),
                     (dict(kind="paper", shape=None, guard=None), "needs a default net"),
                     (dict(max_ratio_adaptive=0.0), "max_ratio_adaptive must be null or a number in"),
                     (dict(max_ratio_adaptive=1.5), "max_ratio_adaptive must be null or a number in"),
                     (dict(max_ratio=None, max_ratio_adaptive=0.03), "beside a max_ratio"),
                     (dict(shape=None, max_ratio_adaptive=0.03), "beside a max_ratio and a shape")]:
        with pytest.raises(MetalrError, match=why):
            dataclasses.replace(CEILING, **bad)


def test_the_ceiling_scales_the_product_by_the_ratios_headroom():
    # measured at product 2 with ratio 0.004: 2 * 0.01 / 0.004 = 5, clipped to the cap of 3
    assert log_ceiling(math.log(2.0), 0.004, 0.01, 3.0) == pytest.approx(math.log(3.0))
    assert log_ceiling(math.log(0.5), 0.004, 0.01, 3.0) == pytest.approx(math.log(1.25))
    assert log_ceiling(0.0, 0.05, 0.01, 3.0) == 0.0  # never below the base LR
    assert log_ceiling(-math.inf, 0.05, 0.01, 3.0) == 0.0  # measured at LR 0 (past the budget)
    assert log_ceiling(0.0, 0.0, 0.01, 3.0) == pytest.approx(math.log(3.0))  # a zero step
    products = torch.tensor([math.log(2.0), math.log(0.5), 0.0, -math.inf], dtype=torch.float64)
    ratios = torch.tensor([0.004, 0.004, 0.05, 0.05], dtype=torch.float64)
    assert log_ceiling(products, ratios, 0.01, 3.0).tolist() == pytest.approx(
        [log_ceiling(float(p), float(r), 0.01, 3.0) for p, r in zip(products, ratios)])
    # NetConfig.ratio_floor: a ratio over the ceiling cuts below the base LR, down to the floor
    assert log_ceiling(0.0, 0.05, 0.01, 3.0, least=0.1) == pytest.approx(math.log(0.2))
    assert log_ceiling(0.0, 0.5, 0.01, 3.0, least=0.1) == pytest.approx(math.log(0.1))
    assert log_ceiling(products, ratios, 0.01, 3.0, 0.1).tolist() == pytest.approx(
        [log_ceiling(float(p), float(r), 0.01, 3.0, 0.1) for p, r in zip(products, ratios)])


def test_a_ratio_floor_cuts_an_sgd_lr_whose_steps_are_too_large_and_leaves_adam_alone(raising_net):
    floored = dataclasses.replace(CEILING, ratio_floor=0.1)
    assert floored.least_ceiling(adaptive=False, budget_known=True) == 0.1
    assert floored.least_ceiling(adaptive=True, budget_known=True) == 1.0
    assert floored.least_ceiling(adaptive=False, budget_known=False) == 1.0  # the smaller ceiling: no cut
    # at grad 0.2 the base LR steps 2e-2, twice the ceiling: without a floor the base LR is held
    # (test above); with it the LR falls to about half the base, where the step is back at 1e-2
    cut = _run(raising_net(floored), 0.2)
    assert cut[-1] == pytest.approx(0.05, rel=2e-2) and min(cut) >= 0.1 * 0.1
    # at grad 5 the base LR steps 0.5 of the weights: the floor, 0.1x, binds
    assert _run(raising_net(floored), 5.0)[-1] == pytest.approx(0.01, rel=1e-9)
    # without the budget the SGD run takes the smaller ceiling and no cut: the base LR is held
    assert min(_run(raising_net(floored), 5.0, total_steps=None)) == pytest.approx(0.1, rel=1e-12)
    # a small ratio: the floor changes nothing
    assert _run(raising_net(floored), 1e-3) == _run(raising_net(CEILING), 1e-3)
    # under Adam the ratio follows the LR, not the stability: never cut below the base LR
    assert min(_run(raising_net(floored), 1.0, adam_lr=0.05)) >= 0.05 * (1 - 1e-12)
    for bad in (dict(ratio_floor=0.0), dict(ratio_floor=1.5), dict(ratio_floor="0.1"),
                dict(max_ratio=None, ratio_floor=0.1)):
        with pytest.raises(MetalrError, match="ratio_floor must be a number in"):
            dataclasses.replace(CEILING, **bad)


def test_a_raise_that_needs_the_budget_holds_the_base_lr_without_one_and_only_then(raising_net):
    # NetConfig.raise_needs_budget: at a small ratio the network raises with the budget known,
    # as without the field; without the budget it stays at the base LR, where the field's absence
    # lets it raise to the ceiling without a budget
    held = dataclasses.replace(CEILING, raise_needs_budget=True)
    assert max(_run(raising_net(held), 1e-3)) > 0.1 * 1.5
    assert _run(raising_net(held), 1e-3) == _run(raising_net(CEILING), 1e-3)
    without = _run(raising_net(held), 1e-3, total_steps=None)
    assert max(without) == pytest.approx(0.1, rel=1e-12) and max(_run(raising_net(CEILING), 1e-3, total_steps=None)) > 0.1 * 1.05
    for bad in (dict(raise_needs_budget=1), dict(raise_needs_budget="yes"), dict(max_multiplier=None, max_ratio=None,
                                                                                 raise_needs_budget=True)):
        with pytest.raises(MetalrError, match="raise_needs_budget must be true or false"):
            dataclasses.replace(CEILING, **bad)


def _run(net, grad_scale: float, steps: int = 60, adam_lr: float | None = None,
         total_steps: int | None = 1000) -> list[float]:
    """LRs of a run on the gradient ``grad_scale`` times the weights (1 at the start). Under SGD
    (LR 0.1) the update-to-weight ratio is ``grad_scale`` x LR; under Adam (``adam_lr``) each
    step moves every weight by about the LR, so the ratio is about the LR."""
    p = torch.nn.Parameter(torch.ones(100))
    opt = torch.optim.SGD([p], lr=0.1) if adam_lr is None else torch.optim.Adam([p], lr=adam_lr)
    sched = MetaLRScheduler(opt, net, total_steps=total_steps)
    lrs = []
    for step in range(steps):
        p.grad = grad_scale * p.detach()
        opt.step()
        sched.step(1.0 - 1e-3 * step)  # a slowly falling loss: the guard stays off
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_the_scheduler_raises_only_as_far_as_the_ratio_allows(raising_net):
    # ratio = LR * grad / 1: at grad 1e-3 the base LR 0.1 gives 1e-4, room for the whole 3x
    small = _run(raising_net(CEILING), 1e-3)
    assert max(small) == pytest.approx(0.3, rel=1e-9)
    # at grad 0.05 the base LR gives 5e-3: the ceiling 0.01 allows about 2x (1.98x: the weights
    # shrink by the step, |dw| / |w| = LR * g / (1 - LR * g)), reached at the rise limit and held
    mid = _run(raising_net(CEILING), 0.05)
    assert mid[-1] == pytest.approx(0.198, rel=2e-3) and max(mid) <= 0.1 * 2 * (1 - 0.005 * 1.6)
    # at grad 0.2 the base LR already steps 2e-2, over the ceiling: no raise at all
    large = _run(raising_net(CEILING), 0.2)
    assert max(large) == pytest.approx(0.1, rel=1e-12)
    # the same network without the ceiling raises there to the whole 3x
    assert max(_run(raising_net(CONFIGS["knee-raise"]), 0.2)) == pytest.approx(0.3, rel=1e-9)


def test_an_adaptive_optimizer_reads_its_own_ceiling(raising_net):
    both = dataclasses.replace(CEILING, max_ratio_adaptive=0.006)
    assert both.ratio_ceiling(adaptive=True, budget_known=True) == 0.006
    assert both.ratio_ceiling(adaptive=False, budget_known=True) == 0.01
    # no anneal to come: the smaller of the two, whatever the optimizer
    assert both.ratio_ceiling(adaptive=True, budget_known=False) == 0.006
    assert both.ratio_ceiling(adaptive=False, budget_known=False) == 0.006
    larger = dataclasses.replace(CEILING, max_ratio_adaptive=0.03)
    assert larger.ratio_ceiling(adaptive=True, budget_known=False) == 0.01
    assert larger.ratio_ceiling(adaptive=True, budget_known=True) == 0.03
    assert CEILING.ratio_ceiling(adaptive=False, budget_known=False) == 0.01  # one ceiling: always it
    assert CEILING.ratio_ceiling(adaptive=True, budget_known=True) == 0.01  # none given: max_ratio's
    # Adam at LR 0.004 steps a ratio of about 0.004: max_ratio 0.01 allows about 2.5x, the
    # adaptive ceiling 0.006 about 1.5x (the ratio grows a little as the weights shrink)
    shared = max(_run(raising_net(CEILING), 1.0, adam_lr=0.004))
    own = max(_run(raising_net(both), 1.0, adam_lr=0.004))
    assert 0.004 * 2.3 < shared <= 0.004 * 2.5 and 0.004 * 1.4 < own <= 0.004 * 1.5
    # under SGD the adaptive ceiling changes nothing while the budget is known; without it a
    # larger one changes nothing, and a smaller one binds SGD and Adam alike
    assert _run(raising_net(both), 0.05) == _run(raising_net(CEILING), 0.05)
    assert max(_run(raising_net(both), 0.05, total_steps=None)) < 0.98 * max(_run(raising_net(CEILING), 0.05, total_steps=None))
    no_budget = dict(adam_lr=0.004, total_steps=None)
    assert _run(raising_net(larger), 1.0, **no_budget) == _run(raising_net(CEILING), 1.0, **no_budget)
    assert max(_run(raising_net(larger), 1.0, **no_budget)) > 0.004 * 2.3
    assert 0.004 * 1.4 < max(_run(raising_net(both), 1.0, **no_budget)) <= 0.004 * 1.5


def test_the_ceiling_binds_in_a_training_run(raising_net):
    # the runs on which test_update_ratio checks the functional run against the scheduler
    episode = Episode("mnist1d-mlp", "adam", 0.0, 1.0, 3e-3, 60, 32, 0.0, True, 2)
    capped = full_es.run_episode(raising_net(CEILING, seed=2).float(), episode)
    free = full_es.run_episode(raising_net(CONFIGS["knee-raise"], seed=2).float(), episode)
    assert 3e-3 < max(capped.lr) < max(free.lr)


def test_the_ceiling_round_trips_through_a_checkpoint_and_a_scheduler_state(tmp_path, raising_net):
    net = raising_net(CEILING)
    checkpoint.save(net, tmp_path / "ceiling")
    loaded, _ = checkpoint.load(str(tmp_path / "ceiling.json"))
    assert loaded.config.max_ratio == 0.01
    checkpoint.save(raising_net(dataclasses.replace(CEILING, max_ratio_adaptive=0.03)), tmp_path / "both")
    assert checkpoint.load(str(tmp_path / "both.json"))[0].config.max_ratio_adaptive == 0.03
    p = torch.nn.Parameter(torch.ones(100))
    runs = []
    for resume in (False, True):
        opt = torch.optim.SGD([p], lr=0.1)
        with torch.no_grad():
            p.fill_(1.0)
        sched = MetaLRScheduler(opt, loaded, total_steps=1000)
        lrs = []
        for step in range(40):
            p.grad = 0.05 * p.detach()
            opt.step()
            sched.step(1.0 - 1e-3 * step)
            lrs.append(opt.param_groups[0]["lr"])
            if resume and step == 24:
                state = sched.state_dict()
                assert state["log_ceiling"] > 0
                sched = MetaLRScheduler(opt, loaded, total_steps=1000)
                sched.load_state_dict(state)
        runs.append(lrs)
    assert runs[0] == runs[1]
    state["log_ceiling"] = -1.0
    with pytest.raises(MetalrError, match="log_ceiling must be a finite number >= 0"):
        sched.load_state_dict(state)
    floored = MetaLRScheduler(opt, ScheduleNet(dataclasses.replace(loaded.config, ratio_floor=0.1)), total_steps=1000)
    floored.load_state_dict(state)  # log(0.1) <= -1: a cut the floor allows
    assert floored.log_ceiling == -1.0
    del state["log_ceiling"]  # a state saved before max_ratio: no raise until the next measurement
    sched.load_state_dict(state)
    assert sched.log_ceiling == 0.0


def test_without_the_budget_both_runs_fall_back_to_max_ratio_under_adam(raising_net):
    # the functional inner run (meta-training's) and the scheduler agree, and both run the
    # single-ceiling network's LRs: without the budget there is no anneal to bring a raise down
    from metalr.learned.train import unroll

    episode = Episode("mnist1d-mlp", "adam", 0.0, 1.0, 3e-3, 60, 32, 0.0, False, 2)
    adaptive = raising_net(dataclasses.replace(CEILING, max_ratio_adaptive=0.03), seed=2).float()
    trained = full_es.run_episode(adaptive, episode)
    assert unroll.episode_gradient(adaptive, episode).lr == pytest.approx(trained.lr, rel=1e-6)
    assert trained.lr == full_es.run_episode(raising_net(CEILING, seed=2).float(), episode).lr
    shown = dataclasses.replace(episode, show_budget=True)
    assert max(full_es.run_episode(adaptive, shown).lr) > max(trained.lr)
