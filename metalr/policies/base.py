"""What the trainer needs from an LR method.

:class:`Policy` is how :func:`metalr.train` runs a method end to end: it may build its own
optimizer (the LR-free peers replace it), needs a scheduler or not, and may need hooks around
evaluation (schedule-free's ``train()``/``eval()``) or after each optimizer step (DoG's
averager). Plain schedules use the defaults.
"""

from __future__ import annotations

from typing import Callable

import torch

from metalr.optim import build_optimizer


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
