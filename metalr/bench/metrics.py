"""The bench's metrics, as plain functions of curves and numbers (LRBench's, REFERENCE §5).

Direction: every function that compares takes ``higher`` (the task's ``higher_is_better``):
accuracy points up, bits per character down. Non-finite values (a diverged run's NaN loss) are
never "better" than a finite one and never reach a target.

Per cell (a record of :mod:`metalr.bench.worker`):

- :func:`steps_to_target`: the first evaluation step whose test metric reaches the target
  (``>=`` it when higher is better, ``<=`` it otherwise); ``None`` if no evaluation does.
- :func:`time_to_target`: the training time (evaluations excluded) at that evaluation;
  ``None`` if the target is never reached.
- :func:`best_value`: the best test metric over the evaluation curve.
- :func:`gap`: test loss minus training loss at the end (the training loss is the mean of the
  last 50 mini-batch losses, on the training labels as given, so noisy labels under a
  label-noise variant).

Across cells:

- :func:`spread`: max minus min (robustness over the base-LR grid); ``inf`` when any value is
  not finite (a diverged grid point), ``None`` with fewer than two values.
- :func:`seed_std`: sample standard deviation over seeds (``ddof=1``); ``None`` with fewer than
  two values, ``nan`` when any value is not finite.
- :func:`ranks`: 1 = best; ties share the mean of their positions; non-finite scores tie last.
- :func:`select`: the option whose score is best (validation metric); ties go to the first.
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def reached(value: float, target: float, higher: bool) -> bool:
    """Whether ``value`` is at least as good as ``target``."""
    if not finite(value):
        return False
    return value >= target if higher else value <= target


def _first_reached(values: Sequence[float], target: float, higher: bool) -> int | None:
    return next((i for i, v in enumerate(values) if reached(v, target, higher)), None)


def steps_to_target(steps: Sequence[int], values: Sequence[float], target: float,
                    higher: bool) -> int | None:
    """First step at which ``values`` reaches ``target``, or None if it never does."""
    i = _first_reached(values, target, higher)
    return None if i is None else int(steps[i])


def time_to_target(times: Sequence[float], values: Sequence[float], target: float,
                   higher: bool) -> float | None:
    """Time at the first evaluation that reaches ``target``, or None if none does."""
    i = _first_reached(values, target, higher)
    return None if i is None else float(times[i])


def best_value(values: Sequence[float], higher: bool) -> float:
    """The best finite value (nan if there is none)."""
    good = [v for v in values if finite(v)]
    if not good:
        return math.nan
    return max(good) if higher else min(good)


def gap(final: dict) -> float:
    """Final test loss minus final training loss."""
    return final["test_loss"] - final["train_loss"]


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; nan for no values (and whenever a value is nan)."""
    return math.fsum(values) / len(values) if values else math.nan


def seed_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation over seeds (see the module docstring)."""
    if len(values) < 2:
        return None
    if not all(finite(v) for v in values):
        return math.nan
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def spread(values: Sequence[float]) -> float | None:
    """Max minus min (see the module docstring)."""
    if len(values) < 2:
        return None
    if not all(finite(v) for v in values):
        return math.inf
    return max(values) - min(values)


def ranks(scores: dict[Hashable, float], higher: bool) -> dict[Hashable, float]:
    """Rank of each key by its score, 1 = best (see the module docstring)."""
    good = sorted((k for k in scores if finite(scores[k])),
                  key=lambda k: -scores[k] if higher else scores[k])
    out: dict[Hashable, float] = {}
    i = 0
    while i < len(good):
        j = i
        while j + 1 < len(good) and scores[good[j + 1]] == scores[good[i]]:
            j += 1
        for k in good[i:j + 1]:
            out[k] = (i + j) / 2 + 1
        i = j + 1
    bad = [k for k in scores if k not in out]
    for k in bad:
        out[k] = len(good) + (len(bad) + 1) / 2
    return out


def select(scores: dict[Hashable, float], higher: bool) -> Hashable | None:
    """The key with the best finite score (the first on ties); None if no score is finite."""
    best = None
    for key, value in scores.items():
        if finite(value) and (best is None or
                              (value > scores[best] if higher else value < scores[best])):
            best = key
    return best
