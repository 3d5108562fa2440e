"""Tasks on the small real data sets that scikit-learn ships (no download).

- ``digits``: 1,797 real 8x8 handwritten digit images (UCI optical digits, 16 grey levels),
  scaled to [0, 1]. A small 2-D CNN, an MLP, and multinomial logistic regression (a convex
  problem: one linear layer under cross-entropy).
- ``cancer``: the Wisconsin diagnostic breast cancer table, 569 rows of 30 real-valued features,
  two classes. An MLP on features standardised with the mean and standard deviation of the
  training split only, so nothing about the validation or test rows leaks into the inputs.

Each set is cut once into stratified train / validation / test splits by a fixed seed
(:func:`metalr.tasks.base.split_rows`); ``index`` is the row in scikit-learn's array.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from metalr.tasks.base import Split, Task, split_rows

SPLIT_SEED = 0
DIGITS_SIZES = (1257, 180, 360)  # train, val, test (70 / 10 / 20 %)
CANCER_SIZES = (370, 85, 114)  # train, val, test (65 / 15 / 20 %)


def _cut(x: torch.Tensor, y: torch.Tensor, sizes: tuple[int, int, int]) -> tuple[Split, Split, Split]:
    full = Split(x, y, torch.arange(len(x)))
    rows = split_rows(len(x), sizes, SPLIT_SEED, labels=y)
    return tuple(full.subset(r) for r in rows)


@functools.lru_cache(maxsize=1)
def digits_splits() -> tuple[Split, Split, Split]:
    """(train, val, test) of scikit-learn's digits as (N, 8, 8) float images in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    return _cut(x, y, DIGITS_SIZES)


@functools.lru_cache(maxsize=1)
def cancer_splits() -> tuple[Split, Split, Split]:
    """(train, val, test) of the breast cancer table, standardised by training statistics."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.int64)
    train, val, test = _cut(x, y, CANCER_SIZES)
    mean, std = train.x.mean(0), train.x.std(0).clamp_min(1e-8)
    return tuple(Split((s.x - mean) / std, s.y, s.index) for s in (train, val, test))


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (``width``, 2 * ``width`` channels; 32 and 64 by default), 2x2
    max-pool, then 128 hidden units -> 10. ``width=8`` is a cut-down version about 10x cheaper
    on a CPU (meta-training samples it)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Linear(2 * width * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


def mlp(inputs: int, width: int, outputs: int) -> nn.Module:
    """Flatten, two hidden ReLU layers of ``width``, linear output."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, outputs),
    )


def logistic(inputs: int, outputs: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer (convex under cross-entropy)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, outputs))


def _task(name: str, splits, model, num_classes: int, description: str, **recipe) -> Task:
    train, val, test = splits()
    return Task(name=name, train=train, val=val, test=test, make_model=model,
                num_classes=num_classes, optimizer="sgd", momentum=0.9, description=description,
                **recipe)


def digits_cnn_task(width: int = 32) -> Task:
    return _task("digits-cnn", digits_splits, functools.partial(DigitsCNN, width), 10,
                 "scikit-learn digits (8x8 images), 2-conv CNN (width=N: N and 2N channels)",
                 base_lr=0.05, weight_decay=5e-4, batch_size=64, epochs=30)
digits_mlp_task = functools.partial(
    _task, "digits-mlp", digits_splits, functools.partial(mlp, 64, 128, 10), 10,
    "scikit-learn digits (8x8 images), MLP 64-128-128-10",
    base_lr=0.1, weight_decay=5e-4, batch_size=64, epochs=40)
digits_logreg_task = functools.partial(
    _task, "digits-logreg", digits_splits, functools.partial(logistic, 64, 10), 10,
    "scikit-learn digits, logistic regression (convex)",
    base_lr=0.5, weight_decay=1e-4, batch_size=64, epochs=40)
cancer_mlp_task = functools.partial(
    _task, "cancer-mlp", cancer_splits, functools.partial(mlp, 30, 64, 2), 2,
    "breast cancer table (30 standardised features), MLP 30-64-64-2",
    base_lr=0.01, weight_decay=5e-4, batch_size=32, epochs=40)
