"""The registry of LR policies that :func:`metalr.train` and the benchmark run by name.

- :func:`make_policy` ``(name, optimizer, total_steps, **params)`` builds a scheduler that
  behaves as a torch LR scheduler: ``step(loss=None)`` after each ``optimizer.step()``,
  ``get_last_lr()``, ``state_dict()`` / ``load_state_dict()``, one LR per param group (each a
  multiple of the group's ``initial_lr``, so groups keep their ratio).
- :func:`get_policy` ``("name:k=v,k=v")`` returns the :class:`Policy` the trainer runs; the
  LR-free peers are policies that replace the optimizer.
- :func:`list_policies` lists every name with its parameters, defaults and one line on it.

Which modules hold what: :mod:`~metalr.policies.lrbench` (LRBench's 13 functions),
:mod:`~metalr.policies.composite` (LRBench's multi-policy form), :mod:`~metalr.policies.knee`,
:mod:`~metalr.policies.torch_schedules` (torch's schedulers), :mod:`~metalr.policies.lrtuner`
and :mod:`~metalr.policies.exptest` (online tuners of our design), :mod:`~metalr.policies.peers`
(LR-free optimizers), :mod:`~metalr.policies.plot` (``metalr plot-policy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from metalr.errors import MetalrError
from metalr.learned.checkpoint import DEFAULT_CHECKPOINT
from metalr.lr_policy import LRPolicy, step_scheduler
from metalr.policies.base import Policy, SchedulerPolicy
from metalr.policies.composite import Composite
from metalr.policies.exptest import ExpTest
from metalr.policies.knee import Knee
from metalr.policies.lrbench import FUNCTIONS, Fix
from metalr.policies.lrtuner import LRTuner
from metalr.policies.params import REQUIRED, format_params, policy_params, split_spec, steps
from metalr.policies.peers import PEERS
from metalr.policies.torch_schedules import SCHEDULES


def learned(optimizer, total_steps, *, checkpoint=DEFAULT_CHECKPOINT):
    """metalr's meta-learned schedule network, loaded from a pretrained checkpoint."""
    from metalr.learned.scheduler import MetaLRScheduler

    return MetaLRScheduler.from_pretrained(checkpoint, optimizer, total_steps=total_steps)


@dataclass(frozen=True)
class Entry:
    """A registered policy: its factory, one line on it, and how it runs.

    ``kind`` is ``"schedule"`` (a fixed curve), ``"online"`` (reads the training loss) or
    ``"optimizer"`` (an LR-free peer that replaces the optimizer).
    """

    factory: Callable
    description: str
    kind: str = "schedule"


_REGISTRY: dict[str, Entry] = {
    "constant": Entry(Fix, "the base LR throughout (the same curve as fix)"),
    **{name: Entry(cls, text) for name, (cls, text) in FUNCTIONS.items()},
    "composite": Entry(Composite, "LRBench multi-policy: parts in regions between boundaries"),
    "knee": Entry(Knee, "explore-exploit: warmup, explore at the peak, linear decay to 0"),
    **{name: Entry(cls, text, "online" if name == "plateau" else "schedule")
       for name, (cls, text) in SCHEDULES.items()},
    "lrtuner": Entry(LRTuner, "LRTuner-style (our design): probe the LR up while the loss "
                              "improves, then decay", "online"),
    "exptest": Entry(ExpTest, "ExpTest-style (our design): LR search and cuts by t-tests of "
                              "exponential loss decay", "online"),
    **{name: Entry(cls, text, "optimizer") for name, (cls, text) in PEERS.items()},
    "metalr": Entry(learned, "metalr's meta-learned schedule network, from a pretrained "
                             "checkpoint", "online"),
}


def policy_names() -> list[str]:
    return list(_REGISTRY)


def _lookup(name: str) -> Entry:
    if name not in _REGISTRY:
        raise MetalrError(f"unknown policy {name!r}; accepted: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _parse(spec: str) -> tuple[str, dict]:
    """Name and parameters of a spec, each value parsed by the kind of its default."""
    return split_spec(spec, _lookup(split_spec(spec)[0]).factory)


def _entry(name: str, params: dict) -> Entry:
    """The entry for ``name`` after checking ``params`` against its parameters."""
    entry = _lookup(name)
    accepted = policy_params(entry.factory)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise MetalrError(f"policy {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                          f"accepted: {format_params(accepted)}")
    missing = [k for k, v in accepted.items() if v is REQUIRED and k not in params]
    if missing:
        raise MetalrError(f"policy {name!r} needs {', '.join(missing)}; parameters: "
                          f"{format_params(accepted)}")
    return entry


def make_policy(name: str, optimizer, total_steps: int, **params) -> LRPolicy:
    """The scheduler ``name`` (or ``"name:k=v,..."``; keyword ``params`` win) for ``optimizer``.

    Call ``step(loss)`` once after every ``optimizer.step()``; ``total_steps`` is the budget
    ``T`` that budget-relative defaults refer to. Unknown names, parameters or bad values raise
    :class:`MetalrError` saying what is accepted.
    """
    name, spec_params = _parse(name)
    params = {**spec_params, **params}
    entry = _entry(name, params)
    if entry.kind == "optimizer":
        raise MetalrError(f"policy {name!r} replaces the optimizer and has no scheduler; run it "
                          f"with metalr.train(task, policy={name!r}) or get_policy({name!r})")
    return entry.factory(optimizer, steps("total_steps", total_steps), **params)


class NamedPolicy(Policy):
    """A registry scheduler as the trainer's :class:`Policy`; ``name`` is the spec."""

    def __init__(self, spec: str, key: str, params: dict):
        self.name = spec
        self.key = key
        self.params = params

    def make_scheduler(self, optimizer, total_steps):
        return make_policy(self.key, optimizer, total_steps, **self.params)


def get_policy(spec: str) -> Policy:
    """The :class:`Policy` for ``"name"`` or ``"name:k=v,k=v"`` (numbers are parsed)."""
    name, params = _parse(spec)
    entry = _entry(name, params)
    if entry.kind == "optimizer":
        return entry.factory(spec.strip(), **params)
    return NamedPolicy(spec.strip(), name, params)


def policy_kind(spec: str) -> str:
    """``"schedule"``, ``"online"`` or ``"optimizer"`` for a policy name or spec."""
    return _lookup(split_spec(spec)[0]).kind


def list_policies() -> list[dict]:
    """Every policy with its parameters and defaults, for ``metalr list policies``.

    ``T`` in a default is the run's total number of steps.
    """
    return [{
        "name": name,
        "replaces optimizer": "yes" if e.kind == "optimizer" else "no",
        "reads loss": "yes" if e.kind == "online" else "no",
        "parameters (T = total steps)": format_params(policy_params(e.factory)),
        "description": e.description,
    } for name, e in _REGISTRY.items()]


__all__ = ["LRPolicy", "NamedPolicy", "Policy", "SchedulerPolicy", "get_policy", "learned",
           "list_policies", "make_policy", "policy_kind", "policy_names", "step_scheduler"]
