"""Reference figures for the embedded tasks: each at its full default budget and default recipe,
under a hand schedule (cosine annealing to zero by default), over several seeds.

Prints a markdown table of the final test metric (mean ± sample std over seeds), and the wall time
and CPU time of one run, single-threaded unless ``--threads`` says otherwise. On a machine that
other processes share, wall time grows with the load; single-threaded CPU time is what one run
costs on an idle core.

    python benchmarks/reference_tasks.py                   # every embedded task, seeds 0 1 2
    python benchmarks/reference_tasks.py --tasks mnist1d-gru digits-cnn --seeds 0 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

import metalr
from metalr.tasks import get_task, task_names


def _fmt(values: list[float], percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f} %" if percent else f"{mean:.3f} ± {std:.3f}"


def run(tasks: list[str], seeds: list[int], policy: str) -> list[dict]:
    rows = []
    for name in tasks:
        task = get_task(name)
        runs = []
        cpu = []
        for seed in seeds:
            before = time.process_time()
            res = metalr.train(task, policy, seed=seed)
            cpu.append(time.process_time() - before)
            runs.append(res)
            print(f"{name} seed {seed}: test {task.metric_name} {res.final['test_metric']:.4f}, "
                  f"val {res.final['val_metric']:.4f}, {res.wall_time:.1f} s wall, {cpu[-1]:.1f} s CPU"
                  + (" (diverged)" if res.diverged else ""), file=sys.stderr, flush=True)
        rows.append({
            "task": name, "optimizer": task.optimizer, "lr": task.base_lr,
            "batch": task.batch_size, "epochs": task.epochs, "steps": task.total_steps,
            "metric": task.metric_name, "higher_is_better": task.higher_is_better,
            "test": [r.final["test_metric"] for r in runs],
            "val": [r.final["val_metric"] for r in runs],
            "wall_time": [r.wall_time for r in runs],
            "cpu_time": cpu,
            "diverged": sum(r.diverged for r in runs),
        })
    return rows


def markdown(rows: list[dict], policy: str) -> str:
    lines = [
        f"| task | recipe ({policy}) | steps | metric | test (mean ± std) | val (mean ± std) "
        "| wall s / run | CPU s / run |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        percent = r["metric"] == "accuracy"
        metric = r["metric"] + ("" if r["higher_is_better"] else " (lower is better)")
        recipe = f"{r['optimizer']} lr {r['lr']:g}, batch {r['batch']}, {r['epochs']} epochs"
        lines.append(
            f"| {r['task']} | {recipe} | {r['steps']} | {metric} | {_fmt(r['test'], percent)} | "
            f"{_fmt(r['val'], percent)} | {statistics.fmean(r['wall_time']):.1f} | "
            f"{statistics.fmean(r['cpu_time']):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=task_names(embedded_only=True),
                        help="task specs (default: every embedded task)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--policy", default="cosine", help="LR policy from the registry")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--json", help="also write the per-seed results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run(args.tasks, args.seeds, args.policy)
    print(markdown(rows, args.policy))
    print(f"\n{len(args.seeds)} seeds ({' '.join(map(str, args.seeds))}), {args.threads} thread(s), "
          f"torch {torch.__version__}, Python {platform.python_version()}, "
          f"{time.perf_counter() - start:.0f} s in all.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"policy": args.policy, "seeds": args.seeds, "threads": args.threads,
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
