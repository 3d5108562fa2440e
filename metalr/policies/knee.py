"""The explore-exploit "Knee" schedule.

Paper: N. Iyer, V. Thejas, N. Kwatra, R. Ramjee, M. Sivathanu, "Wide-minima Density Hypothesis
and the Explore-Exploit Learning Rate Schedule", JMLR 24 (2023).

Rule. Steps are counted ``s = 1..T`` (``s = last_epoch + 1``: the first optimizer step is
``s = 1``). With warmup ``W`` steps (default 0), explore ``E = round(explore * T)`` steps and
decay ``D = T - W - E`` steps (it must not be negative), the LR of each param group is its
``initial_lr`` ("peak") times

- warmup  (s <= W):           s / W
- explore (W < s <= W + E):   1
- exploit (s > W + E):        max(0, 1 - (s - W - E) / D)

so the last step of the budget runs at LR 0. The explore fraction is the schedule's one
hyperparameter; the authors' default is half the budget. They report, at the full budget,
ImageNet ResNet-50 76.71% against 75.87% for the baseline schedule and 76.41% for cosine.
"""

from __future__ import annotations

from metalr.policies.lrbench import Formula
from metalr.policies.params import check, number, steps


class Knee(Formula):
    """Warmup, then explore at the peak LR for ``explore * T`` steps, then linear decay to 0."""

    def __init__(self, optimizer, total_steps, *, explore=0.5, warmup=0, last_epoch=-1):
        self.explore = number("explore", explore, 0, 1)
        self.warmup = steps("warmup", warmup, minimum=0)
        self.total = steps("total_steps", total_steps)
        self.explore_steps = round(self.explore * self.total)
        self.decay_steps = self.total - self.warmup - self.explore_steps
        check(self.decay_steps >= 0,
              f"knee: warmup ({self.warmup}) + explore ({self.explore} x {self.total} = "
              f"{self.explore_steps} steps) exceeds the budget of {self.total} steps")
        super().__init__(optimizer, last_epoch)

    def at(self, t):
        s = t + 1
        w, e, d = self.warmup, self.explore_steps, self.decay_steps
        if s <= w:
            return s / w
        if s <= w + e:
            return 1.0
        if d == 0:
            return 0.0
        return max(0.0, 1 - (s - w - e) / d)
