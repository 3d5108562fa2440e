"""Short-horizon bias: what the unroll length and meta interval do to the learned schedule.

For each (unroll, meta_interval, order) triple, meta-train the default network on MNIST-1D (MLP
and CNN, one inner run each), then train MLP and CNN from scratch under the learned
schedule (2 seeds, budget known) and report the mean emitted multiplier over the run, the
final one, final test accuracy and meta-training wall time.

    python benchmarks/unroll_interval.py [--grid 5x20x2,20x100x1,...]  (unroll x interval x order) [--out runs/unroll_interval]
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

import metalr
from metalr.meta_train import MetaTrainConfig, meta_train
from metalr.scheduler import MetaLRScheduler


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="1x20x1,5x20x1,5x20x2,20x100x1,20x100x2,50x100x2,10x50x2")
    parser.add_argument("--runs_per_task", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="runs/unroll_interval")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| unroll | interval | order | meta-train s | task | mean mult | final mult | test acc |")
    print("|---|---|---|---|---|---|---|---|")
    for triple in args.grid.split(","):
        unroll, interval, order = map(int, triple.split("x"))
        cfg = MetaTrainConfig(unroll=unroll, meta_interval=interval, second_order=order == 2,
                              runs_per_task=args.runs_per_task, name=f"u{unroll}_i{interval}_o{order}",
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
            print(f"| {unroll} | {interval} | {order} | {wall:.0f} | {task} | {statistics.mean(means):.3f} | "
                  f"{statistics.mean(finals):.3f} | {statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
