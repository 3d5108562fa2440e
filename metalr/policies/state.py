"""Checkpointing for policies that keep history or hold other schedulers.

``LRScheduler.state_dict`` returns the scheduler's ``__dict__`` by reference, which is fine for
scalars but not for the loss windows the online tuners append to (a saved dict would keep
changing) nor for wrapped schedulers (which hold the optimizer). :class:`StatefulPolicy` copies
its state and nests the ``state_dict`` of every scheduler named in ``children``.
"""

from __future__ import annotations

import copy

from metalr.lr_policy import LRPolicy


class StatefulPolicy(LRPolicy):
    """An :class:`LRPolicy` whose state dict is a deep copy, with child schedulers nested.

    ``children`` names attributes holding a scheduler or a list of schedulers; they are saved
    as their own ``state_dict`` and restored into the existing objects.
    """

    children: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        skip = {"optimizer", *self.children}
        state = copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in skip})
        for name in self.children:
            held = getattr(self, name)
            state[name] = ([s.state_dict() for s in held] if isinstance(held, list)
                           else held.state_dict())
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        for name in self.children:
            held, saved = getattr(self, name), state.pop(name)
            if isinstance(held, list):
                for sched, sub in zip(held, saved, strict=True):
                    sched.load_state_dict(sub)
            else:
                held.load_state_dict(saved)
        self.__dict__.update(copy.deepcopy(state))
