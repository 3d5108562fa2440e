"""The exact unrolled gradient and ES, merged by inverse variance (``--estimator=hybrid``).

Metz et al. 2019 (https://arxiv.org/abs/1810.10180, section 4) train a learned optimizer with
two estimates of one gradient: the reparameterisation (unrolled) gradient, precise on a tame
episode and exploding (norms of 1e8 and more) on a chaotic one, and antithetic ES, whose
variance is large but bounded whatever the episode does. With ``g_rp_i`` and ``g_es_i`` the
two estimates on episode ``i`` of a step's ``n``, and ``s2_rp``, ``s2_es`` their empirical
variances across the step's episodes (the trace of the sample covariance), the step takes

    g = (s2_es * mean(g_rp) + s2_rp * mean(g_es)) / (s2_rp + s2_es),

the minimum-variance unbiased mix of two unbiased estimates of one mean. A step whose episodes
are tame follows the exact gradient; one where a chaotic episode blows the unrolled variance up
shifts to ES rather than following (or dropping) that episode. Here the unrolled sample is the
raw exact gradient (:func:`unrolled_sample`; no per-episode bound, which is the baseline
``--estimator=unroll`` this is measured against), a blown-up episode's sample is its push at
norm ``episode_clip`` as in :mod:`~metalr.learned.train.unroll`, and the ES sample is
``pairs_per_episode`` antithetic pairs over every parameter of the network on the same
episode, their fitness differences clipped as ``--estimator=es`` clips them (:func:`es_sample`).

Two departures from the paper, stated: Metz et al. differentiate the Gaussian-smoothed
objective at perturbed parameters, so both estimators are unbiased for the same gradient; here
the unrolled gradient is taken at the unperturbed network and the ES differences are clipped,
so the two estimate nearly, not exactly, the same thing (sigma 0.05 on a network whose outputs
move smoothly with its parameters). And a non-finite unrolled sample (an overflow) gives the
unrolled variance infinity: that step is ES alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from metalr.learned.network import NetConfig
from metalr.learned.train import full_es, population, unroll
from metalr.learned.train.distribution import Episode


def unrolled_sample(result: unroll.EpisodeGradient, clip: float, blowup_weight: float = 1.0) -> torch.Tensor:
    """An episode's unrolled sample: its raw exact gradient, or a blow-up's push at norm
    ``blowup_weight * clip``."""
    if result.blown_up_at is not None:
        return unroll.weighted(result, clip, blowup_weight)
    return result.grad


def es_sample(config: NetConfig, theta: torch.Tensor, episode: Episode, seeds: Sequence[int],
              sigma: float, diff_clip: float, device: str = "cpu",
              vectorised: bool = False) -> tuple[torch.Tensor, list[list[float]]]:
    """The antithetic ES estimate on ``episode`` at the flat parameters ``theta`` (every one
    perturbed), one pair per noise seed: ``(gradient float64, [[F+, F-], ...])``. ``vectorised``
    trains the ``2 * len(seeds)`` members as one model (:mod:`population`), else one after another."""
    dim = theta.numel()
    reference = full_es.reference_loss(episode, device)
    members = [theta + sign * sigma * full_es.noise(dim, seed) for seed in seeds for sign in (1.0, -1.0)]
    if vectorised:
        values = population.population_fitness(config, members, episode, reference, device)
    else:
        values = [full_es.fitness(full_es.run_episode(full_es.network_at(config, m), episode, device),
                                  reference) for m in members]
    table = [values[2 * i:2 * i + 2] for i in range(len(seeds))]
    diffs = full_es.pair_differences(table, diff_clip)
    return full_es.gradient(dim, list(seeds), diffs, sigma).double(), table


def spread(samples: torch.Tensor) -> float:
    """The empirical variance of the rows of ``samples`` (n x dim): the trace of their sample
    covariance, ``sum_i |g_i - mean|^2 / (n - 1)``; infinite if any row is not finite."""
    if not bool(torch.isfinite(samples).all()):
        return math.inf
    return float(((samples - samples.mean(0)) ** 2).sum() / (samples.shape[0] - 1))


def mix(unrolled: torch.Tensor, es: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The inverse-variance mix of the two estimators' per-episode samples (each n x dim, n >= 2,
    rows in episode order): ``(gradient, weight of the unrolled mean)``."""
    if unrolled.shape != es.shape or unrolled.shape[0] < 2:
        raise ValueError(f"mix needs two n x dim tables with n >= 2, got {tuple(unrolled.shape)} "
                         f"and {tuple(es.shape)}")
    s2_rp, s2_es = spread(unrolled), spread(es)
    if math.isinf(s2_rp):
        return es.mean(0), 0.0
    weight = 0.5 if s2_rp + s2_es == 0 else s2_es / (s2_rp + s2_es)
    return weight * unrolled.mean(0) + (1 - weight) * es.mean(0), weight
