"""Training-history features the schedule network reads, by named and versioned schema.

A schema fixes the meaning and order of the input vector; it is stored in every checkpoint and
a checkpoint is only ever fed the schema it was trained on.

``loss-v1`` (MLR-SNet, Shu et al. 2022): the raw mini-batch training loss, nothing else.

``transfer-v1`` (metalr's default): quantities that mean the same on any task, so one network
serves tasks whose losses live on different scales. With ``a_t = log L_t``, bias-corrected
exponential moving averages ``fast_t`` (beta 0.9) and ``slow_t`` (beta 0.99) of ``a_t``, and
``L_0`` the first loss observed:

====================  ========================================================  ==========
name                  value                                                     clipped to
====================  ========================================================  ==========
rel_loss              ``fast_t - log L_0`` (log of the loss relative to start)   [-8, 3]
trend                 ``10 * (fast_t - slow_t)`` (recent slope; > 0: rising)     [-3, 3]
volatility            EMA(0.9) of ``|a_t - fast_{t-1}|`` (mini-batch noise)      [0, 3]
progress              ``t / total_steps``, or 0 when the budget is unknown       [0, 1.5]
budget_known          1 when ``total_steps`` was given, else 0                   -
prev_output           the network's previous output ``u`` in (0, 1)              -
====================  ========================================================  ==========

``hyper-v2`` (for full-horizon meta-training; after VeLO's ``hyper_v2`` features, Metz et al.
2022): the log-loss smoothed at five time scales, so the network sees whether the loss still
falls over the last 10 steps and over the last 1,000, and the training fraction as saturating
switches. With ``a_t = log L_t`` (each new value clipped to at most ``log 2`` above the slowest
average, so one spike cannot swamp the state) and bias-corrected EMAs ``e_k`` with half-lives
``10, 30, 100, 300, 1000`` steps:

====================  ========================================================  ==========
name                  value                                                     clipped to
====================  ========================================================  ==========
rel_loss              ``e_10 - log L_0``                                          [-8, 3]
trend_10 ... _300     ``10 * (e_k - e_next)``: > 0 when the loss rose at scale k   [-3, 3]
volatility            EMA(0.9) of ``|a_t - e_10|`` (mini-batch noise)            [0, 3]
frac_03 ... frac_100  ``tanh(10 (t/T - tau))``, tau in .03 .1 .2 .4 .6 .8 .9 1;    -
                      0 when the budget is unknown
log_step              ``log(1 + t) / log(10^4)`` (time without a budget)         [0, 1.5]
budget_known          1 when ``total_steps`` was given, else 0                   -
prev_output           the network's previous output ``u`` in (0, 1)              -
====================  ========================================================  ==========

``hyper-v3``: ``hyper-v2`` and one more input, ``adaptive``: 1 when the optimizer scales its
steps per coordinate by gradient statistics (its param groups have an ``eps``: Adam, AdamW,
NAdam, RAdam, Adamax, RMSprop, Adagrad, Adadelta...), 0 otherwise (SGD, with or without
momentum). The same base-LR multiplier means different things to the two kinds: on
``benchmarks/train_distribution.py``, ``metalr-es2`` (which raises any LR 2-3x) was the best of
four policies on 12 of 17 Adam/AdamW episodes at their default LR but on only 2 of 13 SGD ones,
and all 4 of its collapses were SGD runs. A loss-only network cannot tell the two apart before
it is too late.

``hyper-v4``: ``hyper-v3`` and ``rel_min``, the log of the loss over its best so far:
``e_10 - min_{s <= t} e_10`` (the fast average over its running minimum), clipped to [0, 3].
A scheduler whose network has a guard (:attr:`NetConfig.guard`) restarts the minimum at the
current ``e_10`` when it backs off, so there ``rel_min`` is the rise since the last back-off. A
falling loss keeps it at 0 whatever the LR; an LR too large for the task makes the loss rise off
its best, an LR too small never does. ``trend_10`` cannot tell the two: it is about as negative
for a slow descent as for a fast one and as positive for noise as for the start of a divergence.

``hyper-v5``: ``hyper-v4`` and ``update_ratio``, the optimizer's step measured against the
weights: ``log10(|w_t - w_{t-1}| / |w_t|) + 3`` over all parameters together, clipped to [-3, 3],
so 0 is the well-known ratio of about 1e-3 (an LR about right), -1 a step ten times too small
and > 0 a large one. It is measured on optimizer steps 1, 11, 21, ... (:data:`RATIO_EVERY`;
the deployed scheduler snapshots the parameters in an optimizer pre-step hook and reduces the
difference in a post-step hook; between measurements the hooks only count steps) and held in
between; 0 before the first. It is the only input that depends on the size of the update,
not on what the loss did after it: a base LR too small leaves the loss falling smoothly (every
loss feature reads "fine") while its update-to-weight ratio stays small.
``benchmarks/lr_sense.py`` measured it the best of three early signals of "a larger LR would
end better" (AUC 0.76 over scales 0.3-3x, against 0.70 for the early loss drop and 0.68 for
``rel_min``).

The update is written once for Python floats and torch tensors (meta-training, where
second-order hypergradients flow through the loss into the features). On floats, the deployed
scheduler's every step, ``transfer-v1`` and ``hyper-v2`` (so ``-v3``) also have an unrolled
copy without the per-operation type dispatch (:func:`_update_v1_floats`, :func:`_update_v2_floats`: about half
the time); a test holds each bit-equal to the shared code.
"""

from __future__ import annotations

import math

import torch

SCHEMAS: dict[str, tuple[str, ...]] = {
    "loss-v1": ("loss",),
    "transfer-v1": ("rel_loss", "trend", "volatility", "progress", "budget_known", "prev_output"),
    "hyper-v2": ("rel_loss", "trend_10", "trend_30", "trend_100", "trend_300", "volatility",
                 "frac_03", "frac_10", "frac_20", "frac_40", "frac_60", "frac_80", "frac_90",
                 "frac_100", "log_step", "budget_known", "prev_output"),
}
SCHEMAS["hyper-v3"] = (*SCHEMAS["hyper-v2"], "adaptive")
SCHEMAS["hyper-v4"] = (*SCHEMAS["hyper-v3"], "rel_min")
SCHEMAS["hyper-v5"] = (*SCHEMAS["hyper-v4"], "update_ratio")
# Schemas built on hyper-v2's loss and time features (the vectorised population runs these).
HYPER = ("hyper-v2", "hyper-v3", "hyper-v4", "hyper-v5")
# Schemas with rel_min (and so a guard can read it).
WITH_REL_MIN = ("hyper-v4", "hyper-v5")
# The magnitude each feature can reach (its clip bound; 1 for switches and flags): the network's
# linear skip path reads features divided by it, so one weight means the same on every feature.
SCALES = {
    "hyper-v2": (8.0, 3.0, 3.0, 3.0, 3.0, 3.0, *(1.0,) * 8, 1.5, 1.0, 1.0),
}
SCALES["hyper-v3"] = (*SCALES["hyper-v2"], 1.0)
SCALES["hyper-v4"] = (*SCALES["hyper-v3"], 3.0)
SCALES["hyper-v5"] = (*SCALES["hyper-v4"], 3.0)
HALF_LIVES = (10, 30, 100, 300, 1000)
DECAYS = tuple(0.5 ** (1 / h) for h in HALF_LIVES)
FRACTIONS = (0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)
LOG_STEP_SCALE = math.log(1e4)
LOG_2 = math.log(2.0)
FAST, SLOW, VOL = 0.9, 0.99, 0.9
# hyper-v5 measures the update-to-weight ratio on optimizer steps 1, 1 + RATIO_EVERY, ...: often
# enough to follow a schedule (a 100-step budget gets 10 readings), rarely enough that the
# parameter snapshot and two reductions cost under 1% of a small model's step (measured 0.2%
# of a MNIST-1D CNN step on CPU, benchmarks/step_cost.py).
RATIO_EVERY = 10
LOG10 = math.log(10.0)


def measures_ratio(step: int) -> bool:
    """Whether optimizer step ``step`` (1-based) is one ``hyper-v5`` measures."""
    return (step - 1) % RATIO_EVERY == 0


def ratio_feature(ratio: float) -> float | None:
    """``update_ratio`` for a measured ``|dw| / |w|``: ``log10(ratio) + 3`` in [-3, 3] (-3 for
    a zero step, e.g. at LR 0); None for a NaN ratio (diverged weights: the feature holds)."""
    if ratio != ratio:
        return None
    if ratio <= 1e-6:
        return -3.0
    return min(math.log(ratio) / LOG10 + 3.0, 3.0)


def smoothed_log_loss(state: dict):
    """``e_10`` of a ``hyper-v2``-family state after its update: the bias-corrected fast
    average of the log-loss (the same bits as the update computed)."""
    return state["ema"][0] / (1 - DECAYS[0] ** state["n"])


def is_adaptive(optimizer) -> bool:
    """Whether ``optimizer`` scales steps per coordinate (``hyper-v3``'s ``adaptive``): its
    first param group has an ``eps``, as every torch optimizer that divides by a gradient
    statistic does and SGD does not. Read from the param groups, so wrappers that share them
    (Lightning's, accelerate's) answer as the optimizer they wrap."""
    return "eps" in optimizer.param_groups[0]


def _log(x):
    return torch.log(x) if isinstance(x, torch.Tensor) else math.log(x)


def _abs(x):
    return x.abs() if isinstance(x, torch.Tensor) else abs(x)


def _clip(x, lo, hi):
    return x.clamp(lo, hi) if isinstance(x, torch.Tensor) else min(max(x, lo), hi)


def _min(x, y):
    return torch.minimum(x, torch.as_tensor(y, dtype=x.dtype)) if isinstance(x, torch.Tensor) else min(x, y)


class FeatureTracker:
    """Turns the stream of training losses into feature vectors of one schema.

    The tracker itself is stateless; its state is a plain dict (floats, or tensors during
    meta-training) that the caller keeps, so a scheduler's ``state_dict`` holds it directly
    and a lookahead can branch from it without copying objects.
    """

    def __init__(self, schema: str, adaptive: bool = False):
        """``adaptive``: the optimizer's kind (see :func:`is_adaptive`), read by ``hyper-v3``."""
        if schema not in SCHEMAS:
            raise ValueError(f"unknown feature schema {schema!r}; known: {', '.join(SCHEMAS)}")
        self.schema = schema
        self.names = SCHEMAS[schema]
        self.adaptive = 1.0 if adaptive else 0.0

    @property
    def size(self) -> int:
        return len(self.names)

    def initial_state(self) -> dict:
        if self.schema == "hyper-v5":
            return {"n": 0, "ref": 0.0, "ema": [0.0] * len(DECAYS), "vol": 0.0, "min": 0.0, "ratio": 0.0}
        if self.schema == "hyper-v4":
            return {"n": 0, "ref": 0.0, "ema": [0.0] * len(DECAYS), "vol": 0.0, "min": 0.0}
        if self.schema in HYPER:
            return {"n": 0, "ref": 0.0, "ema": [0.0] * len(DECAYS), "vol": 0.0}
        return {"n": 0, "ref": 0.0, "fast": 0.0, "slow": 0.0, "vol": 0.0}

    def update(self, state: dict, loss, step: int, total_steps: int | None, prev_output,
               update_ratio: float | None = None) -> tuple[list, dict]:
        """Features after observing ``loss`` (> 0, finite) at ``step``; returns (features, state).

        ``update_ratio``: ``hyper-v5``'s ``|dw| / |w|`` when this step measured it (see
        :func:`measures_ratio`), else None (the feature holds its last value)."""
        if self.schema == "loss-v1":
            return [loss], {**state, "n": state["n"] + 1}
        if self.schema in HYPER:
            floats = type(loss) is float
            low = state.get("min")
            held = state.get("ratio")
            if floats:
                feats, state, fast = _update_v2_floats(state, loss, step, total_steps, prev_output)
            else:
                feats, state = self._update_v2(state, loss, step, total_steps, prev_output)
                fast = smoothed_log_loss(state)
            if self.schema != "hyper-v2":
                feats.append(self.adaptive)
            if low is not None:  # hyper-v4
                if floats:  # the same value as the generic line below, without its type dispatch
                    low = fast if state["n"] == 1 or fast < low else low
                    rise = fast - low
                    feats.append(rise if rise < 3.0 else 3.0)
                else:
                    low = fast if state["n"] == 1 else _min(fast, low)
                    feats.append(_clip(fast - low, 0.0, 3.0))
                state["min"] = low
            if held is not None:  # hyper-v5
                value = None if update_ratio is None else ratio_feature(update_ratio)
                state["ratio"] = held if value is None else value
                feats.append(state["ratio"])
            return feats, state
        if type(loss) is float:
            return _update_v1_floats(state, loss, step, total_steps, prev_output)
        return self._update_v1(state, loss, step, total_steps, prev_output)

    @staticmethod
    def _update_v1(state: dict, loss, step: int, total_steps: int | None, prev_output) -> tuple[list, dict]:
        a = _log(loss)
        n = state["n"] + 1
        ref = float(a) if n == 1 else state["ref"]
        # EMAs kept without bias correction in the state; corrected on read (Adam's trick), so the
        # first steps are not pulled towards zero.
        raw_fast = FAST * state["fast"] + (1 - FAST) * a
        raw_slow = SLOW * state["slow"] + (1 - SLOW) * a
        fast = raw_fast / (1 - FAST ** n)
        slow = raw_slow / (1 - SLOW ** n)
        prev_fast = state["fast"] / (1 - FAST ** (n - 1)) if n > 1 else a
        vol = VOL * state["vol"] + (1 - VOL) * _abs(a - prev_fast)
        progress = 0.0 if total_steps is None else min(step / total_steps, 1.5)
        feats = [
            _clip(fast - ref, -8.0, 3.0),
            _clip(10.0 * (fast - slow), -3.0, 3.0),
            _clip(vol / (1 - VOL ** n), 0.0, 3.0),
            progress,
            0.0 if total_steps is None else 1.0,
            prev_output,
        ]
        return feats, {"n": n, "ref": ref, "fast": raw_fast, "slow": raw_slow, "vol": vol}

    @staticmethod
    def _update_v2(state: dict, loss, step: int, total_steps: int | None, prev_output) -> tuple[list, dict]:
        a = _log(loss)
        n = state["n"] + 1
        if n == 1:
            ref = float(a)
        else:
            ref = state["ref"]
            # Clip a spike to 2x the slowest average: one bad batch must not swamp the state.
            a = _min(a, state["ema"][-1] / (1 - DECAYS[-1] ** (n - 1)) + LOG_2)
        raw = [d * e + (1 - d) * a for d, e in zip(DECAYS, state["ema"])]
        ema = [r / (1 - d ** n) for r, d in zip(raw, DECAYS)]
        vol = VOL * state["vol"] + (1 - VOL) * _abs(a - ema[0])
        known = total_steps is not None
        frac = step / total_steps if known else 0.0
        switches = [math.tanh(10.0 * (frac - tau)) if known else 0.0 for tau in FRACTIONS]
        feats = [
            _clip(ema[0] - ref, -8.0, 3.0),
            *(_clip(10.0 * (ema[k] - ema[k + 1]), -3.0, 3.0) for k in range(len(ema) - 1)),
            _clip(vol / (1 - VOL ** n), 0.0, 3.0),
            *switches,
            min(math.log1p(step) / LOG_STEP_SCALE, 1.5),
            1.0 if known else 0.0,
            prev_output,
        ]
        return feats, {"n": n, "ref": ref, "ema": raw, "vol": vol}


def _update_v2_floats(state: dict, loss: float, step: int, total_steps: int | None,
                      prev_output: float, log=math.log, tanh=math.tanh) -> tuple[list, dict, float]:
    """:meth:`FeatureTracker._update_v2` for a float loss: the same operations in the same
    order (so the same bits), unrolled over the schema's five EMAs and eight switches (the
    schema is frozen: a new one gets a new name), without the tensor dispatch. Also returns
    ``e_10`` (:func:`smoothed_log_loss` of the new state, which ``hyper-v4``'s ``rel_min`` reads)."""
    d0, d1, d2, d3, d4 = DECAYS
    r0, r1, r2, r3, r4 = state["ema"]
    a = log(loss)
    n = state["n"] + 1
    if n == 1:
        ref = a
    else:
        ref = state["ref"]
        cap = r4 / (1 - d4 ** (n - 1)) + LOG_2
        if cap < a:  # min(a, cap)
            a = cap
    r0 = d0 * r0 + (1 - d0) * a
    r1 = d1 * r1 + (1 - d1) * a
    r2 = d2 * r2 + (1 - d2) * a
    r3 = d3 * r3 + (1 - d3) * a
    r4 = d4 * r4 + (1 - d4) * a
    e0, e1, e2 = r0 / (1 - d0 ** n), r1 / (1 - d1 ** n), r2 / (1 - d2 ** n)
    e3, e4 = r3 / (1 - d3 ** n), r4 / (1 - d4 ** n)
    vol = VOL * state["vol"] + (1 - VOL) * abs(a - e0)
    rel, v = e0 - ref, vol / (1 - VOL ** n)
    t0, t1, t2, t3 = 10.0 * (e0 - e1), 10.0 * (e1 - e2), 10.0 * (e2 - e3), 10.0 * (e3 - e4)
    # Each clip min(max(x, lo), hi) as comparisons, the same value for every x (NaN too): a
    # builtin call costs about 60 ns and a comparison 5, and these run every step.
    feats = [-8.0 if rel < -8.0 else 3.0 if rel > 3.0 else rel,
             -3.0 if t0 < -3.0 else 3.0 if t0 > 3.0 else t0, -3.0 if t1 < -3.0 else 3.0 if t1 > 3.0 else t1,
             -3.0 if t2 < -3.0 else 3.0 if t2 > 3.0 else t2, -3.0 if t3 < -3.0 else 3.0 if t3 > 3.0 else t3,
             0.0 if v < 0.0 else 3.0 if v > 3.0 else v]
    log_step = math.log1p(step) / LOG_STEP_SCALE
    if log_step > 1.5:
        log_step = 1.5
    if total_steps is not None:
        f = step / total_steps
        feats += (tanh(10.0 * (f - 0.03)), tanh(10.0 * (f - 0.1)), tanh(10.0 * (f - 0.2)),
                  tanh(10.0 * (f - 0.4)), tanh(10.0 * (f - 0.6)), tanh(10.0 * (f - 0.8)),
                  tanh(10.0 * (f - 0.9)), tanh(10.0 * (f - 1.0)), log_step, 1.0, prev_output)
    else:
        feats += (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, log_step, 0.0, prev_output)
    return feats, {"n": n, "ref": ref, "ema": [r0, r1, r2, r3, r4], "vol": vol}, e0


def _update_v1_floats(state: dict, loss: float, step: int, total_steps: int | None,
                      prev_output: float, log=math.log) -> tuple[list, dict]:
    """``transfer-v1`` of :meth:`FeatureTracker.update` for a float loss: the same operations
    in the same order (so the same bits), without the tensor dispatch."""
    a = log(loss)
    n = state["n"] + 1
    ref = a if n == 1 else state["ref"]
    raw_fast = FAST * state["fast"] + (1 - FAST) * a
    raw_slow = SLOW * state["slow"] + (1 - SLOW) * a
    fast = raw_fast / (1 - FAST ** n)
    slow = raw_slow / (1 - SLOW ** n)
    prev_fast = state["fast"] / (1 - FAST ** (n - 1)) if n > 1 else a
    vol = VOL * state["vol"] + (1 - VOL) * abs(a - prev_fast)
    known = total_steps is not None
    rel, trend, v = fast - ref, 10.0 * (fast - slow), vol / (1 - VOL ** n)
    progress = step / total_steps if known else 0.0
    # the clips as comparisons, as in _update_v2_floats
    feats = [-8.0 if rel < -8.0 else 3.0 if rel > 3.0 else rel,
             -3.0 if trend < -3.0 else 3.0 if trend > 3.0 else trend,
             0.0 if v < 0.0 else 3.0 if v > 3.0 else v,
             1.5 if progress > 1.5 else progress, 1.0 if known else 0.0, prev_output]
    return feats, {"n": n, "ref": ref, "fast": raw_fast, "slow": raw_slow, "vol": vol}
