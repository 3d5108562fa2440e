"""The meta-training estimators at equal wall time, scored on fresh episodes of the training distribution.

Each estimator meta-trains the same fresh network (``--net``, seed 0) from its own defaults for
``--minutes`` of wall time on ``--workers`` processes (``train_meta.py --max-minutes``, no
evaluations during the run, so the whole budget goes to meta-training); lookahead, which runs in
one process, gets as many inner runs as fit in the same time. Then
``benchmarks/train_distribution.py`` scores constant LR and every checkpoint on the same fresh
episodes at each base-LR scale (``--scales``). A checkpoint already in ``--out`` is reused, so
an interrupted benchmark continues where it stopped; run it on an otherwise idle machine, since
the estimators share the clock, not the work.

    python benchmarks/equal_time.py --minutes 10 --workers 2
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lookahead stops at the first inner run past the limit: give it more runs than fit.
LOOKAHEAD_RUNS = 1000


def train(estimator: str, args, out: Path) -> Path:
    """Meta-train ``estimator`` for ``args.minutes`` (unless its checkpoint exists); its JSON."""
    name = f"equal-{estimator}"
    path = out / estimator / f"{name}.json"
    if path.exists():
        return path
    command = [sys.executable, str(ROOT / "train_meta.py"), f"--estimator={estimator}", f"--net={args.net}",
               f"--max-minutes={args.minutes}", f"--workers={args.workers}", f"--name={name}",
               f"--out={out / estimator}", "--no-progress"]
    if estimator == "lookahead":
        command.append(f"--runs-per-task={LOOKAHEAD_RUNS}")
    else:  # run until the time is up: the step count is only an upper bound
        command += ["--meta-steps=100000", "--eval-every=0", "--save-every=5"]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-time budget of each estimator")
    parser.add_argument("--estimators", default="unroll,hybrid,es,lookahead")
    parser.add_argument("--net", default="default", help="network configuration (lookahead refuses shaped ones)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=16, help="evaluation episodes per scale")
    parser.add_argument("--scales", default="0.3,1,3")
    parser.add_argument("--out", default="runs/equal-time")
    args = parser.parse_args()
    out = Path(args.out)
    estimators = args.estimators.split(",")
    paths = {e: train(e, args, out) for e in estimators}
    print(f"\nmeta-training at {args.minutes:g} minutes each, --net={args.net}, {args.workers} processes "
          "(lookahead: 1)")
    print("| estimator | outer steps (lookahead: inner runs) | training runs | wall s |")
    print("|---|---|---|---|")
    for estimator, path in paths.items():
        meta = json.loads(path.read_text())["meta_training"]
        if estimator == "lookahead":
            steps, runs = meta["inner_runs"], meta["inner_runs"]
        else:
            steps, runs = meta["meta_steps"], meta["episodes"]
            if estimator == "hybrid":  # and the ES pairs' runs on each episode
                runs += 2 * meta["config"]["pairs_per_episode"] * meta["episodes"]
        print(f"| {estimator} | {steps} | {runs} | {meta['wall_time_s']:.0f} |")
    print(flush=True)
    policies = ",".join(["constant", *(f"metalr:checkpoint={p}" for p in paths.values())])
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_distribution.py"), f"--policies={policies}",
                    f"--episodes={args.episodes}", f"--scales={args.scales}", f"--workers={args.workers}"],
                   check=True)


if __name__ == "__main__":
    main()
