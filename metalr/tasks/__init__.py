"""Task registry and task specs.

A task spec is a name with optional overrides, ``name[:key=value,key=value]``, for example
``mnist1d-cnn:epochs=40,batch=64,lr=0.05``. :func:`get_task` parses it into a :class:`Task`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from metalr.errors import MetalrError
from metalr.tasks import mnist1d
from metalr.tasks.base import Split, Task

_BUILDERS: dict[str, Callable[[], Task]] = {
    "mnist1d-mlp": mnist1d.mlp_task,
    "mnist1d-cnn": mnist1d.cnn_task,
}

# Spec keys -> (Task field, type). Every task takes these.
_OVERRIDES = {
    "epochs": ("epochs", int),
    "batch": ("batch_size", int),
    "lr": ("base_lr", float),
    "optimizer": ("optimizer", str),
    "momentum": ("momentum", float),
    "wd": ("weight_decay", float),
}
OPTIMIZERS = ("sgd", "adam", "adamw")


def task_names() -> list[str]:
    return sorted(_BUILDERS)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name:k=v,k=v`` into the name and a dict of raw string values."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise MetalrError(f"task spec {spec!r}: {item!r} is not of the form key=value")
        params[key.strip()] = value.strip()
    return name, params


def _convert(spec: str, key: str, value: str, kind: type):
    try:
        out = kind(value)
    except ValueError:
        raise MetalrError(
            f"task spec {spec!r}: {key}={value!r} is not a valid {kind.__name__}"
        ) from None
    if kind is int and out <= 0:
        raise MetalrError(f"task spec {spec!r}: {key} must be a positive integer, got {value}")
    if kind is float and not (out >= 0 and out != float("inf")):
        raise MetalrError(f"task spec {spec!r}: {key} must be a finite number >= 0, got {value}")
    if key == "lr" and out == 0:
        raise MetalrError(f"task spec {spec!r}: lr must be > 0")
    if key == "optimizer" and out not in OPTIMIZERS:
        raise MetalrError(f"task spec {spec!r}: optimizer={value!r}; accepted: {', '.join(OPTIMIZERS)}")
    return out


def get_task(spec: str | Task) -> Task:
    """Build the task named by ``spec`` (a :class:`Task` is returned unchanged)."""
    if isinstance(spec, Task):
        return spec
    name, params = parse_spec(spec)
    if name not in _BUILDERS:
        raise MetalrError(f"unknown task {name!r}; accepted: {', '.join(task_names())}")
    unknown = sorted(set(params) - set(_OVERRIDES))
    if unknown:
        raise MetalrError(
            f"task spec {spec!r}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(_OVERRIDES)}"
        )
    task = _BUILDERS[name]()
    changes = {field: _convert(spec, key, params[key], kind)
               for key, (field, kind) in _OVERRIDES.items() if key in params}
    return dataclasses.replace(task, spec={"name": name, **params}, **changes)


def list_tasks() -> list[dict]:
    """Every registered task with its default recipe, for ``metalr list tasks``."""
    rows = []
    for name in task_names():
        t = _BUILDERS[name]()
        rows.append({
            "name": name, "optimizer": t.optimizer, "lr": t.base_lr, "batch": t.batch_size,
            "epochs": t.epochs, "metric": t.metric_name, "train/val/test":
            f"{len(t.train)}/{len(t.val)}/{len(t.test)}", "description": t.description,
        })
    return rows


__all__ = ["Split", "Task", "get_task", "list_tasks", "parse_spec", "task_names"]
