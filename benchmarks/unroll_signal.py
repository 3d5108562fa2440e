"""How repeatable one step's gradient is: the exact unroll against clipped ES, at measured cost.

Draws ``--episodes`` episodes of the meta-training distribution (base-LR scales stratified over
``--scales``, as ``train_meta.py --estimator=unroll`` draws them) and on each computes, at the
network ``--checkpoint`` (default: a fresh ``--net``, as a run starts):

* the exact hypergradient (:func:`unroll.episode_gradient`), raw and bounded to norm
  ``--episode-clip`` as a meta-training step uses it;
* an antithetic ES estimate over every parameter from ``--pairs`` pairs (sigma 0.05, differences
  clipped to 0.05, ``train_meta.py --estimator=es``'s defaults), vectorised;
* from the two, the hybrid (``--estimator=hybrid``): each half's raw exact gradients (a blow-up's
  push at norm ``--episode-clip``) and ES estimates merged by their variances across the half's
  episodes (:func:`hybrid.mix`), at the cost of both.

It prints the CPU seconds each estimator spent per episode, and the split-half cosine: the
episodes split into two random halves (``--splits`` times), the cosine between the halves' mean
gradients, averaged over the splits. About 0 when noise dominates, approaching 1 as a step's
estimate becomes repeatable on new episodes. "unit" normalises each episode's gradient first
(every episode weighs the same).

    python benchmarks/unroll_signal.py --episodes 24 --pairs 4 --workers 2
"""

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.train import full_es, hybrid, unroll
from metalr.learned.train.config import MetaTrainConfig
from metalr.learned.train.distribution import TaskDistribution
from metalr.processes import init_worker

SEED_BASE = 9_500_000
SIGMA, DIFF_CLIP = 0.05, 0.05


def estimates(job):
    """Both estimators on episode ``index``: (episode, unroll result, its seconds, ES, its seconds)."""
    index, n, net_path, net_name, pairs, scales, budgets = job
    torch.set_num_threads(1)
    net = checkpoint.load(net_path)[0] if net_path else ScheduleNet(CONFIGS[net_name])
    cfg = MetaTrainConfig()
    dist = TaskDistribution(cfg.task_specs(), *budgets, *scales, cfg.label_noise, cfg.hide_budget)
    episode = dist.sample(SEED_BASE + index, stratum=(index % n, n))
    began = time.process_time()
    result = unroll.episode_gradient(net, episode)
    unroll_s = time.process_time() - began
    began = time.process_time()
    seeds = [SEED_BASE + 1000 * index + p for p in range(pairs)]
    g = hybrid.es_sample(net.config, full_es.flat(net), episode, seeds, SIGMA, DIFF_CLIP, vectorised=True)[0]
    es_s = time.process_time() - began
    return episode, result, unroll_s, g, es_s


def split_half(vectors: np.ndarray, splits: int, rng, es: np.ndarray | None = None) -> float:
    """Mean cosine between two random halves' mean gradients; with ``es``, each half's hybrid mix
    of ``vectors`` (the unrolled samples) and ``es``."""
    cosines = []
    for _ in range(splits):
        order = rng.permutation(len(vectors))
        if es is None:
            a, b = (vectors[order[i::2]].mean(0) for i in (0, 1))
        else:
            a, b = (hybrid.mix(torch.from_numpy(vectors[order[i::2]]), torch.from_numpy(es[order[i::2]]))[0].numpy()
                    for i in (0, 1))
        cosines.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
    return float(np.mean(cosines))


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norms > 0, vectors / np.maximum(norms, 1e-30), 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--pairs", type=int, default=4, help="ES pairs per episode")
    parser.add_argument("--scales", default="0.1,10", help="base-LR scale range (stratified)")
    parser.add_argument("--budget", default="50,300", help="min,max budget in steps (log-uniform)")
    parser.add_argument("--checkpoint", default="", help="network to measure at (default: a fresh --net)")
    parser.add_argument("--net", default="default", choices=sorted(CONFIGS), help="a fresh network's configuration")
    parser.add_argument("--episode-clip", type=float, default=MetaTrainConfig().episode_clip)
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    scales = tuple(float(s) for s in args.scales.split(","))
    budgets = tuple(int(b) for b in args.budget.split(","))
    jobs = [(i, args.episodes, args.checkpoint, args.net, args.pairs, scales, budgets)
            for i in range(args.episodes)]
    with ProcessPoolExecutor(args.workers, initializer=init_worker, initargs=(os.getpid(),)) as pool:
        results = list(pool.map(estimates, jobs))
    rng = np.random.default_rng(0)
    raw = np.stack([r.grad.numpy() for _, r, _, _, _ in results])
    clipped = np.stack([unroll.bounded(r.grad, args.episode_clip).numpy() for _, r, _, _, _ in results])
    es = np.stack([g.numpy() for *_, g, _ in results])
    unroll_s = np.mean([s for _, _, s, _, _ in results])
    es_s = np.mean([s for *_, s in results])
    blown = sum(r.blown_up_at is not None for _, r, _, _, _ in results)
    print(f"{args.episodes} episodes, budgets {budgets}, base-LR scales {scales} (stratified), "
          f"{raw.shape[1]} parameters; {blown} blew up")
    print(f"CPU seconds per episode: unroll {unroll_s:.2f}, ES {args.pairs} pairs {es_s:.2f} "
          f"(ES / unroll: {es_s / unroll_s:.2f}x)")
    samples = np.stack([hybrid.unrolled_sample(r, args.episode_clip).numpy() for _, r, _, _, _ in results])
    print("| estimator | CPU s / episode | split-half cosine (raw) | (bounded) | (unit) |")
    print("|---|---|---|---|---|")
    print(f"| unroll | {unroll_s:.2f} | {split_half(raw, args.splits, rng):+.3f} | "
          f"{split_half(clipped, args.splits, rng):+.3f} | {split_half(unit(raw), args.splits, rng):+.3f} |")
    print(f"| ES, {args.pairs} pairs, clipped d | {es_s:.2f} | {split_half(es, args.splits, rng):+.3f} | - | "
          f"{split_half(unit(es), args.splits, rng):+.3f} |")
    print(f"| hybrid (unroll + ES {args.pairs} pairs, inverse variance) | {unroll_s + es_s:.2f} | "
          f"{split_half(samples, args.splits, rng, es):+.3f} | - | - |")
    weight = hybrid.mix(torch.from_numpy(samples), torch.from_numpy(es))[1]
    print(f"hybrid: weight of the unrolled mean over all {args.episodes} episodes {weight:.3f}")
    norms = np.linalg.norm(raw, axis=1)
    print(f"unroll gradient norms: median {np.median(norms):.3g}, max {norms.max():.3g}; "
          f"per episode (scale: norm, meta-loss): "
          + ", ".join(f"{ep.lr_scale:.2g}: {n:.2g}, {r.meta_loss:.2f}"
                      for (ep, r, *_), n in zip(results, norms)))


if __name__ == "__main__":
    main()
