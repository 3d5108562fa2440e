"""The Task interface: everything the trainer and the meta-trainer need to know about a problem.

A task bundles data (train / clean validation / test splits, disjoint by construction), a model
factory, a loss, a metric and the default training recipe (optimizer, base LR, batch size, epoch
budget). The trainer never looks inside the model or the data beyond this interface, so a new
task is one function that returns a :class:`Task`.

Inputs and targets are plain tensors indexed along dimension 0. Classification targets are class
indices; a language model's targets are next-token indices of shape (N, L), with the loss and
metric flattening the sequence dimension. A task may carry an ``augment`` function that
:meth:`Task.batches` applies to every training batch (random crops and flips for the image tasks).
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
    splits are disjoint. ``clean_y`` is set only on a training split whose labels were corrupted
    by a label-noise variant: it holds the true labels, so :attr:`noisy` says which were changed.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    clean_y: torch.Tensor | None = None

    def __post_init__(self):
        if not (len(self.x) == len(self.y) == len(self.index)):
            raise ValueError(
                f"split sizes differ: x {len(self.x)}, y {len(self.y)}, index {len(self.index)}"
            )
        if self.clean_y is not None and self.clean_y.shape != self.y.shape:
            raise ValueError(f"clean_y has shape {tuple(self.clean_y.shape)}, y {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def noisy(self) -> torch.Tensor:
        """Boolean mask of the examples whose label differs from the true one (all False if clean)."""
        if self.clean_y is None:
            return torch.zeros(len(self), dtype=torch.bool)
        return self.y != self.clean_y

    def subset(self, rows: torch.Tensor) -> "Split":
        clean = None if self.clean_y is None else self.clean_y[rows]
        return Split(self.x[rows], self.y[rows], self.index[rows], clean)


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; flattens a sequence dimension so language models share it."""
    return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of correct arg-max predictions, in [0, 1]."""
    pred = output.reshape(-1, output.shape[-1]).argmax(dim=-1)
    return (pred == target.reshape(-1)).float().mean().item()


def bits_per_token(output: torch.Tensor, target: torch.Tensor) -> float:
    """Mean cross-entropy in bits (base-2 log loss) per predicted token; lower is better."""
    return cross_entropy(output.float(), target).item() / math.log(2)


def split_rows(n: int, sizes: tuple[int, ...], seed: int,
               labels: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Cut ``range(n)`` into disjoint random index sets of the given sizes (the rest is dropped).

    With ``labels`` the cut is stratified: each class is shuffled on its own and dealt out in
    proportion, so small splits keep the class balance of the whole. The draw depends only on
    ``seed``, so every machine gets the same splits.
    """
    if sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} exceed {n} examples")
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        order = torch.randperm(n, generator=gen)
    else:
        # Interleave the classes: position k of every class's shuffled list before position k+1,
        # ordered within a rank by a random key, so any prefix is close to stratified.
        ranks = torch.empty(n)
        for c in torch.unique(labels):
            members = torch.nonzero(labels == c).flatten()
            members = members[torch.randperm(len(members), generator=gen)]
            ranks[members] = (torch.arange(len(members)) + 0.5) / len(members)
        order = torch.argsort(ranks + 1e-6 * torch.rand(n, generator=gen))
    out, start = [], 0
    for size in sizes:
        out.append(order[start:start + size])
        start += size
    return out


@dataclass
class Task:
    """A training problem and its default recipe.

    ``optimizer`` is one of ``"sgd"``, ``"adam"``, ``"adamw"``; ``momentum`` applies to SGD.
    ``metric_name`` names ``metric``; ``higher_is_better`` says which way it points (accuracy up,
    bits per character down). ``num_classes`` is the width of the model's output (MLR-SNet's
    gamma rule uses it). ``classification`` is True when each example has one class label, so
    label noise means something (False for language models). ``augment(x, generator)``, if set,
    transforms every training batch drawn by :meth:`batches` (never the evaluation splits).
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
    classification: bool = True
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None

    def __post_init__(self):
        ids = {name: set(getattr(self, name).index.tolist()) for name in ("train", "val", "test")}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = ids[a] & ids[b]
            if shared:
                raise ValueError(
                    f"task {self.name!r}: {len(shared)} {b} examples are also {a} examples; "
                    "the splits must be disjoint"
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
                x = self.train.x[rows]
                if self.augment is not None:
                    x = self.augment(x, generator)
                yield x, self.train.y[rows]

    def val_batches(self, generator: torch.Generator, batch_size: int | None = None):
        """Yield random (x, y) batches of the clean validation split forever (for meta-training)."""
        n = len(self.val)
        size = min(batch_size or self.batch_size, n)
        while True:
            rows = torch.randperm(n, generator=generator)[:size]
            yield self.val.x[rows], self.val.y[rows]
