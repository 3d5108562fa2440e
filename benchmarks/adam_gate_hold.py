"""A hypergradient gate that asks for significance and holds a raise it made: measured before it is built.

The default's gate (``NetConfig.max_ratio_hypergradient``, with ``max_multiplier_hypergradient``)
opens the 3% Adam ceiling and the 5x cap while the running sum of the hypergradient cosines
``h = cos(-g_{k+1}, w_k - w_{k-1})`` is positive, and cuts back to 1% and 3x as soon as it is not.
Two things about ``h`` argue against that rule. It is noisy (on the held-out GRU its samples
scatter by about 0.07 around a mean of a few hundredths; on the 279-step transformer at 3x its
sum wanders within +-0.03 of 0 for 120 steps, then opens the gate for two samples by chance and
raises the LR 1.7x). And it is greedy: it reads the LR that is best for the next step, which is
smaller than the LR best for the run (the short-horizon bias, Wu et al. 2018,
https://arxiv.org/abs/1803.02021), so once a raise has brought the LR to the greedy optimum ``h``
goes to 0 and the sign rule undoes a raise the run still wanted (the GRU rises to 4x its LR in
the first ~100 steps and is cut back to 1.6x). So, as a sequential test:

* ``z``: open only while the running mean of ``h`` is more than one standard error above 0
  (``z = mean / (sd / sqrt(n)) > 1``), else closed;
* ``z-hold``: the same, and once the gate has opened, a ``z`` within +-1 holds the LR where it is
  (the ceiling becomes the ratio last measured, between 1% and 3%, the cap stays 5x) rather than
  cutting it back; only ``z < -1``, a mean significantly below 0 (the LR past the greedy
  optimum), closes it.

Both run ``metalr-unroll-guard03`` (the default's weights and limits without a gate of its own)
with the ceiling and cap set from outside, as ``benchmarks/adam_raise_gate.py`` did; ``shipped``
is the default as it ships (``metalr-unroll-hypergradient-cap5``). The gate's tasks (the
transfer benchmark's three Adam tasks and the held-out AdamW transformers) at 1x and 3x, constant
LR in the same run. The threshold (one standard error) was set before any run, not tuned.

    python benchmarks/adam_gate_hold.py [--seeds 0,1,2,3,4,5] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import os

import torch

from metalr.learned.scheduler import MetaLRScheduler
from metalr.tasks import get_task
from metalr.trainer import train
from adam_raise_gate import (CLOSED, OPEN, SCALES, TASKS,  # benchmarks/ is on the path as a script
                             HypergradientGate, cell_means, run_cells)

VARIANTS = ("constant", "shipped", "z", "z-hold")
SHIPPED = "metalr-unroll-hypergradient-cap5"
UNGATED = "metalr-unroll-guard03"  # the same weights and limits, no gate of its own
CAP, OPEN_CAP = 3.0, 5.0  # the multiplier's cap, shut and open
Z = 1.0  # standard errors


class SignificanceGate(HypergradientGate):
    """``HypergradientGate``'s samples, read as a z-score of their running mean, setting the
    scheduler's Adam ceiling and cap."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: MetaLRScheduler, hold: bool):
        super().__init__(optimizer, scheduler, hold)
        self.squares = 0.0
        self.opened = False

    def decide(self, h: float) -> None:
        self.total, self.squares, self.samples = self.total + h, self.squares + h * h, self.samples + 1
        z = 0.0
        if self.samples >= 2:
            mean = self.total / self.samples
            variance = max(self.squares / self.samples - mean * mean, 1e-12) * self.samples / (self.samples - 1)
            z = mean / math.sqrt(variance / self.samples)
        if z > Z:
            self.opened = True
            self.open_samples += 1
            ceiling, cap = OPEN, OPEN_CAP
        elif self.hold and self.opened and z > -Z:
            ceiling, cap = self.held_ratio(), OPEN_CAP
        else:
            ceiling, cap = CLOSED, CAP
        self.scheduler._ratio_ceilings = (self.scheduler._ratio_ceilings[0], ceiling)
        self.scheduler._cap = cap


def run(job) -> tuple:
    """One (task, scale, seed, variant) cell: final test metric, peak multiplier, gate open share."""
    spec, scale, seed, variant = job
    base_lr = get_task(spec).base_lr * scale
    gates = []

    def scheduler(optimizer, total_steps):
        if variant == "shipped":
            return MetaLRScheduler.from_pretrained(SHIPPED, optimizer, total_steps=total_steps)
        sched = MetaLRScheduler.from_pretrained(UNGATED, optimizer, total_steps=total_steps)
        sched._ratio_ceilings = (sched._ratio_ceilings[0], CLOSED)
        gates.append(SignificanceGate(optimizer, sched, hold=variant == "z-hold"))
        return sched

    result = train(spec, None if variant == "constant" else scheduler, seed=seed, base_lr=base_lr, eval_points=1)
    opened = gates[0].open_samples / max(gates[0].samples, 1) if gates else math.nan
    return spec, scale, variant, result.test_metric[-1], max(result.lr) / base_lr, opened


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative seeds, got {text!r}")
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated (default 0,1,2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cells = run_cells(run, VARIANTS, args.seeds, args.workers)
    print(f"seeds {','.join(map(str, args.seeds))}; final test metric (accuracy in %, bits/char as it is), worse "
          "than constant LR by (points or bits/char), peak multiplier of the base LR, share of gate samples open\n")
    print("| task | scale | constant | shipped | z | z-hold | worse than constant by: shipped / z / z-hold | "
          "peak multiplier: shipped / z / z-hold | gate open: z / z-hold |")
    print("|---|---|---|---|---|---|---|---|---|")
    *rows, safe = cell_means(cells, VARIANTS)
    for spec, scale, unit, mean, worse in rows:
        print(f"| {spec} | {scale:g} | " + " | ".join(f"{mean[v][0] * unit:.4g}" for v in VARIANTS)
              + " | " + " / ".join(f"{worse[v]:+.3g}" for v in VARIANTS[1:]) + " | "
              + " / ".join(f"{mean[v][1]:.2f}" for v in VARIANTS[1:]) + " | "
              + " / ".join(f"{mean[v][2]:.2f}" for v in VARIANTS[2:]) + " |")
    print("\nwithin 2 points (0.05 bits/char) of constant LR: "
          + ", ".join(f"{v} {safe[v]} of {len(TASKS) * len(SCALES)}" for v in VARIANTS[1:]))


if __name__ == "__main__":
    main()
