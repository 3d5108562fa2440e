"""metalr: meta-learned learning-rate schedules for PyTorch.

``from metalr import MetaLRScheduler`` loads only the learned scheduler (torch, numpy,
safetensors); the policies, tasks and trainer are imported when first used.
"""

__version__ = "0.2.0"

import importlib

from metalr.errors import MetalrError
from metalr.learned import MetaLRScheduler, list_pretrained

_LAZY = {
    "get_policy": "metalr.policies", "list_policies": "metalr.policies",
    "make_policy": "metalr.policies", "Task": "metalr.tasks", "get_task": "metalr.tasks",
    "list_tasks": "metalr.tasks", "TrainResult": "metalr.trainer", "train": "metalr.trainer",
}

__all__ = ["MetaLRScheduler", "MetalrError", "list_pretrained", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metalr' has no attribute {name!r}")
