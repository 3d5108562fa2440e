"""What the trainer needs from an LR method, and the base class of metalr's schedulers.

:class:`LRPolicy` is a ``torch.optim.lr_scheduler.LRScheduler`` whose ``step`` also takes the
training loss (``ReduceLROnPlateau.step(metrics)`` is the precedent). Each param group's LR is
its ``initial_lr`` times :meth:`LRPolicy.multiplier`, as ``LambdaLR`` does, so groups keep their
ratio.

:class:`Policy` is how :func:`metalr.train` runs a method end to end: it may build its own
optimizer (the LR-free peers replace it), needs a scheduler or not, and may need hooks around
evaluation (schedule-free's ``train()``/``eval()``) or after each optimizer step (DoG's
averager). Plain schedules use the defaults.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.optim.lr_scheduler import LRScheduler

from metalr.optim import build_optimizer


class LRPolicy(LRScheduler):
    """LR of group i = ``initial_lr_i * self.multiplier()``; ``step(loss=None)``.

    Subclasses implement :meth:`multiplier` from ``self.last_epoch`` (the number of completed
    steps) and, if they read the loss, :meth:`observe`. ``observe`` is called with the loss of
    the step just taken, before ``last_epoch`` advances.
    """

    def observe(self, loss: float | None) -> None:
        """Take the training loss of the step just taken (ignored by fixed schedules)."""

    def multiplier(self) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        m = self.multiplier()
        return [base * m for base in self.base_lrs]

    def step(self, loss: float | torch.Tensor | None = None) -> None:
        if loss is not None:
            self.observe(float(loss))
        super().step()


class Policy:
    """How :func:`metalr.train` runs one LR method; subclasses override what they need."""

    name = "policy"
    replaces_optimizer = False

    def make_optimizer(self, params, optimizer: str, lr: float, momentum: float,
                       weight_decay: float) -> torch.optim.Optimizer:
        return build_optimizer(optimizer, params, lr, momentum, weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        """An LR scheduler for ``optimizer``, or None to keep the LR constant."""
        return None

    def train_mode(self, optimizer: torch.optim.Optimizer) -> None:
        """Called before training steps resume after an evaluation."""

    def eval_mode(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
        """Called before the model is evaluated."""

    def after_step(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
        """Called after every optimizer step."""

    def eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to evaluate (an averaged copy for DoG); ``model`` itself by default."""
        return model


class SchedulerPolicy(Policy):
    """A policy that only attaches a scheduler, built by ``factory(optimizer, total_steps)``."""

    def __init__(self, name: str, factory: Callable | None):
        self.name = name
        self.factory = factory

    def make_scheduler(self, optimizer, total_steps):
        return None if self.factory is None else self.factory(optimizer, total_steps)


def step_scheduler(scheduler, loss: float) -> None:
    """Advance any scheduler by one step: metalr's take the loss, torch's take nothing."""
    if isinstance(scheduler, LRPolicy):
        scheduler.step(loss)
    else:
        scheduler.step()
