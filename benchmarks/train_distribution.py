"""Policies on fresh episodes of the meta-training distribution, at fixed base-LR scales.

The learned network is meta-trained on episodes of this distribution (families, optimizers,
budgets, batch sizes, label noise), so here it should beat a hand schedule if it beats one
anywhere. Each episode is drawn as meta-training draws it (seeds meta-training never uses), with
the base-LR scale fixed (``--scales``) and the budget always shown, and is trained once per
policy from the same initialisation and batch order. Printed per scale and policy: the mean
ES fitness (final validation loss over the initial one; 2 for a diverged run; lower is better),
the mean final validation metric (accuracy on the default families; 0 for a diverged run) and
the collapses (runs that end with a fitness of 0.95 or more: nothing learned, or diverged), and
of them those on episodes that constant LR trains (when ``constant`` is among the policies).
``--per-episode`` adds a line per episode: fitness/metric of each policy in order.

    python benchmarks/train_distribution.py --policies constant,cosine,metalr:checkpoint=metalr-es2 --episodes 30 --scales 1,3
"""

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

from metalr.learned.train import full_es
from metalr.learned.train.config import ES_FAMILIES, MetaTrainConfig
from metalr.learned.train.distribution import TaskDistribution
from metalr.processes import init_worker
from metalr.trainer import train

COLLAPSED = 0.95
# Episode seeds from here on: meta-training derives its seeds (31-bit hashes) elsewhere.
SEED_BASE = 7_000_000


def score(job):
    """Fitness and final val accuracy of one (scale, episode index, policy) cell."""
    scale, index, policy, families, (shortest, longest) = job
    dist = TaskDistribution(families, shortest, longest, scale, scale,
                            MetaTrainConfig().label_noise, hide_budget=0.0)
    episode = dist.sample(SEED_BASE + index)
    result = train(episode.spec(), policy, seed=episode.seed, steps=episode.budget, eval_points=1,
                   evaluate_test=False)
    fit = full_es.fitness(result, full_es.reference_loss(episode))
    accuracy = result.val_metric[-1] if result.val_metric and not result.diverged else float("nan")
    return episode, fit, accuracy


def budget_range(text: str) -> tuple[int, int]:
    """``--budget``: two step counts ``min,max`` with 1 <= min <= max."""
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two step counts min,max (e.g. 50,600), got {text!r}") from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 1 <= min <= max, got {text!r}")
    return low, high


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="constant,cosine,metalr:checkpoint=metalr-es2",
                        help="comma-separated policy specs (a checkpoint option's commas are not allowed)")
    parser.add_argument("--episodes", type=int, default=30, help="episodes per scale")
    parser.add_argument("--scales", default="1,3", help="comma-separated base-LR scales")
    parser.add_argument("--families", default=ES_FAMILIES, help="task families (default: the ES defaults)")
    parser.add_argument("--budget", default="100,1000", type=budget_range,
                        help="min,max budget in steps (log-uniform)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--per-episode", action="store_true", help="one line per episode too")
    args = parser.parse_args()
    policies = args.policies.split(",")
    scales = [float(s) for s in args.scales.split(",")]
    families = args.families.split(",")
    budgets = args.budget
    jobs = [(s, i, p, families, budgets) for s in scales for i in range(args.episodes) for p in policies]
    with ProcessPoolExecutor(args.workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
        results = list(pool.map(score, jobs))
    cells = {(s, i, p): r for (s, i, p, _, _), r in zip(jobs, results)}
    print(f"{args.episodes} episodes per scale of {','.join(families)}; budgets {budgets[0]}-{budgets[1]} steps, "
          "budget shown\n")
    for s in scales:
        print(f"base-LR scale {s:g}")
        print(f"  {'policy':48s} {'fitness':>8s} {'val metric':>10s} {'collapsed':>10s} "
              f"{'where constant trains':>22s}")
        for p in policies:
            rows = [cells[s, i, p] for i in range(args.episodes)]
            fits = [f for _, f, _ in rows]
            accs = [a if a == a else 0.0 for _, _, a in rows]
            # collapses of this policy on episodes that constant LR, if benchmarked, trains
            trained = [i for i in range(args.episodes)
                       if "constant" in policies and cells[s, i, "constant"][1] < COLLAPSED]
            extra = sum(cells[s, i, p][1] >= COLLAPSED for i in trained)
            print(f"  {p:48s} {sum(fits) / len(fits):8.4f} {sum(accs) / len(accs):10.4f} "
                  f"{sum(f >= COLLAPSED for f in fits):6d}/{len(fits)} {extra:16d}/{len(trained)}")
        if args.per_episode:
            for i in range(args.episodes):
                episode = cells[s, i, policies[0]][0]
                line = " ".join(f"{cells[s, i, p][1]:.3f}/{cells[s, i, p][2]:.3f}" for p in policies)
                print(f"    {i:3d} {episode.spec():70s} budget {episode.budget:5d}  {line}")
        print()


if __name__ == "__main__":
    main()
