"""Building the inner optimizer by name."""

from __future__ import annotations

import torch

from metalr.errors import MetalrError

OPTIMIZERS = ("sgd", "adam", "adamw")


def build_optimizer(name: str, params, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``sgd`` (with ``momentum``), ``adam`` or ``adamw`` over ``params`` (tensors or groups)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise MetalrError(f"unknown optimizer {name!r}; accepted: {', '.join(OPTIMIZERS)}")
