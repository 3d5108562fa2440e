"""An LRTuner-style online tuner: explore at the highest LR that keeps the loss improving, then
exploit by decaying.

Paper: N. Iyer, V. Thejas, N. Kwatra, R. Ramjee, M. Sivathanu, "LRTuner: A Learning Rate Tuner
for Deep Neural Networks", arXiv 2105.14526 (2021). Only the abstract is available to us: it
tunes the LR online as training proceeds, for any optimizer, following the explore-exploit idea
(explore at a high LR to find wide minima, then exploit). The rule below is OUR OWN DESIGN in
that spirit, not the authors' algorithm, and is not claimed to reproduce their numbers.

Rule. The tuner reads the training loss of every step and averages it over windows of ``w``
steps (default ``ceil(T/50)``). Let ``m_k`` be the mean of window ``k`` and ``c`` the LR
multiplier (of each group's ``initial_lr``; it starts at 1, so the base LR is the starting LR).

Explore, at the end of each window:

1. after the first window, probe: ``c <- c * up`` (default ``up = 1.5``);
2. if the window just run followed a probe and ``m_k >= m_{k-1}`` (the loss stopped improving
   at the raised LR), back off: ``c <- c / up``, and never probe above this ``c`` again;
3. else, if ``m_k < m_{k-1}`` and ``c * up`` is not above that ceiling, probe again;
4. else count a stall when ``m_k >= m_{k-1}`` (reset the count when the loss improves).

Exploration ends after ``patience`` consecutive stalls (default 3) or at ``explore * T`` steps
(default 0.5, Knee's default), whichever comes first. Exploit: from the step ``t0`` where it
ends, the multiplier decays linearly from its explore value ``c`` to 0 at the end of the
budget: ``c * (1 - (t - t0) / (T - t0))``.

Cost: no extra forward or backward passes (every probe is an ordinary training step, only at a
different LR), O(1) work and memory per step (a running window sum and a few scalars). What a
too-high probe costs is at most one window at a LR ``up`` times above the best one found.
"""

from __future__ import annotations

import math

from metalr.policies.params import budget_part, number, resolve, steps
from metalr.policies.state import StatefulPolicy


class LRTuner(StatefulPolicy):
    """Explore at the highest LR that keeps the windowed loss improving, then decay linearly."""

    def __init__(self, optimizer, total_steps, *, window=budget_part(50), up=1.5, patience=3,
                 explore=0.5):
        self.total = steps("total_steps", total_steps)
        self.window = steps("window", resolve(window, total_steps))
        self.up = number("up", up, 1, low_open=True)
        self.patience = steps("patience", patience)
        self.explore = number("explore", explore, 0, 1)
        self.mult = 1.0
        self.ceiling = math.inf
        self.exploring = True
        self.exploit_from = self.total
        self.window_sum = 0.0
        self.window_count = 0
        self.previous: float | None = None
        self.probed = False
        self.stalls = 0
        super().__init__(optimizer)

    def observe(self, loss):
        if not self.exploring:
            return
        self.window_sum += loss if math.isfinite(loss) else math.inf
        self.window_count += 1
        if self.window_count == self.window:
            mean = self.window_sum / self.window_count
            self.window_sum, self.window_count = 0.0, 0
            self._decide(mean, self.last_epoch + 1)

    def _decide(self, mean: float, next_step: int) -> None:
        improving = self.previous is not None and mean < self.previous
        if self.probed and not improving:
            self.mult /= self.up
            self.ceiling = self.mult
            self.probed = False
        elif (self.previous is None or improving) and self.mult * self.up <= self.ceiling:
            self.mult *= self.up
            self.probed = True
            self.stalls = 0
        else:
            self.probed = False
            self.stalls = 0 if improving else self.stalls + 1
        self.previous = mean
        if self.stalls >= self.patience or next_step >= self.explore * self.total:
            self.exploring = False
            self.exploit_from = next_step

    def multiplier(self) -> float:
        if self.exploring or self.last_epoch < self.exploit_from:
            return self.mult
        left = self.total - self.exploit_from
        if left <= 0:
            return 0.0
        return self.mult * max(0.0, 1 - (self.last_epoch - self.exploit_from) / left)
