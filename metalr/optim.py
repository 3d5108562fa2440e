"""Building the inner optimizer by name, and AdamW for ``higher``'s differentiable unrolls.

``higher`` 0.2.1 knows SGD and Adam but predates AdamW; :class:`DifferentiableAdamW` adds it
(decoupled weight decay, Loshchilov & Hutter 2019: ``p <- p * (1 - lr * wd)`` before the Adam
step) and is registered on import, so the meta-trainer unrolls all three optimizers.
"""

from __future__ import annotations

import higher
import higher.optim
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


class DifferentiableAdamW(higher.optim.DifferentiableAdam):
    """AdamW for ``higher``: decoupled decay on the parameters, then Adam without L2 decay."""

    def _update(self, grouped_grads, **kwargs) -> None:
        decays = [group["weight_decay"] for group in self.param_groups]
        for group, grads, wd in zip(self.param_groups, grouped_grads, decays):
            if wd:
                group["params"] = [p if g is None else p * (1 - group["lr"] * wd)
                                   for p, g in zip(group["params"], grads)]
            group["weight_decay"] = 0.0
        try:
            super()._update(grouped_grads, **kwargs)
        finally:
            for group, wd in zip(self.param_groups, decays):
                group["weight_decay"] = wd


higher.register_optim(torch.optim.AdamW, DifferentiableAdamW)
