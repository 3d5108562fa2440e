"""NetConfig.collapse_guard: a run whose loss came back near its start never raises again."""

import dataclasses

import pytest
import torch

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler
from metalr.learned.train import full_es, unroll
from metalr.learned.train.distribution import Episode

CEILING = dataclasses.replace(CONFIGS["knee-ceiling"], max_ratio=0.03)
GUARDED = dataclasses.replace(CEILING, collapse_guard=0.1)


def _raising_net(config=GUARDED, seed: int = 0) -> ScheduleNet:
    """A network that asks for the most it may have (its head's bias far positive)."""
    torch.manual_seed(seed)
    net = ScheduleNet(config)
    with torch.no_grad():
        net.head.bias.fill_(8.0)
    return net


def _losses(rise_at: int, to: float = 1.2, steps: int = 200) -> list[float]:
    """A loss falling from 1 to 0.5 by step 30 and on, that jumps to ``to`` (above its start: a
    collapse) at ``rise_at`` for 25 steps and then falls on."""
    return [to if rise_at <= s < rise_at + 25 else 0.5 ** min(s / 30, 1) * (1.0 - 2e-3 * s)
            for s in range(steps)]


def _run(net, losses, grad_scale: float = 1e-3, sched_state=None) -> tuple[list[float], MetaLRScheduler]:
    """LRs under SGD at base LR 0.1 on the gradient ``grad_scale`` x the weights (the ratio is
    about 0.1 x ``grad_scale``: 1e-3 leaves room for the whole 3x, 0.5 for none)."""
    p = torch.nn.Parameter(torch.ones(100))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = MetaLRScheduler(opt, net, total_steps=1000)
    lrs = []
    for loss in losses:
        p.grad = grad_scale * p.detach()
        opt.step()
        sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, sched


def test_the_config_refuses_a_collapse_guard_it_cannot_apply():
    for bad, why in [(dict(collapse_guard=0.0), "in \\(0, 1\\)"), (dict(collapse_guard=1.0), "in \\(0, 1\\)"),
                     (dict(collapse_guard="0.1"), "in \\(0, 1\\)"),
                     (dict(max_multiplier=None, max_ratio=None), "beside a max_multiplier"),
                     (dict(features="loss-v1", kind="paper", shape=None, guard=None, max_ratio=None,
                           max_rise=None, skip=False), "on a schema with rel_loss")]:
        with pytest.raises(MetalrError, match=why):
            dataclasses.replace(GUARDED, **bad)


def test_a_loss_back_at_its_start_ends_every_raise():
    losses = _losses(rise_at=60)
    guarded, sched = _run(_raising_net(), losses)
    free, _ = _run(_raising_net(CEILING), losses)
    assert guarded[:60] == free[:60] and max(free[:60]) == pytest.approx(0.3)  # raised to the cap
    assert sched.raise_locked
    # the guard halves the LR on the jump in both; then only the unlocked run raises again
    assert max(guarded[70:]) <= 0.1 + 1e-12 and max(free[70:]) == pytest.approx(0.3)


def test_a_loss_that_rises_but_stays_well_below_its_start_locks_nothing():
    # an overfitting MLP raised out of its minimum: the loss rises 60%, to 0.8 of its first value
    guarded, sched = _run(_raising_net(), _losses(rise_at=60, to=0.8))
    assert not sched.raise_locked
    assert guarded == _run(_raising_net(CEILING), _losses(rise_at=60, to=0.8))[0]


def test_the_first_steps_before_any_progress_lock_nothing():
    # a raise from the first step, while the loss is still at its start, is not a collapse
    guarded, sched = _run(_raising_net(), [1.0 - 1e-3 * s for s in range(60)])
    assert not sched.raise_locked and max(guarded) == pytest.approx(0.3)


def test_the_functional_run_locks_where_the_scheduler_does():
    # meta-training's inner run and a training run with MetaLRScheduler give the same LRs, on an
    # episode where the lock binds (the same network without it runs other LRs)
    episode = Episode("mnist1d-mlp", "sgd", 0.9, 1.0, 0.3, 60, 32, 0.0, True, 2)
    free = dataclasses.replace(CEILING, max_ratio=0.1)
    guarded = _raising_net(dataclasses.replace(free, collapse_guard=0.5), seed=2).float()
    trained = full_es.run_episode(guarded, episode)
    assert unroll.episode_gradient(guarded, episode).lr == pytest.approx(trained.lr, rel=1e-6)
    assert trained.lr != full_es.run_episode(_raising_net(free, seed=2).float(), episode).lr


def test_the_lock_round_trips_through_a_checkpoint_and_a_scheduler_state(tmp_path):
    checkpoint.save(_raising_net(), tmp_path / "guarded")
    loaded, _ = checkpoint.load(str(tmp_path / "guarded.json"))
    assert loaded.config.collapse_guard == 0.1
    losses = _losses(rise_at=30)

    def run(resume_with=None) -> tuple[list[float], dict]:
        """The run of ``_run``, its scheduler replaced by a restored one after step 90 (where
        the lock has fired) when ``resume_with`` edits the saved state."""
        p = torch.nn.Parameter(torch.ones(100))
        opt = torch.optim.SGD([p], lr=0.1)
        sched = MetaLRScheduler(opt, loaded, total_steps=1000)
        lrs = []
        for step, loss in enumerate(losses):
            p.grad = 1e-3 * p.detach()
            opt.step()
            sched.step(loss)
            lrs.append(opt.param_groups[0]["lr"])
            if step == 90:
                state = sched.state_dict()
                if resume_with is not None:
                    sched = MetaLRScheduler(opt, loaded, total_steps=1000)
                    sched.load_state_dict(resume_with(dict(state)))
        return lrs, state

    whole, state = run()
    assert state["collapse_guard"][1] is True and max(whole[91:]) <= 0.1 + 1e-12
    assert run(lambda s: s)[0] == whole  # restored, it stays locked
    for bad in ([0.1, True], [-1.0, 1], [-1.0], "locked"):
        with pytest.raises(MetalrError, match="collapse_guard must be \\[best rel_loss <= 0, locked"):
            run(lambda s: dict(s, collapse_guard=bad))
    # a state saved before collapse_guard: unlocked, so it raises again
    assert max(run(lambda s: {k: v for k, v in s.items() if k != "collapse_guard"})[0][91:]) > 0.1
