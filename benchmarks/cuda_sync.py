"""CUDA step time of a small MLP with and without MetaLRScheduler, and host synchronisations.

Usage: ``python benchmarks/cuda_sync.py [--steps 500] [--repeats 5]``

Three loops train the same MLP (batch 256, 1024-1024-10) on CUDA for ``--steps`` steps:
no scheduler; ``sched.step(loss)`` with the loss tensor (read one step late through a
non-blocking copy into pinned memory); and ``sched.step(loss.item())``, which blocks on the GPU
every step. For each it prints the median time per step over ``--repeats`` and the number of
synchronisations ``torch.cuda.set_sync_debug_mode("warn")`` reported while it ran. On a machine
without CUDA it says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler


def run(mode: str, steps: int) -> tuple[float, int]:
    """Seconds per step and the number of host synchronisations for one loop."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = None if mode == "none" else MetaLRScheduler(opt, ScheduleNet(CONFIGS["default"]),
                                                        total_steps=steps)
    x, y = torch.randn(256, 1024, device="cuda"), torch.randint(0, 10, (256,), device="cuda")
    for _ in range(10):  # warm up kernels and the allocator, unmeasured
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if mode == "tensor":
                sched.step(loss)
            elif mode == "item":
                sched.step(loss.item())
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return elapsed / steps, syncs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA device on this machine: nothing to measure (run it on a GPU machine).")
        sys.exit(0)
    print(f"device: {torch.cuda.get_device_name()}, {args.steps} steps, median of {args.repeats}")
    print("| loop | ms / step | host syncs in the loop |")
    print("|---|---|---|")
    labels = {"none": "no scheduler", "tensor": "sched.step(loss)  (read one step late)",
              "item": "sched.step(loss.item())"}
    times = {mode: [] for mode in labels}
    syncs = {}
    for _ in range(args.repeats):  # interleaved, so drift in clocks affects all alike
        for mode in labels:
            t, syncs[mode] = run(mode, args.steps)
            times[mode].append(t)
    for mode, label in labels.items():
        print(f"| {label} | {statistics.median(times[mode]) * 1e3:.3f} | {syncs[mode]} |")


if __name__ == "__main__":
    main()
