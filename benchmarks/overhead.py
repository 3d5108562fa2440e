"""Overhead of metalr, measured side by side in one run and printed as ratios.

1. Meta-training wall time / plain training wall time, on the same task and budget: one inner
   run of ``train_meta.py``'s default settings against ``metalr.train`` at constant LR, both
   timed over their training loops with one final evaluation (not the data generation, nor
   the checkpoint and plot that meta-training writes afterwards; target at default settings:
   at most 1.5).
2. ``MetaLRScheduler.step()`` time as a fraction of one training step of the MNIST-1D CNN
   (forward, backward, SGD step; target: at most 1%).

    python benchmarks/overhead.py [--repeats 3]

Single-threaded, as the metalr commands run. Each figure is the median over ``--repeats``
interleaved repetitions, so drifts in machine load hit both sides alike.
"""

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

import metalr
from metalr.learned.train.config import MetaTrainConfig
from metalr.learned.train.lookahead import meta_train_lookahead as meta_train
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler
from metalr.tasks import get_task


def meta_vs_plain(task: str, repeats: int) -> tuple[float, float]:
    meta, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            plain.append(metalr.train(task, None, seed=r, eval_points=1).wall_time)
            cfg = MetaTrainConfig(tasks=task, runs_per_task=1, hide_budget=0.0, seed=r,
                                  name=f"bench{r}")
            meta.append(meta_train(cfg, Path(tmp), progress=False)["wall_time_s"])
    return statistics.median(meta), statistics.median(plain)


def step_vs_train_step(repeats: int, steps: int = 2000, net: str = "knee",
                       gate: float | None = None) -> tuple[float, float, float]:
    """``MetaLRScheduler.step(loss)`` with network ``net``, one MNIST-1D CNN training step (SGD,
    batch 100), and what the scheduler's optimizer hooks add to that step (``hyper-v5``'s
    parameter snapshot and reductions every 10th step, and the hooks' calls every step): seconds,
    each the median over ``repeats``. The hooks' cost is ``optimizer.step()`` with the scheduler
    attached minus the same step without it, on the same parameters and gradients, timed
    alternately. ``gate``: the network with that ``max_ratio_hypergradient``, and the whole
    measurement under Adam (lr 1e-3), where the gate reads a gradient after every measured step."""
    config = CONFIGS[net] if gate is None else dataclasses.replace(CONFIGS[net], max_ratio_hypergradient=gate)

    def optimizer(params, lr):
        if gate is None:
            return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
        return torch.optim.Adam(params, lr=lr)

    task = get_task("mnist1d-cnn")
    torch.manual_seed(0)
    model = task.make_model()
    opt = optimizer(model.parameters(), 0.1 if gate is None else 1e-3)
    batches = task.batches(torch.Generator().manual_seed(0))
    # The hooks are timed on a copy with one batch's gradients, at LR 0: the same arithmetic
    # every step, and weights that stay where training put them.
    copy = task.make_model()
    x, y = next(batches)
    task.loss_fn(copy(x), y).backward()
    plain, hooked = optimizer(copy.parameters(), 0.0), optimizer(copy.parameters(), 0.0)
    sched = MetaLRScheduler(hooked, ScheduleNet(config), total_steps=10 * steps)
    losses = []
    train_t, plain_t, hooked_t, sched_t = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps // 10):
            x, y = next(batches)
            loss = task.loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        train_t.append((time.perf_counter() - start) / (steps // 10))
        for optimizer, times in ((plain, plain_t), (hooked, hooked_t)):
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            times.append((time.perf_counter() - start) / steps)
        start = time.perf_counter()
        for i in range(steps):
            sched.step(losses[i % len(losses)])
        sched_t.append((time.perf_counter() - start) / steps)
    hooks = statistics.median(hooked_t) - statistics.median(plain_t)
    return statistics.median(sched_t), statistics.median(train_t), hooks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| measurement | metalr | baseline | ratio | target |")
    print("|---|---|---|---|---|")
    for task in ("mnist1d-mlp", "mnist1d-cnn"):
        meta, plain = meta_vs_plain(task, args.repeats)
        print(f"| meta-training / plain training, {task}, one run at its default budget | "
              f"{meta:.2f} s | {plain:.2f} s | {meta / plain:.2f} | <= 1.5 |", flush=True)
    sched, step, _ = step_vs_train_step(args.repeats)
    print(f"| sched.step() / MNIST-1D CNN training step | {sched * 1e6:.1f} us | {step * 1e6:.0f} us | "
          f"{100 * sched / step:.2f}% | <= 1% |")


if __name__ == "__main__":
    main()
