"""Exact full-horizon hypergradients: reverse mode through a whole inner training run.

For one episode, with ``theta`` the schedule network's parameters (every one: the LSTM's gate
MLPs, the head and the skip path), the inner run ``w_{t+1} = U(w_t, s_t, lr_t(theta))`` is
written functionally (:mod:`~metalr.learned.train.inner`: the same optimizer rules, features and
batched cell as the ES population) and the meta-loss ``J = L_val(w_T) / L_val(w_0)``, the ES
fitness, is differentiated by reverse mode through all T steps (Maclaurin et al. 2015,
https://arxiv.org/abs/1502.03492; MLR-SNet's bilevel objective, here over the whole run
rather than a lookahead). Which paths carry gradient:

* the LR of every step: ``theta`` -> the network's output -> ``lr_t`` -> the update;
* the model, exactly: second-order terms included (``create_graph=True``), so ``d w_T / d lr_t``
  sees how a step changes every later gradient, momentum buffer and Adam moment;
* the network's recurrent state ``h, c`` and its last output ``u`` (the rise limit
  :attr:`NetConfig.max_rise` reads it), across every step. Where the rise limit binds, the LR
  does not depend on the network's output at that step, and a network asking for too much
  would never learn it from a blow-up; there the output's own gradient is added
  (straight-through, Bengio et al. 2013, https://arxiv.org/abs/1308.3432);
* not the features. The network reads the training losses and its previous output detached,
  as deployed (the scheduler sees numbers). Letting the gradient through the loss into the
  features would add ``d feature / d w`` loops whose product over thousands of steps is the
  chaos Metz et al. 2019 (https://arxiv.org/abs/1810.10180) describe, for a term that is small
  next to the direct effect of the LR.

Memory does not bound the horizon. The forward pass runs outside the graph and keeps the state
(model, optimizer state, schedule state) every ``segment`` steps; the backward pass replays one
segment at a time inside the graph, from its saved state, and pulls the adjoint of its end state
back to its start (checkpointing by hand: the replay is deterministic on the same device, the
batches are kept). Peak memory is one segment's graph plus T / segment saved states, and time
is one plain run plus one replay with its backward pass (``benchmarks/unroll_memory.py``).

Blow-ups and collapses. A run whose training loss is not finite, or whose smoothed training loss
(an EMA of the loss with a half-life of 10 steps, ``rel_min``'s time scale) rises both :data:`BLOWUP` times above
its best so far and by a tenth of the initial validation loss (:data:`RISE`), has gone wrong: it
diverged, or it trained and then collapsed towards chance, where a dead network's final loss
has no gradient at all. Healthy runs at a constant LR stay below: over 30 episodes of the
training distribution at base-LR scales 0.1-1 the log of that ratio peaked at a median of 0.02,
and where it reached 0.24-0.44 the loss was a few hundredths (a rise of a few thousandths of
the initial loss). Too-large LRs that took the width-8 digits CNN (SGD) from 1.7-1.9 back to
chance (2.3) in a step or two, where it stayed, rose 1.15-1.26x. Such a run is
stopped there; its meta-loss is :data:`full_es.CAP`, as ES scores a diverged run, and its
gradient is that of the mean log multiplier over the steps since the loss last sat at its best
(at least the last :data:`PUSH_STEPS`): lower the LR in the states where the run visibly went
wrong. :func:`weighted` gives that push the full weight ``episode_clip`` (times
``--blowup-weight``, 1 by default), and caps every other episode's gradient at ``episode_clip``:
a collapse weighs as much as any episode can (the probe's networks,
which skipped diverged runs, and the ES networks, whose clipped differences charge a collapse
like a small loss, all learned to raise the LR into collapse), and a chaotic episode whose exact
gradient is 1e8 long weighs no more than a collapse. Measured (docs/unroll.md): at weight 1,
with about one blow-up in six episodes, this did not stop a network from learning a 15x ramp on
Adam; at ``--blowup-weight=5`` (a collapse weighs five episodes) the networks allowed up to 3x
the base LR stopped raising into collapse on their training distribution (not on every
transfer task: two of three seeds still collapse an SGD task at 3x).
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch

from metalr.errors import MetalrError
from metalr.learned.features import is_adaptive
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.train import full_es, inner
from metalr.learned.train.distribution import BATCHES, Episode
from metalr.optim import build_optimizer
from metalr.tasks import get_task

# A smoothed training loss this many times its best, and RISE initial validation losses above
# it, ends the episode.
BLOWUP, RISE = 1.13, 0.1
# The push of a blown-up run covers at least its last this many steps.
PUSH_STEPS = 10
# The smoothing of the training loss the blow-up test reads (half-life 10 steps).
FAST = 0.5 ** (1 / 10)


@dataclasses.dataclass
class EpisodeGradient:
    """One episode's result: its meta-loss (``CAP`` if it blew up), the gradient of its
    objective with respect to ``net.parameters()`` flattened (float64), the step where it blew
    up (``None``: it ran to the end) and the LR of each step run."""

    meta_loss: float
    grad: torch.Tensor
    blown_up_at: int | None
    lr: list[float]

    @property
    def norm(self) -> float:
        return float(self.grad.norm())


def check_family(family: str, vectorised: bool, budget: int | None = None, segment: int = 100,
                 memory: float | None = None) -> None:
    """Refuse, before any episode is run, a family the unroll cannot train exactly, or whose
    longest episode (``budget`` steps, largest batch) would not fit in ``memory`` bytes with
    this ``segment`` (MetalrError)."""
    inner.check_model(get_task(family).make_model(), family, vectorised)
    if budget is not None and memory is not None:
        need = memory_needed(family, budget, segment, max(BATCHES), vectorised)
        if need > memory:
            per_step = memory_needed(family, 1, 1, max(BATCHES), vectorised)
            raise MetalrError(
                f"{family}: an unrolled episode of {budget} steps needs about {need / 2**30:.1f} GiB "
                f"with --segment={segment} (about {per_step / 2**20:.1f} MiB of graph a step), more "
                f"than the {memory / 2**30:.1f} GiB each worker has; lower --segment (memory grows "
                f"with segment + budget / segment) or --budget-max, or use fewer --workers")


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; all of physical memory where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_needed(family: str, budget: int, segment: int, batch: int, vectorised: bool = True) -> int:
    """Bytes an unrolled episode holds at its peak: one segment's graph (the tensors autograd
    saves in one replayed step, times ``segment``, and as much again for the backward pass's
    own buffers), the state saved at each of the ``budget / segment`` boundaries and the
    ``budget`` batches kept for the replay. Against ``benchmarks/unroll_memory.py``'s peaks on
    the MNIST-1D MLP: within 10% with 100-step segments, 1.7-2.8x above with the whole
    horizon in one segment (where the refusal matters least, a conservative estimate)."""
    task = get_task(f"{family}{',' if ':' in family else ':'}batch={batch}")
    torch.manual_seed(0)
    run = inner.InnerRun(task, task.make_model(), family, 1, vectorised, "cpu")
    config = CONFIGS["default"]
    schedule = inner.Schedule(config, 1, task.base_lr, 2, True, False, "cpu")
    batch_data = next(task.batches(torch.Generator().manual_seed(0)))
    params = {k: v.requires_grad_(True) for k, v in run.initial_params().items()}
    opt, sched = run.optimizer.initial_state(params), schedule.initial_state()
    saved = [0]

    def pack(t: torch.Tensor):
        saved[0] += t.numel() * t.element_size()
        return t

    net = ScheduleNet(config)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run.step(params, opt, schedule, sched, inner.graph_weights(net, "cpu"), batch_data, 1, create_graph=True)
    # Adam's state is twice SGD's; budget for it whatever the episode draws.
    state = 3 * sum(v.numel() * v.element_size() for v in params.values())
    batch_bytes = sum(t.numel() * t.element_size() for t in batch_data)
    boundaries = -(-budget // segment)
    return 2 * saved[0] * min(segment, budget) + state * boundaries + batch_bytes * budget


def weighted(result: EpisodeGradient, clip: float, blowup_weight: float = 1.0) -> torch.Tensor:
    """An episode's contribution to a step: a blow-up's push at norm ``blowup_weight * clip``,
    any other gradient capped at ``clip`` (see the module docstring)."""
    if result.blown_up_at is not None and result.norm > 0 and math.isfinite(result.norm):
        return result.grad * (blowup_weight * clip / result.norm)
    return bounded(result.grad, clip)


def bounded(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``grad`` scaled down to norm ``max_norm`` if it is longer; zero if it is not finite."""
    norm = float(grad.norm())
    if not math.isfinite(norm):
        return torch.zeros_like(grad)
    return grad * (max_norm / norm) if norm > max_norm else grad


def _detached(state: dict, differentiable) -> dict:
    return {k: v.detach().requires_grad_(k in differentiable) for k, v in state.items()}


def episode_gradient(net: ScheduleNet, episode: Episode, device: str = "cpu", segment: int = 100,
                     vectorised: bool = True, dtype: torch.dtype = torch.float32,
                     exact: bool = False) -> EpisodeGradient:
    """Run ``episode`` with ``net`` setting the LR and return :class:`EpisodeGradient`.

    ``dtype``: the inner run's (float64 for the finite-difference test; the reference loss is the
    trainer's float32 one either way). ``exact``: the total derivative, which a finite difference
    measures: through the losses and the previous output the network reads too, and without the
    straight-through term at the rise limit (see the module docstring for why training differs)."""
    device = torch.device(device)
    task = get_task(episode.spec())
    total = episode.budget
    torch.manual_seed(episode.seed)  # the trainer's seeding: the same initialisation
    run = inner.InnerRun(task, task.make_model().to(device), episode.family, 1, vectorised, device, dtype)
    stream = task.batches(torch.Generator().manual_seed(episode.seed))
    batches = [tuple(run.cast(t) for t in next(stream)) for _ in range(total)]
    adaptive = is_adaptive(build_optimizer(task.optimizer, [torch.zeros(1)], lr=task.base_lr))
    schedule = inner.Schedule(net.config, 1, task.base_lr, total, episode.show_budget, adaptive, device,
                              exact=exact)
    reference = full_es.reference_loss(episode, str(device))

    # Forward, outside the graph: the state at every segment boundary, and where the run ends.
    w = inner.stacked_weights([net], device)
    state = {"params": run.initial_params()}
    state["opt"] = run.optimizer.initial_state(state["params"])
    state["sched"] = schedule.initial_state()
    saved, lrs, blown = {}, [], None
    fast, best, best_at = 0.0, math.inf, 0
    for t in range(1, total + 1):
        if (t - 1) % segment == 0:
            saved[t - 1] = {part: {k: v.detach() for k, v in d.items()} for part, d in state.items()}
        params = {k: v.detach().requires_grad_(True) for k, v in state["params"].items()}
        lr, loss, params, opt, sched = run.step(params, state["opt"], schedule, state["sched"], w,
                                                batches[t - 1], t, create_graph=False)
        value = float(loss[0])
        if math.isfinite(value):
            fast = FAST * fast + (1 - FAST) * value
            smoothed = fast / (1 - FAST ** t)
            if smoothed <= best:
                best, best_at = smoothed, t
        if not math.isfinite(value) or (smoothed > BLOWUP * best and smoothed - best > RISE * reference):
            blown = t
            break
        lrs.append(float(lr[0]))
        state = {"params": params, "opt": opt, "sched": sched}
    end = total if blown is None else blown - 1
    # A blown-up run's push covers the steps since its loss was last at its best.
    window = max(1, min(best_at, end - PUSH_STEPS) + 1) if blown is not None else end + 1
    flat_params = list(net.parameters())
    grad = [torch.zeros_like(p) for p in flat_params]

    def result(meta: float) -> EpisodeGradient:
        return EpisodeGradient(meta, torch.cat([g.reshape(-1) for g in grad]).double(), blown, lrs)

    if end == 0:  # blew up at the first step, which runs at the base LR: nothing to learn here
        return result(full_es.CAP)

    # Through the features, their whole state carries gradient (all but the step count).
    differentiable = {"params": None, "opt": None,
                      "sched": [k for k in state["sched"] if k != "n"] if exact
                      else inner.Schedule.DIFFERENTIABLE}

    def replay(start: int, stop: int):
        """Steps start+1..stop inside the graph from the saved state: (leaves, end state, the
        sum of the log multipliers of the steps in the push window)."""
        leaves = {part: _detached(d, [k for p, k in keys if p == part]) for part, d in saved[start].items()}
        weights = inner.graph_weights(net, device)
        params, opt, sched = leaves["params"], leaves["opt"], leaves["sched"]
        pushed = torch.zeros((), dtype=torch.float64, device=device)
        for t in range(start + 1, stop + 1):
            if t >= window:
                pushed = pushed + schedule.log_multiplier(sched)[0]
            _, _, params, opt, sched = run.step(params, opt, schedule, sched, weights, batches[t - 1], t,
                                                create_graph=True)
        return leaves, {"params": params, "opt": opt, "sched": sched}, pushed

    # The parts of a state the adjoint flows through, in one fixed order.
    keys = [(part, k) for part, d in saved[0].items()
            for k in (d if differentiable[part] is None else differentiable[part])]

    def listed(state: dict) -> list:
        return [state[part][k] for part, k in keys]

    def accumulate(outputs: list, adjoints: list, leaves: list) -> list:
        pairs = [(o, a) for o, a in zip(outputs, adjoints) if o.requires_grad and a is not None]
        got = torch.autograd.grad([o for o, _ in pairs], flat_params + leaves,
                                  grad_outputs=[a for _, a in pairs], allow_unused=True)
        for g, d in zip(grad, got[:len(flat_params)]):
            if d is not None:
                g.add_(d)
        return list(got[len(flat_params):])

    starts = sorted(s for s in saved if s < end)
    # The last segment ends in the objective.
    leaves, last, pushed = replay(starts[-1], end)
    if blown is None:
        objective = run.validation_loss(last["params"])[0] / reference
        meta = float(objective.detach())
        if not math.isfinite(meta):  # trained to the end, but its final loss overflowed
            blown, window = total, max(1, end - PUSH_STEPS + 1)
            leaves, last, pushed = replay(starts[-1], end)
    if blown is not None:
        objective, meta = pushed / (end - window + 1), full_es.CAP
    meta = min(meta, full_es.CAP)
    if not objective.requires_grad:  # the window holds only the first step, at the base LR
        return result(meta)
    adjoint = accumulate([objective], [torch.ones_like(objective)], listed(leaves))
    # Earlier segments: the adjoint of a segment's end state is that of the next one's start,
    # and the push window's log multipliers in them weigh as in the objective.
    push_weight = torch.tensor(1.0 / (end - window + 1) if blown is not None else 0.0,
                               dtype=torch.float64, device=device)
    for start, stop in zip(reversed(starts[:-1]), reversed(starts[1:])):
        leaves, out, pushed = replay(start, stop)
        adjoint = accumulate(listed(out) + [pushed], adjoint + [push_weight], listed(leaves))
    return result(meta)
