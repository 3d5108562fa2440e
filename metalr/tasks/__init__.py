"""Task registry and task specs.

A task spec is a name with optional overrides, ``name[:key=value,key=value]``, for example
``mnist1d-cnn:noise=0.4,noise_type=pairflip,epochs=40,batch=64``. :func:`get_task` parses it
into a :class:`Task`. Keys every task takes:

- recipe: ``epochs``, ``batch``, ``lr``, ``optimizer`` (sgd | adam | adamw), ``momentum``, ``wd``;
- variants of the training split: ``fraction`` in (0, 1] (a fixed, class-stratified subset),
  ``noise`` in [0, 1) with ``noise_type`` symmetric | pairflip (classification tasks only; see
  :mod:`metalr.tasks.variants`).

Some tasks take more: the character LMs ``file=PATH`` (train on a text file of your own), the
torchvision tasks ``data=DIR`` and ``download=true|false``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

from metalr.errors import MetalrError
from metalr.optim import OPTIMIZERS
from metalr.specs import parse_bool, split_spec
from metalr.tasks import mnist1d, sklearn_sets, text, variants, vision
from metalr.tasks.base import Split, Task


def _number(value: str, kind: type):
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"not a valid {'integer' if kind is int else 'number'}") from None


def _positive_int(value: str) -> int:
    out = _number(value, int)
    if out <= 0:
        raise ValueError("must be a positive integer")
    return out


def _nonnegative(value: str) -> float:
    out = _number(value, float)
    if not (out >= 0 and math.isfinite(out)):
        raise ValueError("must be a finite number >= 0")
    return out


def _positive(value: str) -> float:
    out = _nonnegative(value)
    if out == 0:
        raise ValueError("must be > 0")
    return out


def _rate(value: str) -> float:
    out = _number(value, float)
    if not 0 <= out < 1:
        raise ValueError("must be in [0, 1)")
    return out


def _fraction(value: str) -> float:
    out = _number(value, float)
    if not 0 < out <= 1:
        raise ValueError("must be in (0, 1]")
    return out


def _choice(*accepted: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in accepted:
            raise ValueError(f"accepted: {', '.join(accepted)}")
        return value
    return parse


# Spec keys every task takes -> (Task field, parser).
_OVERRIDES = {
    "epochs": ("epochs", _positive_int),
    "batch": ("batch_size", _positive_int),
    "lr": ("base_lr", _positive),
    "optimizer": ("optimizer", _choice(*OPTIMIZERS)),
    "momentum": ("momentum", _nonnegative),
    "wd": ("weight_decay", _nonnegative),
}
_VARIANTS = {
    "fraction": _fraction,
    "noise": _rate,
    "noise_type": _choice(*variants.NOISE_TYPES),
}


@dataclass(frozen=True)
class _Entry:
    """How to build a registered task: ``build(**options)``, and the extra keys it takes.

    ``listing``, for tasks whose data must be downloaded, gives the ``list_tasks`` row without
    building the task.
    """

    build: Callable[..., Task]
    options: dict[str, Callable[[str], object]] = field(default_factory=dict)
    listing: Callable[[], dict] | None = None


_TEXT_OPTIONS = {"file": str}
_VISION_OPTIONS = {"data": str, "download": parse_bool}

_REGISTRY: dict[str, _Entry] = {
    "mnist1d-mlp": _Entry(mnist1d.mlp_task),
    "mnist1d-cnn": _Entry(mnist1d.cnn_task),
    "mnist1d-gru": _Entry(mnist1d.gru_task),
    "digits-cnn": _Entry(sklearn_sets.digits_cnn_task, {"width": _positive_int}),
    "digits-mlp": _Entry(sklearn_sets.digits_mlp_task),
    "digits-logreg": _Entry(sklearn_sets.digits_logreg_task),
    "cancer-mlp": _Entry(sklearn_sets.cancer_mlp_task),
    "charlm-lstm": _Entry(text.lstm_task, _TEXT_OPTIONS),
    "charlm-transformer": _Entry(text.transformer_task, _TEXT_OPTIONS),
    **{name: _Entry(recipe.build, _VISION_OPTIONS, recipe.listing)
       for name, recipe in vision.RECIPES.items()},
}


def task_names(embedded_only: bool = False) -> list[str]:
    """Registered task names; ``embedded_only`` leaves out those that need a download."""
    return sorted(n for n, e in _REGISTRY.items() if not (embedded_only and e.listing))


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name:k=v,k=v`` into the name and a dict of raw string values."""
    return split_spec(spec, "task")


def _parse_value(spec: str, key: str, value: str, parser: Callable[[str], object]):
    try:
        return parser(value)
    except ValueError as err:
        raise MetalrError(f"task spec {spec!r}: {key}={value!r}: {err}") from None


def get_task(spec: str | Task) -> Task:
    """Build the task named by ``spec`` (a :class:`Task` is returned unchanged)."""
    if isinstance(spec, Task):
        return spec
    name, params = parse_spec(spec)
    if name not in _REGISTRY:
        raise MetalrError(f"unknown task {name!r}; accepted: {', '.join(task_names())}")
    entry = _REGISTRY[name]
    parsers = {**{key: parser for key, (_, parser) in _OVERRIDES.items()}, **_VARIANTS,
               **entry.options}
    unknown = sorted(set(params) - set(parsers))
    if unknown:
        raise MetalrError(
            f"task spec {spec!r}: unknown key(s) {', '.join(unknown)}; accepted for {name}: "
            f"{', '.join(parsers)}"
        )
    parsed = {key: _parse_value(spec, key, value, parsers[key]) for key, value in params.items()}
    if "noise_type" in parsed and "noise" not in parsed:
        raise MetalrError(f"task spec {spec!r}: noise_type needs a noise rate (noise=...)")
    task = entry.build(**{key: parsed[key] for key in entry.options if key in parsed})
    if "fraction" in parsed:
        task = variants.with_fraction(task, parsed["fraction"])
    if parsed.get("noise"):
        if not task.classification:
            raise MetalrError(
                f"task spec {spec!r}: {name} predicts sequences, not one class label per example; "
                "label noise applies only to classification tasks"
            )
        task = variants.with_label_noise(task, parsed["noise"], parsed.get("noise_type", "symmetric"))
    changes = {fld: parsed[key] for key, (fld, _) in _OVERRIDES.items() if key in parsed}
    return dataclasses.replace(task, spec={"name": name, **params}, **changes)


def _row(task: Task) -> dict:
    return {
        "name": task.name, "optimizer": task.optimizer, "lr": task.base_lr, "wd": task.weight_decay,
        "batch": task.batch_size, "epochs": task.epochs, "metric": task.metric_name,
        "train/val/test": f"{len(task.train)}/{len(task.val)}/{len(task.test)}",
        "description": task.description,
    }


def list_tasks() -> list[dict]:
    """Every registered task with its default recipe, for ``metalr list tasks``.

    Embedded tasks are built (a few seconds in all); tasks that need a download are described
    from their recipe, without touching the network.
    """
    return [_REGISTRY[n].listing() if _REGISTRY[n].listing else _row(_REGISTRY[n].build())
            for n in task_names()]


__all__ = ["Split", "Task", "get_task", "list_tasks", "parse_spec", "task_names"]
