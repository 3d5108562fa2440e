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
Python and nothing is read back to the host until the final validation loss:

* its LR, from its own perturbed schedule network: the K networks' cells run as one batched
  float64 cell (the numpy scheduler's precision), on ``hyper-v2``/``-v3`` features computed on tensors
  per member (:func:`_features`);
* its optimizer state: SGD (momentum, weight decay), Adam and AdamW written on the stacked
  tensors with torch.optim's single-tensor update rules, op for op, where only the LR differs
  per member;
* its divergence: a member whose training loss becomes non-finite is marked dead at that step
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
import math
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from metalr.errors import MetalrError
from metalr.learned.features import DECAYS, HYPER, VOL, FeatureTracker, is_adaptive
from metalr.learned.network import NetConfig, ScheduleNet
from metalr.learned.train.distribution import Episode
from metalr.learned.train.full_es import fitness_steps, mean_normalised, network_at
from metalr.optim import build_optimizer
from metalr.tasks import Task, get_task

# Features the loss determines (per member, on the device) and those the step alone determines
# (the same for every member, taken from FeatureTracker itself once per episode).
LOSS_FEATURES = ("rel_loss", "trend_10", "trend_30", "trend_100", "trend_300", "volatility")
# Validation examples per member in one forward pass: the trainer's chunk of 1,000 for small
# populations (same rounding), fewer for large ones so activations stay within memory.
EVAL_ELEMENTS = 32_000
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
REFUSED = ((nn.modules.batchnorm._BatchNorm, "BatchNorm (running statistics)"),
           (nn.RNNBase, "recurrent layers"),
           (nn.modules.dropout._DropoutNd, "dropout (its random stream)"))


@dataclasses.dataclass
class PopulationResult:
    """Per member: the validation losses at the evaluated steps (``val_loss[k][-1]`` the final
    one), whether training diverged, and the LR of every step (``lr[t, k]``, the trainer's
    ``TrainResult.lr`` of member k; steps after a divergence are meaningless)."""

    val_loss: list[list[float]]
    diverged: list[bool]
    lr: torch.Tensor


def check_model(model: nn.Module, family: str) -> None:
    """Refuse a model the population cannot run exactly (MetalrError naming the way out)."""
    found = [what for module in model.modules() for kind, what in REFUSED if isinstance(module, kind)]
    if not found and next(model.buffers(), None) is not None:
        found = ["buffers (module state outside the parameters)"]
    if found:
        raise MetalrError(f"{family}: the vectorised population cannot run a model with "
                          f"{found[0]}; use the sequential path (vectorize=False, "
                          "full_es.run_episode)")


def check_family(family: str) -> None:
    """:func:`check_model` for a task family's model, before any episode is run."""
    check_model(get_task(family).make_model(), family)


def run_population(nets: Sequence[ScheduleNet], episode: Episode, device: str = "cpu",
                   evaluations: int = 1) -> PopulationResult:
    """Train ``episode`` once per network in ``nets``, all K as one vectorised model, with the
    validation loss taken at :func:`full_es.fitness_steps` (``evaluations`` of them)."""
    config = nets[0].config
    if config.kind != "default" or config.features not in HYPER or any(n.config != config for n in nets):
        raise MetalrError(f"the vectorised population runs K networks of one 'default' "
                          f"configuration reading {' or '.join(HYPER)} features; use full_es.run_episode")
    device = torch.device(device)
    # The trainer's resolution of the episode: its task spec, budget and seeds.
    task = get_task(episode.spec())
    total = episode.budget
    torch.manual_seed(episode.seed)
    model = task.make_model().to(device)
    check_model(model, episode.family)
    k = len(nets)
    params = {name: p.detach().unsqueeze(0).repeat(k, *([1] * p.dim())).requires_grad_(True)
              for name, p in model.named_parameters()}
    batches = task.batches(torch.Generator().manual_seed(episode.seed))
    optimizer = _Optimizer(task, params)
    # hyper-v3's optimizer kind, asked of the torch optimizer the sequential run would build
    adaptive = is_adaptive(build_optimizer(task.optimizer, [torch.zeros(1)], lr=task.base_lr))
    schedule = _Schedule(nets, task.base_lr, total, episode.show_budget, adaptive, device)

    def member_loss(p, x, y):
        return task.loss_fn(functional_call(model, p, (x,)), y)

    losses_of = vmap(member_loss, in_dims=(0, None, None))
    alive = torch.ones(k, dtype=torch.bool, device=device)
    lrs, vals, evaluate_at = [], [], set(fitness_steps(total, evaluations))
    for step in range(1, total + 1):
        x, y = (_to(t, device) for t in next(batches))
        lr = schedule.lr()
        lrs.append(lr)
        losses = losses_of(params, x, y)
        # The gradient of the sum is each member's own gradient: d(sum)/d(loss_k) = 1 whatever
        # the other losses are, NaN included.
        grads = torch.autograd.grad(losses.sum(), list(params.values()))
        loss = losses.detach().double()
        alive &= torch.isfinite(loss)
        with torch.no_grad():
            optimizer.step(dict(zip(params, grads)), lr)
        schedule.observe(loss, step)
        if step in evaluate_at:
            vals.append(_validation_loss(model, params, task, device))
    # The one read back to the host of the whole episode.
    val, alive = torch.stack(vals, dim=1).cpu().tolist(), alive.cpu().tolist()
    return PopulationResult(val, [not a for a in alive], torch.stack(lrs).cpu())


def population_fitness(config: NetConfig, thetas: Sequence[torch.Tensor], episode: Episode,
                       reference: float, device: str = "cpu", evaluations: int = 1) -> list[float]:
    """:func:`full_es.fitness` of each flat parameter vector in ``thetas`` on ``episode``, vectorised."""
    result = run_population([network_at(config, t) for t in thetas], episode, device, evaluations)
    return [mean_normalised(v, d, reference) for v, d in zip(result.val_loss, result.diverged)]


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    # Through pinned memory without blocking: a plain host-to-GPU copy waits for the stream.
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def _validation_loss(model: nn.Module, params: dict, task: Task, device: torch.device) -> torch.Tensor:
    """Each member's loss on the whole validation split, as :func:`metalr.trainer.evaluate`."""
    k = next(iter(params.values())).shape[0]
    chunk = max(1, min(1000, EVAL_ELEMENTS // k))
    forward = vmap(lambda p, x: functional_call(model, p, (x,)), in_dims=(0, None))
    split = task.val
    out = torch.cat([forward(params, split.x[i:i + chunk].to(device)).float()
                     for i in range(0, len(split), chunk)], dim=1)
    return vmap(task.loss_fn, in_dims=(0, None))(out, split.y.to(device))


class _Optimizer:
    """torch.optim's SGD / Adam / AdamW on stacked ``[K, ...]`` tensors with a per-member LR.

    The operations are the single-tensor implementations' (``torch/optim/sgd.py``,
    ``adam.py``) in the same order with the same scalars; only the LR, a python float there,
    is a ``[K]`` float64 tensor here, rounded to float32 as torch rounds a scalar ``alpha``.
    """

    def __init__(self, task: Task, params: dict):
        self.kind, self.momentum, self.wd = task.optimizer, task.momentum, task.weight_decay
        self.params = params
        self.state: dict[str, list] = {}
        self.t = 0

    def step(self, grads: dict, lr: torch.Tensor) -> None:
        self.t += 1
        for name, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = grads[name]
            if self.kind == "sgd":
                self._sgd(name, p, g, lr.view(shape))
            else:
                self._adam(name, p, g, lr.view(shape))

    def _sgd(self, name, p, g, lr):
        if self.wd:
            g = g.add(p, alpha=self.wd)
        if self.momentum:
            if name not in self.state:
                self.state[name] = [g.detach().clone()]
            else:
                self.state[name][0].mul_(self.momentum).add_(g)
            g = self.state[name][0]
        p.sub_(lr.float() * g)

    def _adam(self, name, p, g, lr):
        beta1, beta2 = ADAM_BETAS
        if name not in self.state:
            self.state[name] = [torch.zeros_like(p), torch.zeros_like(p)]
        exp_avg, exp_avg_sq = self.state[name]
        if self.wd:
            if self.kind == "adamw":
                p.mul_((1 - lr * self.wd).float())
            else:
                g = g.add(p, alpha=self.wd)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.t
        bias_correction2_sqrt = (1 - beta2 ** self.t) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
        p.sub_((lr / bias_correction1).float() * (exp_avg / denom))


class _Schedule:
    """K perturbed schedule networks, as :class:`MetaLRScheduler` runs each one.

    The LR of step t is emitted after the loss of step t - 1, the first step runs at the base
    LR, and a loss the scheduler refuses (non-finite, or not > 0 for a log-loss) leaves that
    member's features, network state and LR as they were: all per member, with ``n`` counting
    the losses each member has taken in (the tracker's ``n`` and the scheduler's ``observed``).
    """

    def __init__(self, nets: Sequence[ScheduleNet], base_lr: float, budget: int, show_budget: bool,
                 adaptive: bool, device: torch.device):
        config = nets[0].config
        weights = [n.weights(numpy=False) for n in nets]
        self.w = {key: torch.stack([w[key].detach() for w in weights]).to(device, torch.float64)
                  for key in weights[0]}
        self.hidden, self.base_lr = config.hidden, base_lr
        self.lo, self.span = math.log(config.lo), math.log(config.hi) - math.log(config.lo)
        k = len(nets)

        def zeros():
            return torch.zeros(k, dtype=torch.float64, device=device)

        self.n, self.ref, self.vol = zeros(), zeros(), zeros()
        self.ema = [zeros() for _ in DECAYS]
        self.h, self.c = (torch.zeros(k, config.hidden, dtype=torch.float64, device=device)
                          for _ in range(2))
        self.u = torch.full((k,), nets[0].u_of_multiplier(1.0), dtype=torch.float64, device=device)
        tracker = FeatureTracker(config.features, adaptive)
        self.names = tracker.names
        self.step_features = self._step_features(tracker, budget, show_budget, device)

    @staticmethod
    def _step_features(tracker: FeatureTracker, budget: int, show_budget: bool, device) -> torch.Tensor:
        """``[T, F]``: the features of steps 1..T that do not depend on the loss, computed by
        FeatureTracker itself (fed a dummy loss) and copied to the device once per episode."""
        state, rows = tracker.initial_state(), []
        for step in range(1, budget + 1):
            feats, state = tracker.update(state, 1.0, step, budget if show_budget else None, 0.5)
            rows.append(feats)
        return torch.tensor(rows, dtype=torch.float64, device=device)

    def lr(self) -> torch.Tensor:
        multiplier = torch.exp(self.lo + self.u * self.span)
        return self.base_lr * torch.where(self.n > 0, multiplier, torch.ones_like(multiplier))

    def observe(self, loss: torch.Tensor, step: int) -> None:
        valid = torch.isfinite(loss) & (loss > 0)
        feats, state = _features(self, loss, step)
        u, h, c = self._cell(torch.stack(feats, dim=1))
        for key, new in (("u", u), ("h", h), ("c", c), *state.items()):
            old = getattr(self, key)
            if isinstance(old, list):
                setattr(self, key, [torch.where(valid, b, a) for a, b in zip(old, new)])
            else:
                setattr(self, key, torch.where(valid if new.dim() == 1 else valid[:, None], new, old))
        self.n = self.n + valid

    def _cell(self, x: torch.Tensor):
        """:meth:`ScheduleNet.cell` for K members at once: weights ``[K, ...]``, x ``[K, F]``."""
        w, H = self.w, self.hidden

        def mv(m, v):
            return (m @ v.unsqueeze(-1)).squeeze(-1)

        g = (mv(w["w2x"], torch.relu(mv(w["w1x"], x) + w["b1x"]))
             + mv(w["w2h"], torch.relu(mv(w["w1h"], self.h) + w["b1h"])) + w["b2"])
        gates = torch.sigmoid(g[:, :3 * H])
        c = gates[:, H:2 * H] * self.c + gates[:, :H] * torch.tanh(g[:, 3 * H:])
        h = gates[:, 2 * H:] * torch.tanh(c)
        logit = (w["wo"] * h).sum(-1) + w["bo"]
        if "ws" in w:
            logit = logit + (w["ws"] * x).sum(-1)
        return torch.sigmoid(logit), h, c


def _features(s: _Schedule, loss: torch.Tensor, step: int) -> tuple[list, dict]:
    """The ``hyper-v2`` update (and ``-v3``'s) of :class:`FeatureTracker` on ``[K]`` tensors with a step count
    ``n`` per member (the tracker keeps one Python int, and its first step reads ``float(a)``,
    so it cannot take a batch); the same formulas, checked against it in the tests."""
    a = torch.log(loss)
    n = s.n + 1
    first = s.n == 0
    # Clip a spike to 2x the slowest average (from the second loss on), as the tracker does.
    slow = s.ema[-1] / (1 - DECAYS[-1] ** s.n)
    a = torch.where(first, a, torch.minimum(a, slow + math.log(2.0)))
    ref = torch.where(first, a, s.ref)
    raw = [d * e + (1 - d) * a for d, e in zip(DECAYS, s.ema)]
    ema = [r / (1 - d ** n) for r, d in zip(raw, DECAYS)]
    vol = VOL * s.vol + (1 - VOL) * (a - ema[0]).abs()
    by_loss = [(ema[0] - ref).clamp(-8.0, 3.0),
               *((10.0 * (ema[i] - ema[i + 1])).clamp(-3.0, 3.0) for i in range(len(ema) - 1)),
               (vol / (1 - VOL ** n)).clamp(0.0, 3.0)]
    row = s.step_features[step - 1]
    feats = []
    for j, name in enumerate(s.names):
        if name in LOSS_FEATURES:
            feats.append(by_loss[LOSS_FEATURES.index(name)])
        elif name == "prev_output":
            feats.append(s.u)
        else:
            feats.append(row[j].expand_as(s.u))
    return feats, {"ref": ref, "ema": raw, "vol": vol}
