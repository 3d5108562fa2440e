"""MNIST-1D (Greydanus, 2020): a 40-sample 1-D signal version of MNIST, generated offline.

``mnist1d.data.make_dataset`` synthesises the data deterministically from its default arguments
(seed 42) in about a second, so every machine sees the same 4,000 training and 1,000 test
signals without a download. We hold out 500 of the 4,000 training signals as the clean
validation split (a fixed permutation, disjoint by index) and train on the other 3,500.

Models are the paper's: an MLP, a 1-D CNN and a bidirectional GRU (reported test accuracy about
68%, 94% and 91%).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from metalr.tasks.base import Split, Task

VAL_SIZE = 500
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _raw():
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return (
        np.asarray(data["x"], dtype=np.float32),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32),
        np.asarray(data["y_test"], dtype=np.int64),
    )


def splits() -> tuple[Split, Split, Split]:
    """(train, val, test) splits; val is a fixed random 500 of the original training set."""
    x, y, x_test, y_test = (torch.from_numpy(a) for a in _raw())
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    full = Split(x, y, torch.arange(len(x)))
    val, train = full.subset(order[:VAL_SIZE]), full.subset(order[VAL_SIZE:])
    # Test indices are offset past the training set so all three splits share one index space.
    test = Split(x_test, y_test, torch.arange(len(x), len(x) + len(x_test)))
    return train, val, test


class MLP(nn.Module):
    """The MNIST-1D paper's MLP: 40 -> 100 -> 100 -> 10 with ReLU."""

    def __init__(self, width: int = 100):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(40, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 10),
        )

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """The MNIST-1D paper's 1-D CNN: three stride-2 convolutions of 25 channels, then linear."""

    def __init__(self, channels: int = 25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(channels * 5, 10)

    def forward(self, x):
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


class GRU(nn.Module):
    """The MNIST-1D paper's GRU: bidirectional, 6 hidden units, linear read-out of all 40 steps."""

    def __init__(self, hidden: int = 6, length: int = 40):
        super().__init__()
        self.rnn = nn.GRU(1, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden * length, 10)

    def forward(self, x):
        h, _ = self.rnn(x.unsqueeze(-1))
        return self.head(h.flatten(1))


def _task(name: str, model, description: str, **recipe) -> Task:
    train, val, test = splits()
    return Task(name=name, train=train, val=val, test=test, make_model=model, num_classes=10,
                batch_size=100, description=description, **recipe)


def mlp_task() -> Task:
    return _task("mnist1d-mlp", MLP, "MNIST-1D, 3-layer MLP (the paper reports ~68% test accuracy)",
                 optimizer="sgd", base_lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=60)


def cnn_task() -> Task:
    return _task("mnist1d-cnn", CNN,
                 "MNIST-1D, 3-layer 1-D CNN (the paper reports ~94% test accuracy)",
                 optimizer="sgd", base_lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=60)


def gru_task() -> Task:
    return _task("mnist1d-gru", GRU,
                 "MNIST-1D, bidirectional GRU (the paper reports ~91% test accuracy)",
                 optimizer="adam", base_lr=0.01, weight_decay=0.0, epochs=100)
