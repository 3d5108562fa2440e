"""PyTorch's own schedulers behind metalr's interface: cosine, linear, one-cycle, SGDR, plateau.

Papers: cosine annealing and warm restarts (SGDR), I. Loshchilov & F. Hutter, ICLR 2017;
one-cycle, L. N. Smith & N. Topin, "Super-Convergence", 2019; linear decay and
reduce-on-plateau are folklore (torch's ``LinearLR`` and ``ReduceLROnPlateau``).

Rule: whatever ``torch.optim.lr_scheduler`` computes; these classes do not re-implement it.
:class:`TorchSchedule` builds torch's scheduler on the same optimizer, steps it once per
optimizer step, and reports the param groups' LRs, so ``step(loss)`` works for all of metalr's
policies alike (a torch scheduler's ``step`` would read a loss as a deprecated epoch number).
Budget-dependent defaults: cosine and linear decay span the run (``T_max = total_iters = T``),
one-cycle's ``total_steps = T`` with its peak at each group's LR, and SGDR's first period is
``ceil(T/7)`` so that with ``T_mult = 2`` three cycles (1 + 2 + 4 periods) fill the budget.

Reduce-on-plateau is fed the training loss. A single mini-batch loss is too noisy to call a
plateau, so the loss averaged over ``window`` steps (default ``ceil(T/50)``) is what torch's
scheduler sees as one "epoch"; ``patience`` counts such windows.
"""

from __future__ import annotations

import torch

from metalr.errors import MetalrError
from metalr.policies.params import budget_part, flag, number, resolve, steps
from metalr.policies.state import StatefulPolicy



class TorchSchedule(StatefulPolicy):
    """Delegates to a ``torch.optim.lr_scheduler`` object built by :meth:`build`."""

    children = ("inner",)

    def __init__(self, optimizer):
        try:
            self.inner = self.build(optimizer)
        except ValueError as err:
            raise MetalrError(f"{type(self).__name__.lower()}: {err}") from None
        self._started = False
        super().__init__(optimizer)

    def build(self, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        raise NotImplementedError

    def step(self, loss=None) -> None:
        if loss is not None:
            self.observe(float(loss))
        if self._started:
            self.advance()
        self._started = True
        self.last_epoch += 1
        self._last_lr = self.get_lr()

    def advance(self) -> None:
        """Step the torch scheduler once (after one optimizer step)."""
        self.inner.step()

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


class Cosine(TorchSchedule):
    """torch ``CosineAnnealingLR(T_max=T, eta_min)``."""

    def __init__(self, optimizer, total_steps, *, eta_min=0.0):
        self.T_max = steps("total_steps", total_steps)
        self.eta_min = number("eta_min", eta_min, 0)
        super().__init__(optimizer)

    def build(self, optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.T_max,
                                                          eta_min=self.eta_min)


class Linear(TorchSchedule):
    """torch ``LinearLR``: factor ``start_factor`` -> ``end_factor`` over the budget."""

    def __init__(self, optimizer, total_steps, *, start_factor=1.0, end_factor=0.0):
        self.total_iters = steps("total_steps", total_steps)
        self.start_factor = number("start_factor", start_factor, 0, 1, low_open=True)
        self.end_factor = number("end_factor", end_factor, 0, 1)
        super().__init__(optimizer)

    def build(self, optimizer):
        return torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=self.start_factor, end_factor=self.end_factor,
            total_iters=self.total_iters)


class OneCycle(TorchSchedule):
    """torch ``OneCycleLR`` peaking at each group's LR, over ``total_steps = T``."""

    def __init__(self, optimizer, total_steps, *, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4, cycle_momentum=True):
        self.total_steps = steps("total_steps", total_steps)
        self.pct_start = number("pct_start", pct_start, 0, 1, low_open=True, high_open=True)
        self.div_factor = number("div_factor", div_factor, 0, low_open=True)
        self.final_div_factor = number("final_div_factor", final_div_factor, 0, low_open=True)
        self.cycle_momentum = flag("cycle_momentum", cycle_momentum)
        super().__init__(optimizer)

    def build(self, optimizer):
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=self.total_steps, pct_start=self.pct_start, div_factor=self.div_factor,
            final_div_factor=self.final_div_factor, cycle_momentum=self.cycle_momentum)


class SGDR(TorchSchedule):
    """torch ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)``."""

    def __init__(self, optimizer, total_steps, *, T_0=budget_part(7), T_mult=2, eta_min=0.0):
        self.T_0 = steps("T_0", resolve(T_0, total_steps))
        self.T_mult = steps("T_mult", T_mult)
        self.eta_min = number("eta_min", eta_min, 0)
        super().__init__(optimizer)

    def build(self, optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=self.T_0, T_mult=self.T_mult, eta_min=self.eta_min)


class Plateau(TorchSchedule):
    """torch ``ReduceLROnPlateau`` fed the training loss averaged over ``window`` steps."""

    def __init__(self, optimizer, total_steps, *, factor=0.1, patience=10, threshold=1e-4,
                 window=budget_part(50)):
        self.factor = number("factor", factor, 0, 1, low_open=True, high_open=True)
        self.patience = steps("patience", patience, minimum=0)
        self.threshold = number("threshold", threshold, 0)
        self.window = steps("window", resolve(window, total_steps))
        self.losses: list[float] = []
        super().__init__(optimizer)

    def build(self, optimizer):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.factor, patience=self.patience, threshold=self.threshold)

    def observe(self, loss):
        self.losses.append(loss)

    def step(self, loss=None) -> None:
        if self._started and loss is None:
            raise MetalrError("plateau: step(loss) needs the training loss of the step just taken")
        super().step(loss)

    def advance(self):
        if len(self.losses) >= self.window:
            self.inner.step(sum(self.losses) / len(self.losses))
            self.losses.clear()


SCHEDULES = {
    "cosine": (Cosine, "torch CosineAnnealingLR over the whole run (T_max = T)"),
    "linear": (Linear, "torch LinearLR: linear decay from the base LR to 0 over the run"),
    "onecycle": (OneCycle, "torch OneCycleLR: warm up to the base LR, anneal far below it"),
    "sgdr": (SGDR, "torch CosineAnnealingWarmRestarts (SGDR): cosine cycles with restarts"),
    "plateau": (Plateau, "torch ReduceLROnPlateau fed the windowed training loss"),
}
