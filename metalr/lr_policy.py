"""The scheduler interface every metalr LR method shares; imports nothing else of metalr but errors.

:class:`LRPolicy` is a ``torch.optim.lr_scheduler.LRScheduler`` whose ``step`` also takes the
training loss (``ReduceLROnPlateau.step(metrics)`` is the precedent). Each param group's LR is
its ``initial_lr`` times :meth:`LRPolicy.multiplier`, as ``LambdaLR`` does, so groups keep their
ratio. The learned scheduler (:mod:`metalr.learned.scheduler`) and the hand policies
(:mod:`metalr.policies`) both build on it, so neither depends on the other.

:func:`as_loss` is the one place a loss given to a scheduler is checked: a finite or non-finite
real number, or a one-element real tensor; anything else raises :class:`MetalrError`.
"""

from __future__ import annotations

import numbers

import torch
from torch.optim.lr_scheduler import LRScheduler

from metalr.errors import MetalrError

ACCEPTED = "a real number (a Python or numpy float or int) or a one-element real tensor"


def as_loss(loss) -> float | torch.Tensor:
    """``loss`` checked: a float, or, for a tensor on an accelerator, a detached 0-d tensor.

    CPU tensors are read at once (by ``tolist()``, which reads a tensor that requires grad
    without ``item()``'s warning, at a third of ``detach().item()``'s cost); tensors on another
    device are returned unread, so that the caller decides when to pay for the host
    synchronisation. NaN and infinite values pass: what they mean is the scheduler's business.
    Raises :class:`MetalrError` for anything else, a tensor on the meta device (no value) too.
    """
    if type(loss) is float:  # the common case, first: a step must cost microseconds
        return loss
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise MetalrError(f"loss must be {ACCEPTED}, got a tensor of shape {tuple(loss.shape)}")
        if loss.is_cpu:
            value = (loss if loss.dim() == 0 else loss.reshape(())).tolist()
            if type(value) is float:
                return value
            if type(value) is int:  # an integer tensor
                return float(value)
            raise MetalrError(f"loss must be {ACCEPTED}, got a {loss.dtype} tensor")
        if loss.is_meta:
            raise MetalrError("loss must be a tensor with a value: this one is on the meta device, "
                              "which holds shapes only; pass the loss computed on a real device")
        if loss.is_complex() or loss.dtype == torch.bool:
            raise MetalrError(f"loss must be {ACCEPTED}, got a {loss.dtype} tensor")
        return loss.detach().reshape(())
    if isinstance(loss, bool) or not isinstance(loss, numbers.Real):  # numpy bools are not Real
        raise MetalrError(f"loss must be {ACCEPTED}, got {type(loss).__name__} {loss!r:.40}")
    try:
        return float(loss)
    except OverflowError:
        raise MetalrError(f"loss must be {ACCEPTED}; the int {loss} is too large for a float") from None


class LRPolicy(LRScheduler):
    """LR of group i = ``initial_lr_i * self.multiplier()``; ``step(loss=None)``.

    Subclasses implement :meth:`multiplier` from ``self.last_epoch`` (the number of completed
    steps) and, if they read the loss, :meth:`observe`. ``step(loss)`` checks the loss with
    :func:`as_loss` and hands it to ``observe`` before ``last_epoch`` advances, so
    ``step(loss)`` and ``observe(loss); step()`` are the same.
    """

    def observe(self, loss) -> None:
        """Take the training loss of the step just taken (ignored by fixed schedules)."""

    def multiplier(self) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        m = self.multiplier()
        return [base * m for base in self.base_lrs]

    def step(self, loss: float | torch.Tensor | None = None) -> None:
        """Advance one optimizer step; ``loss`` (optional) is the loss of the step just taken."""
        if loss is not None:
            loss = as_loss(loss)
            self.observe(loss if isinstance(loss, float) else loss.item())
        super().step()


def step_scheduler(scheduler, loss: float) -> None:
    """Advance any scheduler by one step: metalr's take the loss, torch's take nothing."""
    if isinstance(scheduler, LRPolicy):
        scheduler.step(loss)
    else:
        scheduler.step()
