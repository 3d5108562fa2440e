"""A population of ES members that share one episode, trained as one vectorised model.

In antithetic ES (Salimans et al. 2017, https://arxiv.org/abs/1703.03864) both members of a
pair, and with ``pairs_per_episode > 1`` several pairs, train the same task from the same
initialisation on the same batches; they differ only in the schedule network that sets their
LR. So K members are one model with a leading member dimension: their parameters are stacked
``[K, ...]`` and the forward pass is ``vmap(functional_call(model, ...))`` with the batch shared
(torch.func, https://pytorch.org/docs/stable/func.html; the "model ensembling" recipe,
https://pytorch.org/tutorials/intermediate/ensembling.html). One batched matmul replaces K small
ones, and one Python step drives K models, which is where the speed comes from on a CPU core
(Python overhead per step is paid once) and on a GPU (K models fill it).

Everything else a member owns is a tensor with a leading K, so nothing per member runs in
Python and nothing is read back to the host until the final validation loss. The model, the
optimizer (SGD with momentum and weight decay, Adam, AdamW), the K networks' batched cell and
their ``hyper-v2`` to ``-v4`` features are :mod:`~metalr.learned.train.inner`'s, which the unroll
estimator runs too. A member whose training loss becomes non-finite is marked dead at that step
(as :func:`metalr.train` stops there) and its fitness is the cap. Members never mix: the batched
kernels compute each member from its own slice only, so a NaN stays in its member.

The final validation losses equal those of :func:`full_es.run_episode` per member up to
float32 rounding, not bit for bit. For the MLPs the vmapped gradients are the sequential ones
exactly, but the reported loss is vmap's mean where the sequential ``nll_loss`` sums in a
cascade, and ``p - lr * g`` rounds twice where torch's ``add(alpha=)`` fuses it; the CNNs'
grouped convolutions round differently too. The schedule network (whose LR multiplier spans
3e4) and training amplify those last-bit differences: over 30 steps the losses agree to 2e-7
relative on the MLPs and 1e-6 on the CNNs, the LRs to 1.2e-7, but a run at the edge of
stability amplifies any rounding (4e-4 on cancer-mlp with AdamW at sigma 0.3; 3% to 30% on
digits-cnn with plain SGD at LR 0.5). Such an episode's loss is not reproducible across
devices or BLAS builds sequentially either; ES needs it unbiased, not bit-exact.

Models with BatchNorm (running statistics), recurrent layers or dropout (its random stream) are
refused with a :class:`MetalrError` pointing at the sequential path.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from metalr.errors import MetalrError
from metalr.learned.features import is_adaptive
from metalr.learned.network import NetConfig, ScheduleNet
from metalr.learned.train import inner
from metalr.learned.train.distribution import Episode
from metalr.learned.train.full_es import fitness_steps, mean_normalised, network_at
from metalr.optim import build_optimizer
from metalr.tasks import get_task


@dataclasses.dataclass
class PopulationResult:
    """Per member: the validation losses at the evaluated steps (``val_loss[k][-1]`` the final
    one), whether training diverged, and the LR of every step (``lr[t, k]``, the trainer's
    ``TrainResult.lr`` of member k; steps after a divergence are meaningless)."""

    val_loss: list[list[float]]
    diverged: list[bool]
    lr: torch.Tensor


def check_family(family: str) -> None:
    """Refuse, before any episode is run, a family the population cannot train (MetalrError)."""
    inner.check_model(get_task(family).make_model(), family)


def run_population(nets: Sequence[ScheduleNet], episode: Episode, device: str = "cpu",
                   evaluations: int = 1) -> PopulationResult:
    """Train ``episode`` once per network in ``nets``, all K as one vectorised model, with the
    validation loss taken at :func:`full_es.fitness_steps` (``evaluations`` of them)."""
    config = nets[0].config
    if any(n.config != config for n in nets):
        raise MetalrError("the vectorised population runs K networks of one configuration")
    device = torch.device(device)
    # The trainer's resolution of the episode: its task spec, budget and seeds.
    task = get_task(episode.spec())
    total = episode.budget
    torch.manual_seed(episode.seed)
    k = len(nets)
    run = inner.InnerRun(task, task.make_model().to(device), episode.family, k, True, device)
    batches = task.batches(torch.Generator().manual_seed(episode.seed))
    # hyper-v3's optimizer kind, asked of the torch optimizer the sequential run would build
    adaptive = is_adaptive(build_optimizer(task.optimizer, [torch.zeros(1)], lr=task.base_lr))
    schedule = inner.Schedule(config, k, task.base_lr, total, episode.show_budget, adaptive, device)
    w = inner.stacked_weights(nets, device)
    params = run.initial_params()
    opt_state, sched_state = run.optimizer.initial_state(params), schedule.initial_state()
    alive = torch.ones(k, dtype=torch.bool, device=device)
    lrs, vals, evaluate_at = [], [], set(fitness_steps(total, evaluations))
    for step in range(1, total + 1):
        batch = tuple(run.cast(t) for t in next(batches))
        params = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        lr, loss, params, opt_state, sched_state = run.step(params, opt_state, schedule, sched_state,
                                                            w, batch, step, create_graph=False)
        lrs.append(lr)
        alive &= torch.isfinite(loss)
        if step in evaluate_at:
            with torch.no_grad():
                vals.append(run.validation_loss(params))
    # The one read back to the host of the whole episode.
    val, alive = torch.stack(vals, dim=1).cpu().tolist(), alive.cpu().tolist()
    return PopulationResult(val, [not a for a in alive], torch.stack(lrs).cpu())


def population_fitness(config: NetConfig, thetas: Sequence[torch.Tensor], episode: Episode,
                       reference: float, device: str = "cpu", evaluations: int = 1) -> list[float]:
    """:func:`full_es.fitness` of each flat parameter vector in ``thetas`` on ``episode``, vectorised."""
    result = run_population([network_at(config, t) for t in thetas], episode, device, evaluations)
    return [mean_normalised(v, d, reference) for v, d in zip(result.val_loss, result.diverged)]
