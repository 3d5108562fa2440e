"""The learned schedule: a schedule network, its features, its checkpoints and its scheduler.

- :mod:`~metalr.learned.features`: the versioned input schemas (``loss-v1``, ``transfer-v1``,
  ``hyper-v2`` to ``hyper-v5``);
- :mod:`~metalr.learned.network`: the MLR-SNet-style LSTM cell (torch and numpy);
- :mod:`~metalr.learned.checkpoint`: safetensors + JSON checkpoints, shipped ones by name;
- :mod:`~metalr.learned.scheduler`: :class:`MetaLRScheduler`, the drop-in LR scheduler;
- :mod:`metalr.learned.train`: meta-training (exact unrolled gradients and ES over whole runs,
  and the ``higher`` lookahead).
  Nothing here imports it.
"""

from metalr.learned.checkpoint import DEFAULT_CHECKPOINT, list_pretrained, load, save
from metalr.learned.network import CONFIGS, NetConfig, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler

__all__ = ["CONFIGS", "DEFAULT_CHECKPOINT", "MetaLRScheduler", "NetConfig", "ScheduleNet",
           "list_pretrained", "load", "save"]
