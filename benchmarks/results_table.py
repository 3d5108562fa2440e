"""README results: the shipped checkpoint against constant LR and cosine at the same base LR.

MNIST-1D MLP and CNN at their default recipes (SGD momentum 0.9, base LR 0.1, 60 epochs),
3 seeds (100, 101, 102: none of them a meta-training seed), final test accuracy (mean ± std).
The learned schedule is told the budget.

    python benchmarks/results_table.py [--checkpoint metalr-mnist1d] [--seeds 3]
"""

import argparse
import statistics

import torch

import metalr

TASKS = ("mnist1d-mlp", "mnist1d-cnn")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="metalr-mnist1d")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    policies = {"constant": "constant", "cosine": "cosine",
                f"metalr ({args.checkpoint})": f"metalr:checkpoint={args.checkpoint}"}
    print("| policy | " + " | ".join(TASKS) + " |")
    print("|---|" + "---|" * len(TASKS))
    for label, spec in policies.items():
        cells = []
        for task in TASKS:
            accs = [100 * metalr.train(task, spec, seed=100 + s).final["test_metric"] for s in range(args.seeds)]
            cells.append(f"{statistics.mean(accs):.1f} ± {statistics.stdev(accs):.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
