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

The update is written once for Python floats (the deployed scheduler, where a step must cost
microseconds) and torch tensors (meta-training, where second-order hypergradients flow through
the loss into the features); both go through the same code.
"""

from __future__ import annotations

import math

import torch

SCHEMAS: dict[str, tuple[str, ...]] = {
    "loss-v1": ("loss",),
    "transfer-v1": ("rel_loss", "trend", "volatility", "progress", "budget_known", "prev_output"),
}
FAST, SLOW, VOL = 0.9, 0.99, 0.9


def _log(x):
    return torch.log(x) if isinstance(x, torch.Tensor) else math.log(x)


def _abs(x):
    return x.abs() if isinstance(x, torch.Tensor) else abs(x)


def _clip(x, lo, hi):
    return x.clamp(lo, hi) if isinstance(x, torch.Tensor) else min(max(x, lo), hi)


class FeatureTracker:
    """Turns the stream of training losses into feature vectors of one schema.

    The tracker itself is stateless; its state is a plain dict (floats, or tensors during
    meta-training) that the caller keeps, so a scheduler's ``state_dict`` holds it directly
    and a lookahead can branch from it without copying objects.
    """

    def __init__(self, schema: str):
        if schema not in SCHEMAS:
            raise ValueError(f"unknown feature schema {schema!r}; known: {', '.join(SCHEMAS)}")
        self.schema = schema
        self.names = SCHEMAS[schema]

    @property
    def size(self) -> int:
        return len(self.names)

    @staticmethod
    def initial_state() -> dict:
        return {"n": 0, "ref": 0.0, "fast": 0.0, "slow": 0.0, "vol": 0.0}

    def update(self, state: dict, loss, step: int, total_steps: int | None, prev_output) -> tuple[list, dict]:
        """Features after observing ``loss`` (> 0, finite) at ``step``; returns (features, state)."""
        if self.schema == "loss-v1":
            return [loss], {**state, "n": state["n"] + 1}
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
