"""One inner training run written on tensors, for every meta-training path that needs it.

An episode's model is trained functionally: its parameters are a dict of tensors with a leading
member dimension ``K`` (``[K, ...]``), the forward pass is ``functional_call`` (vmapped over the
members, or a plain call for one member), and the optimizer, the schedule networks and their
features are pure functions of tensors that return new tensors. Two estimators run it:

* the ES population (:mod:`~metalr.learned.train.population`): K perturbed networks on one
  episode, outside any graph, with the parameters re-leafed each step;
* the unroll (:mod:`~metalr.learned.train.unroll`): one member inside the autograd graph, so the
  final validation loss can be differentiated with respect to the schedule network through
  every inner step (``create_graph=True`` keeps the second-order terms).

Nothing is updated in place, so the same code is differentiable and a state can be saved at a
segment boundary and recomputed from there (the unroll's checkpointed backward pass).

The optimizer is torch.optim's single-tensor SGD (momentum, weight decay), Adam and AdamW, op for
op with the same scalars; only the LR, a python float there, is a ``[K]`` float64 tensor here,
rounded to the parameters' dtype as torch rounds a scalar ``alpha``. The schedule is :class:`MetaLRScheduler`'s
timing: the LR of step t is emitted after the loss of step t - 1, the first step runs at the base
LR, and a loss the scheduler refuses (non-finite, or not > 0) leaves that member's features,
network state and LR as they were. The rise limit, the cap, the guard and the shape
(:class:`NetConfig`) act as the scheduler's do. The features are ``hyper-v2`` to ``-v5`` computed per member
(:func:`features`; the tests hold them to :class:`FeatureTracker`'s); ``hyper-v5``'s
update-to-weight ratio is each member's own, measured on the same steps as the scheduler's.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from metalr.errors import MetalrError
from metalr.learned.features import DECAYS, HYPER, LOG10, VOL, FeatureTracker, measures_ratio
from metalr.learned.network import MIN_PROGRESS, NetConfig, ScheduleNet, knee_shape, log_ceiling
from metalr.tasks import Task

# Features the loss determines (per member, on the device) and those the step alone determines
# (the same for every member, taken from FeatureTracker itself once per episode).
LOSS_FEATURES = ("rel_loss", "trend_10", "trend_30", "trend_100", "trend_300", "volatility", "rel_min")
# Validation examples per member in one forward pass: the trainer's chunk of 1,000 for small
# populations (same rounding), fewer for large ones so activations stay within memory.
EVAL_ELEMENTS = 32_000
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
REFUSED = ((nn.modules.batchnorm._BatchNorm, "BatchNorm (running statistics)"),
           (nn.RNNBase, "recurrent layers"),
           (nn.modules.dropout._DropoutNd, "dropout (its random stream)"))


def check_model(model: nn.Module, family: str, vectorised: bool = True) -> None:
    """Refuse a model that cannot be trained functionally and exactly (MetalrError).

    Running statistics and dropout's random stream make a run depend on more than its
    parameters (a recomputed segment would differ); vmap cannot batch the recurrent layers'
    fused kernels, which a single functional member runs."""
    refused = REFUSED if vectorised else REFUSED[::2]
    found = [what for module in model.modules() for kind, what in refused if isinstance(module, kind)]
    if not found and next(model.buffers(), None) is not None:
        found = ["buffers (module state outside the parameters)"]
    if found:
        way_out = ("use the sequential path (vectorize=False)" if vectorised and found[0] == "recurrent layers"
                   else "meta-train on other families (--tasks) or by ES without --vectorize")
        raise MetalrError(f"{family}: a functional inner run cannot train a model with {found[0]}; {way_out}")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    # Through pinned memory without blocking: a plain host-to-GPU copy waits for the stream.
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """``sqrt(v)`` for ``v >= 0`` whose derivative at 0 is 0, not ``inf * 0 = nan``: Adam's
    second moment is exactly 0 where a parameter has never had a gradient (a dead unit)."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


class Optimizer:
    """torch.optim's SGD / Adam / AdamW on stacked ``[K, ...]`` tensors with a per-member LR.

    The state is a dict of tensors (momentum buffer, or Adam's two moments, per parameter);
    :meth:`step` returns new parameters and a new state. SGD's buffer starts at zero, which is
    torch's ``clone(g)`` on the first step exactly (``0 * m + g == g``)."""

    def __init__(self, kind: str, momentum: float, weight_decay: float):
        self.kind, self.momentum, self.wd = kind, momentum, weight_decay

    def initial_state(self, params: dict) -> dict:
        if self.kind == "sgd":
            return {f"buf.{n}": torch.zeros_like(p) for n, p in params.items()} if self.momentum else {}
        return {f"{m}.{n}": torch.zeros_like(p) for n, p in params.items() for m in ("m", "v")}

    def step(self, params: dict, grads: Sequence[torch.Tensor], state: dict, t: int,
             lr: torch.Tensor) -> tuple[dict, dict]:
        """One update at step ``t`` (1-based) with LR ``lr`` ``[K]``."""
        new_params, new_state = {}, {}
        for (name, p), g in zip(params.items(), grads):
            rate = lr.view((-1,) + (1,) * (p.dim() - 1))
            if self.kind == "sgd":
                if self.wd:
                    g = g.add(p, alpha=self.wd)
                if self.momentum:
                    g = new_state[f"buf.{name}"] = state[f"buf.{name}"] * self.momentum + g
                new_params[name] = p - rate.to(p.dtype) * g
            else:
                beta1, beta2 = ADAM_BETAS
                if self.wd:
                    if self.kind == "adamw":
                        p = p * (1 - rate * self.wd).to(p.dtype)
                    else:
                        g = g.add(p, alpha=self.wd)
                m = new_state[f"m.{name}"] = torch.lerp(state[f"m.{name}"], g, 1 - beta1)
                v = new_state[f"v.{name}"] = torch.addcmul(state[f"v.{name}"] * beta2, g, g, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** t
                bias_correction2_sqrt = (1 - beta2 ** t) ** 0.5
                denom = (safe_sqrt(v) / bias_correction2_sqrt) + ADAM_EPS
                new_params[name] = p - (rate / bias_correction1).to(p.dtype) * (m / denom)
        return new_params, new_state


def update_to_weight(params: dict, before: dict) -> torch.Tensor:
    """``[K]``: each member's ``|w - w_before| / |w|`` over all its parameters, detached in
    float64 (:func:`metalr.learned.scheduler.update_to_weight` for one model). Detached in an
    ``exact`` run too: ``hyper-v5``'s total derivative would leave out this input's path (the
    finite-difference tests run ``hyper-v4`` networks)."""
    with torch.no_grad():
        step = sum((p - b).double().flatten(1).pow(2).sum(1) for p, b in zip(params.values(), before.values()))
        size = sum(p.double().flatten(1).pow(2).sum(1) for p in params.values())
        return step.sqrt() / size.sqrt()


def stacked_weights(nets: Sequence[ScheduleNet], device) -> dict:
    """The K networks' cell weights stacked ``[K, ...]`` in float64, detached (ES members)."""
    weights = [n.weights(numpy=False) for n in nets]
    return {key: torch.stack([w[key].detach() for w in weights]).to(device, torch.float64)
            for key in weights[0]}


def graph_weights(net: ScheduleNet, device) -> dict:
    """One network's cell weights ``[1, ...]`` in float64, in the graph of its parameters."""
    return {key: v.to(device, torch.float64).unsqueeze(0) for key, v in net.weights(numpy=False).items()}


class Schedule:
    """K schedule networks of one configuration, as :class:`MetaLRScheduler` runs each one.

    The state (:meth:`initial_state`) is a dict of ``[K]`` / ``[K, H]`` tensors: the feature
    averages, the count ``n`` of losses taken in (the tracker's ``n``), the LSTM's ``h`` and
    ``c`` and the last output ``u``. Of these only ``h``, ``c`` and ``u`` depend on the network's
    weights; the features are functions of the observed losses, which are read detached.
    """

    DIFFERENTIABLE = ("h", "c", "u")

    def __init__(self, config: NetConfig, k: int, base_lr: float, budget: int, show_budget: bool,
                 adaptive: bool, device, exact: bool = False):
        """``exact``: a graph run differentiates through the network's inputs too (the losses,
        its previous output) and adds no straight-through term at the rise limit: the total
        derivative a finite difference measures. Otherwise the network reads its inputs as
        numbers, as deployed (see :mod:`~metalr.learned.train.unroll` for why)."""
        if config.kind != "default" or config.features not in HYPER:
            raise MetalrError(f"a functional inner run drives 'default' networks reading "
                              f"{' or '.join(HYPER)} features, got {config.kind} on {config.features}")
        if config.max_ratio_hypergradient is not None:
            raise MetalrError("net max_ratio_hypergradient is a deployment-only gate (the meta-trainer does not "
                              "sample the hypergradient); meta-train in a configuration without it and add it "
                              "to the checkpoint afterwards (benchmarks/with_ceiling.py --hypergradient)")
        self.config, self.k, self.device = config, k, torch.device(device)
        self.exact = exact
        self.hidden, self.base_lr = config.hidden, base_lr
        self.lo, self.span = math.log(config.lo), math.log(config.hi) - math.log(config.lo)
        self.rise = None if config.max_rise is None else config.max_rise / self.span
        self.guard, self.cut = config.guard, math.log(2.0) / self.span
        self.max_u = None if config.max_multiplier is None else (math.log(config.max_multiplier) - self.lo) / self.span
        self.max_ratio = config.ratio_ceiling(adaptive, show_budget)
        self.least_ceiling = config.least_ceiling(adaptive, show_budget)
        self.collapse_guard = config.collapse_guard
        self.hold = config.raise_needs_budget and not show_budget  # NetConfig.raise_needs_budget
        tracker = FeatureTracker(config.features, adaptive)
        self.names = tracker.names
        self.rel_loss = self.names.index("rel_loss") if config.collapse_guard is not None else None
        self.reads_ratio = "update_ratio" in self.names
        self.step_features = self._step_features(tracker, budget, show_budget)
        # NetConfig.shape at steps 1..budget + 1, and the cap on u it gives each step (none where
        # the shape is 0: the LR is 0 whatever u is).
        total = budget if show_budget else None
        shape = [knee_shape(step, total) if config.shape else 1.0 for step in range(1, budget + 2)]
        self.shape = torch.tensor(shape, dtype=torch.float64, device=self.device)
        # The shape's part of the cap on u each step (-inf where the shape is 0: no cap there).
        self.shape_u = torch.tensor([math.log(v) / self.span if v > 0 else -math.inf for v in shape],
                                    dtype=torch.float64, device=self.device)

    def _step_features(self, tracker: FeatureTracker, budget: int, show_budget: bool) -> torch.Tensor:
        """``[T, F]``: the features of steps 1..T that do not depend on the loss, computed by
        FeatureTracker itself (fed a dummy loss) and copied to the device once per episode."""
        state, rows = tracker.initial_state(), []
        for step in range(1, budget + 1):
            feats, state = tracker.update(state, 1.0, step, budget if show_budget else None, 0.5)
            rows.append(feats)
        return torch.tensor(rows, dtype=torch.float64, device=self.device)

    def initial_state(self) -> dict:
        k, device = self.k, self.device
        state = {key: torch.zeros(k, dtype=torch.float64, device=device)
                 for key in ("n", "ref", "vol", "min", "ratio", "ceiling", "best", "locked", *(f"ema{i}" for i in range(len(DECAYS))))}
        state["h"] = torch.zeros(k, self.hidden, dtype=torch.float64, device=device)
        state["c"] = torch.zeros(k, self.hidden, dtype=torch.float64, device=device)
        u1 = (math.log(1.0) - self.lo) / self.span
        state["u"] = torch.full((k,), u1, dtype=torch.float64, device=device)
        return state

    def log_multiplier(self, state: dict) -> torch.Tensor:
        """``[K]``: the log of the multiplier of the base LR for the next step."""
        return torch.where(state["n"] > 0, self.lo + state["u"] * self.span, torch.zeros_like(state["u"]))

    def lr(self, state: dict, step: int) -> torch.Tensor:
        """``[K]``: the LR of optimizer step ``step`` (1-based)."""
        return self.base_lr * self.shape[step - 1] * torch.exp(self.log_multiplier(state))

    def observe(self, state: dict, w: dict, loss: torch.Tensor, step: int,
                ratio: torch.Tensor | None = None) -> dict:
        """The state after the (detached, float64) losses ``[K]`` of step ``step`` and, on a
        step that measures it, each member's update-to-weight ratio ``[K]``."""
        valid = torch.isfinite(loss) & (loss > 0)
        feats, new = features(self, state, loss, step, ratio)
        config = self.config
        if self.max_ratio is not None:
            if ratio is not None:  # the log of the product step ``step`` ran at, as the scheduler reads it
                product = self.log_multiplier(state) + torch.log(self.shape[step - 1])
                product = product if self.exact else product.detach()
                measured = log_ceiling(product, ratio, self.max_ratio, config.max_multiplier, self.least_ceiling)
                new["ceiling"] = torch.where(torch.isnan(ratio), state["ceiling"], measured)
            else:
                new["ceiling"] = state["ceiling"]
        if self.collapse_guard is not None:  # NetConfig.collapse_guard, as the scheduler applies it
            rel = feats[self.rel_loss].detach()
            new["best"] = torch.minimum(state["best"], rel)
            back = (new["best"] < -MIN_PROGRESS) & (rel > self.collapse_guard * new["best"])
            new["locked"] = torch.where(back, torch.ones_like(state["locked"]), state["locked"])
        u_net, h, c = self._cell(w, torch.stack(feats, dim=1), state["h"], state["c"])
        u = u_net
        if self.rise is not None:  # NetConfig.max_rise, as the scheduler applies it
            cap = state["u"] + self.rise
            binding = (u_net > cap).detach()
            # Where the limit binds the LR no longer depends on the network's output, so a network
            # asking for too much would get no gradient telling it so: add the output's own
            # gradient there (straight-through, Bengio et al. 2013, arXiv 1308.3432; zero value).
            u = torch.minimum(u, cap)
            if not self.exact:
                u = u + binding * (u_net - u_net.detach())
        if self.max_u is not None:
            # NetConfig.max_multiplier (on the product with the shape of the next step), without a
            # straight-through term: where the cap binds the LR is the base LR whatever the
            # network asks, and passing the "raise the LR" most episodes ask for through it drove
            # metalr-unroll-capped's output ever further above its cap, where it learned nothing else.
            top = self.max_u if self.max_ratio is None else (new["ceiling"] - self.lo) / self.span
            if self.hold:  # no budget: the base LR at most
                top = torch.full_like(u, -self.lo / self.span)
            elif self.collapse_guard is not None:  # locked: the base LR at most
                top = torch.where(new["locked"] > 0, torch.full_like(u, -self.lo / self.span), top)
            u = torch.minimum(u, top - self.shape_u[step])
        if self.guard is not None:  # NetConfig.guard, as the scheduler applies it
            fire = feats[self.names.index("rel_min")] > self.guard
            u = torch.where(fire, (u - self.cut).clamp(min=0.0), u)
            new["min"] = torch.where(fire, new["ema0"] / (1 - DECAYS[0] ** (state["n"] + 1)), new["min"])
        new.update(u=u, h=h, c=c)
        out = {key: torch.where(valid if new[key].dim() == 1 else valid[:, None], new[key], state[key])
               for key in new}
        out["n"] = state["n"] + valid
        return out

    def _cell(self, w: dict, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """:meth:`ScheduleNet.cell` for K members at once: weights ``[K, ...]``, x ``[K, F]``."""
        H = self.hidden

        def mv(m, v):
            return (m @ v.unsqueeze(-1)).squeeze(-1)

        g = (mv(w["w2x"], torch.relu(mv(w["w1x"], x) + w["b1x"]))
             + mv(w["w2h"], torch.relu(mv(w["w1h"], h) + w["b1h"])) + w["b2"])
        gates = torch.sigmoid(g[:, :3 * H])
        c = gates[:, H:2 * H] * c + gates[:, :H] * torch.tanh(g[:, 3 * H:])
        h = gates[:, 2 * H:] * torch.tanh(c)
        logit = (w["wo"] * h).sum(-1) + w["bo"]
        if "ws" in w:
            logit = logit + (w["ws"] * x).sum(-1)
        return torch.sigmoid(logit), h, c


def features(s: Schedule, state: dict, loss: torch.Tensor, step: int,
             ratio: torch.Tensor | None = None) -> tuple[list, dict]:
    """The ``hyper-v2`` update (and ``-v3``'s to ``-v5``'s) of :class:`FeatureTracker` on ``[K]``
    tensors with a step count ``n`` per member (the tracker keeps one Python int, and its first
    step reads ``float(a)``, so it cannot take a batch); the same formulas, checked against it
    in the tests. Unless ``s.exact``, ``prev_output`` is read detached (and the caller passes
    detached losses): the network's gradient flows through its recurrent state and its
    LRs, not back through its own inputs."""
    ema_old = [state[f"ema{i}"] for i in range(len(DECAYS))]
    a = torch.log(loss)
    n = state["n"] + 1
    first = state["n"] == 0
    # Clip a spike to 2x the slowest average (from the second loss on), as the tracker does.
    slow = ema_old[-1] / (1 - DECAYS[-1] ** state["n"])
    a = torch.where(first, a, torch.minimum(a, slow + math.log(2.0)))
    ref = torch.where(first, a, state["ref"])
    raw = [d * e + (1 - d) * a for d, e in zip(DECAYS, ema_old)]
    ema = [r / (1 - d ** n) for r, d in zip(raw, DECAYS)]
    vol = VOL * state["vol"] + (1 - VOL) * (a - ema[0]).abs()
    low = torch.where(first, ema[0], torch.minimum(ema[0], state["min"]))
    by_loss = [(ema[0] - ref).clamp(-8.0, 3.0),
               *((10.0 * (ema[i] - ema[i + 1])).clamp(-3.0, 3.0) for i in range(len(ema) - 1)),
               (vol / (1 - VOL ** n)).clamp(0.0, 3.0),
               (ema[0] - low).clamp(0.0, 3.0)]
    held = state["ratio"]
    if ratio is not None:  # features.ratio_feature on tensors: a NaN ratio holds the last value
        measured = torch.where(ratio <= 1e-6, -3.0, (torch.log(ratio.clamp(min=1e-6)) / LOG10 + 3.0).clamp(max=3.0))
        held = torch.where(torch.isnan(ratio), held, measured)
    row = s.step_features[step - 1]
    u = state["u"] if s.exact else state["u"].detach()
    feats = []
    for j, name in enumerate(s.names):
        if name in LOSS_FEATURES:
            feats.append(by_loss[LOSS_FEATURES.index(name)])
        elif name == "prev_output":
            feats.append(u)
        elif name == "update_ratio":
            feats.append(held)
        else:
            feats.append(row[j].expand_as(u))
    new = {"ref": ref, "vol": vol, "min": low, "ratio": held, **{f"ema{i}": r for i, r in enumerate(raw)}}
    return feats, new


class InnerRun:
    """A task's model trained functionally by K members (see the module docstring).

    ``vectorised``: the forward pass is vmapped over the members (several members in one
    batched model); otherwise one member is run by a plain ``functional_call`` (the sequential
    path, which also runs recurrent layers). Both compute the same thing.
    """

    def __init__(self, task: Task, model: nn.Module, family: str, k: int, vectorised: bool, device,
                 dtype: torch.dtype = torch.float32):
        check_model(model, family, vectorised)
        if not vectorised and k != 1:
            raise MetalrError("the sequential functional path runs one member; use vectorised=True for K > 1")
        self.task, self.model, self.k, self.device = task, model, k, torch.device(device)
        self.vectorised, self.dtype = vectorised, dtype
        self.optimizer = Optimizer(task.optimizer, task.momentum, task.weight_decay)

        def member_loss(p, x, y):
            return task.loss_fn(functional_call(model, p, (x,)), y)

        if vectorised:
            self._losses = vmap(member_loss, in_dims=(0, None, None))
        else:
            self._losses = lambda p, x, y: member_loss({n: v[0] for n, v in p.items()}, x, y).unsqueeze(0)

    def cast(self, t: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the run's device, floating point ones in the run's dtype."""
        t = to_device(t, self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    def initial_params(self) -> dict:
        """The model's parameters, repeated ``[K, ...]`` (the members share the initialisation)."""
        return {name: p.detach().to(self.device, self.dtype).unsqueeze(0).repeat(self.k, *([1] * p.dim()))
                for name, p in self.model.named_parameters()}

    def step(self, params: dict, opt_state: dict, sched: Schedule, sched_state: dict, w: dict,
             batch, t: int, create_graph: bool):
        """Step ``t``: the LR in effect, the training losses ``[K]`` (detached), the update, and
        the schedule fed the losses. Returns ``(lr, loss, params, opt_state, sched_state)``."""
        x, y = batch
        lr = sched.lr(sched_state, t)
        losses = self._losses(params, x, y)
        # The gradient of the sum is each member's own gradient: d(sum)/d(loss_k) = 1 whatever
        # the other losses are, NaN included.
        grads = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=create_graph)
        loss = losses.detach().double()
        with torch.set_grad_enabled(create_graph):
            before = params
            params, opt_state = self.optimizer.step(params, grads, opt_state, t, lr)
            ratio = update_to_weight(params, before) if sched.reads_ratio and measures_ratio(t) else None
            seen = losses.double() if sched.exact and create_graph else loss
            sched_state = sched.observe(sched_state, w, seen, t, ratio)
        return lr, loss, params, opt_state, sched_state

    def losses(self, params: dict, batch) -> torch.Tensor:
        """``[K]`` training losses of ``batch``, in the graph of ``params``."""
        return self._losses(params, *batch)

    def validation_loss(self, params: dict) -> torch.Tensor:
        """Each member's loss on the whole validation split, as :func:`metalr.trainer.evaluate`
        (in the graph of ``params`` when grad mode is on)."""
        chunk = max(1, min(1000, EVAL_ELEMENTS // self.k))
        model = self.model
        if self.vectorised:
            forward = vmap(lambda p, x: functional_call(model, p, (x,)), in_dims=(0, None))
        else:
            def forward(p, x):
                return functional_call(model, {n: v[0] for n, v in p.items()}, (x,)).unsqueeze(0)
        split = self.task.val
        out = torch.cat([forward(params, self.cast(split.x[i:i + chunk])).to(self.dtype)
                         for i in range(0, len(split), chunk)], dim=1)
        y = split.y.to(self.device)
        if self.vectorised:
            return vmap(self.task.loss_fn, in_dims=(0, None))(out, y)
        return self.task.loss_fn(out[0], y).unsqueeze(0)
