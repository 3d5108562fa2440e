"""Feeding :class:`~metalr.learned.scheduler.MetaLRScheduler` the loss inside training frameworks.

Frameworks step a scheduler with no argument; these adapters hand the scheduler each
optimizer step's training loss (:meth:`MetaLRScheduler.observe`) before that call:

- :mod:`metalr.integrations.lightning`: ``MetaLRCallback``, a PyTorch Lightning callback
  (``pip install metalr[lightning]``);
- :mod:`metalr.integrations.hf`: ``MetaLRTrainerMixin``, for the Hugging Face ``Trainer``
  (``pip install metalr[hf]``).

Each module imports its framework when imported itself, and says which extra to install when
the framework is missing. ``docs/integrations.md`` has the tested recipes.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from metalr.errors import MetalrError
from metalr.learned.scheduler import MetaLRScheduler


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise MetalrError naming ``pip install metalr[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MetalrError(
            f"metalr.integrations.{extra} needs {module.split('.')[0]}, which is not installed "
            f"({err}); install it with: pip install 'metalr[{extra}]'") from None


def meta_schedulers(scheduler) -> list[MetaLRScheduler]:
    """The MetaLRSchedulers in ``scheduler``, looking inside ChainedScheduler / SequentialLR."""
    if isinstance(scheduler, MetaLRScheduler):
        return [scheduler]
    return [s for inner in getattr(scheduler, "_schedulers", ()) for s in meta_schedulers(inner)]
