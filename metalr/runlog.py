"""Local run logs (always) and Weights & Biases (behind a flag, never blocking).

Every row goes to ``metrics.csv`` in the run directory. With ``use_wandb`` the same rows go to
wandb too. The wandb mode is decided before ``wandb.init``: ``offline`` unless an API key is
configured *and* the wandb host answers a TCP probe within two seconds (an ``online`` init
with no network blocks for about 90 s before failing); ``WANDB_MODE`` set by the user wins.
An ``online`` init that fails anyway (a bad key, an unreachable or bogus host) falls back to
``offline`` and says so. wandb's files go to ``wandb/`` beside the CSV, in the run directory;
where offline runs are, and the ``wandb sync`` command that uploads them later, is printed.
Any other wandb failure is reported once and the run goes on with local logs.
"""

from __future__ import annotations

import csv
import os
import socket
import sys
import warnings
from pathlib import Path
from urllib.parse import urlparse


def wandb_mode() -> str:
    """``online`` only with a key and a reachable host; otherwise ``offline``."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    import wandb

    try:
        key = os.environ.get("WANDB_API_KEY") or wandb.Api(timeout=2).api_key
    except Exception:  # no key configured, or a malformed netrc: offline either way
        key = None
    if not key:
        return "offline"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        socket.create_connection((host, 443), timeout=2).close()
    except OSError:
        return "offline"
    return "online"


class RunLog:
    """Appends rows with fixed ``columns`` to ``<dir>/metrics.csv``; mirrors them to wandb."""

    def __init__(self, path: Path, columns: list[str], use_wandb: bool = False,
                 project: str = "metalr", config: dict | None = None, name: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = columns
        self._fh = open(self.path, "w", newline="")
        self._csv = csv.DictWriter(self._fh, fieldnames=columns)
        self._csv.writeheader()
        self.wandb = None
        if use_wandb:
            self.wandb = _init_wandb(project, config or {}, name, self.path.parent)

    def log(self, row: dict, mirror: bool = True) -> None:
        """Append ``row``; ``mirror=False`` keeps it out of wandb (rows replayed on resume)."""
        self._csv.writerow({k: row.get(k, "") for k in self.columns})
        self._fh.flush()
        if mirror and self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))})

    def close(self) -> None:
        self._fh.close()
        if self.wandb is not None:
            self.wandb.finish()


def init_run(wandb, mode: str, **kwargs):
    """``wandb.init(mode=mode, **kwargs)``, falling back to offline when online fails.

    Returns ``(run, mode)``, the mode the run got; raises what an offline init raises.
    """
    settings = wandb.Settings(init_timeout=30, silent=True)
    try:
        return wandb.init(mode=mode, settings=settings, **kwargs), mode
    except Exception as err:  # a bad key or host: offline logging still keeps the run
        if mode != "online":
            raise
        warnings.warn(f"wandb could not start online ({' '.join(str(err).split())[:200]}); "
                      "falling back to offline logging", stacklevel=3)
    return wandb.init(mode="offline", settings=settings, **kwargs), "offline"


def sync_hint(path) -> str:
    """Where offline wandb data is and how to upload it."""
    return f"wandb: offline run data in {path}; upload it with: wandb sync {path}"


def _init_wandb(project: str, config: dict, name: str | None, folder: Path):
    try:
        import wandb
    except ImportError:
        warnings.warn("--wandb needs the wandb package (pip install metalr[wandb]); "
                      "logging locally only", stacklevel=3)
        return None
    mode = wandb_mode()
    try:
        run, mode = init_run(wandb, mode, project=project, config=config, name=name, dir=folder)
    except Exception as err:  # wandb must never stop a run
        warnings.warn(f"wandb.init failed in {mode} mode ({err}); logging locally only", stacklevel=3)
        return None
    if mode == "offline":
        print(sync_hint(run.settings.sync_dir), file=sys.stderr, flush=True)
    return run
