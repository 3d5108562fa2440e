"""The vectorised ES population against the sequential episodes it replaces."""

import math
import warnings

import pytest
import torch

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler
from metalr.learned.train import full_es, inner, population
from metalr.learned.train.config import MetaTrainConfig, main
from metalr.learned.train.distribution import Episode
from metalr.learned.train.outer_loop import _identity, meta_train_es

# Float32 model math: vmap's mean in the loss (the sequential nll_loss sums in a cascade) and
# the LR multiplied before the add (torch's add(alpha=) fuses it) round differently in the last
# bit; over these 30-step episodes the fitness agrees to 2e-7 and the LRs to 1.2e-7 relative.
RTOL = 1e-4
CONFIG = CONFIGS["default"]


def _nets(k: int, sigma: float, seed: int = 0, config=CONFIG) -> list:
    torch.manual_seed(seed)
    theta = full_es.flat(ScheduleNet(config))
    return [full_es.network_at(config, theta + sigma * full_es.noise(theta.numel(), 100 + i))
            for i in range(k)]


def _assert_matches(result, nets, episode, index, evaluations=1):
    for k in index:
        seq = full_es.run_episode(nets[k], episode, evaluations=evaluations)
        assert result.diverged[k] == seq.diverged
        if seq.diverged:
            continue
        assert result.val_loss[k] == pytest.approx(seq.val_loss[-evaluations:], rel=RTOL)
        lr = torch.tensor(seq.lr, dtype=torch.float64)
        assert torch.allclose(result.lr[:, k], lr, rtol=RTOL, atol=0)


@pytest.mark.parametrize("family", ["mnist1d-mlp", "cancer-mlp"])
@pytest.mark.parametrize("optimizer,momentum,lr", [("sgd", 0.9, 0.1), ("sgd", 0.0, 0.5),
                                                   ("adam", 0.0, 3e-3), ("adamw", 0.0, 3e-3)])
def test_population_fitness_and_lrs_equal_the_sequential_episodes(family, optimizer, momentum, lr):
    episode = Episode(family, optimizer, momentum, 1.0, lr, 30, 64, 0.0, True, 11)
    nets = _nets(4, sigma=0.1)
    result = population.run_population(nets, episode)
    assert len({v[-1] for v in result.val_loss}) == 4  # the perturbations change the outcome
    assert result.lr.shape == (30, 4)
    _assert_matches(result, nets, episode, range(4))


@pytest.mark.parametrize("family,optimizer,momentum,lr", [("mnist1d-cnn", "sgd", 0.9, 0.1),
                                                          ("digits-cnn", "adam", 0.0, 1e-3),
                                                          ("digits-mlp", "adamw", 0.0, 3e-3)])
def test_the_other_default_families_match_too(family, optimizer, momentum, lr):
    episode = Episode(family, optimizer, momentum, 1.0, lr, 20, 32, 0.0, True, 7)
    nets = _nets(2, sigma=0.1)
    _assert_matches(population.run_population(nets, episode), nets, episode, range(2))


def test_the_last_few_evaluations_match_the_sequential_ones():
    episode = Episode("digits-mlp", "sgd", 0.9, 1.0, 0.1, 40, 32, 0.0, True, 5)
    nets = _nets(2, sigma=0.1)
    result = population.run_population(nets, episode, evaluations=4)
    assert all(len(v) == 4 for v in result.val_loss)
    _assert_matches(result, nets, episode, range(2), evaluations=4)


@pytest.mark.parametrize("optimizer,momentum,lr", [("sgd", 0.9, 0.1), ("adam", 0.0, 3e-3)])
def test_the_v2_network_and_the_optimizer_kind_match_too(optimizer, momentum, lr):
    # default reads hyper-v3 (whether the optimizer is adaptive); default-v2 does not
    episode = Episode("digits-mlp", optimizer, momentum, 1.0, lr, 25, 32, 0.0, True, 4)
    for name in ("default", "default-v2"):
        torch.manual_seed(0)
        theta = full_es.flat(ScheduleNet(CONFIGS[name]))
        nets = [full_es.network_at(CONFIGS[name], theta + 0.3 * full_es.noise(theta.numel(), 5 + i))
                for i in range(2)]
        _assert_matches(population.run_population(nets, episode), nets, episode, range(2))


def test_hidden_budget_and_label_noise_match_too():
    episode = Episode("mnist1d-mlp", "sgd", 0.9, 1.0, 0.1, 25, 32, 0.2, False, 3)
    nets = _nets(2, sigma=0.1, seed=1)
    _assert_matches(population.run_population(nets, episode), nets, episode, range(2))


def test_a_diverging_member_is_inf_and_leaves_the_others_alone():
    episode = Episode("mnist1d-mlp", "sgd", 0.0, 1.0, 1.0, 30, 64, 0.0, True, 4)
    # default-v3: no rise limit, so a network can jump to 30x at once
    nets = _nets(3, sigma=0.05, config=CONFIGS["default-v3"])
    with torch.no_grad():  # member 1 asks for the top of the range, 30x the base LR
        nets[1].head.bias.fill_(20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trainer warns about the divergence
        result = population.run_population(nets, episode)
        assert full_es.run_episode(nets[1], episode).diverged
        _assert_matches(result, nets, episode, [0, 2])
        fitness = population.population_fitness(nets[0].config, [full_es.flat(n) for n in nets], episode,
                                                 full_es.reference_loss(episode))
    assert result.diverged == [False, True, False]
    assert fitness[1] == full_es.CAP and all(f < 1 for f in (fitness[0], fitness[2]))


@pytest.mark.parametrize("name", ["default", "knee"])
def test_schedule_equals_the_scheduler_on_any_loss_stream_including_refused_losses(name):
    nets = _nets(3, sigma=0.3, seed=2, config=CONFIGS[name])
    steps = 40
    gen = torch.Generator().manual_seed(0)
    losses = torch.exp(torch.randn(steps, 3, generator=gen, dtype=torch.float64) * 0.3
                       - torch.linspace(0, 2, steps, dtype=torch.float64)[:, None])
    losses[5, 1], losses[6, 1], losses[0, 2], losses[20, 0] = 0.0, math.nan, -1.0, math.inf
    losses[9, 0] = 50.0  # a spike, clipped by the features
    schedule = inner.Schedule(nets[0].config, 3, 0.1, steps, True, False, "cpu")
    w, state = inner.stacked_weights(nets, "cpu"), schedule.initial_state()
    got = []
    for t in range(steps):
        got.append(schedule.lr(state, t + 1))
        state = schedule.observe(state, w, losses[t], t + 1)
    got = torch.stack(got)
    for k, net in enumerate(nets):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = MetaLRScheduler(opt, net, total_steps=steps)
        lrs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # refused losses warn
            for t in range(steps):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step(float(losses[t, k]))
        assert torch.allclose(got[:, k], torch.tensor(lrs, dtype=torch.float64), rtol=1e-12, atol=0)


def test_models_it_cannot_run_are_refused_with_the_way_out():
    with pytest.raises(MetalrError, match="recurrent layers.*sequential path"):
        population.check_family("mnist1d-gru")
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    with pytest.raises(MetalrError, match="BatchNorm.*without --vectorize"):
        inner.check_model(model, "toy")
    with pytest.raises(MetalrError, match="drives 'default' networks"):
        population.run_population([ScheduleNet(CONFIGS["transfer-v1"])],
                                  Episode("cancer-mlp", "sgd", 0.9, 1.0, 0.1, 5, 32, 0.0, True, 0))


def test_new_options_validate_and_vectorize_may_change_on_resume(tmp_path, capsys):
    with pytest.raises(MetalrError, match="multiple of --pairs-per-episode"):
        MetaTrainConfig(pairs=3, pairs_per_episode=2).validate()
    with pytest.raises(MetalrError, match="--pairs-per-episode must be a positive integer"):
        MetaTrainConfig(pairs_per_episode=0).validate()
    # vectorize changes rounding only: a run may resume with it switched; the grouping may not
    assert "vectorize" not in _identity(MetaTrainConfig())
    assert _identity(MetaTrainConfig(pairs_per_episode=2))["pairs_per_episode"] == 2
    code = main(["--vectorize", "--tasks=mnist1d-gru", f"--out={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "sequential path" in err[0]


def test_two_es_steps_vectorised_give_the_network_of_the_sequential_run(tmp_path):
    tiny = dict(estimator="es", tasks="mnist1d-mlp,cancer-mlp", pairs=4, pairs_per_episode=2, meta_steps=2,
                budget_min=20, budget_max=30, eval_every=0, save_every=1, workers=1)
    nets = {}
    for vectorize in (False, True):
        cfg = MetaTrainConfig(vectorize=vectorize, name=f"v{int(vectorize)}", **tiny)
        out = meta_train_es(cfg, tmp_path / cfg.name, progress=False)
        nets[vectorize] = checkpoint.load(out["checkpoint"])[0]
    a, b = (full_es.flat(nets[v]) for v in (False, True))
    assert torch.allclose(a, b, rtol=RTOL, atol=1e-6)
