"""The Task interface: everything the trainer and the meta-trainer need to know about a problem.

A task bundles data (train / clean validation / test splits, disjoint by construction), a model
factory, a loss, a metric and the default training recipe (optimizer, base LR, batch size, epoch
budget). The trainer never looks inside the model or the data beyond this interface, so a new
task is one function that returns a :class:`Task`.

Inputs and targets are plain tensors indexed along dimension 0. Classification targets are class
indices; a language model's targets are next-token indices of shape (N, L), with the loss and
metric flattening the sequence dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Split:
    """One split of a data set: inputs ``x`` and targets ``y`` aligned on dimension 0.

    ``index`` holds each example's position in the source data set, so tests can assert that
    splits are disjoint and a noisy-label variant can say which labels it changed.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor

    def __post_init__(self):
        if not (len(self.x) == len(self.y) == len(self.index)):
            raise ValueError(
                f"split sizes differ: x {len(self.x)}, y {len(self.y)}, index {len(self.index)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, rows: torch.Tensor) -> "Split":
        return Split(self.x[rows], self.y[rows], self.index[rows])


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; flattens a sequence dimension so language models share it."""
    return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of correct arg-max predictions, in [0, 1]."""
    pred = output.reshape(-1, output.shape[-1]).argmax(dim=-1)
    return (pred == target.reshape(-1)).float().mean().item()


@dataclass
class Task:
    """A training problem and its default recipe.

    ``optimizer`` is one of ``"sgd"``, ``"adam"``, ``"adamw"``; ``momentum`` applies to SGD.
    ``metric_name`` names ``metric``; ``higher_is_better`` says which way it points (accuracy up,
    bits per character down). ``num_classes`` is the width of the model's output (MLR-SNet's
    gamma rule uses it).
    """

    name: str
    train: Split
    val: Split
    test: Split
    make_model: Callable[[], nn.Module]
    num_classes: int
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy
    metric: Callable[[torch.Tensor, torch.Tensor], float] = accuracy
    metric_name: str = "accuracy"
    higher_is_better: bool = True
    optimizer: str = "sgd"
    base_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 100
    epochs: int = 50
    description: str = ""
    spec: dict = field(default_factory=dict)

    def __post_init__(self):
        train_ids = set(self.train.index.tolist())
        val_ids = set(self.val.index.tolist())
        if train_ids & val_ids:
            raise ValueError(
                f"task {self.name!r}: {len(train_ids & val_ids)} validation examples are also "
                "training examples; the validation split must be disjoint"
            )

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def batches(self, generator: torch.Generator):
        """Yield (x, y) training mini-batches forever, reshuffled every epoch."""
        n = len(self.train)
        while True:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, self.batch_size):
                rows = order[start:start + self.batch_size]
                yield self.train.x[rows], self.train.y[rows]

    def val_batches(self, generator: torch.Generator, batch_size: int | None = None):
        """Yield random (x, y) batches of the clean validation split forever (for meta-training)."""
        n = len(self.val)
        size = min(batch_size or self.batch_size, n)
        while True:
            rows = torch.randperm(n, generator=generator)[:size]
            yield self.val.x[rows], self.val.y[rows]
