"""ES meta-training throughput, side by side in one run (issue 9, item 5 targets).

(a) episodes per second of the outer loop itself (``meta_train_es``) with 1 and 2 worker
    processes, same seeds and options (target: 2 workers >= 1.8x);
(b) the vectorised population (:mod:`metalr.learned.train.population`, torch.func vmap) against
    sequential episodes (:func:`full_es.run_episode`), one thread each, so episodes per second
    are per CPU core, for K members on mnist1d-mlp and mnist1d-cnn (target >= 1.5x);
(c) with ``--device cuda`` and a GPU: the vectorised population at K = 256 and 1024 against
    sequential episodes on the same GPU (target >= 100x).

Episodes are short (``--budget`` steps) so the run is quick; the rates are for that budget.
Run: ``python benchmarks/es_throughput.py [--device cuda] [--sizes 8,16,32] [--budget 40]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.train import full_es, population
from metalr.learned.train.config import MetaTrainConfig
from metalr.learned.train.distribution import Episode
from metalr.learned.train.outer_loop import meta_train_es
from metalr.tasks import get_task

CONFIG = CONFIGS["default"]


def _nets(k: int) -> list:
    torch.manual_seed(0)
    theta = full_es.flat(ScheduleNet(CONFIG))
    return [full_es.network_at(CONFIG, theta + 0.02 * full_es.noise(theta.numel(), i)) for i in range(k)]


def workers(args) -> None:
    print(f"(a) outer loop, episodes/s by worker processes ({args.pairs} pairs x {args.meta_steps} "
          f"steps, budget {args.budget}, {args.tasks}); this machine has {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} before the run: other jobs share them")
    rates = {1: [], 2: []}
    # 1 and 2 workers alternate, --repeats rounds, medians kept: the cores' speed drifts.
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for n in (1, 2):
                cfg = MetaTrainConfig(tasks=args.tasks, pairs=args.pairs, meta_steps=args.meta_steps,
                                      budget_min=args.budget, budget_max=args.budget, eval_every=0,
                                      save_every=args.meta_steps, workers=n, name=f"w{n}r{r}")
                meta_train_es(cfg, Path(tmp) / cfg.name, progress=False)
                with open(Path(tmp) / cfg.name / f"{cfg.name}.metrics.csv") as fh:
                    walls = [float(r["wall_time"]) for r in csv.DictReader(fh) if r["fitness"]]
                # From the end of step 1: process start-up and data loading are not throughput.
                rates[n].append(2 * args.pairs * (len(walls) - 1) / (walls[-1] - walls[0]))
    for n in (1, 2):
        print(f"    {n} worker{'s' if n > 1 else ' '}: {statistics.median(rates[n]):7.2f} episodes/s "
              f"(median of {args.repeats}: {', '.join(f'{v:.2f}' for v in rates[n])})")
    ratio = statistics.median(b / a for a, b in zip(rates[1], rates[2]))
    print(f"    ratio 2 workers / 1 worker: {ratio:.2f}x (median of the rounds' ratios; target 1.8x)")


def _seconds(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def vectorised(args, families, sizes, device: str, sequential: int) -> None:
    """Rates for each family: sequential and each K timed in turn, ``--repeats`` rounds, best
    of each kept, so a burst of load from other jobs does not fall on one side only."""
    nets = _nets(max(sizes))
    for family in families:
        episode = Episode(family, "sgd", 0.9, 1.0, 0.1, args.budget, 64, 0.0, True, 1)
        get_task(episode.spec())  # data loading is not throughput
        population.run_population(nets[:2], Episode(family, "sgd", 0.9, 1.0, 0.1, 3, 64, 0.0, True, 1), device)
        best = {}
        for _ in range(args.repeats):
            runs = {0: lambda: [full_es.run_episode(n, episode, device) for n in nets[:sequential]]}
            runs.update({k: (lambda k=k: population.run_population(nets[:k], episode, device))
                         for k in sizes})
            for k, fn in runs.items():
                best[k] = min(best.get(k, float("inf")), _seconds(fn))
        seq = sequential / best[0]
        print(f"    {family:12s} sequential        {seq:9.2f} episodes/s")
        for k in sizes:
            print(f"    {family:12s} vectorised K={k:<5d} {k / best[k]:9.2f} episodes/s  "
                  f"ratio {k / best[k] / seq:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=int, default=40, help="steps per episode")
    parser.add_argument("--sizes", default="8,16,32", help="population sizes for (b)")
    parser.add_argument("--families", default="mnist1d-mlp,mnist1d-cnn")
    parser.add_argument("--sequential", type=int, default=2, help="episodes timed sequentially")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of timings (best kept)")
    parser.add_argument("--tasks", default="mnist1d-mlp,cancer-mlp", help="families for (a)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--meta-steps", type=int, default=5)
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    families = args.families.split(",")
    if not args.skip_workers:
        workers(args)
    print(f"(b) vectorised population vs sequential episodes, one thread (= per core), CPU, "
          f"budget {args.budget}, SGD+momentum, batch 64")
    vectorised(args, families, [int(s) for s in args.sizes.split(",")], "cpu", args.sequential)
    if args.device != "cuda":
        print("(c) GPU: not requested (pass --device cuda)")
    elif not torch.cuda.is_available():
        print("(c) GPU: no CUDA device available here; (c) was not measured")
    else:
        print(f"(c) vectorised population vs sequential episodes on {torch.cuda.get_device_name()}")
        vectorised(args, families, [256, 1024], "cuda", args.sequential)


if __name__ == "__main__":
    main()
