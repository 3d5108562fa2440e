"""Checkpoints side by side on the Adam tasks, at 1x and 3x each task's LR, against constant LR.

The quick check for a change that acts under Adam and AdamW only (a limit of the hypergradient
gate, ``NetConfig.max_ratio_hypergradient``): the transfer benchmark's three Adam tasks and the
held-out AdamW transformers of ``docs/transfer-new``, where the gate was measured
(``benchmarks/adam_raise_gate.py``). Under SGD such a change leaves every LR as it was, so the
whole transfer benchmark need not run to see what it does. Prints, per task and scale, the mean
final test metric over the seeds, how much worse than constant LR each checkpoint is (the safety
target: 2 points, 0.05 bits/char), and its peak multiplier of the base LR.

    python benchmarks/adam_tasks.py metalr-unroll-hypergradient runs/hcap/h0.03-cap5.json [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.scheduler import MetaLRScheduler
from metalr.tasks import get_task
from metalr.trainer import train
from adam_raise_gate import SCALES, TASKS, cell_means, run_cells  # benchmarks/ is on the path as a script


def run(job) -> tuple:
    """One (task, scale, seed, checkpoint) cell: final test metric and peak multiplier."""
    spec, scale, seed, name = job
    task = get_task(spec)
    base_lr = task.base_lr * scale

    def scheduler(optimizer, total_steps):
        return MetaLRScheduler.from_pretrained(name, optimizer, total_steps=total_steps)

    result = train(spec, None if name == "constant" else scheduler, seed=seed, base_lr=base_lr, eval_points=1)
    return spec, scale, name, result.test_metric[-1], max(result.lr) / base_lr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint names or JSON paths")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    for name in args.checkpoints:  # a bad name fails here, with the loader's message, not in a worker
        try:
            checkpoint.load(name)
        except MetalrError as err:
            parser.error(str(err))
    names = ("constant", *args.checkpoints)
    cells = run_cells(run, names, range(args.seeds), args.workers)
    print(f"{args.seeds} seeds; final test metric (accuracy in %, bits/char as it is); worse than constant LR by "
          "(points or bits/char); peak multiplier of the base LR\n")
    print("| task | scale | " + " | ".join(names) + " | worse than constant by | peak multiplier |")
    print("|---|---|" + "---|" * (len(names) + 2))
    *rows, safe = cell_means(cells, names)
    for spec, scale, unit, mean, worse in rows:
        print(f"| {spec} | {scale:g} | " + " | ".join(f"{mean[n][0] * unit:.4g}" for n in names) + " | "
              + " / ".join(f"{worse[n]:+.3g}" for n in args.checkpoints) + " | "
              + " / ".join(f"{mean[n][1]:.2f}" for n in args.checkpoints) + " |")
    print("\nwithin 2 points (0.05 bits/char) of constant LR: "
          + ", ".join(f"{n} {safe[n]} of {len(TASKS) * len(SCALES)}" for n in args.checkpoints))


if __name__ == "__main__":
    main()
