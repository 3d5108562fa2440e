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

Fitness ``F`` is the episode's final loss on its clean validation split divided by the
validation loss of the same model at initialisation (:func:`reference_loss`), capped at
:data:`CAP`; a run that diverges (non-finite loss) gets the cap. The ratio means the same on any
task (0: solved, 1: nothing learned, above 1: made worse). The differences ``d_i = F+ - F-``,
used as they are (``r`` the identity, ``--diff-clip=0``), give an estimate that is unbiased for
the mean normalised loss over the task distribution, the quantity the held-out curves report;
by default they are clipped (below). With ``evaluations > 1`` (``--fitness-evals``) the ratio
is averaged over the run's last few evaluations, 5% of the budget apart, which rewards reaching
a low loss early and staying there, not just ending there (measured: no less noisy).

Why not ranks. The first shipped ES network (``metalr-es``) was trained on the centred rank
of ``log`` final loss within each episode (with one pair per episode VeLO's
``sign(F+ - F-)``). A sign says only which member won, not by how much, so the estimate
maximises the probability of a small win, not the mean: the network learned to raise the LR
5-10x, which wins slightly on most episodes and ruins a few (training collapses to chance
loss), and its fixed training-distribution evaluation got worse while its ranks improved
(mean log loss -0.46 -> +0.12 over 44 steps; on the transfer benchmark it collapsed to chance
on three SGD tasks). The ratio keeps magnitude but, unlike ``log`` loss, does not blow up the
last-bit differences of a near-perfect classifier (0.01 against 0.02 is a log-difference of 0.7
but a ratio difference of 0.004 of a chance loss of 2.3); the cap bounds what one diverged run
can weigh.

Clipped differences (``--diff-clip``, ``r`` a clip of ``d`` to ``[-c, c]``). Measured with
``benchmarks/es_gradient_snr.py`` (docs/es_signal.md): with raw differences a step's estimate
is noise. A few pairs in which one member collapses to chance and the other does not carry
81-93% of ``sum d^2``, and two halves of 96 pairs each give estimates with cosine -0.05. With
``d`` clipped to 0.05 (5% of the initial loss) the halves agree with cosine 0.20 (VeLO's sign:
0.19). Clipping bounds what one collapse can weigh. It biases the estimate towards the median
effect of a perturbation rather than its mean. A sign keeps no magnitude at all, and ``metalr-es``
showed where that leads.

Noise is regenerated from an integer seed (:func:`noise`), so processes exchange only the
scalars ``F+`` and ``F-``.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from metalr.learned.network import NetConfig, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler
from metalr.learned.train.distribution import Episode
from metalr.policies.base import SchedulerPolicy
from metalr.tasks import get_task
from metalr.trainer import DivergenceWarning, evaluate, evaluation_steps, train

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


# Evaluations over a run when the fitness averages the last few (``evaluations > 1``): 5% of
# the budget apart, so the last 4 span the final 15% of the run.
EVAL_POINTS = 20


def fitness_steps(budget: int, evaluations: int) -> list[int]:
    """The steps whose validation losses the fitness averages: the last ``evaluations`` of
    :data:`EVAL_POINTS` evenly spaced ones (the trainer's), or the final step alone."""
    return [budget] if evaluations == 1 else evaluation_steps(budget, EVAL_POINTS)[-evaluations:]


def run_episode(net: ScheduleNet, episode: Episode, device: str = "cpu", evaluations: int = 1):
    """Train ``episode`` from scratch with ``net`` setting the LR; the :class:`TrainResult`,
    evaluated at least at the steps of :func:`fitness_steps`."""
    def make_scheduler(optimizer, total_steps):
        # Each process runs its own episodes: no loss averaging across ranks.
        return MetaLRScheduler(optimizer, net, total_steps=total_steps if episode.show_budget else None,
                               sync_ranks=False)

    with warnings.catch_warnings():
        # A diverged episode scores CAP; the outer loop reports them in one line a step.
        warnings.simplefilter("ignore", DivergenceWarning)
        return train(episode.spec(), SchedulerPolicy("metalr", make_scheduler), seed=episode.seed,
                     steps=episode.budget, eval_points=1 if evaluations == 1 else EVAL_POINTS,
                     evaluate_test=False, device=device)


# The fitness of a diverged run, and the most any run can score: twice its initial loss.
CAP = 2.0


@functools.lru_cache(maxsize=256)
def reference_loss(episode: Episode, device: str = "cpu") -> float:
    """The validation loss of the episode's model at initialisation (the trainer's seeding).

    Cached: the pairs that share an episode and every evaluation of the fixed episodes ask
    again for the same value (an :class:`Episode` is frozen, so it is its own key)."""
    task = get_task(episode.spec())
    torch.manual_seed(episode.seed)
    model = task.make_model().to(device)
    with torch.no_grad():
        return evaluate(model, task, task.val, torch.device(device))["loss"]


def normalised(val_loss: float, diverged: bool, reference: float) -> float:
    """``min(val_loss / reference, CAP)``; :data:`CAP` for a diverged or non-finite run."""
    if diverged or not math.isfinite(val_loss) or not (math.isfinite(reference) and reference > 0):
        return CAP
    return min(val_loss / reference, CAP)


def fitness(result, reference: float, evaluations: int = 1) -> float:
    """The normalised validation loss of a :class:`TrainResult` (lower is better): at the end,
    or averaged over its last ``evaluations`` evaluations (:data:`CAP` if the run diverged)."""
    return mean_normalised(result.val_loss[-evaluations:] or [math.nan], result.diverged, reference)


def mean_normalised(val_losses: list[float], diverged: bool, reference: float) -> float:
    """The mean of :func:`normalised` over a run's last few validation losses."""
    return sum(normalised(v, diverged, reference) for v in val_losses) / len(val_losses)


def pair_differences(table: list[list[float]], clip: float = 0.0) -> list[float]:
    """``d_i = F+_i - F-_i`` for each row ``[F+, F-]`` of the table, clipped to
    ``[-clip, clip]`` when ``clip > 0`` (see the module docstring)."""
    if clip > 0:
        return [min(max(plus - minus, -clip), clip) for plus, minus in table]
    return [plus - minus for plus, minus in table]


def gradient(dim: int, noise_seeds: list[int], diffs: list[float], sigma: float) -> torch.Tensor:
    """The antithetic estimate ``mean_i(d_i eps_i) / (2 sigma)``, summed in pair order."""
    g = torch.zeros(dim)
    for seed, d in zip(noise_seeds, diffs):
        if d:
            g += d * noise(dim, seed)
    return g / (2 * sigma * len(diffs))
