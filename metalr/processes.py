"""Worker processes that use one thread and die with the process that started them.

Used by the bench's pool and the ES meta-trainer's processes: a SIGKILLed parent must not leave
workers training on for minutes.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time

import torch


def init_worker(parent_pid: int) -> None:
    """Initializer of a worker process: one thread, so K workers use K cores; and the worker
    dies with the process ``parent_pid`` (the bench, the ES lead), however that dies.

    Python's pool does not ensure the latter: a worker blocked on the task queue holds a write
    end of that queue's pipe itself, so it never sees EOF, and one mid-cell trains to the end;
    both outlive a SIGKILLed bench (observed for minutes). So: ``PR_SET_PDEATHSIG`` (Linux) kills
    the worker when its parent dies (the forkserver, or the bench under ``spawn``), and a
    watcher thread kills it when the bench process exits (a pidfd becomes readable; polling
    where there are no pidfds).
    """
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    _die_with_parent()
    threading.Thread(target=_exit_when_gone, args=(parent_pid,), daemon=True,
                     name="metalr-watch-parent").start()


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _exit_when_gone(pid: int) -> None:
    try:
        select.select([os.pidfd_open(pid)], [], [])  # readable once the process has exited
    except ProcessLookupError:  # already gone
        pass
    except (AttributeError, OSError):  # no pidfds here (not Linux, or a kernel before 5.3): poll
        while _alive(pid):
            time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True
