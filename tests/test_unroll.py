"""The unrolled estimator: exact against finite differences, segments, paths, blow-ups, schemas."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.features import SCHEMAS, FeatureTracker
from metalr.learned.network import CONFIGS, ScheduleNet, knee_shape
from metalr.learned.scheduler import MetaLRScheduler
from metalr.learned.train import full_es, inner, unroll
from metalr.learned.train.config import MetaTrainConfig
from metalr.learned.train.distribution import Episode
from metalr.policies.knee import Knee


def _net(seed: int = 0, spread: float = 0.3, config=CONFIGS["default"]) -> ScheduleNet:
    torch.manual_seed(seed)
    net = ScheduleNet(config).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(spread * torch.randn_like(p))
    return net


def _at(net: ScheduleNet, theta: torch.Tensor) -> ScheduleNet:
    out = ScheduleNet(net.config).double()
    vector_to_parameters(theta, out.parameters())
    return out


@pytest.mark.parametrize("optimizer,momentum,lr", [("sgd", 0.0, 0.1), ("sgd", 0.9, 0.05),
                                                   ("adam", 0.0, 0.003), ("adamw", 0.0, 0.003)])
def test_the_unrolled_gradient_equals_a_float64_finite_difference(optimizer, momentum, lr):
    # The total derivative (through the features the network reads too) is what a finite
    # difference measures; 20 steps of a real task in float64, several segments.
    net = _net()
    episode = Episode("cancer-mlp", optimizer, momentum, 1.0, lr, 20, 32, 0.0, True, 3)
    result = unroll.episode_gradient(net, episode, segment=7, dtype=torch.float64, exact=True)
    assert result.blown_up_at is None
    theta = parameters_to_vector(net.parameters()).detach()
    direction = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = 1e-5
    plus, minus = (unroll.episode_gradient(_at(net, theta + s * eps * direction), episode,
                                           dtype=torch.float64).meta_loss for s in (1, -1))
    finite_difference = (plus - minus) / (2 * eps)
    assert float(result.grad @ direction) == pytest.approx(finite_difference, rel=1e-6)


def test_the_training_gradient_drops_only_the_feature_path_on_a_tame_episode():
    # Training's gradient (features read as numbers, straight-through at the rise limit) is not
    # the total derivative, but on a tame episode it points the same way (cosine 0.84 here).
    net = _net()
    episode = Episode("cancer-mlp", "sgd", 0.9, 1.0, 0.05, 20, 32, 0.0, True, 3)
    total = unroll.episode_gradient(net, episode, dtype=torch.float64, exact=True).grad
    direct = unroll.episode_gradient(net, episode, dtype=torch.float64).grad
    assert not torch.equal(total, direct)
    assert torch.nn.functional.cosine_similarity(total, direct, dim=0) > 0.7


@pytest.mark.parametrize("exact", [False, True])
def test_segment_checkpointing_gives_the_plain_unrolls_gradient(exact):
    net = _net(seed=2)
    episode = Episode("mnist1d-mlp", "adam", 0.0, 1.0, 0.002, 45, 32, 0.1, True, 5)
    plain = unroll.episode_gradient(net, episode, segment=1000, exact=exact)
    for segment in (1, 10, 44):
        got = unroll.episode_gradient(net, episode, segment=segment, exact=exact)
        assert got.meta_loss == plain.meta_loss
        assert torch.allclose(got.grad, plain.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("family", ["mnist1d-mlp", "digits-cnn:width=8"])
def test_vectorised_and_sequential_unrolls_give_the_same_gradient(family):
    # A seeded network: the two paths round float32 differently, and an unseeded draw (whatever
    # the tests before left in torch's generator) can land where those roundings send the two
    # runs apart (one draw in eight on this CNN episode: 1% apart in meta-loss).
    torch.manual_seed(0)
    net = ScheduleNet(CONFIGS["default"])
    episode = Episode(family, "sgd", 0.9, 1.0, 0.1, 30, 32, 0.0, True, 7)
    a = unroll.episode_gradient(net, episode, vectorised=True)
    b = unroll.episode_gradient(net, episode, vectorised=False)
    assert a.meta_loss == pytest.approx(b.meta_loss, rel=1e-5)
    assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6)
    assert a.norm > 0


def test_the_forward_pass_runs_the_schedulers_lrs():
    net = _net(seed=4, spread=0.5, config=CONFIGS["default"]).float()
    episode = Episode("cancer-mlp", "sgd", 0.9, 1.0, 0.1, 40, 32, 0.0, True, 2)
    result = unroll.episode_gradient(net, episode)
    trained = full_es.run_episode(net, episode)
    assert result.lr == pytest.approx(trained.lr, rel=1e-5)
    assert result.meta_loss == pytest.approx(full_es.fitness(trained, full_es.reference_loss(episode)), rel=1e-4)


def test_a_blown_up_episode_gives_a_bounded_finite_gradient_that_lowers_the_lr():
    # A network that raises the LR fast, on plain SGD at 3x a large LR: the run blows up.
    net = ScheduleNet(CONFIGS["default"])
    with torch.no_grad():
        net.head.bias.fill_(3.0)
    episode = Episode("mnist1d-mlp", "sgd", 0.0, 3.0, 3.0, 200, 64, 0.0, True, 4)
    result = unroll.episode_gradient(net, episode)
    assert result.blown_up_at is not None and result.meta_loss == full_es.CAP
    assert math.isfinite(result.norm) and result.norm > 0
    step = unroll.bounded(result.grad, 1.0)
    assert float(step.norm()) <= 1.0 + 1e-6
    # The network asks for more than the rise limit lets through; the gradient still tells it to
    # ask for less: descending it lowers the head's bias, so its output, at every step.
    names = [name for name, _ in net.named_parameters()]
    sizes = [p.numel() for p in net.parameters()]
    bias_at = sum(sizes[:names.index("head.bias")])
    assert float(result.grad[bias_at]) > 0
    # And far enough down it, the run stays below the LRs that blew it up.
    moved = full_es.network_at(net.config, full_es.flat(net) - 20.0 * step.float())
    after = unroll.episode_gradient(moved, episode)
    assert max(after.lr[:len(result.lr)]) < max(result.lr)


def test_bounded_caps_the_norm_and_zeroes_what_is_not_finite():
    g = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert torch.allclose(unroll.bounded(g, 1.0), g / 5)
    assert torch.equal(unroll.bounded(g, 10.0), g)
    assert torch.equal(unroll.bounded(torch.tensor([math.inf, 1.0]), 1.0), torch.zeros(2))


def test_hyper_v4_tracks_the_loss_over_its_running_minimum():
    tracker = FeatureTracker("hyper-v4")
    state, seen = tracker.initial_state(), []
    for t, loss in enumerate([2.0, 1.5, 1.0, 1.0, 1.0, 4.0, 4.0, 4.0], start=1):
        feats, state = tracker.update(state, loss, t, 8, 0.5)
        seen.append(feats[-1])
    assert SCHEMAS["hyper-v4"][-1] == "rel_min" and len(feats) == len(SCHEMAS["hyper-v4"])
    assert seen[:5] == [0.0] * 5  # a falling or flat loss sits at its minimum
    assert 0 < seen[5] < seen[6] < seen[7] <= 3.0  # a rising loss moves off it


def test_the_rise_limit_bounds_how_fast_the_multiplier_grows_and_not_how_fast_it_falls():
    net = ScheduleNet(CONFIGS["default"])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    with torch.no_grad():
        net.head.bias.fill_(30.0)  # asks for the top of the range at once
    sched = MetaLRScheduler(opt, net, total_steps=100)
    lrs = []
    for _ in range(30):
        opt.step()
        sched.step(1.0)
        lrs.append(opt.param_groups[0]["lr"])
    rises = [math.log(b / a) for a, b in zip(lrs, lrs[1:])]
    assert max(rises) == pytest.approx(CONFIGS["default"].max_rise, rel=1e-9)
    with torch.no_grad():
        net.head.bias.fill_(-30.0)  # now the bottom
    sched.refresh()
    opt.step()
    sched.step(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(CONFIGS["default"].lo, rel=1e-6)


def test_the_new_default_round_trips_through_a_checkpoint(tmp_path):
    net = _net(seed=3).float()
    checkpoint.save(net, tmp_path / "v4")
    loaded, config = checkpoint.load(str(tmp_path / "v4.json"))
    assert loaded.config == net.config and loaded.config.max_rise == 0.05
    lrs = []
    for model in (net, loaded):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.Adam([p], lr=1e-3)
        sched = MetaLRScheduler(opt, model, total_steps=40)
        for t in range(40):
            opt.step()
            sched.step(2.0 * 0.95 ** t)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == lrs[1]


# LRs of the shipped checkpoints before hyper-v4 and the rise limit (recorded from the commit
# before them): every 7th of 50 steps on a fixed loss stream, SGD 0.1 and Adam 1e-3.
OLD_LRS = {
    ("metalr-es4", "sgd"): [0.336816886769, 0.300819816236, 0.223308836617, 0.234026815635,
                            0.240670556783, 0.216983870909, 0.131918363256, 0.0722170779256],
    ("metalr-es4", "adam"): [0.00508749518799, 0.00462214542703, 0.00357772922564, 0.00372006833292,
                             0.00381127987906, 0.00348780299192, 0.00225454371027, 0.00131321390638],
    ("metalr-es2", "sgd"): [0.179513827149, 0.216695701959, 0.203014902886, 0.23532681751,
                            0.239565512705, 0.199304613049, 0.126822783404, 0.0950392524838],
    ("metalr-mnist1d", "sgd"): [0.0985335920327, 0.0976271668271, 0.0972890017158, 0.0967255132453,
                                0.0961069657148, 0.0954417248297, 0.094938605552, 0.0946859985382],
}


@pytest.mark.parametrize("name,kind", sorted(OLD_LRS))
def test_older_checkpoints_load_and_give_their_old_lrs(name, kind):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9) if kind == "sgd" else torch.optim.Adam([p], lr=1e-3)
    sched = MetaLRScheduler.from_pretrained(name, opt, total_steps=50)
    assert sched.net.config.max_rise is None
    lrs = []
    for t in range(50):
        opt.step()
        sched.step(2.3 * 0.97 ** t * (1 + 0.1 * ((t * 7) % 5 - 2) / 2))
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[::7] == pytest.approx(OLD_LRS[name, kind], rel=1e-10)


@pytest.mark.parametrize("name,known", [("default", True), ("capped", True), ("knee", True), ("knee", False)])
def test_the_functional_schedule_equals_the_scheduler_with_every_limit(name, known):
    # hyper-v4 features, the rise limit, the guard, (capped, knee) the cap and (knee) the shape,
    # on a noisy loss stream; with the budget unknown the shape is 1
    config = CONFIGS[name]
    nets = [_net(seed=s, spread=1.0, config=config).float() for s in range(2)]
    steps = 30
    losses = torch.exp(torch.randn(steps, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.4
                       - torch.linspace(0, 1, steps, dtype=torch.float64)[:, None])
    losses[20:] *= 3.0  # a jump the guard answers
    schedule = inner.Schedule(config, 2, 0.1, steps, known, True, "cpu")
    w, state = inner.stacked_weights(nets, "cpu"), schedule.initial_state()
    got = []
    for t in range(steps):
        got.append(schedule.lr(state, t + 1))
        state = schedule.observe(state, w, losses[t], t + 1)
    for k, net in enumerate(nets):
        opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = MetaLRScheduler(opt, net, total_steps=steps if known else None)
        want = []
        for t in range(steps):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step(float(losses[t, k]))
        assert torch.allclose(torch.stack(got)[:, k], torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
        if config.max_multiplier is not None:
            assert max(want) <= 0.1 * config.max_multiplier * (1 + 1e-12)
        if config.shape and known:
            assert want[-1] == 0.0 and len(set(want[steps // 2:])) > 10


def test_the_untrained_knee_network_runs_the_knee_schedule_and_never_above_the_base_lr():
    steps = 40
    net = ScheduleNet(CONFIGS["knee"])
    params = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=0.1)
    sched = MetaLRScheduler(opt, net, total_steps=steps)
    knee_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    knee = Knee(knee_opt, total_steps=steps)
    ours, theirs = [], []
    for t in range(steps):
        ours.append(opt.param_groups[0]["lr"])
        theirs.append(knee_opt.param_groups[0]["lr"])
        opt.step()
        knee_opt.step()
        sched.step(2.3 * 0.95 ** t)
        knee.step()
    assert [knee_shape(s, steps) * 0.1 for s in range(1, steps + 1)] == pytest.approx(theirs, abs=1e-15)
    assert max(ours) <= 0.1 * (1 + 1e-12) and ours[-1] == 0.0 and ours[0] == 0.1
    # The untrained multiplier is about 1: the knee's shape, within the network's few percent.
    assert ours == pytest.approx(theirs, rel=0.1)
    ratio = [a / b for a, b in zip(ours, theirs) if b]
    assert max(ratio) - min(ratio) < 0.1


def test_a_blow_ups_push_weighs_blowup_weight_times_the_clip_and_nothing_else_changes():
    grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    blown = unroll.EpisodeGradient(full_es.CAP, grad, 12, [0.1])
    tame = unroll.EpisodeGradient(0.4, grad, None, [0.1])
    assert float(unroll.weighted(blown, 1.0).norm()) == pytest.approx(1.0)
    assert float(unroll.weighted(blown, 1.0, 5.0).norm()) == pytest.approx(5.0)
    assert torch.allclose(unroll.weighted(blown, 0.5, 5.0), grad / 5 * 2.5)  # the same direction
    assert torch.equal(unroll.weighted(tame, 1.0, 5.0), unroll.weighted(tame, 1.0))
    with pytest.raises(MetalrError, match="--blowup-weight must be a finite number > 0"):
        MetaTrainConfig(blowup_weight=0.0).validate()


def test_a_state_written_before_an_option_existed_resumes_at_its_default(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from metalr.learned.train import outer_loop

    cfg = MetaTrainConfig(name="old")
    path = outer_loop._state_path(tmp_path, cfg)
    theta = torch.zeros(3, requires_grad=True)
    adam = torch.optim.Adam([theta])
    theta.grad = torch.ones(3)
    adam.step()
    outer_loop._write_state(path, theta, adam, 1, cfg, [], 1.0)
    with safe_open(str(path), "pt") as fh:
        meta = json.loads(fh.metadata()["state"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    del meta["identity"]["blowup_weight"]  # as states written before --blowup-weight
    save_file(tensors, str(path), metadata={"state": json.dumps(meta)})
    outer_loop._check_out_dir(cfg, tmp_path)  # resumes: it ran at the default
    with pytest.raises(MetalrError, match=r"different blowup_weight"):
        outer_loop._check_out_dir(MetaTrainConfig(name="old", blowup_weight=5.0), tmp_path)


def test_unroll_options_are_checked():
    with pytest.raises(MetalrError, match="--episodes must be a positive integer"):
        MetaTrainConfig(episodes=0).validate()
    with pytest.raises(MetalrError, match="--segment must be a positive integer"):
        MetaTrainConfig(segment=0).validate()
    with pytest.raises(MetalrError, match="--episode-clip must be a finite number > 0"):
        MetaTrainConfig(episode_clip=math.nan).validate()
    with pytest.raises(MetalrError, match="--net=knee multiplies the knee shape"):
        MetaTrainConfig(estimator="lookahead", net="knee").validate()
    assert MetaTrainConfig().estimator == "unroll" and MetaTrainConfig().name == "metalr-unroll"


def _fed(guard: float, losses) -> tuple[list, list, MetaLRScheduler]:
    """A fresh network (it asks for multiplier 1 throughout) with ``guard``, fed ``losses`` on
    SGD at LR 1: its LRs, the steps after which the LR fell below 0.6x (the guard's halvings),
    and the scheduler."""
    net = ScheduleNet(dataclasses.replace(CONFIGS["default"], guard=guard))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = MetaLRScheduler(opt, net, total_steps=400)
    lrs = []
    for loss in losses:
        opt.step()
        sched.step(float(loss))
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, [i for i, (a, b) in enumerate(zip(lrs, lrs[1:])) if b < 0.6 * a], sched


def test_the_guard_halves_the_lr_when_the_loss_rises_off_its_best_and_restarts_the_best():
    losses = [2.0 * 0.98 ** t for t in range(60)] + [0.6 * 1.05 ** t for t in range(30)]
    lrs, cuts, sched = _fed(CONFIGS["default"].guard, losses)
    assert max(lrs[:60]) == pytest.approx(min(lrs[:60]), rel=0.05)  # falling loss: no back-off
    assert cuts and cuts[0] > 60  # the rising loss triggers it
    assert lrs[cuts[0] + 1] == pytest.approx(lrs[cuts[0]] / 2, rel=0.06)
    assert len(cuts) >= 2 and cuts[1] - cuts[0] > 1  # the best restarted: not a cut every step
    state = sched.state_dict()  # and it resumes exactly
    again = MetaLRScheduler(sched.optimizer, sched.net, total_steps=400)
    again.load_state_dict(state)
    assert again.features_state == sched.features_state and again.u == sched.u


def test_a_guard_of_0_3_ignores_minibatch_noise_that_0_1_reads_as_a_rise_but_still_cuts_a_rise():
    # A small training loss whose minibatches scatter it (lognormal, sigma 0.4) around a flat
    # level, as late in a run: its smoothed log-loss strays more than 0.1 above its best, so the
    # 0.1 guard halves the LR again and again (the default's saw-tooth); a loss rising 5% a step
    # passes 0.3 as well.
    noisy = 0.05 * np.exp(np.random.default_rng(0).normal(0.0, 0.4, 300))
    assert len(_fed(0.1, noisy)[1]) >= 8 and len(_fed(0.3, noisy)[1]) <= 2
    rising = [2.0 * 0.98 ** t for t in range(60)] + [0.6 * 1.05 ** t for t in range(60)]
    for guard in (0.1, 0.3):
        cuts = _fed(guard, rising)[1]
        assert cuts and 60 < cuts[0] < 85  # within 25 steps of the turn


def test_the_network_does_not_depend_on_the_number_of_workers(tmp_path):
    from metalr.learned.train.outer_loop import meta_train_es

    tiny = dict(tasks="cancer-mlp,mnist1d-mlp", episodes=3, meta_steps=2, budget_min=15, budget_max=30,
                eval_every=0, save_every=1)
    nets = []
    for workers in (1, 2):
        cfg = MetaTrainConfig(workers=workers, name=f"w{workers}", **tiny)
        out = meta_train_es(cfg, tmp_path / cfg.name, progress=False)
        nets.append(checkpoint.load(out["checkpoint"])[0])
    assert torch.equal(full_es.flat(nets[0]), full_es.flat(nets[1]))
    assert not torch.equal(full_es.flat(nets[0]), full_es.flat(ScheduleNet(CONFIGS["default"])))


def test_a_horizon_that_cannot_fit_in_memory_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "train_meta.py"
    proc = subprocess.run([sys.executable, str(script), "--budget_max=100000000", "--segment=100000000",
                           f"--out={tmp_path / 'o'}"], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "needs about" in lines[0] and "lower --segment" in lines[0]
    assert not (tmp_path / "o").exists()
