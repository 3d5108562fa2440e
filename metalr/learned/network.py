"""The schedule network: an LSTM over training-history features that emits the LR.

The cell is MLR-SNet's (Shu et al., "Learning an Explicit Hyper-parameter Prediction Function
Conditioned on Tasks" / "Meta-LR-Schedule-Net", TPAMI 2022): an LSTM whose gate
pre-activations come from two small two-layer MLPs, one on the input and one on the hidden
state::

    g_t = W2x relu(W1x x_t + b1x) + W2h relu(W1h h_{t-1} + b1h) + b2      (4H values)
    i, f, o = sigmoid(g[:H]), sigmoid(g[H:2H]), sigmoid(g[2H:3H]);  z = tanh(g[3H:])
    c_t = f * c_{t-1} + i * z;  h_t = o * tanh(c_t);  u_t = sigmoid(w . h_t + b [+ s . x_t])

Gate order is (input, forget, output, cell), fixed here and in the checkpoint format.

The configurations (:data:`CONFIGS`):

* ``paper``: faithful MLR-SNet. Input ``loss-v1`` (the raw loss), hidden 50, gate MLPs of 25,
  about 11.8k parameters. ``LR = gamma * u`` with the paper's gamma rule
  (:func:`paper_gamma`): an absolute LR.
* ``default``: built for full-horizon meta-training and transfer. Input ``hyper-v4`` (loss
  averages at five time scales, training-fraction switches, whether the optimizer is adaptive
  and the loss over its running minimum, see :mod:`metalr.learned.features`), hidden 8, gate
  MLPs of 8, and a linear skip path from the features to the head's logit (836 parameters:
  small enough for ES's estimates, and the skip path gives a direct handle). The output
  multiplies each param group's own base LR: ``m = exp(log lo + u * (log hi - log lo))`` with
  ``[lo, hi] = [1e-3, 30]``, so one network serves SGD at 0.1 or AdamW at 5e-4 and can correct a
  base LR 10x too small as well as anneal to nearly 0. The multiplier rises at most 5% a step
  (``max_rise``) and falls at any speed, and halves whenever the smoothed loss rises 10% above
  its best since the last halving (``guard``).
* ``capped``: ``default`` with the multiplier at most 1 (``max_multiplier``): a schedule that
  can warm up, anneal and back off but never runs above the base LR it is given. Near the edge
  of stability any raise can collapse a run that the base LR trains (measured: 1.25x turned the
  width-8 digits CNN with SGD at 4.9x its default LR from 0.22 to chance), so this is the
  network that can promise never to. Its untrained output is 0.5x (``start``), below the cap,
  which passes no gradient where it binds.
* ``knee``: ``capped`` over the Knee schedule (Iyer et al., JMLR 2023,
  https://jmlr.org/papers/v24/22-0134.html): the LR is the base LR times the knee shape (1 for
  the first half of a known budget, then linear to 0 at its last step) times the network's
  multiplier, and the product is capped at the base LR. The untrained network (multiplier 1) *is*
  the knee schedule, which never collapsed a transfer task where constant LR trains and beat it at
  3x the base LR by up to 12 points; what is left to learn is where to depart from it (hold the LR
  up where the run is still under-trained, lower it where the base LR is too large). Its
  multiplier lies in [1e-3, 4]: the top bounds how long it can hold the base LR against the
  shape, to the last eighth of the budget (where the shape falls below 1/4), so a network pushed
  to its top runs a warmup-stable-decay-like schedule, not a constant LR. (With the top at 30 the
  first run's network went there within 50 steps and kept the base LR to the last 2% of every
  budget, where the cap passed it no gradient.) Without a known budget the shape is 1 and the
  network runs as ``capped`` does.
* ``knee-raise``: ``knee`` that may also run above the base LR, to 3x it (the product of shape
  and multiplier capped at 3, the multiplier in [1e-3, 8]), reading ``hyper-v5``: the
  ``hyper-v4`` features and the update-to-weight ratio, the one input that tells a base LR too
  small (a smooth, slow descent at a small ratio) from a right one. The untrained network is the
  knee schedule, as ``knee``'s. ``knee-raise-v4`` is the same on ``hyper-v4``: the control that
  measures what the ratio adds.
* ``knee-ceiling``: ``knee-raise`` with a ceiling on the update-to-weight ratio a raise may
  reach (``max_ratio`` 0.01; 0.03 until the measurements in ``docs/unroll.md``, "A ceiling on
  the raise"): above the base LR only while the optimizer's steps are small against the
  weights. Every raise network before it learned, in some seed, to raise an LR already large
  into collapse.
* ``knee-ceiling-adaptive``: ``knee-ceiling`` with a ceiling of its own, 0.03, under Adam and
  AdamW while the budget is known (``max_ratio_adaptive``): their step is normalised, so its
  ratio follows the LR rather than the stability, and 0.01 blocked the raises that paid under
  Adam. It also cannot tell an Adam LR that is already too large (a held-out transformer at 3x
  its LR ran 0.37 bits/char worse than constant LR), so ``metalr-unroll-ceiling-adaptive`` is not
  the default ("A ceiling of its own under Adam", ``docs/unroll.md``).
* ``knee-lock``: ``knee-raise`` with a ceiling of 0.03 under SGD and 0.01 under Adam and AdamW,
  and the lock after lost progress (``collapse_guard`` 0.3): a run whose loss has given back 70%
  of its progress (in log-loss) never raises again. The 3% ceiling alone let a raise take SGD on
  40%-noisy labels back to chance, which the lock stops; under Adam the ratio cannot tell an LR
  that is too large, and no lock sees a raise that only makes the loss worse, so Adam keeps 1%.
  The previous default, ``metalr-unroll-lock``, is this configuration with 0.015 under SGD
  (3% and 2% fit noisy labels at a small base LR): "A lock after lost progress",
  ``docs/unroll.md``. ``knee-lock-015`` is that configuration, to meta-train in.
* ``knee-floor``: ``knee-lock`` with 0.02 under SGD and a ratio floor of 0.1 (``ratio_floor``):
  with the budget known, an SGD ceiling may cut the LR below its base, to a tenth of it, where
  the update-to-weight ratio is past 2%. The seed-4 ``knee-lock`` weights run in it rescued a
  diverging base LR that 2% alone did not ("A ceiling that also cuts", ``docs/unroll.md``); this
  is the configuration to meta-train in, so that the network learns its raise with the cut in
  place. ``metalr-unroll-floor`` is its seed-0 network with ``raise_needs_budget`` (no raise
  without a known budget); ``metalr-unroll-guard03`` is that with the guard at 0.3 (a back-off on
  a 35% rise of the smoothed loss over its best, not 10%, which minibatch noise on a small loss
  passes again and again); ``metalr-unroll-hypergradient`` is that with a 3% Adam ceiling while
  the hypergradient says a larger LR pays (``max_ratio_hypergradient``),
  ``metalr-unroll-hypergradient-cap5`` that with the cap at 5x while it does
  (``max_multiplier_hypergradient``), and the default checkpoint,
  ``metalr-unroll-hypergradient-hold``, that with the gate as a test of significance that holds a
  raise it made (``hypergradient_z``).
* ``default-v3``: the same on ``hyper-v3`` without the rise limit and guard (827 parameters), the
  configuration of ``metalr-es4``.
* ``default-v2``: the same on ``hyper-v2`` (no ``adaptive`` input; 818 parameters), the
  configuration ``metalr-es`` and ``metalr-es2`` were trained in.
* ``transfer-v1``: the previous default (``transfer-v1`` features, hidden 32, gate MLPs of 32,
  ``[lo, hi] = [1e-3, 2]``); kept so its checkpoints and the lookahead baseline still run.

:meth:`ScheduleNet.cell` is written once against a small ops table, so the same code runs in
torch (meta-training, differentiable) and in float64 numpy (the deployed scheduler, where one
step must cost a few microseconds next to a training step of milliseconds).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from metalr.errors import MetalrError
from metalr.learned.features import SCALES, SCHEMAS, WITH_REL_MIN


# Bounds on what a configuration (and so a checkpoint) may declare. Sizes: the shipped nets use
# 16-50; 512 keeps the largest network at about 2.4M parameters (10 MB of weights), so a crafted
# checkpoint cannot make the loader allocate gigabytes. Output range: the multiplier of the base
# LR lies in [lo, hi] within these bounds, so a checkpoint cannot emit an LR 1e277 times its base
# LR or round it to nothing (the shipped configs use [1e-3, 2] and [1e-3, 30]).
MAX_SIZE = 512
OUTPUT_BOUNDS = (1e-4, 100.0)
KINDS = ("paper", "default")
# Fixed schedules a default net's multiplier can multiply (NetConfig.shape).
SHAPES = ("knee",)
# NetConfig.collapse_guard: a run whose smoothed loss has not yet fallen below exp(-0.1) = 90%
# of its first value has no progress to lose (its first steps never lock).
MIN_PROGRESS = 0.1
# The knee's explore fraction: the authors' default, half the budget at the peak LR.
KNEE_EXPLORE = 0.5


@dataclass(frozen=True)
class NetConfig:
    """Architecture and output mapping of a schedule network (stored in the checkpoint).

    Every field is checked on construction (types included: a size is an ``int``, not ``32.5``,
    ``"32"`` or ``True``), so a crafted checkpoint is refused before anything is allocated.
    """

    kind: str  # "paper": LR = gamma * u; "default": multiplier of the base LR in [lo, hi]
    features: str  # a schema name from metalr.learned.features.SCHEMAS
    hidden: int
    mlp: int
    lo: float = 1e-3
    hi: float = 2.0
    # A linear path from the features (each divided by its scale) straight to the head's logit,
    # beside the LSTM: one weight per feature that evolution strategies can find quickly (e.g.
    # "anneal as t/T -> 1"). Only schemas with SCALES have it.
    skip: bool = False
    # The most the log-multiplier may rise in one step (0.05: at most 5% a step); it may fall at
    # any speed. None: no limit (the checkpoints before hyper-v4). A base LR too large for the task
    # shows itself in the loss (``rel_min``) while the network is still raising the LR towards
    # it, not after a jump has already diverged the run.
    max_rise: float | None = None
    # A back-off the network cannot override: when ``rel_min`` (hyper-v4: the log of the smoothed
    # loss over its best since the last back-off) passes ``guard``, the output drops by a factor
    # of two in LR and the best restarts from the current loss. With ``max_rise`` the network
    # climbs back at most 5% a step. None: no guard.
    guard: float | None = None
    # The most the multiplier may be, below ``hi`` (None: ``hi``). A cap inside the range rather
    # than a smaller ``hi``: the sigmoid output keeps its resolution around a multiplier of 1
    # (with hi near 1 the untrained network would sit in the flat top of the sigmoid, where its
    # gradient barely moves the LR).
    max_multiplier: float | None = None
    # The multiplier the untrained network emits (its head's bias): 1, the base LR, unless a cap
    # makes that the edge of the range, where the cap passes no gradient (see ``capped``).
    start: float = 1.0
    # A fixed schedule (one of SHAPES) the multiplier multiplies, the product capped at
    # ``max_multiplier``; it needs the budget (``total_steps``) and is 1 without one. None: no shape.
    shape: str | None = None
    # A ceiling on the update-to-weight ratio a raise above the base LR may reach (schemas with
    # ``update_ratio``; needs ``max_multiplier``): the product of shape and multiplier is capped at
    # ``m * max_ratio / r``, where ``r`` is the last measured ratio and ``m`` the product it was
    # measured at (the step grows in proportion to the LR, under SGD and Adam alike), never
    # below 1 (the base LR stays allowed) nor above ``max_multiplier``. A network may then raise
    # the LR only while the updates are small against the weights: without it, every raise
    # recipe had a seed that raised an LR already large into collapse. None: no ceiling.
    max_ratio: float | None = None
    # The ceiling under an adaptive optimizer (Adam, AdamW: ``features.is_adaptive``) while the
    # budget is known, so that the shape anneals a raised LR back down; under SGD, and when None,
    # ``max_ratio``; without the budget the smaller of the two for every optimizer. An SGD step grows
    # with the gradient, so past the edge of stability the ratio grows with the divergence, and the
    # training distribution's SGD runs collapse from a ratio of about 1.5e-2; an Adam step is
    # normalised per coordinate, so its ratio follows the LR rather than the stability, and the
    # distribution's Adam runs trained at every ratio they reached (to 3.8e-2, at 30x the base
    # LR). Without the anneal a raise held to the last step cost up to 5 points at 3x the default
    # LR: ``docs/unroll.md``, "A ceiling of its own under Adam".
    max_ratio_adaptive: float | None = None
    # A run that lost most of its progress never raises again: once ``rel_loss`` (the log of the
    # smoothed loss over the first) has been below ``-MIN_PROGRESS`` and then rises above
    # ``collapse_guard`` times its lowest (0.3: 70% of the progress in log-loss given back), the
    # product of shape and multiplier is at most 1 for the rest of the run (needs a
    # ``max_multiplier``). The ratio ceiling cannot see a raise into collapse where the ratio stays
    # small (SGD on 40%-noisy labels at 3x its LR: a ratio under 0.03 while the loss climbed back to
    # chance), and a rise of the loss alone does not tell a collapse (a raise that lifted an
    # overfitting MLP's loss from 0.08 to 0.9, a quarter of its progress, ended 7 points better
    # than the run without it). At 0.1 the lock came after the damage on three of six seeds; at 0.5
    # it took that MLP's gain ("A lock after lost progress", ``docs/unroll.md``). None: no lock.
    collapse_guard: float | None = None
    # Under SGD with the budget known, the least the ratio ceiling may be, as a multiple of the
    # base LR: at 1 the ceiling only limits a raise; below 1 a measured ratio above ``max_ratio``
    # also cuts the LR under its base, to ``m * max_ratio / r`` (a global trust ratio, as LARS's
    # per layer). A loss-reading network cannot see a base LR that diverges within the first
    # steps: at batch 16 and 3x its LR the digits MLP steps 6.8% of its weights by step 15 and
    # dies at the base LR. Under Adam and AdamW the ratio follows the LR, not the stability, and
    # the floor stays 1 (cut there, the held-out GRU and char-LM lost 25 points and 0.33
    # bits/char at their own LR, seed 0). Without the budget the SGD ceiling is the smaller one
    # (:meth:`ratio_ceiling`), and a floor applied there too cut SGD runs that train at their base
    # LR: 29 of 33 transfer cells within 2 points of constant LR (``benchmarks/no_budget.py``).
    ratio_floor: float = 1.0
    # Without the budget the product of shape and multiplier is at most 1: a raise pays when the
    # knee's anneal brings it back down, and without a budget there is none. The network
    # meta-trained in ``knee-floor`` raised harder than ``metalr-unroll-lock``'s, and without
    # ``total_steps`` (the smaller ceiling, no floor, no anneal) ran three transfer cells 2.1-2.7
    # points behind constant LR (``benchmarks/no_budget.py``). Needs a ``max_multiplier``.
    raise_needs_budget: bool = False
    # Under Adam and AdamW with the budget known, the ratio ceiling while the hypergradient says a
    # larger LR would go further down; ``max_ratio_adaptive`` otherwise. The signal is Baydin et al.'s
    # (ICLR 2018, https://arxiv.org/abs/1703.04782) as a cosine, ``h = cos(-g_{k+1}, w_k - w_{k-1})``
    # (the next gradient against the last update), sampled after every ratio-measured step but the
    # first (Adam's first step moves every coordinate by the whole LR, a step no later one resembles)
    # and read as the sign of its running mean. An Adam ratio follows the LR, not the stability, so
    # 3% alone raised a transformer already at too large an LR into a 0.4 bits/char loss and the
    # held-out GRU at 3x its LR 9 points below constant LR; the gate closed there and opened where a
    # larger LR paid (the char-LM: "A raise under Adam that reads the hypergradient",
    # ``docs/unroll.md``). Deployment only: meta-training refuses it. None: no gate.
    max_ratio_hypergradient: float | None = None
    # The most the product of shape and multiplier may be while that gate is open (None:
    # ``max_multiplier``). ``max_multiplier`` bounds a raise the ratio ceiling cannot see coming;
    # under Adam with the gate open, the gate and the open ceiling are what watch the raise, and a
    # fixed cap of 3 held the held-out Adam MLP at its cap for the whole run (it scored 2.5 points
    # more at 3x its LR). Needs ``max_ratio_hypergradient``; in (``max_multiplier``, ``hi``).
    max_multiplier_hypergradient: float | None = None
    # How the gate reads its samples. None: open while their running sum is positive, shut (back to
    # ``max_ratio_adaptive`` and ``max_multiplier``) as soon as it is not. A number ``z``: a sequential
    # test of their running mean, open while it is more than ``z`` standard errors above 0; once the
    # gate has opened, a mean within ``z`` standard errors of 0 holds the raise where it is (the
    # ceiling is the ratio the previous measured step reached, between the two ceilings, under
    # ``max_multiplier_hypergradient``), and only a mean ``z`` below 0 shuts it. The samples are noisy (about 0.07 around a mean of a few
    # hundredths on the held-out GRU: the sign opened the 279-step transformer at 3x its LR by
    # chance) and greedy (they read the best LR for the next step, below the best for the run: the
    # short-horizon bias, Wu et al. 2018, https://arxiv.org/abs/1803.02021), so the sign undid a raise
    # the run still wanted as soon as the raise had reached the greedy optimum ("A gate that asks for
    # significance and holds", ``docs/unroll.md``). Needs ``max_ratio_hypergradient``; in (0, 10].
    hypergradient_z: float | None = None

    def __post_init__(self):
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise MetalrError(f"net kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.features, str) or self.features not in SCHEMAS:
            raise MetalrError(f"net features must be a schema name ({', '.join(SCHEMAS)}), "
                              f"got {self.features!r}")
        for name in ("hidden", "mlp"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= MAX_SIZE:
                raise MetalrError(f"net {name} must be an integer in [1, {MAX_SIZE}], got {value!r}")
        low, high = OUTPUT_BOUNDS
        for name in ("lo", "hi"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not low <= value <= high:
                raise MetalrError(f"net {name} must be a number in [{low:g}, {high:g}], "
                                  f"got {value!r}")
        if not self.lo < self.hi:
            raise MetalrError(f"net output range must satisfy lo < hi, got [{self.lo}, {self.hi}]")
        if type(self.skip) is not bool:
            raise MetalrError(f"net skip must be true or false, got {self.skip!r}")
        if self.max_rise is not None and (type(self.max_rise) not in (int, float)
                                          or not 0 < self.max_rise <= 10):
            raise MetalrError(f"net max_rise must be null or a number in (0, 10], got {self.max_rise!r}")
        if self.guard is not None:
            if type(self.guard) not in (int, float) or not 0 < self.guard <= 3:
                raise MetalrError(f"net guard must be null or a number in (0, 3], got {self.guard!r}")
            if self.features not in WITH_REL_MIN or self.kind != "default":
                raise MetalrError(f"net guard reads rel_min ({', '.join(WITH_REL_MIN)}); a {self.kind} net on "
                                  f"{self.features!r} cannot have one")
        if self.max_multiplier is not None and (type(self.max_multiplier) not in (int, float)
                                                or not 1 <= self.max_multiplier < self.hi):
            raise MetalrError(f"net max_multiplier must be null or a number in [1, hi), got "
                              f"{self.max_multiplier!r}")
        if type(self.start) not in (int, float) or not self.lo < self.start < self.hi:
            raise MetalrError(f"net start must be a number in (lo, hi), got {self.start!r}")
        if self.shape is not None and (self.shape not in SHAPES or self.kind != "default"):
            raise MetalrError(f"net shape must be null or one of {', '.join(SHAPES)} on a default "
                              f"net, got {self.shape!r} on a {self.kind} net")
        if self.max_ratio is not None:
            if type(self.max_ratio) not in (int, float) or not 0 < self.max_ratio <= 1:
                raise MetalrError(f"net max_ratio must be null or a number in (0, 1], got {self.max_ratio!r}")
            if ("update_ratio" not in SCHEMAS[self.features] or self.max_multiplier is None
                    or self.kind != "default"):
                raise MetalrError(f"net max_ratio caps a raise by the measured update_ratio: it needs a default "
                                  f"net on a schema that reads it (hyper-v5) with a max_multiplier, got a "
                                  f"{self.kind} net on {self.features!r} with max_multiplier {self.max_multiplier!r}")
        if self.max_ratio_adaptive is not None and (
                self.max_ratio is None or self.shape is None or type(self.max_ratio_adaptive) not in (int, float)
                or not 0 < self.max_ratio_adaptive <= 1):
            raise MetalrError(f"net max_ratio_adaptive must be null or a number in (0, 1] beside a max_ratio and "
                              f"a shape, got {self.max_ratio_adaptive!r} with max_ratio {self.max_ratio!r} and "
                              f"shape {self.shape!r}")
        if self.collapse_guard is not None and (
                self.max_multiplier is None or "rel_loss" not in SCHEMAS[self.features]
                or type(self.collapse_guard) not in (int, float) or not 0 < self.collapse_guard < 1):
            raise MetalrError(f"net collapse_guard must be null or a number in (0, 1) beside a max_multiplier, on "
                              f"a schema with rel_loss; got {self.collapse_guard!r} with max_multiplier "
                              f"{self.max_multiplier!r} on {self.features!r}")
        if type(self.ratio_floor) not in (int, float) or not self.lo <= self.ratio_floor <= 1 or (
                self.ratio_floor < 1 and self.max_ratio is None):
            raise MetalrError(f"net ratio_floor must be a number in [lo, 1], below 1 only beside a max_ratio; got "
                              f"{self.ratio_floor!r} with lo {self.lo!r} and max_ratio {self.max_ratio!r}")
        if self.max_ratio_hypergradient is not None and (
                self.max_ratio_adaptive is None or type(self.max_ratio_hypergradient) not in (int, float)
                or not self.max_ratio_adaptive < self.max_ratio_hypergradient <= 1):
            raise MetalrError(f"net max_ratio_hypergradient must be null or a number in (max_ratio_adaptive, 1] "
                              f"beside a max_ratio_adaptive, got {self.max_ratio_hypergradient!r} with "
                              f"max_ratio_adaptive {self.max_ratio_adaptive!r}")
        if self.max_multiplier_hypergradient is not None and (
                self.max_ratio_hypergradient is None or type(self.max_multiplier_hypergradient) not in (int, float)
                or not self.max_multiplier < self.max_multiplier_hypergradient < self.hi):
            raise MetalrError(f"net max_multiplier_hypergradient must be null or a number in (max_multiplier, hi) "
                              f"beside a max_ratio_hypergradient, got {self.max_multiplier_hypergradient!r} with "
                              f"max_multiplier {self.max_multiplier!r}, hi {self.hi!r} and max_ratio_hypergradient "
                              f"{self.max_ratio_hypergradient!r}")
        if self.hypergradient_z is not None and (
                self.max_ratio_hypergradient is None or type(self.hypergradient_z) not in (int, float)
                or not 0 < self.hypergradient_z <= 10):
            raise MetalrError(f"net hypergradient_z must be null or a number in (0, 10] beside a "
                              f"max_ratio_hypergradient, got {self.hypergradient_z!r} with max_ratio_hypergradient "
                              f"{self.max_ratio_hypergradient!r}")
        if type(self.raise_needs_budget) is not bool or (self.raise_needs_budget and self.max_multiplier is None):
            raise MetalrError(f"net raise_needs_budget must be true or false, true only beside a max_multiplier; got "
                              f"{self.raise_needs_budget!r} with max_multiplier {self.max_multiplier!r}")
        if self.skip and self.features not in SCALES:
            raise MetalrError(f"net skip needs feature scales; schema {self.features!r} has none "
                              f"(schemas with a skip path: {', '.join(SCALES)})")

    @classmethod
    def from_dict(cls, data) -> "NetConfig":
        """A configuration from its ``to_dict`` form (a checkpoint's ``net``), fully checked."""
        fields = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, dict):
            raise MetalrError(f"net must be an object with keys {', '.join(fields)}, "
                              f"got {type(data).__name__}")
        unknown = sorted(set(data) - set(fields))
        missing = [f for f in fields[:4] if f not in data]
        if unknown or missing:
            raise MetalrError(f"net has unknown keys {unknown} or lacks {missing}; "
                              f"accepted: {', '.join(fields)}")
        return cls(**data)

    @property
    def inputs(self) -> int:
        return len(SCHEMAS[self.features])

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each tensor of :class:`ScheduleNet`'s state dict, without building it."""
        h, m, d = self.hidden, self.mlp, self.inputs
        return {
            "in_mlp.0.weight": (m, d), "in_mlp.0.bias": (m,),
            "in_mlp.2.weight": (4 * h, m), "in_mlp.2.bias": (4 * h,),
            "hid_mlp.0.weight": (m, h), "hid_mlp.0.bias": (m,),
            "hid_mlp.2.weight": (4 * h, m), "hid_mlp.2.bias": (4 * h,),
            "head.weight": (1, h), "head.bias": (1,),
            **({"skip.weight": (1, d)} if self.skip else {}),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    def ratio_ceiling(self, adaptive: bool, budget_known: bool, hypergradient_open: bool = False) -> float | None:
        """The ceiling on the update-to-weight ratio under an optimizer of this kind, with or
        without the budget (:attr:`max_ratio`, :attr:`max_ratio_adaptive`, and
        :attr:`max_ratio_hypergradient` while ``hypergradient_open``); None: no ceiling. Without the
        budget every optimizer gets the smaller of the first two: no anneal is to come to bring a
        larger raise down."""
        if self.max_ratio_adaptive is None:
            return self.max_ratio
        if not budget_known:
            return min(self.max_ratio, self.max_ratio_adaptive)
        if not adaptive:
            return self.max_ratio
        if hypergradient_open and self.max_ratio_hypergradient is not None:
            return self.max_ratio_hypergradient
        return self.max_ratio_adaptive

    def least_ceiling(self, adaptive: bool, budget_known: bool) -> float:
        """The least the ratio ceiling may be under an optimizer of this kind, as a multiple of
        the base LR: :attr:`ratio_floor` under SGD with the budget known, else 1."""
        return self.ratio_floor if budget_known and not adaptive else 1.0


CONFIGS = {
    "paper": NetConfig(kind="paper", features="loss-v1", hidden=50, mlp=25),
    "default": NetConfig(kind="default", features="hyper-v4", hidden=8, mlp=8, lo=1e-3, hi=30.0,
                         skip=True, max_rise=0.05, guard=0.1),
    "capped": NetConfig(kind="default", features="hyper-v4", hidden=8, mlp=8, lo=1e-3, hi=30.0,
                        skip=True, max_rise=0.05, guard=0.1, max_multiplier=1.0, start=0.5),
    "knee": NetConfig(kind="default", features="hyper-v4", hidden=8, mlp=8, lo=1e-3, hi=4.0,
                      skip=True, max_rise=0.05, guard=0.1, max_multiplier=1.0, shape="knee"),
    "knee-raise": NetConfig(kind="default", features="hyper-v5", hidden=8, mlp=8, lo=1e-3, hi=8.0,
                            skip=True, max_rise=0.05, guard=0.1, max_multiplier=3.0, shape="knee"),
    "knee-ceiling": NetConfig(kind="default", features="hyper-v5", hidden=8, mlp=8, lo=1e-3, hi=8.0,
                              skip=True, max_rise=0.05, guard=0.1, max_multiplier=3.0, shape="knee",
                              max_ratio=0.01),
    "knee-ceiling-adaptive": NetConfig(kind="default", features="hyper-v5", hidden=8, mlp=8, lo=1e-3, hi=8.0,
                                       skip=True, max_rise=0.05, guard=0.1, max_multiplier=3.0, shape="knee",
                                       max_ratio=0.01, max_ratio_adaptive=0.03),
    "knee-lock": NetConfig(kind="default", features="hyper-v5", hidden=8, mlp=8, lo=1e-3, hi=8.0,
                           skip=True, max_rise=0.05, guard=0.1, max_multiplier=3.0, shape="knee",
                           max_ratio=0.03, max_ratio_adaptive=0.01, collapse_guard=0.3),
    "knee-lock-015": NetConfig(kind="default", features="hyper-v5", hidden=8, mlp=8, lo=1e-3, hi=8.0,
                               skip=True, max_rise=0.05, guard=0.1, max_multiplier=3.0, shape="knee",
                               max_ratio=0.015, max_ratio_adaptive=0.01, collapse_guard=0.3),
    "knee-floor": NetConfig(kind="default", features="hyper-v5", hidden=8, mlp=8, lo=1e-3, hi=8.0,
                            skip=True, max_rise=0.05, guard=0.1, max_multiplier=3.0, shape="knee",
                            max_ratio=0.02, max_ratio_adaptive=0.01, collapse_guard=0.3, ratio_floor=0.1),
    "knee-raise-v4": NetConfig(kind="default", features="hyper-v4", hidden=8, mlp=8, lo=1e-3, hi=8.0,
                               skip=True, max_rise=0.05, guard=0.1, max_multiplier=3.0, shape="knee"),
    "default-v3": NetConfig(kind="default", features="hyper-v3", hidden=8, mlp=8, lo=1e-3, hi=30.0,
                            skip=True),
    "default-v2": NetConfig(kind="default", features="hyper-v2", hidden=8, mlp=8, lo=1e-3, hi=30.0,
                            skip=True),
    "transfer-v1": NetConfig(kind="default", features="transfer-v1", hidden=32, mlp=32),
}


def log_ceiling(log_product, ratio, max_ratio: float, max_multiplier: float, least: float = 1.0):
    """:attr:`NetConfig.max_ratio`: the log of the most the product of shape and multiplier may
    be, from the update-to-weight ratio ``ratio`` measured at the product ``exp(log_product)``:
    ``log(m * max_ratio / r)`` clipped to ``[log(least), log(max_multiplier)]`` (``least``: 1, the
    base LR, unless :attr:`NetConfig.ratio_floor` lets it cut; a zero ratio allows the whole cap).
    Floats, or tensors of members (meta-training)."""
    lowest = math.log(least)
    if isinstance(ratio, torch.Tensor):
        raw = log_product + math.log(max_ratio) - torch.log(ratio.clamp(min=1e-12))
        return raw.clamp(lowest, math.log(max_multiplier))
    raw = log_product + math.log(max_ratio) - math.log(max(ratio, 1e-12))
    return min(max(raw, lowest), math.log(max_multiplier))


def knee_shape(step: int, total: int | None) -> float:
    """The knee shape at optimizer step ``step`` (1-based) of ``total``: 1 while exploring (the
    first ``KNEE_EXPLORE * total`` steps), then linear to 0 at step ``total`` and after it, as
    :class:`metalr.policies.knee.Knee` with its defaults. 1 throughout when ``total`` is None."""
    if total is None:
        return 1.0
    explore = round(KNEE_EXPLORE * total)
    if step <= explore:
        return 1.0
    shape = 1.0 - (step - explore) / (total - explore)
    return shape if shape > 0.0 else 0.0  # max(0, shape) without a call: the scheduler's every step


def paper_gamma(initial_loss: float, num_classes: int) -> float:
    """MLR-SNet's largest LR: ``sqrt(L0) * ln(L0 * C) / (4 * C**0.25)``.

    ``L0`` is the training loss before training and ``C`` the number of classes (CIFAR-10 with
    L0 = ln 10 gives about 0.67). The rule gives 0 at L0 = 1/C and a negative value below it,
    where no positive LR follows; that is refused rather than clipped.
    """
    gamma = math.sqrt(initial_loss) * math.log(initial_loss * num_classes) / (4 * num_classes ** 0.25)
    if not gamma > 0:
        raise ValueError(
            f"MLR-SNet's gamma rule gives {gamma:.3g} for initial loss {initial_loss:.4g} and "
            f"{num_classes} classes (it needs L0 > 1/C); pass gamma explicitly"
        )
    return gamma


_TORCH_OPS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
_NUMPY_OPS = {
    "relu": lambda a: np.maximum(a, 0.0),
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "tanh": np.tanh,
}


class ScheduleNet(nn.Module):
    """MLR-SNet's gated-MLP LSTM cell with a sigmoid head; see the module docstring."""

    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        h, m, d = config.hidden, config.mlp, config.inputs
        self.in_mlp = nn.Sequential(nn.Linear(d, m), nn.ReLU(), nn.Linear(m, 4 * h))
        self.hid_mlp = nn.Sequential(nn.Linear(h, m), nn.ReLU(), nn.Linear(m, 4 * h))
        self.head = nn.Linear(h, 1)
        if config.skip:
            self.skip = nn.Linear(d, 1, bias=False)
            nn.init.zeros_(self.skip.weight)
        if config.kind == "default":
            # Start at multiplier ``start`` (1: the untrained network runs the optimizer's own base LR).
            with torch.no_grad():
                self.head.weight.mul_(0.1)
                self.head.bias.fill_(_logit(self.u_of_multiplier(config.start)))

    @property
    def max_rise_u(self) -> float | None:
        """:attr:`NetConfig.max_rise` in units of the output ``u`` (``None``: no limit)."""
        if self.config.max_rise is None:
            return None
        return self.config.max_rise / (math.log(self.config.hi) - math.log(self.config.lo))

    @property
    def max_u(self) -> float | None:
        """:attr:`NetConfig.max_multiplier` as an output ``u`` (``None``: no cap)."""
        m = self.config.max_multiplier
        return None if m is None else self.u_of_multiplier(m)

    @property
    def guard_cut_u(self) -> float:
        """The guard's cut of the output ``u``: half the LR."""
        return math.log(2.0) / (math.log(self.config.hi) - math.log(self.config.lo))

    def u_of_multiplier(self, m: float) -> float:
        lo, hi = math.log(self.config.lo), math.log(self.config.hi)
        return (math.log(m) - lo) / (hi - lo)

    def multiplier(self, u):
        """``default`` nets: the base-LR multiplier for output ``u`` (float, array or tensor)."""
        lo, hi = math.log(self.config.lo), math.log(self.config.hi)
        exp = torch.exp if isinstance(u, torch.Tensor) else np.exp
        return exp(lo + u * (hi - lo))

    def initial_state(self, numpy: bool = False):
        zeros = np.zeros(self.config.hidden) if numpy else torch.zeros(self.config.hidden)
        return zeros, zeros.copy() if numpy else zeros.clone()

    def weights(self, numpy: bool = False) -> dict:
        """The cell's weights by name, as tensors or float64 numpy arrays."""
        w = {
            "w1x": self.in_mlp[0].weight, "b1x": self.in_mlp[0].bias,
            "w2x": self.in_mlp[2].weight, "w1h": self.hid_mlp[0].weight,
            "b1h": self.hid_mlp[0].bias, "w2h": self.hid_mlp[2].weight,
            "b2": self.in_mlp[2].bias + self.hid_mlp[2].bias,
            "wo": self.head.weight[0], "bo": self.head.bias[0],
        }
        if self.config.skip:
            # The skip path reads each feature divided by its scale (SCALES): without that a
            # weight on rel_loss (up to 8) would move the LR 8x as far as one on a switch.
            w["ws"] = self.skip.weight[0] / torch.tensor(SCALES[self.config.features])
        if numpy:
            return {k: v.detach().double().numpy() for k, v in w.items()}
        return w

    def cell(self, x, state, w: dict | None = None):
        """One step: input vector ``x`` (length ``inputs``) and ``(h, c)`` -> ``(u, (h, c))``.

        With ``w`` from ``weights(numpy=True)`` it runs in numpy; otherwise in torch on the
        module's parameters (differentiable).
        """
        ops = _TORCH_OPS if w is None else _NUMPY_OPS
        w = self.weights() if w is None else w
        h, c = state
        H = self.config.hidden
        g = (w["w2x"] @ ops["relu"](w["w1x"] @ x + w["b1x"])
             + w["w2h"] @ ops["relu"](w["w1h"] @ h + w["b1h"]) + w["b2"])
        gates = ops["sigmoid"](g[:3 * H])
        c = gates[H:2 * H] * c + gates[:H] * ops["tanh"](g[3 * H:])
        h = gates[2 * H:3 * H] * ops["tanh"](c)
        logit = w["wo"] @ h + w["bo"]
        if "ws" in w:
            logit = logit + w["ws"] @ x
        return ops["sigmoid"](logit), (h, c)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))
