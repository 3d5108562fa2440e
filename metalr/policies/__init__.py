"""The registry of LR policies that :func:`metalr.train` and the benchmark run by name."""

from __future__ import annotations

import torch

from metalr.errors import MetalrError
from metalr.policies.base import LRPolicy, Policy, SchedulerPolicy


def _cosine(optimizer, total_steps):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def _metalr(optimizer, total_steps):
    from metalr.scheduler import MetaLRScheduler

    return MetaLRScheduler.from_pretrained("metalr-mnist1d", optimizer, total_steps=total_steps)


_REGISTRY = {"constant": None, "cosine": _cosine, "metalr": _metalr}


def get_policy(spec: str) -> Policy:
    if spec not in _REGISTRY:
        raise MetalrError(f"unknown policy {spec!r}; accepted: {', '.join(sorted(_REGISTRY))}")
    return SchedulerPolicy(spec, _REGISTRY[spec])


__all__ = ["LRPolicy", "Policy", "SchedulerPolicy", "get_policy"]
