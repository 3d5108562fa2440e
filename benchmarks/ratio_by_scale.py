"""Where the update-to-weight ratio sits at a base LR that trains, and at one that collapses.

For fresh episodes of the meta-training distribution (drawn as ``train_distribution.py`` draws
them) each base-LR scale runs at constant LR, and the optimizer's update-to-weight ratio
``|w_t - w_t-1| / |w_t|`` is measured on the steps ``hyper-v5`` measures it (1, 11, 21, ...).
Printed per episode and scale: the median ratio over the run and the ES fitness (final
validation loss over the initial one, 2 if diverged); then, pooled over episodes, the ratio at
each episode's best scale and at the smallest scale that collapses it (fitness >= 0.95 where a
smaller scale trains). A ceiling on the ratio can stop a raise of the LR into collapse only if
the second sits above the first across families and optimizers; this measures whether it does.

    python benchmarks/ratio_by_scale.py --episodes 16 --scales 0.1,0.3,1,3,10 --workers 2
"""

import argparse
import math
import os
import statistics
from concurrent.futures import ProcessPoolExecutor

from metalr.learned.features import measures_ratio
from metalr.learned.scheduler import _flat, update_to_weight
from metalr.learned.train import full_es
from metalr.learned.train.config import ES_FAMILIES, MetaTrainConfig
from metalr.learned.train.distribution import TaskDistribution
from metalr.policies.base import SchedulerPolicy
from metalr.processes import init_worker
from metalr.trainer import train
from train_distribution import budget_range  # benchmarks/ is on the path when run as a script

COLLAPSED = 0.95
SEED_BASE = 7_000_000  # train_distribution.py's episodes


def measured_constant(ratios: list):
    """A constant-LR policy that appends the measured ratios (floats) to ``ratios``."""
    def factory(optimizer, total_steps):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        steps = {"n": 0, "before": None}

        def pre(*_):
            if measures_ratio(steps["n"] + 1):
                steps["before"] = _flat(params)

        def post(*_):
            steps["n"] += 1
            if steps["before"] is not None:
                ratios.append(float(update_to_weight(_flat(params), steps["before"])))
                steps["before"] = None

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)
        return None
    return SchedulerPolicy("constant", factory)


def run(job):
    scale, index, families, (shortest, longest) = job
    dist = TaskDistribution(families, shortest, longest, scale, scale,
                            MetaTrainConfig().label_noise, hide_budget=0.0)
    episode = dist.sample(SEED_BASE + index)
    ratios: list = []
    result = train(episode.spec(), measured_constant(ratios), seed=episode.seed, steps=episode.budget,
                   eval_points=1, evaluate_test=False)
    fit = full_es.fitness(result, full_es.reference_loss(episode))
    finite = [r for r in ratios if math.isfinite(r)]
    return episode, fit, statistics.median(finite) if finite else math.nan


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=16, help="episodes (each at every scale)")
    parser.add_argument("--scales", default="0.1,0.3,1,3,10", help="comma-separated base-LR scales")
    parser.add_argument("--families", default=ES_FAMILIES, help="task families (default: the ES defaults)")
    parser.add_argument("--budget", default="50,600", type=budget_range,
                        help="min,max budget in steps (log-uniform)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    scales = sorted(float(s) for s in args.scales.split(","))
    families = args.families.split(",")
    jobs = [(s, i, families, args.budget) for i in range(args.episodes)
            for s in scales]
    with ProcessPoolExecutor(args.workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
        cells = {(s, i): r for (s, i, _, _), r in zip(jobs, pool.map(run, jobs))}
    print(f"{args.episodes} episodes of {','.join(families)}; budgets {args.budget[0]}-{args.budget[1]} steps; constant LR; "
          "per scale: median update-to-weight ratio / fitness\n")
    print(f"{'episode':58s} " + " ".join(f"{'x' + format(s, 'g'):>16s}" for s in scales))
    best, first_collapse = [], []
    for i in range(args.episodes):
        episode = cells[scales[0], i][0]
        name = f"{episode.family} {episode.optimizer}" + (f" m={episode.momentum:g}" if episode.optimizer == "sgd" else "")
        name += f" T={episode.budget}"
        row = [cells[s, i] for s in scales]
        print(f"{name:58s} " + " ".join(f"{r:8.1e}/{f:6.3f}" for _, f, r in row))
        k = min(range(len(scales)), key=lambda j: row[j][1])
        best.append((row[k][2], name, scales[k]))
        trained = False
        for s, (_, f, r) in zip(scales, row):
            if f < COLLAPSED:
                trained = True
            elif trained:
                first_collapse.append((r, name, s))
                break
    print("\nratio at each episode's best scale (ascending):")
    for r, name, s in sorted(best):
        print(f"  {r:8.1e}  x{s:<5g} {name}")
    print("ratio at the smallest scale that collapses an episode a smaller scale trains (ascending):")
    for r, name, s in sorted(first_collapse):
        print(f"  {r:8.1e}  x{s:<5g} {name}")


if __name__ == "__main__":
    main()
