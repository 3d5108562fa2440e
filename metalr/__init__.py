"""metalr: meta-learned learning-rate schedules for PyTorch."""

__version__ = "0.1.0"

from metalr.checkpoint import list_pretrained
from metalr.errors import MetalrError
from metalr.policies import get_policy, list_policies, make_policy
from metalr.scheduler import MetaLRScheduler
from metalr.tasks import Task, get_task, list_tasks
from metalr.trainer import TrainResult, train

__all__ = ["MetaLRScheduler", "MetalrError", "Task", "TrainResult", "get_policy", "get_task", "list_policies",
           "list_pretrained", "list_tasks", "make_policy", "train"]
