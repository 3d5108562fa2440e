"""Short-horizon bias: what the unroll length and meta interval do to the learned schedule.

For each (unroll, meta_interval, order) triple, meta-train the default network on MNIST-1D (MLP
and CNN, one inner run each), then train MLP and CNN from scratch under the learned
schedule (2 seeds, budget known) and report the mean emitted multiplier over the run, the
final one, final test accuracy and meta-training wall time.

    python benchmarks/unroll_interval.py [--grid 5x20x2,20x200x2@0.01,...] [--out DIR]

Each grid entry is unroll x interval x order (1: first, 2: second), optionally +anneal
(default 0) and @meta_lr (default 1e-3), e.g. 20x400x2+30@0.001.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

import metalr
from metalr.learned.train.config import MetaTrainConfig
from metalr.learned.train.lookahead import meta_train_lookahead as meta_train
from metalr.learned.scheduler import MetaLRScheduler


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="1x20x1,5x20x2,10x50x2,20x100x1,20x100x2,50x100x2,20x200x2,50x400x2")
    parser.add_argument("--runs-per-task", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="runs/unroll_interval")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| unroll | anneal | interval | order | meta lr | meta-train s | task | mean mult | final mult | test acc |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for triple in args.grid.split(","):
        shape, _, lr = triple.partition("@")
        shape, _, anneal = shape.partition("+")
        unroll, interval, order = map(int, shape.split("x"))
        anneal = int(anneal or 0)
        meta_lr = float(lr or 1e-3)
        cfg = MetaTrainConfig(unroll=unroll, anneal=anneal, meta_interval=interval, first_order=order == 1,
                              meta_lr=meta_lr,
                              runs_per_task=args.runs_per_task, name=f"u{unroll}_a{anneal}_i{interval}_o{order}_lr{meta_lr:g}",
                              overwrite=True)
        start = time.perf_counter()
        result = meta_train(cfg, Path(args.out), progress=False)
        wall = time.perf_counter() - start
        for task in ("mnist1d-mlp", "mnist1d-cnn"):
            accs, means, finals = [], [], []
            for seed in range(args.seeds):
                res = metalr.train(task, lambda opt, total: MetaLRScheduler.from_pretrained(
                    result["checkpoint"], opt, total_steps=total), seed=100 + seed)
                base = res.lr[0]
                accs.append(res.final["test_metric"])
                means.append(statistics.mean(res.lr) / base)
                finals.append(res.lr[-1] / base)
            print(f"| {unroll} | {anneal} | {interval} | {order} | {meta_lr:g} | {wall:.0f} | {task} | {statistics.mean(means):.3f} | "
                  f"{statistics.mean(finals):.3f} | {statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
