"""Cost of one ``MetaLRScheduler.step(loss)`` on CPU, side by side with ``CosineAnnealingLR.step()``.

Usage: ``python benchmarks/step_cost.py [--steps 20000] [--repeats 7]``

Both schedulers drive the same one-parameter SGD optimizer; the loss is a Python float, as in
a loop that already called ``loss.item()``, and for the default network also the 0-dim CPU
tensor a loss function returns (``sched.step(loss)``). Repeats alternate between the
schedulers so that load on the machine affects all alike; the median over repeats of the mean
time per step is printed, for the learned network on each feature schema in use
(``hyper-v5, knee-floor``: the default checkpoint's network, ``metalr-unroll-hypergradient-hold``'s,
``metalr-unroll-hypergradient-cap5``'s and ``metalr-unroll-hypergradient``'s,
``metalr-unroll-guard03``'s and ``metalr-unroll-floor``'s (they differ in the guard's threshold,
not in its cost, and the default in a gate read in the hooks under Adam, costed in the last lines): the knee
shape, the raise to 3x, the ceilings on the update-to-weight ratio and their floor, read once when
built, and the lock after lost progress (its step() alone: the ratio is measured in optimizer
hooks, costed in the last lines); ``hyper-v5, knee-lock``: ``metalr-unroll-lock``'s, without the
floor; ``hyper-v5, knee-ceiling``: ``metalr-unroll-ceiling``'s and
``metalr-unroll-ceiling-adaptive``'s, without the lock; ``hyper-v5, knee-raise``: the same
without the ceiling; ``hyper-v4, knee``: ``metalr-unroll-knee``'s, never above the base LR; ``hyper-v4``: the ``default`` network, with its rise limit and guard; ``hyper-v3``: ``metalr-es4``'s;
``hyper-v2``: ``metalr-es2``'s; ``transfer-v1``: the shipped ``metalr-mnist1d``), with the ratio
to cosine. Target: at most 10 us per step, float or tensor (issues 10, 16 and 17), where cosine
takes about 2 us. Last, the step of the default checkpoint's network (under SGD, and under Adam
with its hypergradient gate) and of ``knee`` as a fraction of one MNIST-1D CNN training step
(batch 100; issue 9's target: at most 1%), and the gate's sample timed alone,
measured by ``overhead.step_vs_train_step``, with what the scheduler's optimizer hooks add to
that step (``hyper-v5`` snapshots the parameters and reduces the update every 10th step):
``optimizer.step()`` with the scheduler attached minus the same step without it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import numpy as np
import torch

from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler, flat_gradients, hypergradient_cosine
from metalr.tasks import get_task
from overhead import step_vs_train_step  # benchmarks/ is on the path when run as a script


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def per_step(step, args, steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        step(args[i])
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # stepping past total_steps while repeating is intended
    losses = [2.3 * math.exp(-3 * i / args.steps) * (1 + 0.05 * math.sin(i)) for i in range(args.steps)]
    # as a loss function returns them: float32, 0-dim, with a graph behind them
    weight = torch.ones((), requires_grad=True)
    tensors = [weight * loss for loss in losses]
    nothing = [None] * args.steps
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(_optimizer(), T_max=args.steps)
    learned = {}
    for name, config, loss in (("hyper-v5, knee-floor", "knee-floor", "float"),
                               ("hyper-v5, knee-floor", "knee-floor", "0-dim tensor"),
                               ("hyper-v5, knee-lock", "knee-lock", "float"),
                               ("hyper-v5, knee-ceiling", "knee-ceiling", "float"),
                               ("hyper-v5, knee-raise", "knee-raise", "float"),
                               ("hyper-v4, knee", "knee", "float"), ("hyper-v4, knee", "knee", "0-dim tensor"),
                               ("hyper-v4", "default", "float"), ("hyper-v4", "default", "0-dim tensor"),
                               ("hyper-v3", "default-v3", "float"), ("hyper-v2", "default-v2", "float"),
                               ("transfer-v1", "transfer-v1", "float")):
        torch.manual_seed(0)
        learned[f"{name}, {loss}"] = (MetaLRScheduler(_optimizer(), ScheduleNet(CONFIGS[config]),
                                                      total_steps=args.steps),
                                      losses if loss == "float" else tensors)
    times = {"cosine": [], **{name: [] for name in learned}}
    for _ in range(args.repeats):
        times["cosine"].append(per_step(lambda _: cosine.step(), nothing, args.steps))
        for name, (sched, inputs) in learned.items():
            times[name].append(per_step(sched.step, inputs, args.steps))
    base = statistics.median(times["cosine"])
    print("| scheduler | median us / step | ratio to cosine |")
    print("|---|---|---|")
    print(f"| CosineAnnealingLR.step() | {base * 1e6:.2f} | 1.00 |")
    for name in learned:
        t = statistics.median(times[name])
        print(f"| MetaLRScheduler.step(loss), {name} | {t * 1e6:.2f} | {t / base:.2f} |")
    print()
    for net, gate, what in (("knee-floor", None, "the knee-floor network (metalr-unroll-guard03's; hyper-v5: "
                                                 "step() and the optimizer hooks)"),
                            ("knee-floor", 0.03, "the default checkpoint's (the knee-floor network with its "
                                                 "hypergradient gate, under Adam)"),
                            ("knee", None, "the knee network (hyper-v4, no hooks)")):
        sched, train_step, hooks = step_vs_train_step(args.repeats, net=net, gate=gate)
        print(f"{what}: ({sched * 1e6:.1f} us step + {hooks * 1e6:.1f} us hooks) / {train_step * 1e6:.0f} us "
              f"MNIST-1D CNN training step = {100 * (sched + hooks) / train_step:.2f}% (target <= 1%)")
    sample = gate_sample_cost(args.repeats)
    print(f"the hypergradient gate's sample alone (the gradient read and the cosine in the pre-step hook, every "
          f"10th step under Adam), MNIST-1D CNN: {sample * 1e6:.1f} us, {sample * 1e5:.1f} us a step on average")


def gate_sample_cost(repeats: int, calls: int = 2000) -> float:
    """Seconds per hypergradient sample on the MNIST-1D CNN's parameters (median over repeats):
    what the hooks' difference above, two noisy optimizer steps apart, resolves poorly."""
    model = get_task("mnist1d-cnn").make_model()
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    update = [np.concatenate([p.detach().numpy() for p in params], axis=None) * 1e-3]
    times = [per_step(lambda _: hypergradient_cosine(flat_gradients(params, True), update), [None] * calls, calls)
             for _ in range(repeats)]
    return statistics.median(times)


if __name__ == "__main__":
    main()
