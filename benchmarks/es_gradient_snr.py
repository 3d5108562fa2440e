"""How much signal one ES step's gradient estimate carries, by perturbation scale sigma.

Runs ``--episodes`` episodes of the meta-training distribution with ``--pairs`` antithetic
pairs each (vectorised, as ``train_meta.py --vectorize --pairs-per-episode=P`` runs them) at the
network ``--checkpoint`` (default: a fresh one, as a run starts), once per sigma, on the same
episodes and noise directions, and for each of four estimators (:data:`ESTIMATORS`: the pair
difference ``d`` from the final loss, from the mean of the last 4 evaluations, its sign, or
clipped) prints how concentrated ``d`` is (the share of ``sum d^2`` in the top 10% of pairs:
near 1 when a few pairs where one member collapses carry it) and two split-half cosines:

* across episodes: the episodes split into two random halves, the cosine between the halves'
  gradient estimates. About 0 when noise dominates, approaching 1 as a step's estimate becomes
  repeatable on new episodes;
* within episodes: each episode's pairs split in two. High here but low across means each
  episode's own gradient is pinned down and the episodes disagree: more episodes, not more pairs
  per episode, would help.

One ES step of ``train_meta.py`` uses its ``--pairs`` pairs, a fraction of what this probe uses,
so its per-step signal is lower still.

    python benchmarks/es_gradient_snr.py --sigmas 0.05,0.2 --episodes 16 --pairs 4
"""

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.train import full_es, population
from metalr.learned.train.config import MetaTrainConfig
from metalr.learned.train.distribution import TaskDistribution
from metalr.processes import init_worker

SEED_BASE = 9_000_000


# Estimators compared on the same runs: the difference d of each pair is taken from
ESTIMATORS = {
    "final": "the final validation loss ratio (train_meta.py's default)",
    "last4": "the mean ratio over the last 4 evaluations (--fitness-evals=4)",
    "sign": "sign(d) of the final ratio (VeLO's antithetic sign)",
    "clip0.05": "the final ratio's d clipped to [-0.05, 0.05]",
}


def differences(job):
    """Per estimator, ``F+ - F-`` of each pair of one episode at one sigma."""
    theta, index, sigma, episode_index, pairs, cfg_dict = job
    cfg = MetaTrainConfig(**cfg_dict)
    dist = TaskDistribution(cfg.task_specs(), cfg.budget_min, cfg.budget_max, cfg.lr_scale_min,
                            cfg.lr_scale_max, cfg.label_noise, cfg.hide_budget)
    episode = dist.sample(SEED_BASE + episode_index)
    config = CONFIGS[cfg.net]
    thetas = []
    for p in range(pairs):
        eps = full_es.noise(index.numel(), SEED_BASE + 1000 * episode_index + p)
        for sign in (1.0, -1.0):
            full = theta.clone()
            full[index] += sign * sigma * eps
            thetas.append(full)
    result = population.run_population([full_es.network_at(config, t) for t in thetas], episode,
                                       evaluations=4)
    reference = full_es.reference_loss(episode)
    final = [full_es.normalised(v[-1], d, reference) for v, d in zip(result.val_loss, result.diverged)]
    last4 = [full_es.mean_normalised(v, d, reference) for v, d in zip(result.val_loss, result.diverged)]
    d_final = np.array([final[2 * p] - final[2 * p + 1] for p in range(pairs)])
    return {"final": d_final, "last4": np.array([last4[2 * p] - last4[2 * p + 1] for p in range(pairs)]),
            "sign": np.sign(d_final), "clip0.05": np.clip(d_final, -0.05, 0.05)}


def _cosine(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", default="0.05,0.2")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=4, help="antithetic pairs per episode")
    parser.add_argument("--checkpoint", default="", help="start from this checkpoint's network")
    parser.add_argument("--budget", default="100,1000", help="min,max episode budget in steps")
    parser.add_argument("--splits", type=int, default=200, help="random half-splits averaged")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    shortest, longest = map(int, args.budget.split(","))
    cfg = MetaTrainConfig(budget_min=shortest, budget_max=longest)
    torch.manual_seed(cfg.seed)
    net = checkpoint.load(args.checkpoint)[0] if args.checkpoint else ScheduleNet(CONFIGS[cfg.net])
    theta = full_es.flat(net)
    index = full_es.perturbed_indices(net, cfg.perturb)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    jobs = [(theta, index, s, e, args.pairs, vars(cfg)) for s in sigmas for e in range(args.episodes)]
    with ProcessPoolExecutor(args.workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
        diffs = list(pool.map(differences, jobs))
    rng = np.random.default_rng(0)
    print(f"{args.episodes} episodes x {args.pairs} pairs, budgets {args.budget}, "
          f"{index.numel()} perturbed parameters, network: {args.checkpoint or 'fresh'}\n")
    for name, what in ESTIMATORS.items():
        print(f"{name:9s} d from {what}")
    print(f"\n{'sigma':>6s} {'estimator':>9s} {'mean |d|':>9s} {'top 10% of pairs: share of sum d^2':>35s} "
          f"{'split-half cosine':>18s} {'within episodes':>16s}")
    for s in sigmas:
        rows = [d for (_, _, sig, _, _, _), d in zip(jobs, diffs) if sig == s]
        for name in ESTIMATORS:
            # per pair: d * eps, [episode, pair, dim]
            terms = np.stack([[d * full_es.noise(index.numel(), SEED_BASE + 1000 * e + p).numpy()
                               for p, d in enumerate(row[name])] for e, row in enumerate(rows)])
            across, within = [], []
            for _ in range(args.splits):
                # halves of the episodes (how repeatable a step's estimate is on new episodes) and
                # halves of each episode's pairs (how well the pairs pin down those episodes' own
                # gradient): high within and low across means the episodes disagree
                half = rng.permutation(len(terms))
                across.append(_cosine(terms[half[:len(half) // 2]].sum((0, 1)),
                                      terms[half[len(half) // 2:]].sum((0, 1))))
                half = rng.permutation(terms.shape[1])
                within.append(_cosine(terms[:, half[:len(half) // 2]].sum((0, 1)),
                                      terms[:, half[len(half) // 2:]].sum((0, 1))))
            d = np.abs(np.concatenate([row[name] for row in rows]))
            top = np.sort(d ** 2)[::-1][:max(1, len(d) // 10)].sum() / max((d ** 2).sum(), 1e-30)
            print(f"{s:6g} {name:>9s} {d.mean():9.4f} {top:35.2f} {np.mean(across):18.3f} "
                  f"{np.mean(within):16.3f}")


if __name__ == "__main__":
    main()
