"""The policy registry: formulas, torch wrappers, tuners, peers, errors and plotting."""

from __future__ import annotations

import csv
import io
import math
import sys
import warnings

import pytest
import torch

import metalr
from metalr.cli import main as cli_main
from metalr.errors import MetalrError
from metalr.policies import get_policy, list_policies, make_policy, policy_kind, policy_names
from metalr.policies.exptest import decay_p_value

torch.set_num_threads(1)

K0 = (0.1, 0.02)  # two param groups, ratio 5


def two_groups(momentum=0.9):
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    return torch.optim.SGD([{"params": [params[0]], "lr": K0[0]},
                            {"params": [params[1]], "lr": K0[1]}], lr=K0[0], momentum=momentum)


def losses_for(n, seed=0):
    """A noisy, slowly decaying loss sequence to feed loss-reading policies."""
    g = torch.Generator().manual_seed(seed)
    return [2.0 / (1 + 0.05 * t) * (1 + 0.1 * torch.rand(1, generator=g).item()) for t in range(n)]


def run(scheduler, optimizer, losses):
    """The LRs (all groups) each step trained with, stepping as the trainer does."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for loss in losses:
            out.append(list(scheduler.get_last_lr()))
            optimizer.step()
            scheduler.step(loss)
    return out


SPECS = {name: {} for name in policy_names()
         if policy_kind(name) != "optimizer" and name not in ("metalr", "composite")}
SPECS["composite"] = {"parts": "tri(l=5;ratio=3)/knee(explore=0.5)", "boundaries": 30}


# --- LRBench functions and Knee against the formulas ---------------------------------------

def tri_g(t, l):
    return (2 / math.pi) * abs(math.asin(math.sin(math.pi * t / (2 * l))))


def sin_g(t, l):
    return abs(math.sin(math.pi * t / (2 * l)))


def cyclic(g):
    return lambda t, k0, p: k0 + (p["ratio"] * k0 - k0) * g(t, p)


FORMULAS = {
    "fix": ({}, lambda t, k0, p: k0),
    "step": ({"gamma": 0.5, "l": 10}, lambda t, k0, p: k0 * p["gamma"] ** math.floor(t / p["l"])),
    "nstep": ({"gamma": 0.3, "milestones": (7, 20)},
              lambda t, k0, p: k0 * p["gamma"] ** (0 if t < 7 else 1 if t < 20 else 2)),
    "exp": ({"gamma": 0.9}, lambda t, k0, p: k0 * p["gamma"] ** t),
    "inv": ({"gamma": 0.1, "p": 0.75}, lambda t, k0, p: k0 * (1 + p["gamma"] * t) ** -p["p"]),
    "poly": ({"p": 2.0, "l": 30}, lambda t, k0, p: k0 * max(0.0, 1 - t / p["l"]) ** p["p"]),
    "tri": ({"ratio": 4.0, "l": 10}, cyclic(lambda t, p: tri_g(t, p["l"]))),
    "tri2": ({"ratio": 4.0, "l": 10},
             cyclic(lambda t, p: tri_g(t, p["l"]) / 2 ** math.floor(t / (2 * p["l"])))),
    "triexp": ({"ratio": 4.0, "l": 10, "gamma": 0.95},
               cyclic(lambda t, p: p["gamma"] ** t * tri_g(t, p["l"]))),
    "sin": ({"ratio": 3.0, "l": 10}, cyclic(lambda t, p: sin_g(t, p["l"]))),
    "sin2": ({"ratio": 3.0, "l": 10},
             cyclic(lambda t, p: sin_g(t, p["l"]) / 2 ** math.floor(t / (2 * p["l"])))),
    "sinexp": ({"ratio": 3.0, "l": 10, "gamma": 0.95},
               cyclic(lambda t, p: p["gamma"] ** t * sin_g(t, p["l"]))),
    "cos": ({"ratio": 5.0, "l": 20},
            cyclic(lambda t, p: (1 + math.cos(math.pi * t / p["l"])) / 2)),
}
# Steps around every boundary of the parameters above (l = 10, milestones 7 and 20, poly's 30).
CHECK_STEPS = (0, 1, 5, 6, 7, 8, 9, 10, 11, 19, 20, 21, 29, 30, 31, 39, 40, 45)


@pytest.mark.parametrize("name", list(FORMULAS))
def test_lrbench_function_matches_formula(name):
    params, formula = FORMULAS[name]
    opt = two_groups()
    lrs = run(make_policy(name, opt, 50, **params), opt, [1.0] * 50)
    for t in CHECK_STEPS:
        for group, k0 in enumerate(K0):
            expected = formula(t, k0, params)
            assert lrs[t][group] == pytest.approx(expected, rel=1e-12, abs=1e-15), (t, group)


def test_lrbench_landmarks():
    """A few values worked out by hand, so a shared mistake in formula and code shows."""
    opt = two_groups()
    tri = run(make_policy("tri", opt, 40, ratio=4.0, l=10), opt, [1.0] * 41)
    assert [tri[t][0] for t in (0, 5, 10, 15, 20, 30)] == pytest.approx(
        [0.1, 0.25, 0.4, 0.25, 0.1, 0.4])
    opt = two_groups()
    tri2 = run(make_policy("tri2", opt, 40, ratio=4.0, l=10), opt, [1.0] * 41)
    assert tri2[30][0] == pytest.approx(0.25)  # second cycle peaks at half the amplitude
    opt = two_groups()
    cos = run(make_policy("cos", opt, 40, ratio=5.0, l=20), opt, [1.0] * 41)
    assert [cos[t][0] for t in (0, 10, 20, 40)] == pytest.approx([0.5, 0.3, 0.1, 0.5])


def knee_formula(s, peak, total, warmup, explore):
    e = round(explore * total)
    d = total - warmup - e
    if s <= warmup:
        return peak * s / warmup
    if s <= warmup + e:
        return peak
    return peak * max(0.0, 1 - (s - warmup - e) / d)


@pytest.mark.parametrize("warmup,explore", [(0, 0.5), (10, 0.4), (5, 0.0), (0, 1.0)])
def test_knee_matches_formula(warmup, explore):
    total = 100
    opt = two_groups()
    lrs = run(make_policy("knee", opt, total, warmup=warmup, explore=explore), opt, [1.0] * total)
    e = round(explore * total)
    for s in sorted({1, 2, warmup, warmup + 1, warmup + e, warmup + e + 1, 75, total - 1, total}
                   & set(range(1, total + 1))):
        for group, peak in enumerate(K0):
            expected = knee_formula(s, peak, total, warmup, explore)
            assert lrs[s - 1][group] == pytest.approx(expected), s
    assert lrs[-1][0] == (0.1 if explore == 1.0 else 0.0)  # the last step of the budget runs at 0


def test_knee_default_and_budget_check():
    opt = two_groups()
    lrs = run(make_policy("knee", opt, 10), opt, [1.0] * 10)
    assert [round(lr[0], 6) for lr in lrs] == [0.1] * 5 + [0.08, 0.06, 0.04, 0.02, 0.0]
    with pytest.raises(MetalrError, match="exceeds the budget"):
        make_policy("knee", two_groups(), 100, warmup=60, explore=0.5)


def test_composite_restarts_the_clock_at_each_boundary():
    opt = two_groups()
    sched = make_policy("composite", opt, 60, parts="tri(l=5;ratio=3)/step(gamma=0.5;l=4)/fix",
                        boundaries=(20, 40))
    lrs = [lr[0] for lr in run(sched, opt, [1.0] * 60)]
    tri = cyclic(lambda t, p: tri_g(t, p["l"]))
    for t in range(20):
        assert lrs[t] == pytest.approx(tri(t, 0.1, {"ratio": 3.0, "l": 5}))
    for t in range(20, 40):
        assert lrs[t] == pytest.approx(0.1 * 0.5 ** ((t - 20) // 4))
    assert lrs[40:] == pytest.approx([0.1] * 20)
    # the same from a spec string, and from (name, params) pairs
    parsed = get_policy("composite:parts=tri(l=5;ratio=3)/step(gamma=0.5;l=4)/fix,boundaries=20/40")
    opt2 = two_groups()
    from_spec = run(parsed.make_scheduler(opt2, 60), opt2, [1.0] * 60)
    assert [lr[0] for lr in from_spec] == pytest.approx(lrs)
    opt3 = two_groups()
    pairs = make_policy("composite", opt3, 60, parts=[("tri", {"l": 5, "ratio": 3}),
                                                       ("step", {"gamma": 0.5, "l": 4}), "fix"],
                        boundaries=[20, 40])
    assert [lr[0] for lr in run(pairs, opt3, [1.0] * 60)] == pytest.approx(lrs)


# --- torch's schedulers are wrapped, not rewritten -----------------------------------------

TORCH_EQUIVALENT = {
    "cosine": lambda o, T: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T),
    "linear": lambda o, T: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=T),
    "onecycle": lambda o, T: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=list(K0), total_steps=T),
    "sgdr": lambda o, T: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=math.ceil(T / 7), T_mult=2),
}


@pytest.mark.parametrize("name", list(TORCH_EQUIVALENT))
def test_torch_wrappers_match_torch(name):
    total = 70
    ours_opt, ref_opt = two_groups(), two_groups()
    ours = run(make_policy(name, ours_opt, total), ours_opt, [1.0] * total)
    ref_sched = TORCH_EQUIVALENT[name](ref_opt, total)
    ref = []
    for _ in range(total):
        ref.append([g["lr"] for g in ref_opt.param_groups])
        ref_opt.step()
        ref_sched.step()
    assert sum(ours, []) == pytest.approx(sum(ref, []), rel=1e-12)
    if name == "onecycle":  # one-cycle also cycles momentum, as torch does
        momentum = ref_opt.param_groups[0]["momentum"]
        assert ours_opt.param_groups[0]["momentum"] == pytest.approx(momentum)


def test_plateau_reads_windowed_loss():
    opt = two_groups()
    sched = make_policy("plateau", opt, 100, window=5, patience=2, factor=0.5)
    flat = [lr[0] for lr in run(sched, opt, [1.0] * 30)]
    # window 1 sets the best; windows 2-4 are bad; the 3rd bad one (> patience) halves the LR
    assert flat[:20] == [0.1] * 20 and flat[20:] == pytest.approx([0.05] * 10)
    opt = two_groups()
    falling = run(make_policy("plateau", opt, 100, window=5, patience=2), opt, losses_for(100))
    assert falling[-1] == [0.1, 0.02]
    with pytest.raises(MetalrError, match="needs the training loss"):
        make_policy("plateau", two_groups(), 10).step()


# --- every scheduler: checkpoints resume identically, groups keep their ratio --------------

@pytest.mark.parametrize("name", list(SPECS))
def test_state_dict_round_trip_resumes_identically(name):
    total, cut = 120, 47
    losses = losses_for(total, seed=1)
    opt_a = two_groups()
    sched_a = make_policy(name, opt_a, total, **SPECS[name])
    first = run(sched_a, opt_a, losses[:cut])
    buffer = io.BytesIO()
    torch.save({"sched": sched_a.state_dict(), "opt": opt_a.state_dict()}, buffer)
    rest_a = run(sched_a, opt_a, losses[cut:])

    opt_b = two_groups()
    sched_b = make_policy(name, opt_b, total, **SPECS[name])
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    opt_b.load_state_dict(saved["opt"])
    sched_b.load_state_dict(saved["sched"])
    rest_b = run(sched_b, opt_b, losses[cut:])
    assert rest_b == rest_a
    assert first[0] != rest_a[-1] or name in ("constant", "fix", "plateau")


@pytest.mark.parametrize("name", list(SPECS))
def test_two_param_groups_keep_their_ratio(name):
    opt = two_groups()
    lrs = run(make_policy(name, opt, 150, **SPECS[name]), opt, losses_for(150))
    ratios = [a / b for a, b in lrs if b > 1e-12]
    assert len(ratios) > 100
    assert ratios == pytest.approx([K0[0] / K0[1]] * len(ratios), rel=1e-9)


# --- ExpTest-style tuner -------------------------------------------------------------------

def linear_regression(seed, n=512, d=20, noise=0.0):
    """Least squares with a spread spectrum; returns x, y and the Hessian's largest eigenvalue."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.logspace(0, -1.5, d)
    y = x @ torch.randn(d, generator=g) + noise * torch.randn(n, generator=g)
    return x, y, torch.linalg.eigvalsh(x.T @ x / n).max().item()


def fit(x, y, lr, total, batch=None, seed=0, **params):
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    sched = make_policy("exptest", opt, total, **params)
    g = torch.Generator().manual_seed(seed)
    lrs, losses = [], []
    for _ in range(total):
        rows = torch.randint(0, len(x), (batch,), generator=g) if batch else slice(None)
        loss = 0.5 * ((x[rows] @ w - y[rows]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        losses.append(loss.item())
        sched.step(loss.item())
    return sched, lrs, losses


def test_decay_test():
    g = torch.Generator().manual_seed(0)
    noise = [1 + 0.05 * torch.randn(1, generator=g).item() for _ in range(30)]
    assert decay_p_value([math.exp(-0.05 * i) * e for i, e in enumerate(noise)]) < 0.01
    assert decay_p_value([math.exp(0.05 * i) * e for i, e in enumerate(noise)]) > 0.99
    assert 0.05 < decay_p_value(noise) < 0.95
    assert decay_p_value([1.0, 0.5, float("nan"), 0.2]) == 1.0


@pytest.mark.parametrize("seed,start", [(0, 1e-3), (1, 1e-2), (2, 0.1)])
def test_exptest_search_lands_near_stability_bound(seed, start):
    """Full-batch GD on least squares: the search ends within 3x of 2 / lambda_max."""
    x, y, lam = linear_regression(seed)
    bound = 2 / lam
    sched, lrs, losses = fit(x, y, start * bound, 2000)
    ratio = sched.found_lrs[0] / bound
    assert 1 / 3 <= ratio <= 3, ratio
    assert max(lrs) > sched.found_lrs[0]  # it went past the bound and backed off
    assert losses[-1] < 1e-3 * losses[0]


def test_exptest_cuts_the_lr_once_the_loss_plateaus():
    """Noisy mini-batch least squares from a stable LR: no cut while the loss falls, cuts after."""
    x, y, lam = linear_regression(0, noise=0.5)
    start, window = 0.05 * 2 / lam, 150
    sched, lrs, losses = fit(x, y, start, 3000, batch=32, search=0, window=window)
    means = [sum(losses[i:i + window]) / window for i in range(0, 3000, window)]
    plateau = sum(means[-5:]) / 5
    first_cut = next(t for t, lr in enumerate(lrs) if lr < start)
    assert means[0] > 1.5 * plateau  # the first window is still falling fast ...
    assert first_cut >= window  # ... and is not cut
    assert means[first_cut // window - 1] < 1.15 * plateau  # the cut comes once it is flat
    assert sched.cuts >= 2 and lrs[-1] < 0.33 * start


def test_exptest_rejects_a_diverging_probe_at_once():
    x, y, lam = linear_regression(0)
    sched, lrs, losses = fit(x, y, 4 * 2 / lam, 400, search=0.5, probe=20)
    assert sched.found_lrs[0] < 2 / lam  # backed off below the bound ...
    assert sum(lr > 2 / lam for lr in lrs) <= 4  # ... two steps per rejected level (4x, 2x)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 1e-3 * losses[0]


# --- LRTuner-style tuner -------------------------------------------------------------------

def test_lrtuner_probes_up_backs_off_then_decays():
    """Simulated loss: improves while the LR multiplier is <= 3, worsens above."""
    opt = two_groups()
    sched = make_policy("lrtuner", opt, 400, window=10, up=1.5, patience=3, explore=0.5)
    loss, lrs = 5.0, []
    for _ in range(400):
        lrs.append(opt.param_groups[0]["lr"])
        mult = lrs[-1] / K0[0]
        loss = loss * (0.99 if mult <= 3 else 1.05)
        opt.step()
        sched.step(loss)
    # 1 -> 1.5 -> 2.25 -> 3.375 (worse) -> back to 2.25, never probed higher again
    assert lrs[0] == 0.1 and lrs[10] == pytest.approx(0.15) and lrs[20] == pytest.approx(0.225)
    assert lrs[30] == pytest.approx(0.3375) and lrs[40] == pytest.approx(0.225)
    assert max(lrs[41:]) == pytest.approx(0.225)
    # exploit from step 200 (explore = 0.5): linear decay to 0 at the end of the budget
    assert lrs[199] == pytest.approx(0.225) and lrs[300] == pytest.approx(0.225 * 0.5)
    assert lrs[-1] == pytest.approx(0.225 / 200)


def test_lrtuner_beats_its_starting_constant_lr_on_mnist1d():
    """A short run (20 epochs, seed 0); benchmarks/tuners.py does the full budget on 3 seeds."""
    const = metalr.train("mnist1d-mlp", "constant", seed=0, epochs=20).final
    tuned = metalr.train("mnist1d-mlp", "lrtuner", seed=0, epochs=20).final
    assert tuned["test_metric"] > const["test_metric"] + 0.02
    assert tuned["train_loss"] < 0.5 * const["train_loss"]


# --- the trainer runs registry policies ----------------------------------------------------

def test_trainer_runs_a_spec_and_feeds_the_loss():
    res = metalr.train("mnist1d-mlp", "knee:explore=0.3", seed=0, epochs=2)
    total = len(res.lr)
    assert res.policy == "knee:explore=0.3" and total == 70
    assert res.lr == pytest.approx([knee_formula(s, 0.1, total, 0, 0.3)
                                    for s in range(1, total + 1)])
    plateau = metalr.train("mnist1d-mlp", "plateau:window=5,patience=0,factor=0.5", seed=0,
                           epochs=2)
    assert min(plateau.lr) < 0.1  # the loss reached the scheduler through step_scheduler


# --- LR-free peers -------------------------------------------------------------------------

PEER_MODULES = {"sf-sgd": "schedulefree", "sf-adamw": "schedulefree", "prodigy": "prodigyopt",
                "dadapt-sgd": "dadaptation", "dadapt-adam": "dadaptation", "dog": "dog"}


def test_every_peer_is_tested():
    assert set(PEER_MODULES) == {n for n in policy_names() if policy_kind(n) == "optimizer"}


@pytest.mark.parametrize("name", list(PEER_MODULES))
def test_peer_trains_mnist1d_through_metalr_train(name):
    pytest.importorskip(PEER_MODULES[name], reason="pip install metalr[peers]")
    res = metalr.train("mnist1d-mlp", name, seed=0, epochs=3, eval_points=3)
    assert not res.diverged and len(res.train_loss) == 105
    assert all(math.isfinite(v) for v in res.train_loss)
    assert res.eval_step == [35, 70, 105] and 0.0 <= res.final["test_metric"] <= 1.0
    assert get_policy(name).replaces_optimizer


def test_schedule_free_switches_modes_and_warns_about_batchnorm():
    pytest.importorskip("schedulefree", reason="pip install metalr[peers]")
    policy = get_policy("sf-sgd")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4),
                                torch.nn.Linear(4, 1))
    opt = policy.make_optimizer(model.parameters(), "sgd", 0.1, 0.9, 0.0)
    policy.train_mode(opt)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match="BatchNorm"):
        policy.eval_mode(opt, model)
    assert not opt.param_groups[0]["train_mode"]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # moved to x
    policy.train_mode(opt)
    assert opt.param_groups[0]["train_mode"]
    assert all(torch.allclose(a, b) for a, b in zip(before, model.parameters()))


def test_dog_evaluates_its_averaged_model():
    pytest.importorskip("dog", reason="pip install metalr[peers]")
    policy = get_policy("dog")
    model = torch.nn.Linear(4, 1)
    opt = policy.make_optimizer(model.parameters(), "sgd", 0.1, 0.9, 0.0)
    assert policy.eval_model(model) is model
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        policy.after_step(opt, model)
    averaged = policy.eval_model(model)
    assert averaged is not model and averaged is policy.averager.averaged_model
    assert get_policy("dog:layerwise=true,gamma=4").make_optimizer(
        model.parameters(), "sgd", 0.1, 0.9, 0.0).__class__.__name__ == "LDoG"
    assert not torch.equal(averaged.weight, model.weight)
    policy.make_optimizer(model.parameters(), "sgd", 0.1, 0.9, 0.0)
    assert policy.eval_model(model) is model  # a new run starts a new average


def test_peers_pass_on_their_parameters_and_the_task_recipe():
    pytest.importorskip("dadaptation", reason="pip install metalr[peers]")
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = get_policy("dadapt-sgd:growth_rate=1.02").make_optimizer(params, "sgd", 0.1, 0.8, 1e-3)
    group = opt.param_groups[0]
    assert (group["growth_rate"], group["momentum"], group["weight_decay"], group["lr"]) == (
        1.02, 0.8, 1e-3, 1.0)
    group = get_policy("dadapt-adam").make_optimizer(params, "adam", 0.1, 0.9, 1e-3).param_groups[0]
    assert group["growth_rate"] == math.inf and group["decouple"]


def test_missing_peer_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)
    with pytest.raises(MetalrError, match=r"pip install metalr\[peers\]"):
        get_policy("prodigy")


# --- registry, errors, listing -------------------------------------------------------------

def test_get_policy_parses_numbers():
    policy = get_policy("knee:explore=0.3,warmup=5")
    sched = policy.make_scheduler(two_groups(), 100)
    assert (sched.explore, sched.warmup) == (0.3, 5) and isinstance(sched.warmup, int)
    assert policy.name == "knee:explore=0.3,warmup=5" and not policy.replaces_optimizer
    onecycle = get_policy("onecycle:cycle_momentum=false").make_scheduler(two_groups(), 10)
    assert onecycle.cycle_momentum is False


@pytest.mark.parametrize("call,message", [
    (lambda: get_policy("nope"), r"unknown policy 'nope'; accepted: constant, fix, step"),
    (lambda: get_policy("knee:bogus=1"), r"no parameter 'bogus'; accepted: explore=0.5, warmup=0"),
    (lambda: make_policy("step", two_groups(), 10, gamma=2.0),
     r"gamma must be a number in \(0, 1\]"),
    (lambda: make_policy("step", two_groups(), 10, l=0), r"l must be a whole number >= 1, got 0"),
    (lambda: make_policy("tri", two_groups(), 10, l=2.5), r"l must be a whole number"),
    (lambda: make_policy("knee", two_groups(), 10, explore="lots"), r"explore must be a number"),
    (lambda: make_policy("exp", two_groups(), 0), r"total_steps must be a whole number >= 1"),
    (lambda: make_policy("nstep", two_groups(), 10, milestones=(5, 3)), r"strictly increasing"),
    (lambda: make_policy("linear", two_groups(), 10, end_factor=1.5), r"end_factor must be"),
    (lambda: make_policy("onecycle", two_groups(), 10, cycle_momentum=3), r"must be a switch \(accepted: true, yes, 1, false, no, 0\), got 3"),
    (lambda: make_policy("composite", two_groups(), 10), r"needs parts, boundaries"),
    (lambda: make_policy("composite", two_groups(), 50, parts="fix/exp", boundaries=(10, 20)),
     r"2 parts need 1 boundaries"),
    (lambda: make_policy("composite", two_groups(), 50, parts="fix/exp", boundaries=60),
     r"inside the budget of 50"),
    (lambda: make_policy("composite", two_groups(), 50, parts="fix/what", boundaries=10),
     r"unknown policy 'what'"),
    (lambda: make_policy("prodigy", two_groups(), 10), r"replaces the optimizer"),
    (lambda: get_policy("knee:explore"), r"not of the form key=value"),
    (lambda: get_policy("prodigy:lr=-1"), r"lr must be a number in \(0, inf\]"),
])
def test_errors_say_what_is_accepted(call, message):
    with pytest.raises(MetalrError, match=message):
        call()


def test_list_policies_rows():
    rows = list_policies()
    assert [r["name"] for r in rows] == policy_names()
    assert len({tuple(r) for r in rows}) == 1  # the same keys on every row
    by_name = {r["name"]: r for r in rows}
    assert by_name["knee"]["parameters (T = total steps)"] == "explore=0.5, warmup=0"
    assert by_name["step"]["parameters (T = total steps)"] == "gamma=0.1, l=ceil(T/3)"
    assert by_name["exptest"]["parameters (T = total steps)"].startswith("alpha=0.05, beta=0.33")
    assert {n for n, r in by_name.items() if r["replaces optimizer"] == "yes"} == {
        "sf-sgd", "sf-adamw", "prodigy", "dadapt-sgd", "dadapt-adam", "dog"}
    assert {n for n, r in by_name.items() if r["reads loss"] == "yes"} == {
        "plateau", "lrtuner", "exptest", "metalr"}
    assert all(r["description"] and "\n" not in r["description"] for r in rows)
    assert {"constant", "cosine", "metalr"} <= set(by_name)


def test_cli_list_policies(capsys):
    assert cli_main(["list", "policies"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("name") and "sinexp" in out and "dadapt-adam" in out


# --- plot-policy ---------------------------------------------------------------------------

def test_plot_policy_writes_png_and_csv(tmp_path, capsys):
    out = tmp_path / "knee.png"
    assert cli_main(["plot-policy", "knee", "--steps", "40", "--param", "explore=0.25",
                     "--base-lr", "1", "--out", str(out)]) == 0
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(tmp_path / "knee.csv")))
    assert len(rows) == 40 and rows[0]["policy"] == "knee:explore=0.25"
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [knee_formula(s, 1.0, 40, 0, 0.25) for s in range(1, 41)])


def test_plot_policy_runs_online_tuners_for_real(tmp_path):
    out = tmp_path / "two.png"
    argv = ["plot-policy", "lrtuner:window=5", "cos", "--steps", "50", "--out", str(out)]
    assert cli_main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "two.csv")))
    tuner = [float(r["lr"]) for r in rows if r["policy"] == "lrtuner:window=5"]
    assert len(tuner) == 50 and tuner[0] == 0.1 and tuner[5] == pytest.approx(0.15)


@pytest.mark.parametrize("argv,message", [
    (["plot-policy", "knee", "--steps", "0"], "steps must be"),
    (["plot-policy", "dog", "--steps", "10"], "replaces the optimizer"),
    (["plot-policy", "knee", "cos", "--steps", "10", "--param", "l=3"], "single policy"),
    (["plot-policy", "knee", "--steps", "10", "--param", "explore"], "not of the form k=v"),
    (["plot-policy", "knee", "--steps", "10", "--out", "x.jpg"], "must end in .png"),
])
def test_plot_policy_errors_exit_2(argv, message, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("metalr: error:") and message in err and err.count("\n") == 1


def test_learned_policy_takes_an_absolute_checkpoint_path():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "pretrained" / "metalr-mnist1d.json"
    policy = metalr.get_policy(f"metalr:checkpoint={path}")
    assert policy.params == {"checkpoint": str(path)}
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    sched = metalr.make_policy(f"metalr:checkpoint={path}", opt, total_steps=10)
    assert sched.get_last_lr() == [0.1]


def test_tasks_and_policies_read_switches_alike():
    from metalr import specs

    for words, value in ((specs.TRUE_WORDS, True), (specs.FALSE_WORDS, False)):
        for word in words:
            policy = get_policy(f"onecycle:cycle_momentum={word}")
            sched = policy.make_scheduler(two_groups(), 10)
            assert sched.cycle_momentum is value
