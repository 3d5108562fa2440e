"""Can the hypergradient tell when a raise under Adam is safe? ``metalr-unroll-guard03``, four ways.

Under Adam and AdamW ``metalr-unroll-guard03`` (the default when this was run) may raise the LR only while the
update-to-weight ratio stays under 1% (``NetConfig.max_ratio_adaptive``). That holds the held-out
GRU at its default LR, a third of the LR the tuned hand schedules pick; 3% let
``metalr-unroll-ceiling-adaptive`` reach it, and also raised a transformer whose LR was already too
large into a 0.4 bits/char loss (``docs/unroll.md``, "A ceiling of its own under Adam"): an Adam
step is normalised, so its ratio follows the LR, not the stability. A signal of the LR's size that
does not come from the step size is the hypergradient of Baydin et al. 2018 ("Online Learning Rate
Adaptation with Hypergradient Descent", https://arxiv.org/abs/1703.04782), the derivative of the
next loss in the last step's LR, here as a cosine: ``h = cos(-g_{k+1}, w_k - w_{k-1})``, positive
while the next gradient still points along the last step (a larger step would have gone further
down), negative once it turns back. This runs, on the transfer benchmark's Adam tasks and the
held-out transformers, at 1x and 3x the task's LR:

* ``constant``: constant LR;
* ``default``: the default as shipped (Adam ceiling 1%);
* ``open``: the same network with the Adam ceiling at 3%;
* ``gated``: 3% while the running mean of ``h`` is above 0, else 1%. ``h`` is sampled where the
  scheduler already measures the ratio (after optimizer steps 11, 21, 31, ...: a snapshot of the
  weights and a gradient read every tenth step is what ``sched.step()`` can afford; not after
  step 1, where Adam moves every coordinate by the whole LR, ``sign(g)``, a step no later one
  resembles: with it the GRU's first sample, -0.31 on seed 0, kept its gate shut for the whole
  run), and the ceiling is 1% until the first sample;
* ``held``: the same gate, but a closing gate holds the LR where it is (the ceiling becomes the
  ratio last measured, between 1% and 3%) instead of cutting it back to the 1% level: it stops
  the raise without undoing it.

This measured the gate before it was built: it sets the scheduler's ceiling from outside
(``_ratio_ceilings``, the pair without and with the budget), so that ``held`` and ``gated`` differ in
one line. ``gated`` is now ``NetConfig.max_ratio_hypergradient`` (``benchmarks/with_ceiling.py
--hypergradient 0.03``), whose runs are these (the GRU at 1x, seed 0: 80.0% both ways).

    python benchmarks/adam_raise_gate.py [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor

import torch

from metalr.learned.features import measures_ratio
from metalr.learned.scheduler import MetaLRScheduler, hypergradient_cosine
from metalr.processes import init_worker
from metalr.tasks import get_task
from metalr.trainer import train
from transfer_targets import LIMITS, shortfall  # benchmarks/ is on the path when run as a script

# The transfer benchmark's three Adam tasks and the held-out AdamW transformer (docs/transfer-new).
TASKS = ("mnist1d-gru:epochs=8", "charlm-lstm:fraction=0.25,epochs=1", "mnist1d-mlp:optimizer=adam,lr=0.001",
         "charlm-transformer:fraction=0.25,epochs=1", "charlm-transformer:fraction=0.25,epochs=3")
SCALES = (1.0, 3.0)
VARIANTS = ("constant", "default", "open", "gated", "held")
CLOSED, OPEN = 0.01, 0.03  # the default's Adam ceiling, metalr-unroll-ceiling-adaptive's
# The network gated here: the default when this was measured, without a gate of its own (the
# default since, metalr-unroll-hypergradient, is it with the gate built in).
CHECKPOINT = "metalr-unroll-guard03"


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


class HypergradientGate:
    """Samples ``h`` through the optimizer's step hooks and sets the scheduler's Adam ceiling."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: MetaLRScheduler, hold: bool):
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.scheduler = scheduler
        self.hold = hold
        self.steps = 0
        self.before = self.update = None
        self.total, self.samples, self.open_samples = 0.0, 0, 0
        optimizer.register_step_pre_hook(self.pre)
        optimizer.register_step_post_hook(self.post)

    def pre(self, *_):
        if self.update is not None:  # the step after a measured one: its gradient against that update
            grad = _flat(p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params)
            self.decide(float(hypergradient_cosine([grad], [self.update])))
            self.update = None
        if self.steps >= 1 and measures_ratio(self.steps + 1):
            self.before = _flat(self.params)

    def held_ratio(self) -> float:
        """The ratio the last measured step reached, within the two ceilings: the LR stays where it is."""
        return min(OPEN, max(CLOSED, float(self.update.norm() / _flat(self.params).norm())))

    def decide(self, h: float) -> None:
        """Set the Adam ceiling from the running mean of the samples, ``h`` the newest."""
        self.total, self.samples = self.total + h, self.samples + 1
        is_open = self.total / self.samples > 0.0
        self.open_samples += is_open
        ceiling = OPEN if is_open else self.held_ratio() if self.hold else CLOSED
        self.scheduler._ratio_ceilings = (self.scheduler._ratio_ceilings[0], ceiling)

    def post(self, *_):
        self.steps += 1
        if self.before is not None:
            self.update, self.before = _flat(self.params) - self.before, None


def run(job) -> tuple:
    """One (task, scale, seed, variant) cell: final test metric, peak multiplier, gate open share."""
    spec, scale, seed, variant = job
    task = get_task(spec)
    base_lr = task.base_lr * scale
    gates = []

    def scheduler(optimizer, total_steps):
        sched = MetaLRScheduler.from_pretrained(CHECKPOINT, optimizer, total_steps=total_steps)
        if variant == "open":
            sched._ratio_ceilings = (sched._ratio_ceilings[0], OPEN)
        elif variant in ("gated", "held"):
            sched._ratio_ceilings = (sched._ratio_ceilings[0], CLOSED)
            gates.append(HypergradientGate(optimizer, sched, hold=variant == "held"))
        return sched

    result = train(spec, None if variant == "constant" else scheduler, seed=seed, base_lr=base_lr, eval_points=1)
    opened = gates[0].open_samples / max(gates[0].samples, 1) if gates else math.nan
    return spec, scale, variant, result.test_metric[-1], max(result.lr) / base_lr, opened


def run_cells(run, variants: tuple, seeds, workers: int) -> dict:
    """``run`` on every (task, scale, seed, variant) of the gate's tasks, in a pool of ``workers``:
    its results after the first three (the cell's key), listed per (task, scale, variant)."""
    jobs = [(spec, scale, seed, variant) for spec in TASKS for scale in SCALES for seed in seeds
            for variant in variants]
    cells = defaultdict(list)
    with ProcessPoolExecutor(workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
        for spec, scale, variant, *results in pool.map(run, jobs):
            cells[spec, scale, variant].append(results)
    return cells


def cell_means(cells: dict, variants: tuple):
    """Per task and scale: the metric's unit (100: accuracy in %), each variant's results averaged
    over its seeds, and how much worse than constant LR (``variants[0]``) each other variant ended
    (points or bits/char); counts the cells within the safety target (2 points, 0.05 bits/char) per
    variant in the Counter it yields last."""
    safe = Counter()
    for spec in TASKS:
        higher_better = get_task(spec).higher_is_better
        for scale in SCALES:
            mean = {v: [sum(column) / len(column) for column in zip(*cells[spec, scale, v])] for v in variants}
            worse = {v: shortfall(mean[v][0], mean[variants[0]][0], higher_better) for v in variants[1:]}
            safe.update(v for v in variants[1:] if worse[v] <= LIMITS[higher_better][0])
            yield spec, scale, 100 if higher_better else 1, mean, worse
    yield safe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cells = run_cells(run, VARIANTS, range(args.seeds), args.workers)
    print(f"{CHECKPOINT} under Adam/AdamW, its Adam ratio ceiling at 1% (default), 3% (open), 3% while "
          "the running mean hypergradient cosine is positive and else 1% (gated) or the ratio reached (held); "
          f"{args.seeds} seeds, final test metric (accuracy in %, bits/char as it is), peak multiplier of the base "
          "LR, the share of gate samples open\n")
    print("| task | scale | constant | default | open | gated | held | worse than constant by: open / gated / "
          "held | peak multiplier: default / open / gated / held | gate open: gated / held |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    *rows, safe = cell_means(cells, VARIANTS)
    for spec, scale, unit, mean, worse in rows:
        print(f"| {spec} | {scale:g} | " + " | ".join(f"{mean[v][0] * unit:.4g}" for v in VARIANTS)
              + " | " + " / ".join(f"{worse[v]:+.3g}" for v in VARIANTS[2:]) + " | "
              + " / ".join(f"{mean[v][1]:.2f}" for v in VARIANTS[1:]) + " | "
              + " / ".join(f"{mean[v][2]:.2f}" for v in VARIANTS[3:]) + " |")
    cells_total = len(TASKS) * len(SCALES)
    print("\nwithin 2 points (0.05 bits/char) of constant LR: "
          + ", ".join(f"{v} {safe[v]} of {cells_total}" for v in VARIANTS[1:]))


if __name__ == "__main__":
    main()
