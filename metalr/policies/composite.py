"""LRBench's composite ("multi-policy") schedule: different policies in consecutive regions.

Paper: Y. Wu, L. Liu et al., "Demystifying Learning Rate Policies for High Accuracy Training of
Deep Neural Networks", IEEE BigData 2019 (``piecewiseLR`` in git-disl/LRBench).

Rule. Boundaries ``b_1 < ... < b_m`` (steps, inside the budget ``T``) cut the run into
``m + 1`` regions; part ``i`` sets the LR inside region ``i`` with its own clock restarted at
the boundary: for ``b_i <= t < b_{i+1}`` the multiplier is ``part_i(t - b_i)``. Each part is
any metalr policy that keeps the optimizer (an online tuner included; it reads the loss only
while its region runs) and is built with its region's length as its budget, so budget-relative
defaults fit the region. Only a part's LR is used (a part's momentum cycling is not).

Spec form: ``composite:parts=tri(l=100;ratio=4)/exp(gamma=0.999),boundaries=500`` (parts
separated by ``/``, a part's parameters in parentheses separated by ``;``). From Python,
``parts`` may also be a list of ``"name:k=v,k=v"`` strings or ``(name, params)`` pairs.
"""

from __future__ import annotations

import re

import torch

from metalr.errors import MetalrError
from metalr.policies.params import check, parse_value, split_spec, step_list
from metalr.policies.state import StatefulPolicy

_PART = re.compile(r"^\s*([\w.-]+)\s*(?:\((.*)\))?\s*$")


def part_spec(part) -> tuple[str, dict]:
    """A part as ``(name, params)`` from ``"name"``, ``"name(k=v;k=v)"``, a spec or a pair."""
    if isinstance(part, (tuple, list)) and len(part) == 2 and isinstance(part[1], dict):
        return str(part[0]), dict(part[1])
    if isinstance(part, str) and ":" in part:
        return split_spec(part)
    match = _PART.match(part) if isinstance(part, str) else None
    if not match:
        raise MetalrError(f"composite: cannot read part {part!r}; write name or name(k=v;k=v)")
    params = {}
    for item in filter(None, (s.strip() for s in (match.group(2) or "").split(";"))):
        key, eq, value = item.partition("=")
        check(bool(eq and key.strip() and value.strip()),
              f"composite: in part {part!r}, {item!r} is not of the form key=value")
        params[key.strip()] = parse_value(value)
    return match.group(1), params


class Composite(StatefulPolicy):
    """Part ``i`` of ``parts`` runs in region ``i`` between consecutive ``boundaries``."""

    children = ("parts",)

    def __init__(self, optimizer, total_steps, *, parts, boundaries):
        from metalr.policies import make_policy

        if isinstance(parts, str):
            parts = parse_value(parts)
        specs = [part_spec(p) for p in (parts if isinstance(parts, (tuple, list)) else (parts,))]
        self.boundaries = step_list("boundaries", boundaries)
        check(len(specs) == len(self.boundaries) + 1,
              f"composite: {len(specs)} parts need {len(specs) - 1} boundaries, "
              f"got {len(self.boundaries)}")
        check(self.boundaries[-1] < total_steps,
              f"composite: boundaries must lie inside the budget of {total_steps} steps, "
              f"got {self.boundaries[-1]}")
        edges = (0, *self.boundaries, total_steps)
        self.parts = []
        for (name, params), start, end in zip(specs, edges, edges[1:]):
            clock = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
            self.parts.append(make_policy(name, clock, end - start, **params))
        self.active = 0
        self._started = False
        super().__init__(optimizer)

    def step(self, loss=None) -> None:
        if self._started:
            t = self.last_epoch + 1
            if self.active < len(self.boundaries) and t >= self.boundaries[self.active]:
                self.active += 1
            else:
                self.parts[self.active].step(loss)
        self._started = True
        super().step(loss)

    def multiplier(self) -> float:
        return self.parts[self.active].get_last_lr()[0]
