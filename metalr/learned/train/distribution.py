"""The distribution of training runs that full-horizon meta-training samples episodes from.

An :class:`Episode` is one whole inner training run: a task family, an optimizer, a base LR
(the family's default for that optimizer times a log-uniform scale, so the network must learn
to correct a wrong base LR), a budget in steps (log-uniform), a batch size, a label-noise rate
and whether the scheduler is told the budget. :meth:`TaskDistribution.sample` draws one from
an integer seed alone, so every process draws the same episode for the same seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from metalr.errors import MetalrError
from metalr.tasks import get_task

# (optimizer, momentum); plain SGD is SGD with momentum 0.
OPTIMIZERS = (("sgd", 0.9), ("sgd", 0.0), ("adam", 0.0), ("adamw", 0.0))
ADAM_LR = 1e-3
BATCHES = (32, 64, 128)


def default_lr(task, optimizer: str, momentum: float) -> float:
    """The family's base LR for ``optimizer``: its own recipe's for its own optimizer.

    SGD with momentum takes the recipe's SGD LR (0.1 where the recipe uses Adam); plain SGD ten
    times that, the same effective step ``lr / (1 - momentum)``; Adam and AdamW take 1e-3
    unless the recipe is Adam's own.
    """
    if optimizer in ("adam", "adamw"):
        return task.base_lr if task.optimizer in ("adam", "adamw") else ADAM_LR
    sgd = task.base_lr if task.optimizer == "sgd" else 0.1
    return sgd if momentum else sgd * 10


@dataclass(frozen=True)
class Episode:
    """One sampled inner training run (see the module docstring)."""

    family: str
    optimizer: str
    momentum: float
    lr_scale: float
    lr: float
    budget: int
    batch: int
    noise: float
    show_budget: bool
    seed: int

    def spec(self) -> str:
        """The task spec :func:`metalr.train` runs."""
        parts = [f"optimizer={self.optimizer}", f"lr={self.lr:.6g}", f"batch={self.batch}"]
        if self.optimizer == "sgd":
            parts.append(f"momentum={self.momentum:g}")
        if self.noise:
            parts.append(f"noise={self.noise:.3f}")
        # A family may carry options of its own (digits-cnn:width=8).
        return f"{self.family}{',' if ':' in self.family else ':'}{','.join(parts)}"

    def to_dict(self) -> dict:
        return asdict(self)


class TaskDistribution:
    """Episodes over ``families`` with the ranges of the meta-training options."""

    def __init__(self, families: list[str], budget_min: int, budget_max: int,
                 lr_scale_min: float, lr_scale_max: float, label_noise: float, hide_budget: float):
        if not families:
            raise MetalrError("the task distribution is empty; give at least one task family")
        self.tasks = {name: get_task(name) for name in families}
        self.families = list(self.tasks)
        self.budget = (budget_min, budget_max)
        self.lr_scale = (lr_scale_min, lr_scale_max)
        self.label_noise = label_noise
        self.hide_budget = hide_budget

    def sample(self, seed: int, stratum: tuple[int, int] | None = None) -> Episode:
        """The episode of ``seed``. ``stratum=(i, n)`` draws the log base-LR scale from the i-th
        of n equal slices of its range (the other draws unchanged), so n episodes of a step
        cover the whole range: each step then sees the large scales where a schedule collapses."""
        rng = np.random.default_rng(seed)
        family = self.families[rng.integers(len(self.families))]
        task = self.tasks[family]
        optimizer, momentum = OPTIMIZERS[rng.integers(len(OPTIMIZERS))]
        low, high = map(math.log, self.lr_scale)
        if stratum is not None:
            i, n = stratum
            low, high = low + (high - low) * i / n, low + (high - low) * (i + 1) / n
        scale = math.exp(rng.uniform(low, high))
        budget = round(math.exp(rng.uniform(*map(math.log, self.budget))))
        batch = min(int(rng.choice(BATCHES)), len(task.train))
        noisy = task.classification and self.label_noise > 0 and rng.random() < 0.5
        noise = float(rng.uniform(0, self.label_noise)) if noisy else 0.0
        show = bool(rng.random() >= self.hide_budget)
        return Episode(family=family, optimizer=optimizer, momentum=momentum, lr_scale=scale,
                       lr=default_lr(task, optimizer, momentum) * scale, budget=budget,
                       batch=batch, noise=noise, show_budget=show,
                       seed=int(rng.integers(2**31)))
