"""Which early signal tells a base LR that is too small from one that is right or too large?

A schedule that never runs above its base LR (every ``knee`` network) cannot gain where the
base LR is too small, which is where the tuned hand schedules gain most. A network may raise the
LR only if some input tells it, early in the run, that a larger LR would end better. This
measures candidate inputs before any is built into a feature schema.

Each of ``--episodes`` episodes of the training distribution (families, optimizers, budgets and
batch sizes as meta-training draws them, budget shown) is trained at constant LR at each base-LR
scale of ``--scales``; the scale with the lowest final fitness (final / initial validation loss)
is the episode's best. For every run, over its first ``--early`` fraction of steps:

* ``update/weight``: the median of ``|w_t - w_{t-1}| / |w_t|`` over the steps (all parameters;
  the ~1e-3 rule of thumb);
* ``loss drop``: the mean training loss of the last 5 early steps over the first step's loss;
* ``rel_min``: that mean over the lowest 5-step mean so far, minus 1 (``hyper-v4``'s input).

It prints, per signal, the Spearman correlation with ``log(best scale / this run's scale)``
(positive: the signal is larger where the LR is too small) and the AUC of telling "a larger
scale ends better" (best > this scale) from the rest by the signal, over all runs at the inner
scales, and over the runs at 1x alone (the signal against the other episodes at the same scale,
where the scale itself tells nothing): 0.5 is no information, and the farther from it either way
the better (below 0.5: smaller values mean a larger LR pays).

    python benchmarks/lr_sense.py --episodes 24 --workers 2
"""

import argparse
import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector

from metalr.learned.train import full_es
from metalr.learned.train.config import ES_FAMILIES, MetaTrainConfig
from metalr.learned.train.distribution import TaskDistribution
from metalr.processes import init_worker
from metalr.trainer import train
from train_distribution import budget_range  # benchmarks/ is on the path when run as a script

# Episode seeds from here on: meta-training and train_distribution.py use others.
SEED_BASE = 8_200_000
SIGNALS = ("update/weight", "loss drop", "rel_min")


def run(job):
    """One (episode, scale) run at constant LR: its fitness and its early signals."""
    index, scale, families, budgets, early = job
    dist = TaskDistribution(families, *budgets, scale, scale, MetaTrainConfig().label_noise, hide_budget=0.0)
    episode = dist.sample(SEED_BASE + index)
    steps = max(10, int(early * episode.budget))
    ratios, losses, previous = [], [], []

    def on_step(ctx):
        if ctx.step > steps:
            return
        w = parameters_to_vector(ctx.model.parameters()).detach().clone()
        if previous:
            ratios.append(float((w - previous[0]).norm() / w.norm().clamp_min(1e-12)))
        previous[:] = [w]
        losses.append(ctx.loss)

    result = train(episode.spec(), None, seed=episode.seed, steps=episode.budget, eval_points=1,
                   evaluate_test=False, on_step=on_step)
    fit = full_es.fitness(result, full_es.reference_loss(episode))
    finite = [x for x in losses if math.isfinite(x)]
    signals = {}
    if len(finite) == len(losses) and len(losses) >= 10:
        means = [sum(losses[i - 5:i]) / 5 for i in range(5, len(losses) + 1)]
        signals = {"update/weight": float(np.median(ratios)), "loss drop": means[-1] / losses[0],
                   "rel_min": means[-1] / min(means) - 1}
    return index, scale, episode, fit, signals


def spearman(x, y) -> float:
    rx, ry = (np.argsort(np.argsort(v)).astype(float) for v in (x, y))
    return float(np.corrcoef(rx, ry)[0, 1])


def auc(scores, labels) -> float:
    """P(score of a positive > score of a negative), ties half."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--scales", default="0.1,0.3,1,3,10", help="base-LR scales, ascending")
    parser.add_argument("--early", type=float, default=0.1, help="fraction of the budget the signals read")
    parser.add_argument("--budget", default="100,1000", type=budget_range,
                        help="min,max budget in steps (log-uniform)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    budgets = args.budget
    families = ES_FAMILIES.split(",")
    jobs = [(i, s, families, budgets, args.early) for i in range(args.episodes) for s in scales]
    with ProcessPoolExecutor(args.workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
        results = list(pool.map(run, jobs))
    by_episode = {}
    for index, scale, episode, fit, signals in results:
        by_episode.setdefault(index, {})[scale] = (episode, fit, signals)
    rows = []  # (log(best / scale), larger is better, signals, scale) for the inner scales' runs
    for index, runs in by_episode.items():
        best = min(scales, key=lambda s: runs[s][1])
        for scale in scales[1:-1]:
            _, _, signals = runs[scale]
            if signals:
                rows.append((math.log(best / scale), best > scale, signals, scale))
    print(f"{args.episodes} episodes of {','.join(families)}, budgets {budgets[0]}-{budgets[1]} steps, constant LR at scales "
          f"{args.scales}; signals over the first {args.early:g} of each run; {len(rows)} runs at the inner "
          f"scales ({sum(r[1] for r in rows)} where a larger scale ends better)\n")
    at_one = [r for r in rows if r[3] == 1.0]
    print("| signal | Spearman with log(best / scale) | AUC: a larger scale ends better | the same at 1x only |")
    print("|---|---|---|---|")
    target = [r[0] for r in rows]
    larger = [r[1] for r in rows]
    for name in SIGNALS:
        values = [r[2][name] for r in rows]
        one = auc([r[2][name] for r in at_one], [r[1] for r in at_one])
        print(f"| {name} | {spearman(values, target):+.3f} | {auc(values, larger):.3f} | {one:.3f} |")
    print("| (blind guess) | 0 | 0.5 | 0.5 |")
    counts = {s: sum(min(scales, key=lambda t: runs[t][1]) == s for runs in by_episode.values()) for s in scales}
    print("\nbest scale per episode: " + ", ".join(f"{s:g}x: {n}" for s, n in counts.items()))


if __name__ == "__main__":
    main()
