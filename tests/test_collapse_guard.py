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


def test_a_loss_back_at_its_start_ends_every_raise(raising_net):
    losses = _losses(rise_at=60)
    guarded, sched = _run(raising_net(GUARDED), losses)
    free, _ = _run(raising_net(CEILING), losses)
    assert guarded[:60] == free[:60] and max(free[:60]) == pytest.approx(0.3)  # raised to the cap
    assert sched.raise_locked
    # the guard halves the LR on the jump in both; then only the unlocked run raises again
    assert max(guarded[70:]) <= 0.1 + 1e-12 and max(free[70:]) == pytest.approx(0.3)


def test_a_loss_that_rises_but_stays_well_below_its_start_locks_nothing(raising_net):
    # an overfitting MLP raised out of its minimum: the loss rises 60%, to 0.7 of its first value
    guarded, sched = _run(raising_net(GUARDED), _losses(rise_at=60, to=0.7))
    assert not sched.raise_locked
    assert guarded == _run(raising_net(CEILING), _losses(rise_at=60, to=0.7))[0]


def test_the_first_steps_before_any_progress_lock_nothing(raising_net, monkeypatch):
    # a loss that dips 9% and comes back to its start in the first 40 steps (noise, before any
    # progress), stays there and then falls: the raise is kept; counted as progress lost (with no
    # least progress asked for), it would lock
    losses = [1.0 - 0.09 * min(s, 40 - s) / 20 if s < 40 else 1.0 - 2e-3 * max(s - 70, 0) for s in range(100)]
    guarded, sched = _run(raising_net(GUARDED), losses)
    assert not sched.raise_locked and max(guarded[40:]) == pytest.approx(0.3)
    monkeypatch.setattr("metalr.learned.scheduler.MIN_PROGRESS", 0.0)
    assert _run(raising_net(GUARDED), losses)[1].raise_locked


def test_the_functional_run_locks_where_the_scheduler_does(raising_net):
    # meta-training's inner run and a training run with MetaLRScheduler give the same LRs, on an
    # episode where the lock binds (the same network without it runs other LRs)
    episode = Episode("mnist1d-mlp", "sgd", 0.9, 1.0, 0.3, 60, 32, 0.0, True, 2)
    free = dataclasses.replace(CEILING, max_ratio=0.1)
    guarded = raising_net(dataclasses.replace(free, collapse_guard=0.5), seed=2).float()
    trained = full_es.run_episode(guarded, episode)
    assert unroll.episode_gradient(guarded, episode).lr == pytest.approx(trained.lr, rel=1e-6)
    assert trained.lr != full_es.run_episode(raising_net(free, seed=2).float(), episode).lr


def test_the_lock_round_trips_through_a_checkpoint_and_a_scheduler_state(tmp_path, raising_net):
    checkpoint.save(raising_net(GUARDED), tmp_path / "guarded")
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
