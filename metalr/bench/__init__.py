"""``metalr bench``: an LRBench-style benchmark of LR policies, resumable, in parallel.

Modules, one idea each: :mod:`~metalr.bench.plan` (the configuration and its cells),
:mod:`~metalr.bench.worker` (one cell in a worker process), :mod:`~metalr.bench.runner`
(the process pool and progress), :mod:`~metalr.bench.store` (the SQLite results store),
:mod:`~metalr.bench.metrics` (the metrics as functions of curves),
:mod:`~metalr.bench.summary` (selection on validation, targets, ranks),
:mod:`~metalr.bench.report` and :mod:`~metalr.bench.plots` (markdown, CSV, PNG),
:mod:`~metalr.bench.wandb_log` (``--wandb``).

From Python::

    from metalr.bench import BenchConfig, run_bench, write_report
    run_bench(BenchConfig(tasks=["mnist1d-mlp"], policies=["cosine", "knee"], seeds=3))
"""

from __future__ import annotations

from pathlib import Path

from metalr.bench.plan import BenchConfig, expand, load_config
from metalr.bench.report import write_report
from metalr.bench.runner import run_cells
from metalr.bench.store import Store
from metalr.errors import MetalrError


def _merged(old: dict, new: dict) -> dict:
    """The store's configuration after one more bench: task and policy lists are unions."""
    out = {**old, **new}
    for key in ("tasks", "policies"):
        out[key] = list(dict.fromkeys([*old.get(key, []), *new.get(key, [])]))
    out["notes"] = {**old.get("notes", {}), **new.get("notes", {})}
    return out


def run_bench(config: BenchConfig, progress: bool = True, use_wandb: bool = False,
              wandb_project: str = "metalr", wandb_group: str | None = None,
              command: str | None = None) -> dict:
    """Run the cells of ``config`` that its store lacks, then write the report of its cells
    (the store may hold more: ``metalr report`` reports them all).

    Returns ``{"counts": {total, skipped, ran, errors}, "report": {name: path}}``.
    """
    config.check_outputs()
    cells = expand(config)
    with Store(config.store) as store:
        stored = store.fingerprints()
        for cell in cells:
            other = stored.get(cell.policy, set()) - {cell.fingerprint}
            if other:
                raise MetalrError(
                    f"{config.store} holds results of {cell.policy!r} made with another "
                    "checkpoint (its SHA-256 differs); use a new --store for this checkpoint")
        store.set_meta("config", _merged(store.get_meta("config", {}), config.to_dict()))
        if command:
            store.set_meta("command", command)
        logger = None
        if use_wandb:
            from metalr.bench.wandb_log import WandbCells

            logger = WandbCells(wandb_project, wandb_group or f"bench-{Path(config.store).stem}",
                                config.out)
        counts = run_cells(cells, store, config.workers, progress=progress, on_record=logger)
    report = write_report(config.store, config.out, config.target_policy,
                          {(c.task, c.policy, c.scale, c.seed) for c in cells})
    return {"counts": counts, "report": report}


__all__ = ["BenchConfig", "Store", "expand", "load_config", "run_bench", "run_cells",
           "write_report"]
