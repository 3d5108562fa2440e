"""The online tuners against the constant LR they start from, and ExpTest's LR search.

1. MNIST-1D MLP at its full default budget (60 epochs, SGD momentum 0.9, base LR 0.1): the
   LRTuner-style and ExpTest-style tuners, both starting at the base LR, against training at that
   constant LR, on ``--seeds`` seeds (test accuracy and final training loss).
2. Least squares with a known largest Hessian eigenvalue, full-batch gradient descent: the LR
   the ExpTest-style search settles on, as a multiple of the stability bound 2 / lambda_max,
   from three starting LRs on each seed.

    python benchmarks/tuners.py [--seeds 3]

Single-threaded. Prints markdown tables.
"""

import argparse
import statistics

import torch

import metalr


def mnist1d(seeds: int) -> None:
    print("| policy | " + " | ".join(f"seed {s}" for s in range(seeds)) +
          " | mean test acc | mean final train loss |")
    print("|---" * (seeds + 3) + "|")
    for spec in ("constant", "lrtuner", "exptest"):
        runs = [metalr.train("mnist1d-mlp", spec, seed=s).final for s in range(seeds)]
        accs = [r["test_metric"] for r in runs]
        loss = statistics.mean(r["train_loss"] for r in runs)
        print(f"| {spec} | " + " | ".join(f"{a:.3f}" for a in accs) +
              f" | {statistics.mean(accs):.3f} | {loss:.3f} |", flush=True)


def exptest_search(seed: int, start: float, steps: int = 2000) -> tuple[float, int]:
    """Found LR / (2 / lambda_max) and the steps the search took, on one least-squares problem."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(512, 20, generator=gen) * torch.logspace(0, -1.5, 20)
    targets = features @ torch.randn(20, generator=gen)
    hessian = features.T @ features / len(features)
    bound = 2 / torch.linalg.eigvalsh(hessian).max().item()
    weights = torch.zeros(20, requires_grad=True)
    opt = torch.optim.SGD([weights], lr=start * bound)
    sched = metalr.make_policy("exptest", opt, steps)
    for _ in range(steps):
        loss = 0.5 * (features @ weights - targets).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss.item())
    return sched.found_lrs[0] / bound, sched.search_steps


def linear_regression(seeds: int) -> None:
    starts = (1e-3, 1e-2, 1e-1)
    print("| seed | " + " | ".join(f"start {s:g} x bound" for s in starts) + " |")
    print("|---" * (len(starts) + 1) + "|")
    for seed in range(seeds):
        cells = [exptest_search(seed, s) for s in starts]
        print(f"| {seed} | " + " | ".join(f"{r:.2f} ({n} steps)" for r, n in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("## MNIST-1D MLP, full default budget: test accuracy\n")
    mnist1d(args.seeds)
    print("\n## ExpTest search on least squares: found LR / (2 / lambda_max)\n")
    linear_regression(args.seeds)


if __name__ == "__main__":
    main()
