"""The LR-free peers on MNIST-1D MLP at the task's full default budget, through metalr.train.

Each peer (schedule-free SGD and AdamW, Prodigy, D-Adaptation SGD and Adam, DoG) runs with its
own defaults in place of the task's SGD (momentum 0.9 and weight decay 5e-4 are passed on where
the optimizer has them); the task's constant-LR SGD and the cosine schedule are shown for
reference. Needs ``pip install metalr[peers]``.

    python benchmarks/peers.py [--seeds 3]

Single-threaded. Prints a markdown table: test accuracy per seed, mean, final training loss and
wall time per run.
"""

import argparse
import statistics

import torch

import metalr

PEERS = ("constant", "cosine", "sf-sgd", "sf-adamw", "prodigy", "dadapt-sgd", "dadapt-adam", "dog")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = range(args.seeds)
    print("| policy | " + " | ".join(f"seed {s}" for s in seeds) +
          " | mean test acc | mean final train loss | s / run |")
    print("|---" * (args.seeds + 4) + "|")
    for spec in PEERS:
        runs = [metalr.train("mnist1d-mlp", spec, seed=s) for s in seeds]
        accs = [r.final["test_metric"] for r in runs]
        loss = statistics.mean(r.final["train_loss"] for r in runs)
        wall = statistics.mean(r.wall_time for r in runs)
        print(f"| {spec} | " + " | ".join(f"{a:.3f}" for a in accs) +
              f" | {statistics.mean(accs):.3f} | {loss:.3f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
