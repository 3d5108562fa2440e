"""``MetaLRScheduler``: a trained schedule network, plugged into any training loop.

Two lines in a user's script::

    sched = MetaLRScheduler.from_pretrained("metalr-mnist1d", optimizer, total_steps=T)
    ...
    loss.backward(); optimizer.step(); sched.step(loss)

It is a ``torch.optim.lr_scheduler.LRScheduler``: each step it reads the loss of the step just
taken, updates the network's features and hidden state, and sets every param group's LR to that
group's ``initial_lr`` times one multiplier (so groups keep their ratio, as with ``LambdaLR``).
The first step runs at ``initial_lr`` (nothing has been observed yet).

* ``default`` networks emit a multiplier in their documented range (``[1e-3, 2]``) of the
  optimizer's own base LR. ``total_steps`` is optional: with it the network sees training
  progress, without it that feature reads 0 and ``budget_known`` 0 (meta-training hides the
  budget in some inner runs so both uses are trained).
* ``paper`` networks (MLR-SNet) emit an absolute LR ``gamma * u`` for the first group (others
  keep their ratio to it). ``gamma`` is given, or computed by the paper's rule from the first
  observed loss and ``num_classes``.

Bad losses: a NaN, infinite or negative loss (and, for networks that read log-losses, zero)
leaves the LR and the network's state as they were, and warns once per scheduler. The LR is
never NaN.

``state_dict()`` holds the step count, features, hidden state and output (not the weights); a
scheduler rebuilt with ``from_pretrained`` and given that state continues the same trajectory.
Loading a state saved with another checkpoint is refused.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from metalr.learned import checkpoint
from metalr.errors import MetalrError
from metalr.learned.features import FeatureTracker
from metalr.learned.network import ScheduleNet, paper_gamma
from metalr.lr_policy import LRPolicy


class MetaLRScheduler(LRPolicy):
    """Sets the LR from a schedule network that reads the training loss; see module docs."""

    def __init__(self, optimizer: torch.optim.Optimizer, net: ScheduleNet, total_steps: int | None = None,
                 gamma: float | None = None, num_classes: int | None = None,
                 checkpoint_id: str = "", last_epoch: int = -1):
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps <= 0):
            raise MetalrError(f"total_steps must be a positive int or None, got {total_steps!r}")
        if net.config.kind == "paper" and gamma is None and num_classes is None:
            raise MetalrError("a paper (MLR-SNet) network needs gamma, or num_classes for its gamma rule")
        if gamma is not None and not (gamma > 0 and math.isfinite(gamma)):
            raise MetalrError(f"gamma must be a positive finite number, got {gamma!r}")
        self.net = net
        self.tracker = FeatureTracker(net.config.features)
        self.total_steps = total_steps
        self.gamma = gamma
        self.num_classes = num_classes
        self.checkpoint_id = checkpoint_id
        self.refresh()
        h, c = net.initial_state(numpy=True)
        self.hidden = [h, c]
        self.features_state = self.tracker.initial_state()
        self.u = net.u_of_multiplier(1.0) if net.config.kind == "default" else 0.5
        self.observed = 0
        # Kept for the meta-trainer's lookahead, which re-emits the LR in effect differentiably.
        self.last_input: list | None = None
        self.hidden_before = [h.copy(), c.copy()]
        self._warned = False
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

    def _valid(self, loss: float) -> bool:
        log_input = self.net.config.features != "loss-v1"
        ok = math.isfinite(loss) and (loss > 0 if log_input else loss >= 0)
        if not ok and not self._warned:
            self._warned = True
            warnings.warn(
                f"MetaLRScheduler got loss {loss!r} at step {self.last_epoch}; it accepts finite "
                f"losses {'> 0' if log_input else '>= 0'}. Holding the last LR (warned once).",
                RuntimeWarning, stacklevel=4,
            )
        return ok

    def observe(self, loss: float | None) -> None:
        if loss is None or not self._valid(loss):
            return
        if self.net.config.kind == "paper" and self.gamma is None:
            self.gamma = paper_gamma(loss, self.num_classes)
        x, self.features_state = self.tracker.update(
            self.features_state, loss, self.last_epoch + 1, self.total_steps, self.u)
        self.last_input = x
        self.hidden_before = self.hidden
        u, (h, c) = self.net.cell(np.asarray(x, dtype=np.float64), self.hidden, self._w)
        self.u, self.hidden = float(u), [h, c]
        self.observed += 1

    def multiplier_of(self, u):
        """The base-LR multiplier for network output ``u`` (a float, or a tensor in the
        meta-trainer's lookahead, where it stays differentiable)."""
        if self.net.config.kind == "paper":
            return self.gamma * u / self.base_lrs[0]
        return self.net.multiplier(u)

    def multiplier(self) -> float:
        return 1.0 if self.observed == 0 else float(self.multiplier_of(self.u))

    def state_dict(self) -> dict:
        return {
            "last_epoch": self.last_epoch, "_step_count": self._step_count,
            "base_lrs": list(self.base_lrs), "_last_lr": list(self._last_lr),
            "total_steps": self.total_steps, "gamma": self.gamma, "u": self.u,
            "observed": self.observed, "features_state": dict(self.features_state),
            "hidden": [a.tolist() for a in self.hidden],
            "hidden_before": [a.tolist() for a in self.hidden_before],
            "last_input": self.last_input, "checkpoint_id": self.checkpoint_id,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("checkpoint_id", "") != self.checkpoint_id:
            raise MetalrError(
                "this scheduler state was saved with another checkpoint "
                f"(sha256 {str(state.get('checkpoint_id'))[:12]}..., this one "
                f"{self.checkpoint_id[:12]}...); load the same checkpoint to resume"
            )
        for key in ("last_epoch", "_step_count", "base_lrs", "_last_lr", "total_steps", "gamma",
                    "u", "observed", "last_input"):
            setattr(self, key, state[key])
        self.features_state = dict(state["features_state"])
        self.hidden = [np.asarray(a, dtype=np.float64) for a in state["hidden"]]
        self.hidden_before = [np.asarray(a, dtype=np.float64) for a in state["hidden_before"]]
