"""Would a lock read from the validation loss make a larger ratio ceiling safe? A probe.

Every SGD ratio ceiling of 2% or more fails one safety cell, the 40%-noise MNIST-1D CNN at 0.3x
its default LR: the raise fits the noisy labels, which no training-loss input shows. The
validation loss does show it. This runs a checkpoint on chosen transfer cells with and without a
validation lock (at each of ``train``'s evaluations, once the validation loss is more than
``theta`` above its lowest so far, the scheduler's ``raise_locked`` is set: the product of shape
and multiplier is at most 1 for the rest of the run, the same lock ``NetConfig.collapse_guard``
sets from the training loss), beside constant LR, and prints the final test accuracy of each.
The lock is applied from an ``on_step`` hook that evaluates the validation split at the steps
``train`` evaluates it at (the same 20 points), so nothing in the library changes.

    python benchmarks/validation_lock.py --checkpoint runs/ceiling/s2-0.03-a0.01-cg0.3.json \\
        --thetas 0.005,0.02 --workers 2

The default cells are the failing one and the three MNIST-1D MLP cells at 1x where the 3%
ceiling's raise pays.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from metalr.errors import MetalrError
from metalr.learned.checkpoint import load as load_checkpoint
from metalr.processes import init_worker
from metalr.tasks import get_task
from metalr.trainer import evaluate, evaluation_steps, train

CELLS = ("mnist1d-cnn:noise=0.4@0.3", "mnist1d-mlp:epochs=30@1", "mnist1d-mlp:epochs=120@1",
         "mnist1d-mlp:batch=250@1")
EVAL_POINTS = 20  # as the transfer benchmark evaluates


def final_accuracy(job) -> tuple:
    """One (cell, seed, policy, theta) run: its final test accuracy and the step the lock set."""
    cell, seed, checkpoint, theta = job
    spec, scale = cell.rsplit("@", 1)
    task = get_task(spec)
    evaluated = set(evaluation_steps(task.total_steps, EVAL_POINTS))
    lowest, locked_at = [math.inf], [None]

    def validation_lock(ctx) -> None:
        if theta is None or ctx.step not in evaluated:
            return
        ctx.model.eval()
        loss = evaluate(ctx.model, task, task.val, "cpu")["loss"]
        ctx.model.train()
        lowest[0] = min(lowest[0], loss)
        if loss > lowest[0] * (1 + theta) and locked_at[0] is None:
            ctx.scheduler.raise_locked, locked_at[0] = True, ctx.step

    policy = f"metalr:checkpoint={checkpoint}" if checkpoint else None
    result = train(spec, policy, seed=seed, base_lr=task.base_lr * float(scale), eval_points=EVAL_POINTS,
                   on_step=validation_lock)
    return cell, checkpoint, theta, 100 * result.test_metric[-1], locked_at[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint with a ratio ceiling (a path or name)")
    parser.add_argument("--cells", default=",".join(CELLS), help="TASK@SCALE, comma-separated")
    parser.add_argument("--thetas", default="0.005,0.02", help="lock thresholds to compare, comma-separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cells = args.cells.split(",")
    try:
        thetas = [None] + [float(t) for t in args.thetas.split(",")]
        bad = [c for c in cells if "@" not in c or not float(c.rsplit("@", 1)[1]) > 0]
    except ValueError as e:
        parser.error(f"--cells takes TASK@SCALE and --thetas numbers, comma-separated: {e}")
    if bad or not all(t > 0 for t in thetas[1:]):
        parser.error(f"--cells takes TASK@SCALE with a scale > 0 (got {', '.join(bad) or 'none bad'}) "
                     f"and --thetas numbers > 0 (got {args.thetas})")
    try:  # an unknown task or checkpoint: one line, before any worker starts
        for cell in cells:
            get_task(cell.rsplit("@", 1)[0])
        load_checkpoint(args.checkpoint)
    except MetalrError as e:
        parser.error(str(e))
    policies = [("", None)] + [(args.checkpoint, theta) for theta in thetas]
    jobs = [(cell, seed, checkpoint, theta) for cell in cells for seed in range(args.seeds)
            for checkpoint, theta in policies]
    accuracy, locks = defaultdict(list), defaultdict(list)
    with ProcessPoolExecutor(args.workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
        for cell, checkpoint, theta, acc, locked_at in pool.map(final_accuracy, jobs):
            accuracy[cell, checkpoint, theta].append(acc)
            locks[cell, checkpoint, theta].append(locked_at)
    names = ["constant", "no lock"] + [f"lock at +{t:g}" for t in thetas[1:]]
    print(f"{args.checkpoint}: final test accuracy (%), mean of {args.seeds} seeds; in brackets the "
          "steps the validation lock set at\n")
    print("| task @ scale | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for cell in cells:
        row = []
        for checkpoint, theta in policies:
            values = accuracy[cell, checkpoint, theta]
            at = [str(s) for s in locks[cell, checkpoint, theta] if s is not None]
            row.append(f"{sum(values) / len(values):.2f}" + (f" ({', '.join(at)})" if at else ""))
        print(f"| {cell} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
