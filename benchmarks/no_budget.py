"""The default checkpoint without ``total_steps``, against constant LR, on the transfer tasks.

A user who does not know the run's length builds the scheduler with ``total_steps=None``. A
network over the knee shape (the default's) then has no shape (it is 1), so no anneal, and no
training-fraction features; a network with a ceiling of its own under Adam then takes the smaller
of its two ceilings (``NetConfig.ratio_ceiling``). This measures that case on the tasks,
seeds and base-LR scales of ``benchmarks/transfer.json``, side by side with constant LR in the
same run, against the transfer benchmark's safety target: at most 2 points (0.05 bits/char)
worse than constant LR at the same scale, never collapsed (more than 20 points or 0.5 bits/char
worse) where constant LR trains.

    python benchmarks/no_budget.py [--checkpoint metalr-unroll-knee] [--seeds 3] [--workers 2]
        [--tasks mnist1d-cnn:noise=0.4]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from metalr.learned.checkpoint import DEFAULT_CHECKPOINT
from metalr.learned.scheduler import MetaLRScheduler
from metalr.processes import init_worker
from metalr.tasks import get_task
from metalr.trainer import train
from transfer_targets import LIMITS, shortfall  # benchmarks/ is on the path when run as a script

CONFIG = Path(__file__).resolve().parent / "transfer.json"


def final_metric(job) -> tuple:
    """One (task, scale, seed, policy) cell: its final test metric."""
    spec, scale, seed, checkpoint = job
    task = get_task(spec)

    def no_budget(optimizer, _total_steps):
        return MetaLRScheduler.from_pretrained(checkpoint, optimizer, total_steps=None)

    result = train(spec, no_budget if checkpoint else None, seed=seed, base_lr=task.base_lr * scale,
                   eval_points=1)
    return spec, scale, checkpoint, result.test_metric[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tasks", help="comma-separated transfer tasks to run alone, with more seeds where a cell "
                        "is chaotic (default: all of benchmarks/transfer.json's)")
    args = parser.parse_args()
    plan = json.loads(CONFIG.read_text())
    if args.tasks:
        unknown = sorted(set(args.tasks.split(",")) - set(plan["tasks"]))
        if unknown:
            parser.error(f"--tasks {', '.join(unknown)}: not a task of {CONFIG.name} ({', '.join(plan['tasks'])})")
        plan["tasks"] = [spec for spec in plan["tasks"] if spec in args.tasks.split(",")]
    jobs = [(spec, scale, seed, checkpoint) for spec in plan["tasks"] for scale in plan["lr_grid"]
            for seed in range(args.seeds) for checkpoint in ("", args.checkpoint)]
    cells = defaultdict(list)
    with ProcessPoolExecutor(args.workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
        for spec, scale, checkpoint, metric in pool.map(final_metric, jobs):
            cells[spec, scale, checkpoint].append(metric)
    print(f"{args.checkpoint} with total_steps=None against constant LR; {args.seeds} seeds, "
          "final test metric (accuracy in %, bits/char as it is)\n")
    print("| task | scale | no budget | constant | worse by | within target | collapsed |")
    print("|---|---|---|---|---|---|---|")
    ok = collapsed = 0
    for spec in plan["tasks"]:
        higher_better = get_task(spec).higher_is_better
        for scale in plan["lr_grid"]:
            mine, const = (sum(v) / len(v) for v in (cells[spec, scale, args.checkpoint], cells[spec, scale, ""]))
            unit = 100 if higher_better else 1
            worse = shortfall(mine, const, higher_better)
            limit, collapse = LIMITS[higher_better]
            ok += worse <= limit
            collapsed += worse > collapse
            print(f"| {spec} | {scale:g} | {mine * unit:.4g} | {const * unit:.4g} | {worse:+.3g} | "
                  f"{'yes' if worse <= limit else 'no'} | {'COLLAPSED' if worse > collapse else ''} |")
    total = len(plan["tasks"]) * len(plan["lr_grid"])
    print(f"\nwithin 2 points (0.05 bits/char) of constant LR at the same scale in {ok} of {total} cells; "
          f"collapsed in {collapsed}")


if __name__ == "__main__":
    main()
