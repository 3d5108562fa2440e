"""Policy parameters: budget-relative defaults, spec strings, and value checks.

A policy spec is a name with optional parameters, ``name:key=value,key=value``, for example
``knee:explore=0.3,warmup=100``. Values are parsed as numbers where they look like numbers,
``true``/``false`` as booleans, and anything else as text; a value with ``/`` in it is a list
(``nstep:milestones=1000/1500``). A policy's parameters and defaults are read from the keyword
arguments of its constructor, so the registry, the error messages and ``metalr list policies``
cannot drift from the code.

Lengths are in optimizer steps, as in LRBench. A default that depends on the budget ``T`` (the
run's total number of steps) is an :class:`Auto`, shown by its formula (``T/8``).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

from metalr import specs
from metalr.errors import MetalrError

# Constructor arguments every policy takes that are not user parameters.
_FIXED_ARGS = ("self", "name", "optimizer", "total_steps", "last_epoch")


class Auto:
    """A default computed from the budget ``T``; ``repr`` is its formula, e.g. ``ceil(T/3)``."""

    def __init__(self, formula: str, fn: Callable[[int], Any]):
        self.formula = formula
        self.fn = fn

    def __call__(self, total_steps: int):
        return self.fn(total_steps)

    def __repr__(self) -> str:
        return self.formula


def budget_part(n: int) -> Auto:
    """The default ``ceil(T/n)`` steps (at least 1)."""
    return Auto(f"ceil(T/{n})", lambda T: max(1, math.ceil(T / n)))


def resolve(value, total_steps: int):
    """``value`` itself, or an :class:`Auto` default evaluated at the budget."""
    return value(total_steps) if isinstance(value, Auto) else value


REQUIRED = inspect.Parameter.empty


def policy_params(factory: Callable) -> dict[str, Any]:
    """A policy's user parameters and defaults (``REQUIRED`` where there is none), in order."""
    out = {}
    for name, p in inspect.signature(factory).parameters.items():
        if name in _FIXED_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[name] = p.default
    return out


def format_params(params: dict[str, Any]) -> str:
    """``explore=0.5, warmup=0`` for tables and error messages."""
    return ", ".join(f"{k}=(required)" if v is REQUIRED else f"{k}={_show(v)}"
                     for k, v in params.items()) or "-"


def _show(value) -> str:
    if isinstance(value, tuple):
        return "/".join(_show(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_value(text: str):
    """``"0.5"`` -> 0.5, ``"100"`` -> 100, ``"true"``/``"yes"`` -> True, ``"a/b"`` -> ("a", "b"), or text."""
    text = text.strip()
    if "/" in text:
        return tuple(parse_value(item) for item in text.split("/") if item.strip())
    if text.lower() in ("true", "false", "yes", "no"):
        return specs.parse_bool(text)
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def split_spec(spec: str, factory: Callable | None = None) -> tuple[str, dict[str, Any]]:
    """Split ``name:k=v,k=v`` into the name and a dict of parsed values.

    With ``factory``, a parameter whose default is text (a checkpoint path) keeps its value as
    written: ``/`` in a path is not a list separator.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise MetalrError("a policy spec must be a non-empty string like 'knee:explore=0.3', "
                          f"got {spec!r}")
    name, raw = specs.split_spec(spec, "policy")
    text = {k for k, v in policy_params(factory).items() if isinstance(v, str)} if factory else set()
    return name, {key: value if key in text else parse_value(value) for key, value in raw.items()}


def check(ok: bool, message: str) -> None:
    """Raise :class:`MetalrError` with ``message`` unless ``ok``."""
    if not ok:
        raise MetalrError(message)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(name: str, value, low: float = -math.inf, high: float = math.inf, *,
           low_open: bool = False, high_open: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a float inside [low, high] (open ends where asked), else a MetalrError.

    Infinity is refused unless ``allow_inf``.
    """
    ok = ((_is_number(value) or (allow_inf and value == math.inf))
          and (value > low if low_open else value >= low)
          and (value < high if high_open else value <= high))
    if not ok:
        lo = f"{'(' if low_open else '['}{low:g}"
        hi = f"{high:g}{')' if high_open else ']'}"
        raise MetalrError(f"{name} must be a number in {lo}, {hi}, got {value!r}")
    return float(value)


def steps(name: str, value, minimum: int = 1) -> int:
    """``value`` as a whole number >= ``minimum`` (``100.0`` is accepted as 100)."""
    if not (_is_number(value) and float(value).is_integer() and value >= minimum):
        raise MetalrError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def step_list(name: str, value) -> tuple[int, ...]:
    """Strictly increasing whole numbers of steps >= 1; one number is a list of one."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    out = tuple(steps(name, v) for v in items)
    check(bool(out) and all(a < b for a, b in zip(out, out[1:])),
          f"{name} must be strictly increasing steps (write them as a/b/c), got {_show(items)}")
    return out


def flag(name: str, value) -> bool:
    """A switch written as a task's would be: true/false, yes/no, 1/0."""
    if isinstance(value, bool):
        return value
    try:
        return specs.parse_bool(value)
    except ValueError as err:
        raise MetalrError(f"{name} must be a switch ({err}), got {value!r}") from None
