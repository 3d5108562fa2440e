"""NetConfig.max_ratio_hypergradient: under Adam, the larger ratio ceiling only while the
hypergradient (the next gradient against the last update) says a larger LR would go further down."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler, hypergradient_cosine
from metalr.learned.train.inner import Schedule

ADAM = dataclasses.replace(CONFIGS["knee-floor"], max_ratio_adaptive=0.01)
GATED = dataclasses.replace(ADAM, max_ratio_hypergradient=0.03)
UNCAPPED = dataclasses.replace(GATED, max_multiplier_hypergradient=6.0)
TESTED = dataclasses.replace(UNCAPPED, hypergradient_z=1.0)


def test_the_cosine_reads_the_gradient_against_the_last_update_on_both_paths():
    rng = np.random.default_rng(0)
    update = rng.standard_normal(50).astype(np.float32)
    grad = rng.standard_normal(50).astype(np.float32)
    assert hypergradient_cosine([-2 * update], [update]) == pytest.approx(1.0)  # still downhill along it
    assert hypergradient_cosine([3 * update], [update]) == pytest.approx(-1.0)  # turned back
    assert hypergradient_cosine([grad], [np.zeros(50, np.float32)]) == 0.0  # no update: no information
    expected = -float(grad.astype(np.float64) @ update) / (np.linalg.norm(grad) * np.linalg.norm(update))
    assert hypergradient_cosine([grad], [update]) == pytest.approx(expected, rel=1e-6)
    # the torch path (CUDA, tensor subclasses) splits the flat vectors by device; the same value
    halves = [torch.from_numpy(grad[:20]), torch.from_numpy(grad[20:])], [torch.from_numpy(update[:20]),
                                                                          torch.from_numpy(update[20:])]
    on_torch = hypergradient_cosine(*halves)
    assert isinstance(on_torch, torch.Tensor) and float(on_torch) == pytest.approx(expected, rel=1e-6)
    assert float(hypergradient_cosine([torch.ones(3)], [torch.zeros(3)])) == 0.0
    # inf gradients (a step a fused optimizer skips in its kernel) add nothing, on both paths
    inf = np.full(50, np.inf, np.float32)
    assert hypergradient_cosine([inf], [update]) == 0.0
    assert float(hypergradient_cosine([torch.from_numpy(inf)], [torch.from_numpy(update)])) == 0.0


def _run(config, flip: bool, adam: bool = True, total_steps: int | None = 1000, resume_at: int | None = None,
         save_at: int | None = None, tensor_loss: bool = False, steps: int = 60, turn_after: int | None = None):
    """LRs of 60 steps on a gradient along the weights (``flip``: its sign alternates every step,
    a run past its stable LR); Adam at LR 0.006 steps every weight by about 0.006 of its size,
    so the 1% ceiling allows about 1.6x and 3% the whole 3x cap. The schedule network asks
    for its most (head bias 8), for the ceilings to bind. ``turn_after``: from that step on the
    gradient turns back every step (a cosine of -1 a sample where it was +1)."""
    torch.manual_seed(0)
    net = ScheduleNet(config)
    with torch.no_grad():
        net.head.bias.fill_(8.0)
    p = torch.nn.Parameter(torch.ones(100))
    opt = torch.optim.Adam([p], lr=0.006) if adam else torch.optim.SGD([p], lr=0.06)
    sched = MetaLRScheduler(opt, net, total_steps=total_steps)
    lrs = []
    for step in range(steps):
        turning = flip or (turn_after is not None and step >= turn_after)
        p.grad = (-1.0) ** (step * turning) * p.detach()
        opt.step()
        loss = 1.0 - 1e-3 * step  # a slowly falling loss: the back-off stays off
        sched.step(torch.tensor(loss) if tensor_loss else loss)
        lrs.append(opt.param_groups[0]["lr"])
        if step == resume_at or step == save_at:
            state = sched.state_dict()
        if step == resume_at:
            sched = MetaLRScheduler(opt, net, total_steps=total_steps)
            sched.load_state_dict(state)
    return lrs, sched


def test_the_gate_opens_the_larger_ceiling_only_where_the_hypergradient_is_positive():
    steady, sched = _run(GATED, flip=False)
    assert sched.state_dict()["hypergradient"] > 3  # about +1 a sample, from step 12 on
    ungated = _run(ADAM, flip=False)[0]
    assert max(ungated) < 0.006 * 1.7 and max(steady) == pytest.approx(0.018, rel=1e-9)
    # until the first sample (after step 11: not after Adam's first step) the gate is closed
    assert steady[:12] == ungated[:12]
    # a gradient that turns back each step: the gate stays closed, the LRs are the ungated ones
    turning, sched = _run(GATED, flip=True)
    assert sched.state_dict()["hypergradient"] < -3
    assert turning == _run(ADAM, flip=True)[0]
    # a 0-dim tensor loss sends the sum with the loss and the ratio (the device path): the same LRs
    assert _run(GATED, flip=False, tensor_loss=True)[0] == steady
    # under SGD, and without a budget, the gate is never consulted
    assert _run(GATED, flip=False, adam=False)[0] == _run(ADAM, flip=False, adam=False)[0]
    assert _run(GATED, flip=False, total_steps=None)[0] == _run(ADAM, flip=False, total_steps=None)[0]


def test_the_gate_round_trips_through_a_checkpoint_and_a_scheduler_state(tmp_path):
    checkpoint.save(ScheduleNet(GATED), tmp_path / "gated")
    assert checkpoint.load(str(tmp_path / "gated.json"))[0].config.max_ratio_hypergradient == 0.03
    # resumed at step 25 (no update waiting for its gradient): the same LRs
    assert _run(GATED, flip=False, resume_at=24)[0] == _run(GATED, flip=False)[0]
    # right after measured step 21 the update waits for step 22's gradient; saving drops that
    # sample, so the run that saved and the one resumed from its state go on alike
    saved, resumed = _run(GATED, flip=False, save_at=20), _run(GATED, flip=False, resume_at=20)
    assert saved[0] == resumed[0]
    uninterrupted = _run(GATED, flip=False)[1].state_dict()["hypergradient"]
    assert saved[1].state_dict()["hypergradient"] == pytest.approx(uninterrupted - 1)
    _, sched = _run(GATED, flip=False)
    state = sched.state_dict()
    for bad in (math.nan, math.inf, "1.0"):
        with pytest.raises(MetalrError, match="hypergradient must be a finite number"):
            sched.load_state_dict({**state, "hypergradient": bad})
    del state["hypergradient"]  # a state saved before the gate: closed until a positive sample
    sched.load_state_dict(state)
    assert sched.state_dict()["hypergradient"] == 0.0


def test_the_config_refuses_a_gate_it_cannot_apply_and_meta_training_refuses_it():
    for bad in (dict(max_ratio_adaptive=None), dict(max_ratio_hypergradient=0.01),
                dict(max_ratio_hypergradient=0.005), dict(max_ratio_hypergradient=1.5),
                dict(max_ratio_hypergradient="0.03")):
        with pytest.raises(MetalrError, match="max_ratio_hypergradient must be null or a number in"):
            dataclasses.replace(GATED, **bad)
    assert GATED.ratio_ceiling(adaptive=True, budget_known=True, hypergradient_open=True) == 0.03
    assert GATED.ratio_ceiling(adaptive=True, budget_known=True) == 0.01
    assert GATED.ratio_ceiling(adaptive=False, budget_known=True, hypergradient_open=True) == GATED.max_ratio
    assert GATED.ratio_ceiling(adaptive=True, budget_known=False, hypergradient_open=True) == 0.01
    with pytest.raises(MetalrError, match="max_ratio_hypergradient is a deployment-only gate"):
        Schedule(GATED, 1, 1e-3, 10, True, True, "cpu")


def test_an_open_gate_lifts_the_multiplier_cap_to_its_own_and_a_closed_one_does_not():
    steady = _run(GATED, flip=False)[0]
    lifted, sched = _run(UNCAPPED, flip=False)
    # past max_multiplier (3x, 0.018), climbing 5% a step (max_rise) towards what the open 3%
    # ceiling allows (about 5x), under the 6x cap
    assert 0.006 * 3.5 < max(lifted) < 0.006 * 6 and max(steady) == pytest.approx(0.018, rel=1e-9)
    assert lifted[:12] == steady[:12]  # closed until the first sample
    # shut, under SGD, and without a budget: the LRs of the gate without its cap
    assert _run(UNCAPPED, flip=True)[0] == _run(GATED, flip=True)[0]
    assert _run(UNCAPPED, flip=False, adam=False)[0] == _run(GATED, flip=False, adam=False)[0]
    assert _run(UNCAPPED, flip=False, total_steps=None)[0] == _run(GATED, flip=False, total_steps=None)[0]
    assert _run(UNCAPPED, flip=False, resume_at=24)[0] == lifted


def test_the_config_refuses_a_cap_it_cannot_apply(tmp_path):
    for bad in (dict(max_ratio_hypergradient=None), dict(max_multiplier_hypergradient=3.0),
                dict(max_multiplier_hypergradient=UNCAPPED.hi), dict(max_multiplier_hypergradient="6")):
        with pytest.raises(MetalrError, match="max_multiplier_hypergradient must be null or a number in"):
            dataclasses.replace(UNCAPPED, **bad)
    checkpoint.save(ScheduleNet(UNCAPPED), tmp_path / "uncapped")
    assert checkpoint.load(str(tmp_path / "uncapped.json"))[0].config.max_multiplier_hypergradient == 6.0


def test_a_gate_that_asks_for_significance_opens_on_a_steady_signal_and_holds_a_raise_it_made():
    # +1 a sample: the z-score is large from the second sample on (the first alone opens nothing:
    # the sign opens on it, for the ceiling set at step 21)
    steady, signed = _run(TESTED, flip=False)[0], _run(UNCAPPED, flip=False)[0]
    assert max(steady) > 0.006 * 3.5 and steady[:20] == signed[:20] and steady[20] < signed[20]
    # -1 a sample: never opened, never held: the LRs without a gate
    assert _run(TESTED, flip=True)[0] == _run(ADAM, flip=True)[0]
    # +1 for 5 samples (steps 12-52), then -1 (from step 60 the gradient turns back every step; the
    # LR climbs to the 6x cap meanwhile): the sum reaches 0 at sample 10 (step 102) and the sign
    # shuts the gate, back to the 3x cap; the test holds the LR at 6x until the mean is a standard
    # error below 0 (sample 14, step 142: mean -0.29, z -1.08), then shuts it alike
    signed, _ = _run(UNCAPPED, flip=False, steps=200, turn_after=60)
    tested, sched = _run(TESTED, flip=False, steps=200, turn_after=60)
    state = sched.state_dict()
    assert state["hypergradient_samples"] == 19 and state["gate_opened"] is True
    assert state["hypergradient"] == pytest.approx(-9.0) and state["hypergradient_squares"] == pytest.approx(19.0)
    assert signed[90:101] == tested[90:101] == [pytest.approx(0.036)] * 11
    assert max(signed[111:]) == pytest.approx(0.018) and min(tested[111:150]) == pytest.approx(0.036)
    assert max(tested[151:]) == pytest.approx(0.018)
    # a resumption, and the tensor-loss (device) path, go on alike
    assert _run(TESTED, flip=False, steps=200, turn_after=60, resume_at=124)[0] == tested
    assert _run(TESTED, flip=False, steps=200, turn_after=60, tensor_loss=True)[0] == tested


def test_the_significance_test_refuses_what_it_cannot_apply(tmp_path):
    for bad in (dict(max_ratio_hypergradient=None, max_multiplier_hypergradient=None), dict(hypergradient_z=0),
                dict(hypergradient_z=11.0), dict(hypergradient_z="1")):
        with pytest.raises(MetalrError, match="hypergradient_z must be null or a number in"):
            dataclasses.replace(TESTED, **bad)
    checkpoint.save(ScheduleNet(TESTED), tmp_path / "tested")
    assert checkpoint.load(str(tmp_path / "tested.json"))[0].config.hypergradient_z == 1.0
    _, sched = _run(TESTED, flip=False)
    state = sched.state_dict()
    for key, bad in (("hypergradient_squares", -1.0), ("hypergradient_squares", math.nan),
                     ("hypergradient_samples", 1.5), ("hypergradient_samples", -1), ("gate_opened", 1)):
        with pytest.raises(MetalrError, match=f"{key} must be"):
            sched.load_state_dict({**state, key: bad})


def test_the_z_score_is_the_same_from_tensors_as_from_floats():
    # the device path keeps the sums as 0-dim tensors (no host sync): the z-score from them is the
    # floats' one, and 0 before the second sample
    sched = _run(TESTED, flip=False)[1]
    samples = [0.05, 0.09, -0.02, 0.07]
    floats, tensors = [], []
    sched._hypergradient = sched._squares = 0.0
    sched._samples = 0
    for h in samples:
        sched._add_sample(h)
        floats.append(sched._gate_reads)
    sched._hypergradient = sched._squares = torch.zeros((), dtype=torch.float64)
    sched._samples = 0
    for h in samples:
        sched._add_sample(torch.tensor(h, dtype=torch.float64))
        tensors.append(float(sched._gate_reads))
    mean, sd = np.mean(samples), np.std(samples, ddof=1)
    assert floats[0] == tensors[0] == 0.0
    assert floats[-1] == pytest.approx(mean / (sd / 2), rel=1e-9) and tensors == pytest.approx(floats, rel=1e-9)
