"""metalr: meta-learned learning-rate schedules for PyTorch."""

__version__ = "0.1.0"

from metalr.errors import MetalrError
from metalr.tasks import Task, get_task, list_tasks
from metalr.trainer import TrainResult, train

__all__ = ["MetalrError", "Task", "TrainResult", "get_task", "list_tasks", "train"]
