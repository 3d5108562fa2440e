"""``metalr bench --wandb``: each stored cell becomes one wandb run, all in one group.

The parent process logs a cell right after storing it, from its record: the evaluation curves
(``val/*``, ``test/*`` and ``lr`` against the training step) and the final figures in the run
summary; wandb's files go to ``wandb/`` in the report directory. The mode is chosen once,
before the first ``wandb.init``, by :func:`metalr.runlog.wandb_mode` (offline without a key or
network; ``WANDB_MODE`` wins), so nothing blocks. An online init that fails anyway falls back to offline for the rest of the
bench and says so (:func:`metalr.runlog.init_run`); offline, where the runs are and how to upload
them is printed once. Any other wandb failure warns once and turns wandb off for the rest of
the bench; the store and the report never depend on it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


class WandbCells:
    """Logs records as runs of ``group`` in ``project``; ``self.mode`` is the chosen mode."""

    def __init__(self, project: str, group: str, folder: str | Path):
        self.project = project
        self.group = group
        self.folder = Path(folder)
        self.mode = None
        self.wandb = None
        self.announced = False  # the offline location is printed once per bench
        try:
            import wandb

            from metalr.runlog import wandb_mode

            self.mode = wandb_mode()
            self.wandb = wandb
        except Exception as err:  # a missing package or a broken install: warn, go on
            self._fail(f"wandb is unavailable ({err}); install metalr[wandb]")

    def _fail(self, message: str) -> None:
        warnings.warn(f"{message}; results are stored locally only", stacklevel=3)
        self.wandb = None

    def __call__(self, record: dict) -> None:
        if self.wandb is None:
            return
        try:
            self._log(record)
        except Exception as err:  # wandb must never stop a bench
            self._fail(f"wandb logging failed in {self.mode} mode ({err})")

    def _log(self, record: dict) -> None:
        name = f"{record['task']}|{record['policy']}|x{record['scale']:g}|s{record['seed']}"
        config = {k: record.get(k) for k in ("task", "policy", "scale", "seed", "category",
                                             "base_lr", "optimizer", "total_steps",
                                             "fingerprint")}
        from metalr.runlog import init_run, sync_hint

        self.folder.mkdir(parents=True, exist_ok=True)
        run, self.mode = init_run(self.wandb, self.mode, project=self.project, group=self.group,
                                  name=name, config=config, dir=self.folder)
        if self.mode == "offline" and not self.announced:
            folder = Path(run.settings.sync_dir).parent
            print(sync_hint(f"{folder}/offline-run-*"), file=sys.stderr, flush=True)
            self.announced = True
        curves = record.get("curves", {})
        rows: dict[int, dict] = {}
        for step, lr, loss in zip(curves.get("lr_step", []), curves.get("lr", []),
                                  curves.get("train_loss", [])):
            rows.setdefault(step, {}).update({"lr": lr, "train/loss": loss})
        for i, step in enumerate(curves.get("eval_step", [])):
            rows.setdefault(step, {}).update({f"{split}/{kind}": curves[f"{split}_{kind}"][i]
                                              for split in ("val", "test")
                                              for kind in ("loss", "metric")})
        for step in sorted(rows):
            run.log(rows[step], step=step)
        run.summary.update({"status": record["status"], "wall_time": record.get("wall_time"),
                            **{f"final/{k}": v for k, v in record.get("final", {}).items()}})
        run.finish()
