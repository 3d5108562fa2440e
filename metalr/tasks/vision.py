"""The MLR-SNet paper's image tasks: CIFAR-10/100 and SVHN with ResNet-18 and WRN-28-10.

These need torchvision (``pip install 'metalr[vision]'``), a network connection the first time
(the data are downloaded by ``torchvision.datasets`` into ``data=DIR``, default ``$METALR_DATA``
or ``~/.cache/metalr/data``) and, in practice, a GPU: one ResNet-18 run of 200 epochs is hours
on a CPU. Where torchvision or the data are missing, building the task raises
:class:`~metalr.errors.MetalrError` saying what to install or where the data were looked for.

Splits: the last official training images are not special, so the clean validation split is a
fixed, class-stratified draw of 5,000 training images (:func:`~metalr.tasks.base.split_rows`,
seed 0), disjoint from the rest, which we train on; test is the official test set (SVHN's
``extra`` images are not used). Images stay ``uint8`` (N, 3, 32, 32) in memory; each model
starts with a :class:`Normalize` layer that scales to [0, 1] and standardises by the training
set's channel statistics. Training batches get the standard augmentation: a random 32x32 crop of
the image zero-padded by 4 pixels, and (CIFAR only: digits are not mirror-symmetric) a random
horizontal flip.

Recipes follow MLR-SNet (Shu et al., 2022): SGD with momentum 0.9, weight decay 5e-4, batch 128,
base LR 0.1, 200 epochs for CIFAR; SVHN uses the common 0.05 / 40 epochs. They were not
re-measured here (no GPU or download on the machine that wrote this module).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
from torch import nn

from metalr.errors import MetalrError
from metalr.tasks.base import Split, Task, split_rows

VAL_SIZE = 5000
SPLIT_SEED = 0
INSTALL_HINT = "pip install 'metalr[vision]'"


@dataclass(frozen=True)
class DataInfo:
    torchvision_name: str
    num_classes: int
    train_size: int
    test_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool


DATASETS = {
    "cifar10": DataInfo("CIFAR10", 10, 50000, 10000,
                        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": DataInfo("CIFAR100", 100, 50000, 10000,
                         (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    "svhn": DataInfo("SVHN", 10, 73257, 26032,
                     (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False),
}


def default_data_dir() -> str:
    return os.environ.get("METALR_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "metalr", "data")


def _load_arrays(dataset: str, root: str, download: bool):
    """(train images, train labels, test images, test labels) as tensors, images uint8 NCHW."""
    try:
        import torchvision
    except ImportError:
        raise MetalrError(
            f"the {dataset} tasks need torchvision, which is not installed: {INSTALL_HINT} "
            "(and a GPU; the embedded tasks need neither, see `metalr list tasks`)"
        ) from None
    cls = getattr(torchvision.datasets, DATASETS[dataset].torchvision_name)
    try:
        if dataset == "svhn":
            parts = [cls(root, split=s, download=download) for s in ("train", "test")]
            arrays = [(torch.from_numpy(p.data), torch.as_tensor(p.labels)) for p in parts]
        else:
            parts = [cls(root, train=t, download=download) for t in (True, False)]
            arrays = [(torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous(),
                       torch.as_tensor(p.targets)) for p in parts]
    except (RuntimeError, OSError) as err:
        how = "the download failed" if download else "download=false and they are not there"
        raise MetalrError(
            f"could not load {dataset} from {root!r}: {how} ({err}); give a directory that holds "
            "the data with data=DIR, or allow the download"
        ) from None
    (x, y), (x_test, y_test) = arrays
    return x, y.long(), x_test, y_test.long()


@functools.lru_cache(maxsize=2)
def splits(dataset: str, root: str, download: bool = True) -> tuple[Split, Split, Split]:
    """(train, val, test): val is a fixed stratified 5,000 of the training images."""
    x, y, x_test, y_test = _load_arrays(dataset, root, download)
    full = Split(x, y, torch.arange(len(x)))
    val_rows, train_rows = split_rows(len(x), (VAL_SIZE, len(x) - VAL_SIZE), SPLIT_SEED, labels=y)
    test = Split(x_test, y_test, torch.arange(len(x), len(x) + len(x_test)))
    return full.subset(train_rows), full.subset(val_rows), test


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """A random ``H x W`` crop of each zero-padded image in batch ``x`` (N, C, H, W), mirrored
    left-right with probability 1/2 when ``flip``."""
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    rows = top + torch.arange(h)
    cols = left + torch.arange(w)
    if flip:
        mirror = torch.rand(n, 1, generator=generator) < 0.5
        cols = torch.where(mirror, cols.flip(1), cols)
    batch = torch.arange(n).view(n, 1, 1, 1)
    channel = torch.arange(c).view(1, c, 1, 1)
    return padded[batch, channel, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


class Normalize(nn.Module):
    """uint8 (or float in [0, 255]) images -> standardised float images."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255)

    def forward(self, x):
        return (x.float() - self.mean) / self.std


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers and an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (He et al., 2016; CIFAR stem: one 3x3 conv, no max-pool)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.net = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class WideBlock(nn.Module):
    """Pre-activation wide-ResNet block: BN-ReLU-conv3x3, (dropout), BN-ReLU-conv3x3."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        )
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        act = self.pre(x)
        return self.body(act) + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis, 2016); WRN-28-10 is ``WideResNet(28, 10)``."""

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        blocks, cin = [], widths[0]
        for cout, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                blocks.append(WideBlock(cin, cout, stride if i == 0 else 1, dropout))
                cin = cout
        self.net = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), *blocks,
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes),
        )

    def forward(self, x):
        return self.net(x)


ARCHS = {
    "resnet18": ("ResNet-18", ResNet18),
    "wrn28-10": ("WRN-28-10", functools.partial(WideResNet, 28, 10)),
}


def make_model(dataset: str, arch: str) -> nn.Module:
    info = DATASETS[dataset]
    return nn.Sequential(Normalize(info.mean, info.std), ARCHS[arch][1](num_classes=info.num_classes))


@dataclass(frozen=True)
class VisionRecipe:
    """One registered image task: data set, architecture and default recipe."""

    name: str
    dataset: str
    arch: str
    base_lr: float = 0.1
    epochs: int = 200
    batch_size: int = 128
    weight_decay: float = 5e-4
    source: str = "MLR-SNet recipe"

    @property
    def description(self) -> str:
        return (f"{self.dataset.upper()} {ARCHS[self.arch][0]} ({self.source}); needs "
                f"torchvision, a download and a GPU: {INSTALL_HINT}")

    def build(self, data: str | None = None, download: bool = True) -> Task:
        info = DATASETS[self.dataset]
        root = os.path.abspath(os.path.expanduser(data or default_data_dir()))
        train, val, test = splits(self.dataset, root, download)
        return Task(
            name=self.name, train=train, val=val, test=test,
            make_model=functools.partial(make_model, self.dataset, self.arch),
            num_classes=info.num_classes, optimizer="sgd", base_lr=self.base_lr, momentum=0.9,
            weight_decay=self.weight_decay, batch_size=self.batch_size, epochs=self.epochs,
            description=self.description,
            augment=functools.partial(random_crop_flip, pad=4, flip=info.flip),
        )

    def listing(self) -> dict:
        info = DATASETS[self.dataset]
        return {
            "name": self.name, "optimizer": "sgd", "lr": self.base_lr, "wd": self.weight_decay,
            "batch": self.batch_size, "epochs": self.epochs, "metric": "accuracy",
            "train/val/test": f"{info.train_size - VAL_SIZE}/{VAL_SIZE}/{info.test_size}",
            "description": self.description,
        }


RECIPES = {r.name: r for r in (
    VisionRecipe("cifar10-resnet18", "cifar10", "resnet18"),
    VisionRecipe("cifar10-wrn28-10", "cifar10", "wrn28-10"),
    VisionRecipe("cifar100-resnet18", "cifar100", "resnet18"),
    VisionRecipe("cifar100-wrn28-10", "cifar100", "wrn28-10"),
    VisionRecipe("svhn-resnet18", "svhn", "resnet18", base_lr=0.05, epochs=40,
                 source="common recipe"),
)}
