"""hyper-v5's update-to-weight ratio: the feature, the scheduler's measurement, the functional run's."""

import dataclasses
import math

import pytest
import torch

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.features import RATIO_EVERY, SCHEMAS, FeatureTracker, measures_ratio
from metalr.learned.network import CONFIGS, NetConfig, ScheduleNet
from metalr.learned.scheduler import FlatParameters, MetaLRScheduler, _flat, update_to_weight
from metalr.learned.train import full_es, inner, unroll
from metalr.learned.train.distribution import Episode


def _net(seed: int = 0, spread: float = 0.5) -> ScheduleNet:
    torch.manual_seed(seed)
    net = ScheduleNet(CONFIGS["knee-raise"])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(spread * torch.randn_like(p))
    return net


def test_the_feature_is_log10_of_the_ratio_plus_3_held_between_measurements():
    tracker = FeatureTracker("hyper-v5")
    assert SCHEMAS["hyper-v5"] == (*SCHEMAS["hyper-v4"], "update_ratio")
    state, seen = tracker.initial_state(), []
    for step, ratio in enumerate([1e-3, None, 1e-5, None, math.nan, 0.0, 50.0, 2e-3], start=1):
        feats, state = tracker.update(state, 1.0, step, 10, 0.5, ratio)
        seen.append(feats[-1])
    assert seen[:3] == pytest.approx([0.0, 0.0, -2.0], abs=1e-12)
    assert seen[3:5] == [seen[2]] * 2  # no measurement, then a NaN (diverged weights): held
    assert seen[5:7] == [-3.0, 3.0]  # a zero step (LR 0) and a huge one: clipped
    assert seen[7] == pytest.approx(math.log10(2.0), rel=1e-12)
    assert [s for s in range(1, 32) if measures_ratio(s)] == [1, 1 + RATIO_EVERY, 1 + 2 * RATIO_EVERY, 31]


def test_the_scheduler_measures_the_optimizers_step_against_the_weights_every_tenth_step():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(20))
    b = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.01}], lr=0.1)
    sched = MetaLRScheduler(opt, _net(), total_steps=40)
    for step in range(1, 25):
        opt.zero_grad()
        ((w ** 2).sum() + (b ** 3).sum()).backward()
        before = [w.detach().clone(), b.detach().clone()]
        opt.step()
        if measures_ratio(step):
            change = math.sqrt(sum(float((p.detach() - q).double().pow(2).sum()) for p, q in zip((w, b), before)))
            size = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in (w, b)))
            want = math.log10(change / size) + 3
        sched.step(1.0 + 1.0 / step)
        assert sched.features_state["ratio"] == pytest.approx(want, rel=1e-12)
        assert sched.last_input[-1] == sched.features_state["ratio"]
    assert sched._before is None and sched._ratio is None  # nothing held past the step that read it




def test_the_cpu_ratio_takes_numpy_where_it_can_and_gives_the_tensor_paths_value():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(5, dtype=torch.float64))]
    before = _flat(params)
    with torch.no_grad():
        params[0][0, 0] += 0.5
        params[1][1] -= 0.25
    ratio = update_to_weight(_flat(params), before)  # a float: the numpy path
    half = [p.detach().to(torch.bfloat16) for p in params]  # bf16: numpy cannot read it
    half_before = _flat(half)
    assert isinstance(ratio, float) and isinstance(half_before[0], torch.Tensor)

    class Wrapped(torch.Tensor):  # a tensor subclass (as DTensor is) keeps the torch path
        pass

    assert isinstance(_flat([torch.Tensor._make_subclass(Wrapped, torch.ones(2))])[0], torch.Tensor)
    change = math.hypot(0.5, 0.25)
    size = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in params))
    assert ratio == pytest.approx(change / size, rel=1e-6)  # float32 weights: 0.5 is not exact
    with torch.no_grad():
        half[0][0, 0] += 0.5
    assert float(update_to_weight(_flat(half), half_before)) == pytest.approx(
        0.5 / math.sqrt(sum(float(p.double().pow(2).sum()) for p in half)), rel=1e-2)
    zeros = [torch.zeros(3)]
    still = _flat(zeros)
    assert math.isnan(update_to_weight(_flat(zeros), still))  # 0/0, as the tensor path gives: the feature holds
    moved = _flat([torch.ones(3)])
    assert update_to_weight(_flat(zeros), moved) == math.inf  # weights gone to zero: the largest ratio


def test_the_hooks_views_follow_a_parameter_given_new_storage():
    # FlatParameters reuses its numpy views while the storage is the same; a parameter whose .data
    # is replaced (a reload, a dtype change) or that becomes a tensor without storage is read anew.
    w = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([w, torch.nn.Parameter(torch.ones(2))], lr=0.1)
    flat = FlatParameters(opt)
    first = flat()
    views = flat.views
    with torch.no_grad():
        w.mul_(3.0)  # in place: the same storage, the same views
    assert flat()[0].tolist() == [3.0] * 4 + [1.0] * 2
    assert flat.views is views and first[0].tolist() == [1.0] * 6  # the snapshot is a copy
    w.data = torch.full((4,), 2.0, dtype=torch.float64)
    assert flat()[0].tolist() == [2.0] * 4 + [1.0] * 2 and flat.views is not views
    w.data = torch.full((4,), 5.0, dtype=torch.bfloat16)  # numpy cannot read it: the tensor path
    assert isinstance(flat()[0], torch.Tensor) and flat.views is None
    opt.param_groups[0]["params"][0] = torch.nn.Parameter(torch.full((4,), 7.0))
    assert flat()[0].tolist() == [7.0] * 4 + [1.0] * 2


def test_a_parameter_without_storage_in_place_of_a_viewed_one_takes_the_tensor_path():
    class Wrapper(torch.Tensor):  # a wrapper subclass, as DTensor is: no storage of its own
        @staticmethod
        def __new__(cls, inner):
            return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype)

        def __init__(self, inner):
            self.inner = inner

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            unwrap = lambda t: t.inner if isinstance(t, Wrapper) else t  # noqa: E731
            return func(*torch.utils._pytree.tree_map(unwrap, args),
                        **torch.utils._pytree.tree_map(unwrap, kwargs or {}))

    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    flat = FlatParameters(opt)
    flat()
    opt.param_groups[0]["params"][0] = Wrapper(torch.full((3,), 2.0))
    assert flat.views is not None
    again = flat()
    assert flat.views is None and isinstance(again[0], torch.Tensor)


@pytest.mark.parametrize("make_net", [lambda raising: _net(seed=4),
                                      lambda raising: raising(CONFIGS["knee-ceiling"], seed=2),
                                      lambda raising: raising(dataclasses.replace(CONFIGS["knee-ceiling"],
                                                                                  max_ratio_adaptive=0.02), seed=2),
                                      lambda raising: raising(dataclasses.replace(CONFIGS["knee-ceiling"],
                                                                                  max_ratio=0.002, ratio_floor=0.05),
                                                              seed=2)],
                         ids=["knee-raise", "knee-ceiling", "adaptive-ceiling", "sgd-floor"])
@pytest.mark.parametrize("family,optimizer,momentum,lr", [("cancer-mlp", "sgd", 0.9, 0.1),
                                                          ("mnist1d-mlp", "adam", 0.0, 3e-3)])
def test_the_functional_run_measures_what_the_scheduler_measures(family, optimizer, momentum, lr, make_net,
                                                                 raising_net):
    # The unroll's forward pass and a real training run with MetaLRScheduler give the same LRs,
    # so both read the same ratios on the same steps (an LR 3 times the base shows the raise),
    # and apply NetConfig.max_ratio alike (the ceiling binds on these runs: see test_ratio_ceiling).
    net = make_net(raising_net).float()
    episode = Episode(family, optimizer, momentum, 1.0, lr, 60, 32, 0.0, True, 2)
    result = unroll.episode_gradient(net, episode)
    trained = full_es.run_episode(net, episode)
    assert result.lr == pytest.approx(trained.lr, rel=1e-6)
    assert math.isfinite(result.norm) and result.norm > 0


@pytest.mark.parametrize("family,optimizer,momentum,lr", [("cancer-mlp", "sgd", 0.9, 0.1),
                                                          ("mnist1d-mlp", "adam", 0.0, 3e-4)])
def test_without_a_budget_a_raise_that_needs_one_holds_the_base_lr(family, optimizer, momentum, lr, raising_net):
    # NetConfig.raise_needs_budget: the functional run and the scheduler alike keep a network
    # that asks for the most it may have at the base LR when the budget is hidden; with the
    # budget shown, and without the field, the same network raises.
    episode = Episode(family, optimizer, momentum, 1.0, lr, 60, 32, 0.0, False, 2)
    held = raising_net(dataclasses.replace(CONFIGS["knee-floor"], raise_needs_budget=True), seed=2).float()
    result = unroll.episode_gradient(held, episode)
    trained = full_es.run_episode(held, episode)
    assert result.lr == pytest.approx(trained.lr, rel=1e-6)
    assert max(trained.lr) == pytest.approx(lr, rel=1e-6)
    free = raising_net(CONFIGS["knee-floor"], seed=2).float()
    assert max(full_es.run_episode(free, episode).lr) > 1.05 * lr
    shown = dataclasses.replace(episode, show_budget=True)
    assert max(full_es.run_episode(held, shown).lr) > 1.05 * lr


def test_vectorised_members_each_read_their_own_ratio():
    nets = [_net(seed=s) for s in range(3)]
    params = {"w": torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])}
    after = {"w": torch.tensor([[3.0, 4.5], [1.0, 0.0], [0.0, 0.0]])}
    ratio = inner.update_to_weight(after, params)
    assert ratio[0] == pytest.approx(0.5 / math.hypot(3.0, 4.5)) and ratio[1] == 0.0 and ratio[2] == math.inf
    schedule = inner.Schedule(nets[0].config, 3, 0.1, 20, True, False, "cpu")
    state = schedule.observe(schedule.initial_state(), inner.stacked_weights(nets, "cpu"),
                             torch.ones(3, dtype=torch.float64), 1, ratio)
    assert state["ratio"].tolist() == pytest.approx([math.log10(ratio[0]) + 3, -3.0, 3.0])


def test_the_guard_reads_rel_min_by_name_not_position():
    # hyper-v5 puts update_ratio after rel_min: a guard reading the last input would read the ratio.
    config = CONFIGS["knee-raise"]
    assert SCHEMAS[config.features][-1] == "update_ratio" and config.guard is not None
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = MetaLRScheduler(opt, _net(spread=0.0), total_steps=100)
    lrs = []
    for step in range(1, 31):
        p.grad = torch.full_like(p, 100.0)  # a huge step: update_ratio far above the guard's 0.1
        opt.step()
        sched.step(1.0)  # a flat loss: rel_min 0, the guard must not fire
        lrs.append(opt.param_groups[0]["lr"])
    assert sched.last_input[-1] > 1.0  # a ratio of over 1e-2 on every measurement
    assert min(lrs) > 0.1 * 0.9  # no halving


def test_the_schema_round_trips_through_a_checkpoint_and_a_scheduler_state(tmp_path):
    net = _net(seed=3)
    checkpoint.save(net, tmp_path / "v5")
    loaded, _ = checkpoint.load(str(tmp_path / "v5.json"))
    assert loaded.config == net.config and loaded.config.features == "hyper-v5"
    runs = []
    for model in (net, loaded, loaded):
        torch.manual_seed(1)
        layer = torch.nn.Linear(5, 1)
        opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
        sched = MetaLRScheduler(opt, model, total_steps=40)
        x, lrs = torch.randn(64, 5), []
        for t in range(40):
            loss = layer(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step(loss)
            lrs.append(opt.param_groups[0]["lr"])
            if t == 14 and len(runs) == 2:  # the third run resumes from a state saved mid-run
                state = sched.state_dict()
                sched = MetaLRScheduler(opt, model, total_steps=40)
                sched.load_state_dict(state)
        runs.append(lrs)
    assert runs[0] == runs[1] == runs[2] and len(set(runs[0])) > 20


def test_a_scheduler_state_from_before_hyper_v5_still_loads():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = MetaLRScheduler.from_pretrained("metalr-unroll-knee", opt, total_steps=10)
    opt.step()
    sched.step(2.0)
    state = sched.state_dict()
    state["late"] = [2.0, 1, 2]  # a CUDA loss read but not yet fed, as states before hyper-v5 held it
    sched.load_state_dict(state)
    assert sched._late == [2.0, 1, 2, None, None]  # no ratio, no hypergradient sum
    state["late"] = [2.0, 1, 2, 0.004]  # with the ratio, from before NetConfig.max_ratio_hypergradient
    sched.load_state_dict(state)
    assert sched._late == [2.0, 1, 2, 0.004, None]
    state["late"] = [2.0, 1, 2, math.nan]
    with pytest.raises(MetalrError, match="late must be None or"):
        sched.load_state_dict(state)


def test_a_guard_needs_rel_min():
    with pytest.raises(MetalrError, match="guard reads rel_min"):
        NetConfig(kind="default", features="hyper-v3", hidden=4, mlp=4, guard=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_ratio_travels_with_the_loss_without_a_sync():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50, device="cuda"))
    opt = torch.optim.SGD([w], lr=0.05)
    sched = MetaLRScheduler(opt, _net(), total_steps=30)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(12):
            loss = (w ** 2).sum()
            opt.zero_grad()
            loss.backward()
            before = w.detach().clone()
            opt.step()
            sched.step(loss)
            if sched.last_epoch == 11:  # optimizer step 11 measures; its ratio arrives a step late
                want = (w.detach() - before).norm() / w.detach().norm()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    loss = (w ** 2).sum()
    sched.step(loss)  # feeds step 11's loss and ratio
    assert sched.features_state["ratio"] == pytest.approx(math.log10(float(want)) + 3, rel=1e-6)
