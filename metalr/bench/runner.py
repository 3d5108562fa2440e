"""Parallel execution of a bench: worker processes train, the parent stores each result at once.

Cells that the store already holds (status ``ok`` or ``diverged``) are skipped, so re-running
a command resumes it. The others go to a process pool (one thread per worker) whose workers
are forked from a ``forkserver`` that has imported torch and metalr once, so starting or
restarting workers is quick (``spawn`` where there is no forkserver, on Windows); as each finishes, the parent writes it to the store in one transaction and advances
the progress bar. A run killed at any moment therefore loses only the cells in flight, and its
workers die with it (see :func:`metalr.processes.init_worker`).

If a worker process dies (killed, out of memory), Python's pool breaks and every unfinished
cell fails with ``BrokenProcessPool``; the runner then starts a fresh pool for the cells not
yet stored, up to :data:`MAX_POOL_RESTARTS` times, after which it stops with a message (the
finished cells stay stored; rerunning continues).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from typing import Callable

from tqdm.auto import tqdm

from metalr.bench.plan import Cell
from metalr.bench.store import Store
from metalr.bench.worker import run_cell
from metalr.processes import init_worker
from metalr.errors import MetalrError

MAX_POOL_RESTARTS = 3


def _label(record: dict) -> str:
    return f"{record['task']} | {record['policy']} | x{record['scale']:g} | seed {record['seed']}"


def run_cells(cells: list[Cell], store: Store, workers: int, progress: bool = True,
              on_record: Callable[[dict], None] | None = None) -> dict:
    """Run the cells the store lacks; returns counts ``{total, skipped, ran, errors}``.

    ``on_record(record)`` is called in the parent after each record is stored (wandb logging).
    """
    done = store.finished()
    todo = [c for c in cells if c.key not in done]
    counts = {"total": len(cells), "skipped": len(cells) - len(todo), "ran": 0, "errors": 0}
    if progress:
        print(f"bench: {len(cells)} cells, {counts['skipped']} already stored; running "
              f"{len(todo)} ({sum(c.total_steps for c in todo):,} optimizer steps) on "
              f"{min(workers, len(todo))} workers", file=sys.stderr, flush=True)
    bar = tqdm(total=len(cells), initial=counts["skipped"], desc="bench", unit="cell",
               disable=not progress, dynamic_ncols=True)
    restarts = 0
    try:
        while todo:
            todo = _run_pool(todo, store, workers, bar, counts, on_record)
            if todo:
                restarts += 1
                if restarts > MAX_POOL_RESTARTS:
                    raise MetalrError(
                        f"worker processes died {restarts} times; {len(todo)} cells are not "
                        f"stored. The finished ones are in {store.path}: rerun to continue")
                bar.write(f"a worker process died; restarting the pool for {len(todo)} cells")
    finally:
        bar.close()
    return counts


def _context():
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["metalr.bench.worker"])
        return context
    return multiprocessing.get_context("spawn")


def _run_pool(todo: list[Cell], store: Store, workers: int, bar, counts: dict,
              on_record) -> list[Cell]:
    """One process pool over ``todo``; returns the cells lost to a broken pool."""
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=_context(),
                               initializer=init_worker, initargs=(os.getpid(),))
    lost: list[Cell] = []
    try:
        pending = {pool.submit(run_cell, asdict(cell)): cell for cell in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = pending.pop(future)
                try:
                    record = future.result()
                except BrokenProcessPool:
                    lost.append(cell)
                    continue
                store.put(record)
                counts["ran"] += 1
                if record["status"] == "error":
                    counts["errors"] += 1
                    bar.write(f"error in {_label(record)}: {record['error']}")
                bar.set_postfix_str(_label(record), refresh=False)
                bar.update()
                if on_record is not None:
                    on_record(record)
    finally:
        pool.shutdown(wait=not lost, cancel_futures=True)
    return lost
