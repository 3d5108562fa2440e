"""The scheduler interface every metalr LR method shares; imports nothing else of metalr.

:class:`LRPolicy` is a ``torch.optim.lr_scheduler.LRScheduler`` whose ``step`` also takes the
training loss (``ReduceLROnPlateau.step(metrics)`` is the precedent). Each param group's LR is
its ``initial_lr`` times :meth:`LRPolicy.multiplier`, as ``LambdaLR`` does, so groups keep their
ratio. The learned scheduler (:mod:`metalr.learned.scheduler`) and the hand policies
(:mod:`metalr.policies`) both build on it, so neither depends on the other.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler


class LRPolicy(LRScheduler):
    """LR of group i = ``initial_lr_i * self.multiplier()``; ``step(loss=None)``.

    Subclasses implement :meth:`multiplier` from ``self.last_epoch`` (the number of completed
    steps) and, if they read the loss, :meth:`observe`. ``observe`` is called with the loss of
    the step just taken, before ``last_epoch`` advances.
    """

    def observe(self, loss: float | None) -> None:
        """Take the training loss of the step just taken (ignored by fixed schedules)."""

    def multiplier(self) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        m = self.multiplier()
        return [base * m for base in self.base_lrs]

    def step(self, loss: float | torch.Tensor | None = None) -> None:
        if loss is not None:
            self.observe(float(loss))
        super().step()


def step_scheduler(scheduler, loss: float) -> None:
    """Advance any scheduler by one step: metalr's take the loss, torch's take nothing."""
    if isinstance(scheduler, LRPolicy):
        scheduler.step(loss)
    else:
        scheduler.step()
