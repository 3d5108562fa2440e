"""Task variants that change the training split only: a subset of it, and label noise.

Both draw from fixed seeds, so a variant is the same on every run and machine; validation and
test splits are never touched (the clean meta set the meta-trainer relies on stays clean).

Label noise corrupts exactly ``round(rate * n)`` training labels, chosen uniformly at random:

- ``symmetric``: each chosen label moves to one of the *other* ``C - 1`` classes, uniformly;
- ``pairflip``: each chosen label ``c`` becomes ``(c + 1) mod C`` (Han et al., 2018).

So the fraction of wrong training labels is the requested rate, up to rounding. (Some papers
instead resample the label among all ``C`` classes, which leaves a ``1/C`` share of the chosen
labels unchanged; we do not.) The true labels stay in ``Split.clean_y``.
"""

from __future__ import annotations

import dataclasses

import torch

from metalr.tasks.base import Split, Task, split_rows

NOISE_TYPES = ("symmetric", "pairflip")
NOISE_SEED = 0
FRACTION_SEED = 0


def corrupt_labels(y: torch.Tensor, num_classes: int, rate: float, kind: str = "symmetric",
                   seed: int = NOISE_SEED) -> torch.Tensor:
    """A copy of class labels ``y`` with exactly ``round(rate * len(y))`` of them changed."""
    if not 0 <= rate < 1:
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    if kind not in NOISE_TYPES:
        raise ValueError(f"noise type {kind!r}; accepted: {', '.join(NOISE_TYPES)}")
    if num_classes < 2:
        raise ValueError("label noise needs at least two classes")
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(y), generator=gen)[:round(rate * len(y))]
    if kind == "pairflip":
        shift = torch.ones(len(rows), dtype=y.dtype)
    else:
        shift = torch.randint(1, num_classes, (len(rows),), generator=gen, dtype=y.dtype)
    noisy = y.clone()
    noisy[rows] = (y[rows] + shift) % num_classes
    return noisy


def with_label_noise(task: Task, rate: float, kind: str = "symmetric") -> Task:
    """``task`` with noisy training labels (the clean ones kept in ``train.clean_y``)."""
    train = task.train
    clean = train.y if train.clean_y is None else train.clean_y
    noisy = corrupt_labels(clean, task.num_classes, rate, kind)
    return dataclasses.replace(task, train=Split(train.x, noisy, train.index, clean))


def with_fraction(task: Task, fraction: float) -> Task:
    """``task`` trained on a fixed ``fraction`` of its training split (stratified by class)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(task.train)
    keep = max(1, round(fraction * n))
    if keep == n:
        return task
    labels = task.train.y if task.classification else None
    rows = split_rows(n, (keep,), FRACTION_SEED, labels=labels)[0].sort().values
    return dataclasses.replace(task, train=task.train.subset(rows))
