"""An ExpTest-style tuner: hypothesis tests on the loss curve pick and lower the LR.

Paper: Z. Chaudhry, N. Mizuno, "ExpTest: Automating Learning Rate Searching and Tuning with
Insights from Linearized Neural Networks", arXiv 2411.16975 (2024). Only the abstract and a
summary are available to us: for a linearised network trained below the stability bound
``eta < 2 / lambda_max`` the (expected) loss decays exponentially, so "is the recent loss curve
still an exponential decay?" is a hypothesis test that can (a) search the initial LR and (b)
lower it during training, with no schedule. Its figures use alpha = 0.05 and beta = 0.33. The
rule below is OUR OWN DESIGN in that spirit, not the authors' algorithm.

Test. For losses ``L_1..L_n`` fit ``log L_i = a + b * i`` by least squares. An exponential
decay is a line of negative slope in log space. With residual variance
``s^2 = SSR / (n - 2)`` and ``se(b) = s / sqrt(sum_i (i - mean i)^2)``, the one-sided p-value of
``H0: b >= 0`` (no decay) is ``P(T_{n-2} <= b / se(b))`` for Student's t with ``n - 2`` degrees
of freedom. The curve "is decaying" when ``p < alpha``; a non-finite loss fails it.

Rule. ``c`` is the LR multiplier of each group's ``initial_lr`` (start from a LR you know is
small enough; the search only multiplies it).

(a) Search: run ``probe`` steps (default 20) at ``c`` and test them. While the test accepts
    decay, ``c <- c * growth`` (default 2). A probe is rejected when the log-loss rises
    significantly (``p > 1 - alpha``), or when it is still inconclusive after 4 probe lengths
    (an inconclusive probe keeps running at the same ``c``, tested again on all its losses
    after every further ``probe`` steps, so a slow or noisy decay gets the data it needs). At
    the first rejection back off, ``c <- c / growth``, and keep backing off by ``growth`` after
    every rejected probe; the first accepted probe after a back-off ends the search, and its
    ``c`` is ``found``. The search also ends after ``search * T`` steps (default 0.25), keeping
    the last accepted ``c``.
(b) Training: every ``window`` steps (default ``ceil(T/20)``) test the losses of that window;
    when the test does not accept decay (the curve has stopped decaying), ``c <- beta * c``
    (default 0.33).

A spike ends a probe or window early and counts as a rejection: a loss that is not finite or
exceeds 4 times the larger of the window's first loss and the previous window's mean loss.
(Mini-batch noise stays well under that: on MNIST-1D at a constant LR no batch loss exceeds
twice the previous window's mean; a step above the stability bound grows it geometrically.)

Cost: no extra forward or backward passes. The search is part of training: about
``probe * log_growth(found)`` steps plus the back-off probes, more when probes are extended. A
probe above the stability bound pushes the loss up for at most ``probe`` steps, and for two
when the loss spikes. One least-squares fit of ``n`` points per ``n`` steps: O(1) work per step
and O(n) memory.
"""

from __future__ import annotations

import math

from metalr.policies.params import budget_part, number, resolve, steps
from metalr.policies.state import StatefulPolicy

SPIKE = 4.0
LOOKS = 4


def decay_p_value(losses: list[float]) -> float:
    """One-sided p-value of ``H0: slope of log-loss >= 0``; small means "still decaying"."""
    n = len(losses)
    if n < 3 or not all(math.isfinite(v) for v in losses):
        return 1.0
    from scipy.stats import t as student_t

    ys = [math.log(max(v, 1e-300)) for v in losses]
    x_mean, y_mean = (n - 1) / 2, sum(ys) / n
    sxx = sum((i - x_mean) ** 2 for i in range(n))
    slope = sum((i - x_mean) * (y - y_mean) for i, y in enumerate(ys)) / sxx
    ssr = sum((y - y_mean - slope * (i - x_mean)) ** 2 for i, y in enumerate(ys))
    se = math.sqrt(ssr / (n - 2) / sxx)
    if se == 0:
        return 0.0 if slope < 0 else 1.0
    return float(student_t.cdf(slope / se, n - 2))


class ExpTest(StatefulPolicy):
    """Search the LR by growing it while the loss decays exponentially; cut it by beta when not."""

    def __init__(self, optimizer, total_steps, *, alpha=0.05, beta=0.33, growth=2.0, probe=20,
                 window=budget_part(20), search=0.25):
        self.total = steps("total_steps", total_steps)
        self.alpha = number("alpha", alpha, 0, 1, low_open=True, high_open=True)
        self.beta = number("beta", beta, 0, 1, low_open=True, high_open=True)
        self.growth = number("growth", growth, 1, low_open=True)
        self.probe = steps("probe", probe, minimum=3)
        self.window = steps("window", resolve(window, total_steps), minimum=3)
        self.search = number("search", search, 0, 1)
        self.mult = 1.0
        self.searching = self.search > 0
        self.backed_off = False
        self.accepted: float | None = None
        self.found: float | None = None if self.searching else 1.0
        self.search_steps = 0
        self.cuts = 0
        self.losses: list[float] = []
        self.reference = self.previous_mean = 0.0
        super().__init__(optimizer)

    @property
    def found_lrs(self) -> list[float] | None:
        """Each group's LR chosen by the search (None while it runs)."""
        return None if self.found is None else [base * self.found for base in self.base_lrs]

    def observe(self, loss):
        if not self.losses:
            self.reference = max(loss, self.previous_mean)
        self.losses.append(loss)
        n = len(self.losses)
        if not loss <= SPIKE * self.reference:
            decaying = False
        elif n % (self.probe if self.searching else self.window):
            return
        else:
            p = decay_p_value(self.losses)
            decaying = p < self.alpha
            if self.searching and not decaying and p <= 1 - self.alpha and n < LOOKS * self.probe:
                return
            self.previous_mean = sum(self.losses) / n
        self.losses = []
        if self.searching:
            self._search(decaying, self.last_epoch + 1)
        elif not decaying:
            self.mult *= self.beta
            self.cuts += 1

    def _search(self, decaying: bool, next_step: int) -> None:
        if decaying:
            self.accepted = self.mult
            if self.backed_off:
                self._end_search(next_step)
                return
            self.mult *= self.growth
        else:
            self.backed_off = True
            self.mult /= self.growth
        if next_step >= self.search * self.total:
            if self.accepted is not None:
                self.mult = self.accepted
            self._end_search(next_step)

    def _end_search(self, next_step: int) -> None:
        self.searching = False
        self.found = self.mult
        self.search_steps = next_step

    def multiplier(self) -> float:
        return self.mult
