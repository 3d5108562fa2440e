"""Antithetic evolution strategies over whole training runs ("FullES").

Salimans et al. 2017 (https://arxiv.org/abs/1703.03864); VeLO's full-episode estimator,
Metz et al. 2022 (https://arxiv.org/abs/2211.09760). With ``theta`` the flat parameters of
the schedule network, ``eps_i ~ N(0, I)`` and ``F(theta)`` the fitness of one whole episode::

    g = 1/n  sum_i  d_i * eps_i / (2 sigma),     d_i = r(F(theta + sigma eps_i)) - r(F(theta - sigma eps_i))

with ``r`` the identity is an unbiased estimate of the gradient of the Gaussian-smoothed
fitness, whatever the episode's length: nothing is backpropagated through training, so memory does not
grow with the horizon and meta-gradients cannot explode (Metz et al. 2019,
https://arxiv.org/abs/1810.10180). Both members of a pair run the same episode: the same task,
model initialisation, batch order and label noise, so ``d_i`` measures the perturbation, not
the luck of the draw.

Fitness ``F`` is the log of the final loss on the episode's clean validation split; a run
that diverges (non-finite loss) counts as worse than any finite one. Tasks differ wildly in how
much a small change of the LR moves ``F``: near-perfect classifiers on small validation sets
(the digits CNN) swing by +-0.6 in log-loss between two perturbed members, because their
trajectories decorrelate, where an MNIST-1D MLP moves by 0.01. So ``r`` is the centred rank
(in [-1/2, 1/2]) of a member's fitness among the members that ran the same episode, the
fitness shaping of Salimans et al. applied per episode: every episode says only which members
did better, and no task drowns the others. With one pair per episode this is VeLO's
``sign(F+ - F-)``.

Noise is regenerated from an integer seed (:func:`noise`), so processes exchange only the
scalars ``F+`` and ``F-``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from metalr.learned.network import NetConfig, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler
from metalr.learned.train.distribution import Episode
from metalr.policies.base import SchedulerPolicy
from metalr.trainer import train

def derive_seed(*keys: int) -> int:
    """A 31-bit seed determined by ``keys`` alone (the run seed, the meta-step, the pair...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] >> 1)


def noise(dim: int, seed: int) -> torch.Tensor:
    """The perturbation direction ``eps`` of a pair, regenerated from its seed."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


def flat(net: ScheduleNet) -> torch.Tensor:
    return parameters_to_vector(net.parameters()).detach().clone()


PERTURB = ("head", "all")


def perturbed_indices(net: ScheduleNet, which: str) -> torch.Tensor:
    """Positions in :func:`flat` that ES moves: all, or the head (output layer + skip path).

    With ``head`` the LSTM keeps its seeded random initialisation and serves as a fixed bank of
    recurrent features of the loss history (as in echo-state networks); ES then searches 26
    dimensions instead of 818, where its gradient estimate is far less noisy per sample.
    """
    index, start = [], 0
    for name, p in net.named_parameters():
        if which == "all" or name.split(".")[0] in ("head", "skip"):
            index.extend(range(start, start + p.numel()))
        start += p.numel()
    return torch.tensor(index, dtype=torch.long)


def network_at(config: NetConfig, theta: torch.Tensor) -> ScheduleNet:
    net = ScheduleNet(config)
    vector_to_parameters(theta, net.parameters())
    return net.eval()


def run_episode(net: ScheduleNet, episode: Episode, device: str = "cpu"):
    """Train ``episode`` from scratch with ``net`` setting the LR; the :class:`TrainResult`."""
    def make_scheduler(optimizer, total_steps):
        # Each process runs its own episodes: no loss averaging across ranks.
        return MetaLRScheduler(optimizer, net, total_steps=total_steps if episode.show_budget else None,
                               sync_ranks=False)

    return train(episode.spec(), SchedulerPolicy("metalr", make_scheduler), seed=episode.seed,
                 steps=episode.budget, eval_points=1, evaluate_test=False, device=device)


def fitness(result) -> float:
    """log(final validation loss); +inf for a run that diverged or ended non-finite."""
    loss = result.val_loss[-1] if result.val_loss else math.nan
    if result.diverged or not (math.isfinite(loss) and loss > 0):
        return math.inf
    return math.log(loss)


def centred_ranks(values: list[float]) -> list[float]:
    """Ranks scaled to [-1/2, 1/2] (lowest fitness -1/2), ties sharing their mean rank; +inf
    (a diverged run) ranks above every finite value."""
    n = len(values)
    if n < 2:
        return [0.0] * n
    order = sorted(range(n), key=lambda i: values[i])
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 / (n - 1) - 0.5
        i = j + 1
    return ranks


def pair_differences(table: list[list[float]], per_episode: int) -> list[float]:
    """``d_i = r(F+_i) - r(F-_i)``, ranking the ``2 * per_episode`` members of each episode."""
    out = []
    for e in range(0, len(table), per_episode):
        group = table[e:e + per_episode]
        ranks = centred_ranks([f for pair in group for f in pair])
        out.extend(ranks[2 * k] - ranks[2 * k + 1] for k in range(len(group)))
    return out


def gradient(dim: int, noise_seeds: list[int], diffs: list[float], sigma: float) -> torch.Tensor:
    """The antithetic estimate ``mean_i(d_i eps_i) / (2 sigma)``, summed in pair order."""
    g = torch.zeros(dim)
    for seed, d in zip(noise_seeds, diffs):
        if d:
            g += d * noise(dim, seed)
    return g / (2 * sigma * len(diffs))
