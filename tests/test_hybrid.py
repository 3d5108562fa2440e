"""The hybrid estimator (unroll + ES by inverse variance) and the wall-time limit of meta-training."""

import csv
import math

import pytest
import torch

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.train import full_es, hybrid
from metalr.learned.train.config import MetaTrainConfig
from metalr.learned.train.distribution import Episode
from metalr.learned.train.outer_loop import meta_train_es

TINY = dict(tasks="cancer-mlp,mnist1d-mlp", episodes=3, meta_steps=2, budget_min=15, budget_max=30,
            eval_every=0, save_every=1)


def test_mix_weighs_each_estimator_by_the_others_variance():
    rp = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    es = torch.tensor([[0.0, 10.0], [0.0, -10.0], [6.0, 0.0]], dtype=torch.float64)
    # by hand: rp's mean (2, 2/3), squared deviations 2 + 24/9 over n - 1 = 2; es's mean (2, 0), 24 + 200
    s2_rp, s2_es = (2 + 24 / 9) / 2, (24 + 200) / 2
    assert hybrid.spread(rp) == pytest.approx(s2_rp) and hybrid.spread(es) == pytest.approx(s2_es)
    grad, weight = hybrid.mix(rp, es)
    assert weight == pytest.approx(s2_es / (s2_rp + s2_es))  # 0.98: the tame unrolled samples carry it
    assert torch.allclose(grad, weight * rp.mean(0) + (1 - weight) * es.mean(0))


def test_a_chaotic_unrolled_sample_hands_the_step_to_es_and_an_overflow_to_es_alone():
    es = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rp = torch.full((4, 5), 0.1, dtype=torch.float64)
    rp[2] = 1e8  # an exploding episode, as Metz et al. 2019 describe
    grad, weight = hybrid.mix(rp, es)
    assert weight < 1e-12 and torch.allclose(grad, es.mean(0), atol=1e-3)
    rp[2] = math.inf
    grad, weight = hybrid.mix(rp, es)
    assert weight == 0.0 and torch.equal(grad, es.mean(0)) and bool(torch.isfinite(grad).all())
    with pytest.raises(ValueError, match="n >= 2"):
        hybrid.mix(rp[:1], es[:1])


def test_the_es_sample_is_the_antithetic_estimate_vectorised_or_not():
    net = ScheduleNet(CONFIGS["default"])
    theta = full_es.flat(net)
    episode = Episode("cancer-mlp", "sgd", 0.9, 3.0, 0.3, 25, 32, 0.0, True, 5)
    seeds = [11, 12]
    sequential, table = hybrid.es_sample(net.config, theta, episode, seeds, 0.05, 0.05)
    vectorised, table_v = hybrid.es_sample(net.config, theta, episode, seeds, 0.05, 0.05, vectorised=True)
    diffs = full_es.pair_differences(table, 0.05)
    assert torch.allclose(sequential, full_es.gradient(theta.numel(), seeds, diffs, 0.05).double())
    assert any(d != 0 for d in diffs)
    assert sum(table_v, []) == pytest.approx(sum(table, []), abs=1e-5)
    assert torch.allclose(vectorised, sequential, atol=1e-3 * float(sequential.norm()))


def test_the_hybrid_network_does_not_depend_on_the_number_of_workers(tmp_path):
    nets, weights = [], []
    for workers in (1, 2):
        cfg = MetaTrainConfig(estimator="hybrid", workers=workers, name=f"w{workers}", **TINY)
        out = meta_train_es(cfg, tmp_path / cfg.name, progress=False)
        nets.append(checkpoint.load(out["checkpoint"])[0])
        with open(tmp_path / cfg.name / f"{cfg.name}.metrics.csv") as fh:
            weights.append([float(r["rp_weight"]) for r in csv.DictReader(fh)])
    assert torch.equal(full_es.flat(nets[0]), full_es.flat(nets[1]))
    assert not torch.equal(full_es.flat(nets[0]), full_es.flat(ScheduleNet(CONFIGS["default"])))
    assert weights[0] == weights[1] and len(weights[0]) == 2 and all(0 <= w <= 1 for w in weights[0])


@pytest.mark.parametrize("estimator", ["unroll", "es"])
def test_max_minutes_ends_the_run_at_a_step_that_resumes_exactly(tmp_path, estimator):
    opts = {**TINY, "estimator": estimator, "pairs": 2, "meta_steps": 3, "workers": 1}
    whole = meta_train_es(MetaTrainConfig(name="whole", **opts), tmp_path / "whole", progress=False)
    cut = meta_train_es(MetaTrainConfig(name="cut", max_minutes=1e-9, **opts), tmp_path / "cut", progress=False)
    assert cut["meta_steps"] == 1 and whole["meta_steps"] == 3
    # the state is that step's: the same run without a limit goes on to the same network
    again = meta_train_es(MetaTrainConfig(name="cut", overwrite=True, **opts), tmp_path / "cut", progress=False)
    assert again["meta_steps"] == 3
    assert checkpoint.load(again["checkpoint"])[1]["sha256"] == checkpoint.load(whole["checkpoint"])[1]["sha256"]


def test_max_minutes_ends_lookahead_after_the_inner_run_that_passes_it(tmp_path):
    from metalr.learned.train.lookahead import meta_train_lookahead

    cfg = MetaTrainConfig(estimator="lookahead", tasks="cancer-mlp", epochs=1, runs_per_task=3, unroll=2,
                          meta_interval=5, val_batch=32, max_minutes=1e-9)
    out = meta_train_lookahead(cfg, tmp_path, progress=False)
    assert out["inner_runs"] == 1 and len(out["runs"]) == 1


@pytest.mark.parametrize("options, message", [
    (dict(max_minutes=-1.0), "--max-minutes must be a finite number >= 0"),
    (dict(max_minutes=math.inf), "--max-minutes must be a finite number >= 0"),
    (dict(estimator="hybrid", episodes=1), "--episodes must be at least 2"),
])
def test_bad_hybrid_and_time_options_are_refused(options, message):
    with pytest.raises(MetalrError, match=message):
        MetaTrainConfig(**options).validate()
