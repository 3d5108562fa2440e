"""``MetaLRScheduler``: a trained schedule network, plugged into any training loop.

Two lines in a user's script::

    sched = MetaLRScheduler.from_pretrained("metalr-unroll-hypergradient-hold", optimizer, total_steps=T)
    ...
    loss.backward(); optimizer.step(); sched.step(loss)

It is a ``torch.optim.lr_scheduler.LRScheduler``: each step it reads the loss of the step just
taken, updates the network's features and hidden state, and sets every param group's LR to that
group's ``initial_lr`` times one multiplier (so groups keep their ratio, as with ``LambdaLR``).
The first step runs at ``initial_lr`` (nothing has been observed yet).

* ``default`` networks emit a multiplier in their documented range (e.g. ``[1e-3, 2]``) of the
  optimizer's own base LR. ``total_steps`` is optional: with it the network sees training
  progress, without it that feature reads 0 and ``budget_known`` 0 (meta-training hides the
  budget in some inner runs so both uses are trained).
* ``paper`` networks (MLR-SNet) emit an absolute LR ``gamma * u`` for the first group (others
  keep their ratio to it). ``gamma`` is given, or computed by the paper's rule from the first
  observed loss and ``num_classes``.

Feeding the loss where a framework calls ``step()`` with no argument (Lightning, the Hugging Face
Trainer, ``ChainedScheduler``): call :meth:`MetaLRScheduler.observe` before that ``step()``, or
use :mod:`metalr.integrations`. A loss-reading scheduler stepped with no loss ever observed
warns once; so does stepping past ``total_steps``. See ``docs/integrations.md``.

Bad losses: a NaN, infinite or negative loss (and, for networks that read log-losses, zero)
leaves the LR and the network's state as they were, and warns once per scheduler. The LR is
never NaN. A loss that is not a real number or a one-element tensor with a value (not on the
meta device) raises ``MetalrError``, and so does a param group whose base LR is NaN or
infinite, at construction.

``state_dict()`` holds the step count, features, hidden state, output and any loss observed but
not yet fed (not the weights); a scheduler rebuilt with ``from_pretrained`` and given that state
continues the same trajectory. ``load_state_dict`` checks the whole state before changing
anything, and refuses a state saved with another checkpoint.
"""

from __future__ import annotations

import math
import operator
import numbers
import warnings
import weakref

import numpy as np
import torch
import torch.distributed as dist

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.features import FeatureTracker, is_adaptive, measures_ratio, smoothed_log_loss
from metalr.learned.network import MIN_PROGRESS, ScheduleNet, knee_shape, log_ceiling, paper_gamma
from metalr.lr_policy import LRPolicy, as_loss

NO_LOSS_HELP = (
    "MetaLRScheduler.step() was called but no training loss was ever observed, so the LR stays "
    "at its base value. Pass the loss of each step: sched.step(loss), or sched.observe(loss) "
    "before a framework calls sched.step() (Lightning: metalr.integrations.lightning."
    "MetaLRCallback; Hugging Face Trainer: metalr.integrations.hf.MetaLRTrainerMixin; see "
    "docs/integrations.md). Warned once."
)


# Whether this torch build has torch.distributed: fixed when it was built, so asked once.
DISTRIBUTED = dist.is_available()

STATE_KEYS = ("last_epoch", "_step_count", "base_lrs", "_last_lr", "total_steps", "gamma", "u",
              "observed", "features_state", "hidden", "hidden_before", "last_input",
              "checkpoint_id", "own", "ever_observed", "pending", "late", "opt_steps")


class _Cell:
    """:meth:`ScheduleNet.cell` in float64 with fused matrices, for the scheduler's every step.

    Both MLP first layers and their biases form one block matrix acting on ``v = [x, h, 1]``;
    the second layers and the summed bias one matrix acting on ``[relu(..), relu(..), 1]``; the
    three sigmoid gates use ``sigmoid(g) = (1 + tanh(g / 2)) / 2`` with the halving folded into
    the weights (exact: a power of two), so one ``tanh`` serves all four gates. The products
    and their nonlinearities are 4 numpy calls into preallocated buffers. A numpy call costs
    far more than the arithmetic of a vector of 8, so for small hidden states (the default
    network's 8) the gates and head run on Python floats (the skip path's dot rides in the
    products); from :data:`ARRAY_GATES_FROM` units on (``transfer-v1``'s 32) they run as numpy
    calls on views of one buffer (measured crossover: about 16). The state ``(h, c)`` is two
    lists of floats. :attr:`run` is the chosen step; it is the network's cell up to float64
    rounding.
    """

    KEYS = frozenset({"w1x", "b1x", "w2x", "w1h", "b1h", "w2h", "b2", "wo", "bo", "ws"})
    ARRAY_GATES_FROM = 16

    def __init__(self, w: dict, inputs: int, hidden: int):
        m, d, H = w["w1x"].shape[0], inputs, hidden
        skip = w.get("ws")  # the optional linear skip from the features to the head
        floats = H < self.ARRAY_GATES_FROM
        # On the float path the skip's dot rides in the products: rows ``ws`` and ``-ws`` of the
        # first layer, whose relus differ by ``ws . x`` (exactly: one of them is 0), a last row of
        # the second layer takes that difference, and the tanh leaves it alone. A numpy row costs
        # nothing next to a Python sum over the inputs (0.6 us).
        folded = floats and skip is not None
        rows = 2 * m + 1 + (2 if folded else 0)
        w1 = np.zeros((rows, d + H + 1))
        w1[:m, :d], w1[:m, -1] = w["w1x"], w["b1x"]
        w1[m:2 * m, d:d + H], w1[m:2 * m, -1] = w["w1h"], w["b1h"]
        w1[2 * m, -1] = 1.0  # relu(1) = 1 carries the second layer's bias
        w2 = np.zeros((4 * H + (1 if folded else 0), rows))
        w2[:4 * H, :2 * m + 1] = np.concatenate([w["w2x"], w["w2h"], w["b2"][:, None]], axis=1)
        w2[:3 * H] *= 0.5
        if folded:
            w1[-2, :d], w1[-1, :d] = skip, -skip
            w2[-1, -2:] = 1.0, -1.0
        self.w1, self.w2, self.d, self.H = w1, w2, d, H
        self.v = np.zeros(d + H + 1)
        self.v[-1] = 1.0
        self.xh = self.v[:d + H]
        # relu as maximum against an array: a Python scalar costs numpy a conversion per call
        self.a, self.zero, self.t = np.empty(rows), np.zeros(rows), np.empty(w2.shape[0])
        self.activated = self.t[:4 * H]  # the four gates' pre-halved activations, tanh'd
        self.folded = folded
        if floats:
            self.gates = self.activated.reshape(4, H)  # tolist() of this view: the four gates' lists at once
            self.wo, self.bo = w["wo"].tolist(), float(w["bo"])
            self.run = self._float_gates
        else:
            # the new h is written into v, so head and skip are one dot with [ws, wo, bo]
            self.head = np.zeros(d + H + 1)
            if skip is not None:
                self.head[:d] = skip
            self.head[d:d + H], self.head[-1] = w["wo"], w["bo"]
            self.sig, self.h, self.c, self.ig = self.t[:3 * H], self.v[d:d + H], np.empty(H), np.empty(H)
            self.half = np.full(3 * H, 0.5)  # an array operand, as self.zero
            self.i, self.f, self.o, self.g = (self.t[k * H:(k + 1) * H] for k in range(4))
            self.run = self._array_gates

    def _products(self, x: list, h: list) -> None:
        """``t = tanh(W2 relu(W1 [x, h, 1]))``, the four gates' (pre-halved) activations (and,
        folded in, the skip's ``ws . x`` untouched)."""
        a, t = self.a, self.t
        self.xh[:] = x + h
        self.w1.dot(self.v, a)  # ndarray.dot into a buffer: a third of np.matmul's call overhead
        np.maximum(a, self.zero, out=a)
        self.w2.dot(a, t)
        np.tanh(self.activated, out=self.activated)

    def _float_gates(self, x: list, h: list, c: list) -> tuple[float, list, list]:
        self._products(x, h)
        ti, tf, to, tg = self.gates.tolist()
        c = [(f * 0.5 + 0.5) * cc + (i * 0.5 + 0.5) * g for i, f, g, cc in zip(ti, tf, tg, c)]
        h = [(o * 0.5 + 0.5) * math.tanh(cc) for o, cc in zip(to, c)]
        z = sum(map(operator.mul, self.wo, h)) + self.bo
        if self.folded:
            z += self.t.item(-1)
        return 1.0 / (1.0 + math.exp(700.0 if z < -700.0 else -z)), h, c  # min(-z, 700) without a call

    def _array_gates(self, x: list, h: list, c: list) -> tuple[float, list, list]:
        self._products(x, h)
        sig, cb, ig = self.sig, self.c, self.ig
        sig *= self.half
        sig += self.half
        cb[:] = c
        np.multiply(self.f, cb, out=cb)
        np.multiply(self.i, self.g, out=ig)
        cb += ig
        np.tanh(cb, out=ig)
        np.multiply(self.o, ig, out=self.h)  # the new h, in place in v
        z = float(self.head.dot(self.v))
        return 1.0 / (1.0 + math.exp(700.0 if z < -700.0 else -z)), self.h.tolist(), cb.tolist()


def _count(name: str, value, minimum: int) -> int:
    """An int (numpy integers too, bools not) of at least ``minimum``, or MetalrError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise MetalrError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class MetaLRScheduler(LRPolicy):
    """Sets the LR from a schedule network that reads the training loss.

    Args:
        optimizer: the wrapped optimizer; each group's LR is its ``initial_lr`` times the
            network's multiplier.
        net: the schedule network (usually from :meth:`from_pretrained`).
        total_steps: optimizer steps in the run (an int, numpy ints too), or None if unknown.
            Stepping past it warns once.
        gamma, num_classes: the largest LR of a ``paper`` network, or its rule's class count.
        warmup_steps: for the first ``warmup_steps`` steps the LR is additionally scaled by a
            factor rising linearly from ``warmup_start_factor`` to 1. The network reads every
            loss from the first step, warmup or not.
        scaler: the ``torch.amp.GradScaler`` stepping ``optimizer``, if any. A step the scaler
            skipped (inf/NaN gradients: ``optimizer.step()`` was not called since the previous
            ``step()``) holds the LR and its loss is not fed to the network. Optimizers with
            ``fused=True`` skip inside their kernel, which cannot be seen without a host sync;
            their skipped steps are fed.
        sync_ranks: with ``torch.distributed`` initialised, average the loss over all ranks
            (below). False for a scheduler that belongs to one rank's own run (the ES
            meta-trainer runs different episodes on different ranks).

    The loss: :meth:`observe` takes it (a real number or one-element tensor), any number of
    times per optimizer step (micro-batches under gradient accumulation); :meth:`step`, called
    once after each ``optimizer.step()``, feeds their mean to the network. ``step(loss)`` is
    ``observe(loss); step()``. A CUDA loss tensor is read one step late, through a non-blocking
    copy, so the scheduler never stalls the GPU: the LR set after step ``k`` is then the one the
    same losses on CPU give after step ``k - 1``. With ``torch.distributed`` initialised, the
    mean is taken over all ranks (one ``all_reduce`` per step, so every rank must call
    ``step()``), and every rank sets the same LR.

    The LR is chainable: a factor another scheduler applied to the group's LR since this one
    last set it is kept, so ``ChainedScheduler([LinearLR(...), sched])`` warms up the learned
    LR. Restore the optimizer's state with the scheduler's, as for torch's chainable schedulers.

    Example::

        >>> sched = MetaLRScheduler.from_pretrained("metalr-unroll-hypergradient-hold", optimizer, total_steps=1000)
        >>> for x, y in batches:
        ...     loss = loss_fn(model(x), y)
        ...     optimizer.zero_grad(); loss.backward(); optimizer.step()
        ...     sched.step(loss)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, net: ScheduleNet, total_steps: int | None = None,
                 gamma: float | None = None, num_classes: int | None = None,
                 checkpoint_id: str = "", last_epoch: int = -1, *, warmup_steps: int = 0,
                 warmup_start_factor: float = 0.01, scaler: torch.amp.GradScaler | None = None,
                 sync_ranks: bool = True):
        if total_steps is not None:
            total_steps = _count("total_steps", total_steps, 1)
        self.warmup_steps = _count("warmup_steps", warmup_steps, 0)
        if not (isinstance(warmup_start_factor, numbers.Real) and 0 < warmup_start_factor <= 1):
            raise MetalrError(f"warmup_start_factor must be a number in (0, 1], got {warmup_start_factor!r}")
        if net.config.kind == "paper" and gamma is None and num_classes is None:
            raise MetalrError("a paper (MLR-SNet) network needs gamma, or num_classes for its gamma rule")
        if gamma is not None and not (gamma > 0 and math.isfinite(gamma)):
            raise MetalrError(f"gamma must be a positive finite number, got {gamma!r}")
        for i, group in enumerate(optimizer.param_groups):
            base = group.get("initial_lr", group["lr"])  # what LRScheduler takes as the base LR
            if not math.isfinite(base):
                raise MetalrError(f"param group {i} has base LR {float(base)!r}; the scheduler "
                                  "multiplies each group's base LR, which must be a finite number")
        self.warmup_start_factor = float(warmup_start_factor)
        self.scaler = scaler
        self.sync_ranks = sync_ranks
        self.net = net
        self.tracker = FeatureTracker(net.config.features, adaptive=is_adaptive(optimizer))
        self.total_steps = total_steps
        self.gamma = gamma
        self.num_classes = num_classes
        self.checkpoint_id = checkpoint_id
        self.refresh()
        h, c = (a.tolist() for a in net.initial_state(numpy=True))
        self.hidden = [h, c]
        self.features_state = self.tracker.initial_state()
        self.u = net.u_of_multiplier(1.0) if net.config.kind == "default" else 0.5
        self.observed = 0
        # NetConfig.max_ratio: the log of the most the product may be (0: the base LR) until a
        # measured update-to-weight ratio allows more.
        self.log_ceiling = 0.0
        # NetConfig.collapse_guard: the lowest rel_loss so far, and whether the run has since lost
        # most of that progress (no raise after).
        self.best_rel_loss, self.raise_locked = 0.0, False
        # Kept for the meta-trainer's lookahead, which re-emits the LR in effect differentiably.
        self.last_input: list | None = None
        self.hidden_before = [h, c]
        self._warned = False
        self._warned_no_loss = False
        self._warned_past_end = False
        self.ever_observed = False
        # Losses observed since the last step(): a host sum, a device sum (CUDA tensors, summed
        # on the device so nothing syncs) and their count.
        self._sum, self._dev, self._count = 0.0, None, 0
        # A step's mean sent to pinned memory, read at the next step: (step index, event).
        self._inflight: tuple[int, torch.cuda.Event] | None = None
        self._host: torch.Tensor | None = None
        # A step's (sum, count, index) already read but not yet fed (after state_dict()).
        self._late: list | None = None
        # Optimizer steps counted by a post-step hook: they tell a skipped step (AMP) from a
        # taken one, and which optimizer step the pending losses belong to.
        self._opt_steps = 0
        self._opt_steps_at_step = 0
        self._tag = 0
        # hyper-v5's update-to-weight ratio: the parameters before a measured optimizer step, and
        # the ratio it gave (a float on CPU, else a 0-dim tensor on the parameters' device) until
        # step() feeds it.
        self._before: list | None = None
        self._ratio: float | torch.Tensor | None = None
        # NetConfig.max_ratio_hypergradient, under an adaptive optimizer: the last measured step's
        # update (w_k - w_{k-1}, flat as the snapshot) until the next step's gradient is read, and
        # the running sum of the hypergradient cosines (a float on CPU, else a 0-dim tensor).
        self._gated = net.config.max_ratio_hypergradient is not None and self.tracker.adaptive
        self._update: list | None = None
        self._hypergradient: float | torch.Tensor = 0.0
        # NetConfig.hypergradient_z: the sum of the squared cosines and their count (the mean's
        # standard error), and whether the gate has opened; and what the gate reads, updated with
        # each sample (the sum, or the mean's z-score)
        self._z = net.config.hypergradient_z
        self._squares: float | torch.Tensor = 0.0
        self._samples = 0
        self._gate_opened = False
        self._gate_reads: float | torch.Tensor = 0.0
        flat = FlatParameters(optimizer)
        me = weakref.ref(self)

        def count_optimizer_step(*_):
            if (sched := me()) is not None:
                sched._opt_steps += 1
                if sched._before is not None:
                    after = flat()
                    sched._ratio = update_to_weight(after, sched._before)
                    if sched._gated and sched._opt_steps > 1:  # not Adam's first step (NetConfig)
                        sched._update = [a - b for a, b in zip(after, sched._before)]
                    sched._before = None

        optimizer.register_step_post_hook(count_optimizer_step)
        if "update_ratio" in self.tracker.names:
            def snapshot(*_):  # before the optimizer step the post-hook will count
                if (sched := me()) is not None:
                    if sched._update is not None:
                        grads = flat_gradients(_parameters(optimizer), isinstance(sched._update[0], np.ndarray))
                        sched._add_sample(hypergradient_cosine(grads, sched._update))
                        sched._update = None
                    if measures_ratio(sched._opt_steps + 1):
                        sched._before = flat()

            optimizer.register_step_pre_hook(snapshot)
        self._own = 1.0  # the warmup x network multiplier last applied (for chaining)
        self._starting = False
        self._float_lrs = not any(isinstance(g["lr"], torch.Tensor) for g in optimizer.param_groups)
        super().__init__(optimizer, last_epoch)

    @classmethod
    def from_pretrained(cls, name_or_path: str, optimizer: torch.optim.Optimizer,
                        total_steps: int | None = None, **kwargs) -> "MetaLRScheduler":
        """Load a shipped checkpoint by name (``metalr.list_pretrained()``) or a path."""
        net, config = checkpoint.load(name_or_path)
        return cls(optimizer, net, total_steps=total_steps, checkpoint_id=config["sha256"], **kwargs)

    def refresh(self) -> None:
        """Re-read the network's weights (the meta-trainer calls this after each update)."""
        self._w = self.net.weights(numpy=True)
        if set(self._w) <= _Cell.KEYS:
            self._cell = _Cell(self._w, self.net.config.inputs, self.net.config.hidden).run
        else:  # a network with weights the fused cell does not know: its own (slower) cell
            self._cell = self._net_cell
        config = self.net.config
        self._log_range = ((math.log(config.lo), math.log(config.hi) - math.log(config.lo))
                           if config.kind == "default" else None)
        self._log_input = config.features != "loss-v1"
        self._paper = config.kind == "paper"
        self._rise = self.net.max_rise_u
        self._guard, self._cut = self.net.config.guard, self.net.guard_cut_u
        self._rel_min = self.tracker.names.index("rel_min") if self._guard is not None else None
        # NetConfig.collapse_guard, and where rel_loss is
        self._collapse_guard = config.collapse_guard
        self._rel_loss = self.tracker.names.index("rel_loss") if config.collapse_guard is not None else None
        self._max_u = self.net.max_u
        self._raise_needs_budget = config.raise_needs_budget  # NetConfig.raise_needs_budget
        # NetConfig.max_ratio (and max_ratio_adaptive): the ratio ceiling without and with a
        # budget, None for none (load_state_dict may change total_steps)
        self._ratio_ceilings = tuple(config.ratio_ceiling(bool(self.tracker.adaptive), known)
                                     for known in (False, True))
        # NetConfig.max_ratio_hypergradient: the ceiling with the budget while the gate is open
        self._open_ceiling = config.ratio_ceiling(bool(self.tracker.adaptive), True, hypergradient_open=True)
        # NetConfig.max_multiplier, and max_multiplier_hypergradient while the gate is open
        self._cap = config.max_multiplier
        self._open_cap = config.max_multiplier_hypergradient or config.max_multiplier
        # NetConfig.ratio_floor: the least the ceiling may be, without and with a budget
        self._least_ceilings = tuple(config.least_ceiling(bool(self.tracker.adaptive), known)
                                     for known in (False, True))
        self._shaped = config.shape is not None  # NetConfig.shape (knee_shape: the only one)
        self._shape_at = (0, 1.0)  # (step, its shape), set when an output is computed for it

    def _add_sample(self, h: float | torch.Tensor) -> None:
        """One hypergradient cosine into the gate's running statistics (no host sync on a GPU)."""
        self._hypergradient = self._hypergradient + h
        if self._z is not None:
            self._squares = self._squares + h * h
            self._samples += 1
        self._gate_reads = self._reads()

    def _reads(self) -> float | torch.Tensor:
        """What the gate reads: the running sum of the samples, or with NetConfig.hypergradient_z
        their mean over its standard error (0 before two samples)."""
        if self._z is None:
            return self._hypergradient
        n = self._samples
        if n < 2:
            return 0.0
        mean = self._hypergradient / n
        variance = (self._squares / n - mean * mean) * (n / (n - 1))
        if isinstance(variance, torch.Tensor):
            return mean / (variance.clamp(min=1e-12) / n).sqrt()
        return mean / math.sqrt(max(variance, 1e-12) / n)

    def _gate(self, reads: float, ceiling: float, cap: float) -> tuple[float, float]:
        """The Adam ratio ceiling and multiplier cap from what the gate reads
        (NetConfig.max_ratio_hypergradient, max_multiplier_hypergradient, hypergradient_z). A held
        gate's ceiling is the ratio the previous measured step reached (``update_ratio`` still holds
        it), within the two ceilings: the raise stops where it was, and a back-off since may climb
        back to it (a ceiling at the ratio now would lock every cut in)."""
        if self._z is None:
            return (self._open_ceiling, self._open_cap) if reads > 0 else (ceiling, cap)
        if reads > self._z:
            self._gate_opened = True
            return self._open_ceiling, self._open_cap
        if self._gate_opened and reads > -self._z:
            previous = 10.0 ** (self.features_state["ratio"] - 3.0)  # ratio_feature, inverted
            return min(self._open_ceiling, max(ceiling, previous)), self._open_cap
        return ceiling, cap

    def _net_cell(self, x: list, h: list, c: list) -> tuple[float, list, list]:
        u, (h, c) = self.net.cell(np.asarray(x, dtype=np.float64), (np.asarray(h), np.asarray(c)),
                                  self._w)
        return float(u), h.tolist(), c.tolist()

    # -- the loss ------------------------------------------------------------------------------

    def observe(self, loss) -> None:
        """Record the training loss of the current optimizer step; :meth:`step` feeds it.

        Call it once per micro-batch (the mean of one optimizer step's losses is fed), before
        or after ``optimizer.step()`` but before this scheduler's ``step()``. Losses observed
        for an optimizer step whose ``step()`` never came (an inactive part of ``SequentialLR``)
        are dropped when the next optimizer step's first loss arrives.

        Args:
            loss: a real number or a one-element real tensor (read detached; a CUDA tensor is
                not read until the next step, see the class docs).

        Raises:
            MetalrError: for a multi-element or empty tensor, an array, a string, a complex or
                bool value, or an int too large for a float.
        """
        loss = as_loss(loss)
        if self._tag != self._opt_steps:
            self._tag = self._opt_steps
            self.drop_observed()
        self.ever_observed = True
        self._count += 1
        if type(loss) is float:
            self._sum += loss
        else:
            loss = loss.to(torch.float64)
            self._dev = loss if self._dev is None else self._dev + loss

    def drop_observed(self) -> None:
        """Forget the losses observed since the last :meth:`step` (a loop that skips ``step()``
        for an optimizer step it skipped, as the HF Trainer does under fp16, calls this)."""
        self._sum, self._dev, self._count = 0.0, None, 0

    def _refuse(self, loss: float) -> None:
        """A loss the features cannot take: it is not fed (warned once)."""
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"MetaLRScheduler got loss {loss!r} at step {self.last_epoch}; it accepts finite "
                f"losses {'> 0' if self._log_input else '>= 0'}. Holding the last LR (warned once).",
                RuntimeWarning, stacklevel=5,
            )

    def _feed(self, loss: float, index: int, ratio: float | None = None, reads: float | None = None) -> None:
        """Advance the features and the network on the mean loss of step ``index`` (and the
        update-to-weight ratio its optimizer step measured, if it did, and what the hypergradient
        gate read then: :meth:`_reads`)."""
        if not (math.isfinite(loss) and (loss > 0 if self._log_input else loss >= 0)):
            self._refuse(loss)
            return
        if self._paper and self.gamma is None:  # its rule reads the first loss
            self.gamma = paper_gamma(loss, self.num_classes)
        ceiling, cap = self._ratio_ceilings[self.total_steps is not None], self._cap
        if self._gated and self.total_steps is not None:  # NetConfig.max_ratio_hypergradient
            ceiling, cap = self._gate(reads, ceiling, cap)
        if ceiling is not None and ratio is not None and ratio == ratio:
            # NetConfig.max_ratio, from the product step ``index`` ran at (before u moves on; a
            # CUDA loss and ratio fed a step late read the next step's, within one rise limit)
            product = self._multiplier_at(index)
            self.log_ceiling = log_ceiling(math.log(product) if product > 0 else -math.inf, ratio,
                                           ceiling, cap,
                                           self._least_ceilings[self.total_steps is not None])
        x, self.features_state = self.tracker.update(
            self.features_state, loss, index, self.total_steps, self.u, ratio)
        self.last_input = x
        self.hidden_before = self.hidden
        if self._collapse_guard is not None:  # NetConfig.collapse_guard
            rel = x[self._rel_loss]
            if rel < self.best_rel_loss:  # min() as a comparison here and below: a call costs 60 ns a step
                self.best_rel_loss = rel
            if self.best_rel_loss < -MIN_PROGRESS and rel > self._collapse_guard * self.best_rel_loss:
                self.raise_locked = True
        u, h, c = self._cell(x, *self.hidden)
        if self._rise is not None:  # the network may raise its output only so fast (NetConfig.max_rise)
            top = self.u + self._rise
            if top < u:
                u = top
        if self._shaped:  # NetConfig.shape at the step this output sets; kept for multiplier()
            self._shape_at = (index + 1, knee_shape(index + 1, self.total_steps))
        if self._max_u is not None:  # NetConfig.max_multiplier, on the product with the shape
            shape = self._shape_at[1] if self._shaped else 1.0
            if shape > 0:  # past the budget the shape is 0 and so is the LR: nothing to cap
                lo, span = self._log_range
                # NetConfig.collapse_guard, NetConfig.raise_needs_budget: the base LR at most
                if self.raise_locked or (self._raise_needs_budget and self.total_steps is None):
                    top = -lo / span
                else:
                    top = self._max_u if ceiling is None else (self.log_ceiling - lo) / span
                top -= math.log(shape) / span
                if top < u:
                    u = top
        if self._guard is not None and x[self._rel_min] > self._guard:  # NetConfig.guard: back off, restart the best
            u = max(u - self._cut, 0.0)
            self.features_state["min"] = smoothed_log_loss(self.features_state)
        self.u, self.hidden = u, [h, c]
        self.observed += 1

    def _settle(self) -> None:
        """Read the in-flight copy and any device sum to the host (this syncs)."""
        if self._inflight is not None:
            self._settle_inflight()
        if self._dev is not None:
            self._sum, self._dev = self._sum + self._dev.item(), None

    def _send(self, totals: torch.Tensor, index: int) -> None:
        """Copy ``[sum, count, ratio, what the hypergradient gate reads]`` of step ``index`` from
        the GPU without waiting for it."""
        if self._host is None:
            self._host = torch.empty(4, dtype=torch.float64, pin_memory=True)
        self._host.copy_(totals, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._inflight = (index, event)

    def _advance(self) -> None:
        """Feed the network what this step brings: last step's late loss, then this step's."""
        index = self.last_epoch + 1
        if self._inflight is not None:
            # Enqueued a step ago, before this step's forward pass: the GPU is long past it.
            self._settle_inflight()
        if self._late is not None:
            total, count, late_index, late_ratio, late_reads = self._late
            self._late = None
            if count:
                self._feed(total / count, late_index, late_ratio, late_reads)
        skipped = (self.scaler is not None and self.scaler.is_enabled()
                   and self._opt_steps == self._opt_steps_at_step)
        self._opt_steps_at_step = self._opt_steps
        total, device_total, count = self._sum, self._dev, self._count
        self._sum, self._dev, self._count = 0.0, None, 0  # drop_observed(), inlined: every step
        ratio, self._ratio = self._ratio, None
        reads = self._gate_reads if self._gated else None  # None: NaN on a device, as the ratio
        if skipped:
            return
        if (isinstance(ratio, torch.Tensor) and ratio.device.type == "cuda" and device_total is None
                and count):
            device_total = torch.zeros((), dtype=torch.float64, device=ratio.device)  # so nothing syncs
        if self.sync_ranks and DISTRIBUTED and dist.is_initialized():
            if device_total is None:
                device = (torch.device("cuda", torch.cuda.current_device())
                          if dist.get_backend() == "nccl" else torch.device("cpu"))
                device_total = torch.tensor(total, dtype=torch.float64, device=device)
            else:
                device_total = device_total + total
            totals = torch.stack([device_total, torch.full_like(device_total, count)])
            # the ratio and what the gate reads are the same on every rank: not reduced
            dist.all_reduce(totals)
            if totals.device.type != "cuda":
                total, count = totals.tolist()
                if count:
                    self._feed(total / count, index, None if ratio is None else float(ratio),
                               None if reads is None else float(reads))
                return
            totals = torch.cat([totals, _entry(ratio, totals), _entry(reads, totals)])
        elif device_total is not None:
            device_total = device_total + total
            totals = torch.cat([torch.stack([device_total, torch.full_like(device_total, count)]),
                                _entry(ratio, device_total), _entry(reads, device_total)])
        elif count:
            self._feed(total / count, index, None if ratio is None else float(ratio),
                       None if reads is None else float(reads))
            return
        else:
            return
        if totals.device.type == "cuda":
            self._send(totals, index)
        else:  # another accelerator: read at once
            total, count, ratio, reads = totals.tolist()
            self._feed(total / count, index, ratio, reads)  # a NaN ratio (none measured) holds the feature

    def _settle_inflight(self) -> None:
        """Wait for the in-flight copy (done unless the host ran a whole step ahead) and keep
        its values to feed."""
        index, event = self._inflight
        event.synchronize()
        total, count, ratio, reads = self._host.tolist()
        self._late, self._inflight = [total, count, index, None if ratio != ratio else ratio,
                                      None if reads != reads else reads], None

    # -- the LR --------------------------------------------------------------------------------

    def multiplier_of(self, u):
        """The base-LR multiplier for network output ``u`` (a float, or a tensor in the
        meta-trainer's lookahead, where it stays differentiable)."""
        if self.net.config.kind == "paper":
            return self.gamma * u / self.base_lrs[0]
        return self.net.multiplier(u)

    def multiplier(self) -> float:
        """The base-LR multiplier for the next optimizer step (``last_epoch + 1``): the network's,
        1 before it has seen a loss, times its shape (NetConfig.shape) if it has one."""
        return self._multiplier_at(self.last_epoch + 1)

    def _multiplier_at(self, index: int) -> float:
        """:meth:`multiplier` for optimizer step ``index``, with the network's current output."""
        if self.observed == 0:
            m = 1.0
        elif self._log_range is not None:  # a default net, inlined: this runs every step
            lo, span = self._log_range
            m = math.exp(lo + self.u * span)
        else:
            m = float(self.multiplier_of(self.u))
        if not self._shaped:
            return m
        step, shape = self._shape_at
        return (shape if step == index else knee_shape(index, self.total_steps)) * m

    def warmup_factor(self) -> float:
        """The warmup's factor at ``last_epoch``: linear from ``warmup_start_factor`` to 1."""
        if self.last_epoch >= self.warmup_steps:
            return 1.0
        s = self.warmup_start_factor
        return s + (1.0 - s) * self.last_epoch / self.warmup_steps

    def get_lr(self) -> list[float]:
        """Each group's ``initial_lr`` x warmup x network multiplier x any factor another
        scheduler applied since the last step (1 when none did, exactly)."""
        own = ((self.warmup_factor() if self.last_epoch < self.warmup_steps else 1.0)
               * self._multiplier_at(self.last_epoch + 1))  # multiplier(), a call fewer
        prev, self._own = self._own, own
        if self.last_epoch <= 0:
            if not self._starting:  # SequentialLR (re)starts this part at its milestone
                return [base * own for base in self.base_lrs]
            prev = 1.0  # built after another scheduler of a chain: keep its factor
        lrs = []
        for base, group in zip(self.base_lrs, self.optimizer.param_groups):
            ours = base * prev
            lrs.append(base * own * (group["lr"] / ours) if ours else base * own)
        return lrs

    def step(self, loss: float | torch.Tensor | None = None) -> None:
        """Advance one optimizer step, feeding the network the mean loss observed for it.

        Args:
            loss: the loss of the step just taken, as for :meth:`observe` (optional when it
                was observed already).
        """
        if loss is not None:
            self.observe(loss)
        if self._step_count == 0:  # the constructor's initial step: nothing to read yet
            self._starting = True
            super(LRPolicy, self).step()
            self._starting = False
            return
        if not self.ever_observed and not self._warned_no_loss:
            self._warned_no_loss = True
            warnings.warn(NO_LOSS_HELP, UserWarning, stacklevel=2)
        self._advance()
        if self._step_count == 1 or not self._float_lrs:
            super(LRPolicy, self).step()  # torch's checks of the call order, tensor LRs
        else:  # LRScheduler.step's bookkeeping, without its per-step overhead
            self._step_count += 1
            self.last_epoch += 1
            lrs = self.get_lr()
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
            self._last_lr = lrs
        if self.total_steps is not None and self.last_epoch > self.total_steps and not self._warned_past_end:
            self._warned_past_end = True
            warnings.warn(
                f"MetaLRScheduler stepped past total_steps={self.total_steps} (step "
                f"{self.last_epoch}); its progress features stay at their end values (and a network "
                f"over the knee shape runs at LR 0). Pass the "
                "run's number of optimizer steps as total_steps (or None if unknown). Warned once.",
                UserWarning, stacklevel=2)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The scheduler's state as plain Python values (``torch.load(weights_only=True)``
        reads it). Reading a CUDA loss still in flight syncs once. Save it after ``step()``: an
        update-to-weight ratio (``hyper-v5``) measured by an optimizer step that ``step()`` has
        not yet fed is not part of it. Saving drops a hypergradient sample still waiting for the
        next step's gradient (``NetConfig.max_ratio_hypergradient``; the update it would compare
        is as large as the model), so that a run and its resumption from this state go on alike."""
        self._settle()
        self._update = None
        return {
            "last_epoch": self.last_epoch, "_step_count": self._step_count,
            "base_lrs": list(self.base_lrs), "_last_lr": list(self._last_lr),
            "total_steps": self.total_steps, "gamma": self.gamma, "u": self.u,
            "observed": self.observed, "features_state": dict(self.features_state),
            "hidden": [list(a) for a in self.hidden],
            "hidden_before": [list(a) for a in self.hidden_before],
            "last_input": self.last_input, "checkpoint_id": self.checkpoint_id,
            "own": self._own, "ever_observed": self.ever_observed,
            "pending": [self._sum, self._count], "late": self._late,
            "opt_steps": [self._opt_steps, self._opt_steps_at_step, self._tag],
            "log_ceiling": self.log_ceiling,
            "collapse_guard": [self.best_rel_loss, self.raise_locked],
            "hypergradient": float(self._hypergradient),
            "hypergradient_squares": float(self._squares), "hypergradient_samples": self._samples,
            "gate_opened": self._gate_opened,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the whole state is checked first (MetalrError if bad)."""
        self._check_state(state)
        for key in ("last_epoch", "_step_count", "total_steps", "gamma", "u", "observed",
                    "last_input", "ever_observed"):
            setattr(self, key, state[key])
        self.base_lrs, self._last_lr = list(state["base_lrs"]), list(state["_last_lr"])
        self._own = state["own"]
        self.features_state = dict(state["features_state"])
        self.hidden = [[float(v) for v in a] for a in state["hidden"]]
        self.hidden_before = [[float(v) for v in a] for a in state["hidden_before"]]
        (self._sum, self._count), self._dev = state["pending"], None
        # three entries in states saved before hyper-v5 (no ratio), four before the hypergradient
        # sum (None: none, a network without NetConfig.max_ratio_hypergradient)
        late = state["late"]
        if late:
            late = [*late[:4], None][:4] + [late[4] if len(late) == 5 else None]
        self._late, self._inflight = late or None, None
        self._opt_steps, self._opt_steps_at_step, self._tag = state["opt_steps"]
        self.log_ceiling = state.get("log_ceiling", 0.0)  # absent from states saved before max_ratio
        # absent from states saved before collapse_guard
        self.best_rel_loss, self.raise_locked = state.get("collapse_guard", (0.0, False))
        # absent from states saved before max_ratio_hypergradient
        self._hypergradient, self._update = state.get("hypergradient", 0.0), None
        # absent from states saved before hypergradient_z
        self._squares = state.get("hypergradient_squares", 0.0)
        self._samples = state.get("hypergradient_samples", 0)
        self._gate_opened = state.get("gate_opened", False)
        self._gate_reads = self._reads()
        self._shape_at = (0, 1.0)  # computed for the old total_steps, perhaps

    def _check_state(self, state) -> None:
        def bad(what: str):
            raise MetalrError(f"cannot load this MetaLRScheduler state: {what}")

        def finite(values) -> bool:
            return all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values)

        if not isinstance(state, dict):
            bad(f"expected the dict from state_dict(), got {type(state).__name__}")
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            bad(f"missing {', '.join(missing)} (pass the dict from MetaLRScheduler.state_dict())")
        if state["checkpoint_id"] != self.checkpoint_id:
            raise MetalrError(
                "this scheduler state was saved with another checkpoint "
                f"(sha256 {str(state.get('checkpoint_id'))[:12]}..., this one "
                f"{self.checkpoint_id[:12]}...); load the same checkpoint to resume")
        groups = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
            if not (isinstance(state[key], list) and len(state[key]) == groups and finite(state[key])):
                bad(f"{key} must list {groups} finite LRs, one per param group of this optimizer, "
                    f"got {state[key]!r:.80}")
        hidden = self.net.config.hidden
        for key in ("hidden", "hidden_before"):
            arrays = state[key]
            if not (isinstance(arrays, list) and len(arrays) == 2
                    and all(isinstance(a, list) and len(a) == hidden and finite(a) for a in arrays)):
                bad(f"{key} must be two lists of {hidden} finite numbers (this network's hidden "
                    "size); the state is from another network or corrupted")
        for key in ("last_epoch", "_step_count", "observed"):
            if isinstance(state[key], bool) or not isinstance(state[key], int):
                bad(f"{key} must be an int, got {state[key]!r}")
        if state["total_steps"] is not None:
            _count("total_steps", state["total_steps"], 1)
        if state["gamma"] is not None and not (finite([state["gamma"]]) and state["gamma"] > 0):
            bad(f"gamma must be None or a positive finite number, got {state['gamma']!r}")
        if not (finite([state["u"], state["own"]]) and 0 <= state["u"] <= 1):
            bad(f"u (in [0, 1]) and own must be finite, got {state['u']!r}, {state['own']!r}")
        fs, expected = state["features_state"], self.tracker.initial_state()
        if not isinstance(fs, dict) or set(fs) != set(expected):
            bad(f"features_state must have the keys {sorted(expected)} of schema "
                f"{self.tracker.schema}, got {sorted(fs) if isinstance(fs, dict) else fs!r}")
        for key, value in fs.items():
            values = value if isinstance(value, list) else [value]
            if not finite(values) or (isinstance(expected[key], list) and len(values) != len(expected[key])):
                bad(f"features_state[{key!r}] must be finite (and as long as {expected[key]!r}), got {value!r}")
        x = state["last_input"]
        if x is not None and not (isinstance(x, list) and len(x) == self.tracker.size and finite(x)):
            bad(f"last_input must be None or {self.tracker.size} finite numbers, got {x!r:.80}")
        pending, late, steps = state["pending"], state["late"], state["opt_steps"]
        if not (isinstance(pending, list) and len(pending) == 2 and finite(pending)):
            bad(f"pending must be [loss sum, count], got {pending!r}")
        if late is not None and not (isinstance(late, list) and len(late) in (3, 4, 5) and finite(late[:3])
                                     and (len(late) == 3 or late[3] is None or finite(late[3:4]))
                                     and (len(late) < 5 or late[4] is None or finite(late[4:]))):
            bad(f"late must be None or [loss sum, count, step, update ratio or None, what the hypergradient gate "
                f"read or None], "
                f"got {late!r}")
        if not (isinstance(steps, list) and len(steps) == 3 and all(isinstance(s, int) for s in steps)):
            bad(f"opt_steps must be three ints, got {steps!r}")
        lowest = math.log(self._least_ceilings[state.get("total_steps") is not None])
        if "log_ceiling" in state and not (finite([state["log_ceiling"]]) and state["log_ceiling"] >= lowest):
            bad(f"log_ceiling must be a finite number >= {lowest:g}, got {state['log_ceiling']!r}")
        if "collapse_guard" in state:
            guard = state["collapse_guard"]
            if not (isinstance(guard, (list, tuple)) and len(guard) == 2 and finite(guard[:1])
                    and guard[0] <= 0 and type(guard[1]) is bool):
                bad(f"collapse_guard must be [best rel_loss <= 0, locked true/false], got {guard!r}")
        if "hypergradient" in state and not finite([state["hypergradient"]]):
            bad(f"hypergradient must be a finite number (a sum of cosines), got {state['hypergradient']!r}")
        if "hypergradient_squares" in state and not (finite([state["hypergradient_squares"]])
                                                     and state["hypergradient_squares"] >= 0):
            bad(f"hypergradient_squares must be a finite number >= 0 (a sum of squared cosines), got "
                f"{state['hypergradient_squares']!r}")
        samples = state.get("hypergradient_samples", 0)
        if type(samples) is not int or samples < 0:
            bad(f"hypergradient_samples must be an int >= 0, got {samples!r}")
        if type(state.get("gate_opened", False)) is not bool:
            bad(f"gate_opened must be true or false, got {state['gate_opened']!r}")


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


# Parameter dtypes numpy can view without a copy. On CPU the ratio's snapshot and reductions run as
# numpy calls, whose overhead is a fraction of torch's dispatch at the sizes where it matters:
# measured 24 us against 60 us for a MNIST-1D CNN's snapshot and ratio (10 us with the views
# FlatParameters keeps).
NUMPY_DTYPES = frozenset({torch.float16, torch.float32, torch.float64})
PLAIN = (torch.Tensor, torch.nn.Parameter)  # a tensor subclass (DTensor, ...) keeps the torch path


def _numpy_views(params: list[torch.Tensor]) -> list[np.ndarray] | None:
    """Numpy views of the parameters (no copy) when every one is a plain CPU tensor numpy can
    read, else None."""
    if all(p.is_cpu and p.dtype in NUMPY_DTYPES and type(p) in PLAIN for p in params):
        return [p.detach().numpy() for p in params]
    return None


def _flat(params: list[torch.Tensor]) -> list:
    """The parameters' values as one flat copy per device (one concatenation: cheaper than a
    copy and a reduction per tensor): a numpy array when every parameter is a plain CPU tensor
    numpy can read, else a tensor per device."""
    views = _numpy_views(params)
    if views is not None:
        return [np.concatenate(views, axis=None)]  # axis None: flattened
    return _flat_per_device(params)


def _flat_per_device(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`_flat` as torch calls: one concatenation per device, on the device."""
    by_device: dict = {}
    with torch.no_grad():
        for p in params:
            by_device.setdefault(p.device, []).append(p.detach().reshape(-1))
        return [torch.cat(flats) for flats in by_device.values()]


class FlatParameters:
    """:func:`_flat` of an optimizer's parameters, for the hooks that measure ``hyper-v5``'s
    ratio: the numpy views are made once and reused while every parameter keeps its storage.

    A view per tensor costs about 0.9 us (7 of the 10 us that :func:`_flat` takes on a MNIST-1D
    CNN's 8 tensors); comparing data pointers, 0.6. A pointer that still matches means the same
    storage: the cached view holds the old storage alive, so a parameter whose ``.data`` was
    replaced (``model.to(...)``, a reload into new tensors) cannot have been given its address
    (and a tensor without storage, such as a wrapper subclass, has pointer 0). The old storage
    is then let go at the next measurement, at most
    :data:`metalr.learned.features.RATIO_EVERY` steps later.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.views: list[np.ndarray] | None = None
        self.pointers: list[int] = []

    def __call__(self) -> list:
        params = _parameters(self.optimizer)
        if self.views is None or [p.data_ptr() for p in params] != self.pointers:
            self.views = _numpy_views(params)
            if self.views is None:
                return _flat_per_device(params)
            self.pointers = [p.data_ptr() for p in params]
        return [np.concatenate(self.views, axis=None)]


def update_to_weight(after: list, before: list) -> float | torch.Tensor:
    """``|w - w_before| / |w|`` over all parameters together, from :func:`_flat` of the
    parameters after and before the step, summed in float64: a float where :func:`_flat` takes
    numpy (plain CPU parameters), else a 0-dim tensor on the first parameter's device (no host
    sync; ``hyper-v5``'s ``update_ratio`` reads it)."""
    if isinstance(after[0], np.ndarray):
        step = (after[0] - before[0]).astype(np.float64)
        size = after[0].astype(np.float64)
        step, size = float(step.dot(step)), float(size.dot(size))
        if size == 0.0:  # all weights zero: what the tensor path's division gives
            return math.inf if step > 0 else math.nan
        return math.sqrt(step / size)
    with torch.no_grad():
        device = after[0].device
        step = sum(torch.linalg.vector_norm(a - b, dtype=torch.float64).square().to(device)
                   for a, b in zip(after, before))
        size = sum(torch.linalg.vector_norm(a, dtype=torch.float64).square().to(device) for a in after)
        return (step / size).sqrt()


def flat_gradients(params: list[torch.Tensor], as_numpy: bool) -> list:
    """The parameters' gradients laid out as :func:`_flat` laid out the parameters (``as_numpy``:
    one numpy array, as for plain CPU parameters; zeros for a parameter without a gradient, a
    sparse one made dense)."""
    grads = []
    for p in params:  # a loop, not three comprehensions: it runs in the optimizer step (16 us, not 36, on a CNN)
        g = p.grad
        if g is None:
            g = torch.zeros_like(p)
        elif g.layout is not torch.strided:
            g = g.to_dense()
        grads.append(g.detach() if g.requires_grad else g)
    if as_numpy:
        return [np.concatenate([g.numpy() for g in grads], axis=None)]
    by_device: dict = {}
    with torch.no_grad():
        for p, g in zip(params, grads):
            by_device.setdefault(p.device, []).append(g.reshape(-1).to(p.device))
        return [torch.cat(flats) for flats in by_device.values()]


def hypergradient_cosine(grads: list, update: list) -> float | torch.Tensor:
    """``cos(-g, w_k - w_{k-1})``: the gradient read before step ``k + 1`` against step ``k``'s
    update, both flat as :func:`_flat` lays them out, summed in float64. Positive while the
    gradient still points along the last step, so a larger one would have gone further down
    (the hypergradient of the LR, Baydin et al. 2018, up to its sign and scale); 0 when either is
    zero, and 0 where either is not finite (a step with inf gradients that a fused optimizer skips
    inside its kernel). A float for numpy arrays, else a 0-dim tensor on the first one's device (no
    host sync)."""
    if isinstance(update[0], np.ndarray):
        g, d = grads[0].astype(np.float64), update[0].astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # inf gradients: a NaN, dropped below
            dot, norms = float(g.dot(d)), math.sqrt(float(g.dot(g)) * float(d.dot(d)))
            cosine = -dot / norms if norms > 0 else 0.0
        return cosine if math.isfinite(cosine) else 0.0
    with torch.no_grad():
        device = update[0].device
        dot, gg, dd = (sum(torch.dot(a.double(), b.double()).to(device) for a, b in pairs)
                       for pairs in (zip(grads, update), zip(grads, grads), zip(update, update)))
        norms = (gg * dd).sqrt()
        cosine = -dot / norms.clamp(min=1e-300)
        return torch.where((norms > 0) & torch.isfinite(cosine), cosine, torch.zeros_like(cosine))


def _entry(value: float | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``[value]`` (NaN for None: a step that measured no ratio) on ``like``'s device, to travel
    with the loss. A Python number is written by a fill on the device, not copied from the host
    (a copy from pageable memory waits for the GPU: what the hypergradient gate reads is still a
    float until the first sample, or the second with NetConfig.hypergradient_z, and after a resume)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=torch.float64, device=like.device).reshape(1)
    return torch.full((1,), math.nan if value is None else float(value), dtype=torch.float64, device=like.device)
