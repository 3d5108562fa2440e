"""Check that each shipped checkpoint is what its recorded command makes today.

For every checkpoint in ``pretrained/``, this reruns the meta-training command recorded in its
JSON (``meta_training.command``; a record from before ``--estimator`` existed is translated into
today's options, see :func:`todays_command`) into a temporary directory, then trains each of the
checkpoint's meta-training tasks with the shipped and the rerun network over ``--seeds`` seeds
(``metalr.train`` at each task's defaults) and compares the mean final test metric (a checkpoint
whose ceiling was added after meta-training, ``meta_training.ceiling``, gets it added to the
rerun the same way, by ``benchmarks/with_ceiling.py``). The check
passes when, on every task, the two means differ by no more than the seed spread: the larger of
the two sets' ranges (max - min over seeds), and at least ``--floor``. It prints the comparison
and exits with status 1 on a failure::

    python benchmarks/reproduce_pretrained.py [--seeds 3] [--only NAME] [--keep DIR]

Bitwise equality of the weights is reported too, but not required: the check is about the
benchmark row a user would see, which must not depend on the meta-training code having moved.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from metalr.learned.train.config import flag
from with_ceiling import add_ceiling  # benchmarks/ is on the path when run as a script

REPO = Path(__file__).resolve().parents[1]
# Options of the old lookahead-only command that today's train_meta.py still takes, unchanged.
_LOOKAHEAD_OPTIONS = ("tasks", "runs_per_task", "unroll", "anneal", "meta_interval",
                      "first_order", "meta_lr", "meta_weight_decay", "val_batch", "hide_budget",
                      "epochs", "seed", "name")


def todays_command(config: dict) -> list[str]:
    """The argv (after ``python train_meta.py``) that remakes a checkpoint, from its JSON.

    A record that names its estimator already is today's command and is rerun as recorded
    (``--out`` aside). An older one was made by the only estimator there was, the lookahead,
    with the network then called ``default``, which is today's ``transfer-v1`` (the checkpoint's
    own ``net`` says so): its recorded options are spelled out, so later changes of defaults
    cannot change what is rerun.
    """
    meta = config["meta_training"]
    argv = shlex.split(meta["command"])[2:]  # after "python train_meta.py"
    recorded = meta.get("config", {})
    if "estimator" not in recorded:
        if config["net"]["features"] != "transfer-v1":
            raise SystemExit(f"{config['name']}: an old record with a {config['net']['features']} "
                             "network; only transfer-v1 ones are translated")
        argv = ["--estimator=lookahead", "--net=transfer-v1"]
        for key in _LOOKAHEAD_OPTIONS:
            value = recorded[key]
            if isinstance(value, bool):
                argv += [flag(key)] if value else []
            else:
                argv.append(f"{flag(key)}={value}")
    return [a for a in argv if not a.startswith(("--out=", "--overwrite"))]


def _test_metrics(checkpoint: Path, task: str, seeds: int) -> list[float]:
    import torch

    from metalr import get_policy, train

    torch.set_num_threads(1)  # as the CLI: the models are tiny, and the cores are shared
    policy = get_policy(f"metalr:checkpoint={checkpoint}")
    return [train(task, policy, seed=seed).final["test_metric"] for seed in range(seeds)]


def _spread(values: list[float]) -> float:
    return max(values) - min(values)


def _fmt(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {statistics.pstdev(values):.4f}"


def check(name: str, seeds: int, floor: float, workdir: Path) -> bool:
    shipped = REPO / "pretrained" / f"{name}.json"
    config = json.loads(shipped.read_text())
    argv = [*todays_command(config), f"--out={workdir}"]
    print(f"== {name}\nrerun: python train_meta.py {shlex.join(argv)}", flush=True)
    subprocess.run([sys.executable, "train_meta.py", *argv], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    # the run's own --name (a ceiling added afterwards was saved under another name)
    rerun = workdir / f"{config['meta_training'].get('config', {}).get('name', config['name'])}.json"
    if "ceiling" in config["meta_training"]:  # a ceiling added after meta-training (with_ceiling.py)
        ceiling = config["meta_training"]["ceiling"]
        rerun = add_ceiling(str(rerun), ceiling["max_ratio"], str(workdir / f"{name}-with-ceiling"),
                            ceiling.get("max_ratio_adaptive"), ceiling.get("collapse_guard"),
                            ceiling.get("ratio_floor", 1.0), ceiling.get("raise_needs_budget", False),
                            ceiling.get("guard", "keep"), ceiling.get("max_ratio_hypergradient"),
                            ceiling.get("max_multiplier_hypergradient"), ceiling.get("hypergradient_z"))
        adaptive = f" --adaptive {ceiling['max_ratio_adaptive']}" if "max_ratio_adaptive" in ceiling else ""
        adaptive += f" --collapse-guard {ceiling['collapse_guard']}" if "collapse_guard" in ceiling else ""
        adaptive += f" --floor {ceiling['ratio_floor']}" if "ratio_floor" in ceiling else ""
        adaptive += " --raise-needs-budget" if ceiling.get("raise_needs_budget") else ""
        adaptive += f" --guard {ceiling['guard'] if ceiling['guard'] is not None else 'none'}" if "guard" in ceiling else ""
        adaptive += (f" --hypergradient {ceiling['max_ratio_hypergradient']}"
                     if "max_ratio_hypergradient" in ceiling else "")
        adaptive += (f" --hypergradient-cap {ceiling['max_multiplier_hypergradient']}"
                     if "max_multiplier_hypergradient" in ceiling else "")
        adaptive += f" --hypergradient-z {ceiling['hypergradient_z']}" if "hypergradient_z" in ceiling else ""
        print(f"then: python benchmarks/with_ceiling.py <rerun> {ceiling['max_ratio']} <rerun>-with-ceiling"
              f"{adaptive}", flush=True)
    rerun_sha = json.loads(rerun.read_text())["sha256"]
    same = "identical" if rerun_sha == config["sha256"] else "different"
    print(f"weights: shipped {config['sha256'][:12]}..., rerun {rerun_sha[:12]}... ({same})")
    ok = True
    print(f"{'task':<16} {'shipped':>18} {'rerun':>18} {'|diff|':>8} {'allowed':>8}  result")
    for task in config["meta_training"]["tasks"]:
        a = _test_metrics(shipped, task, seeds)
        b = _test_metrics(rerun, task, seeds)
        diff = abs(statistics.fmean(a) - statistics.fmean(b))
        allowed = max(_spread(a), _spread(b), floor)
        passed = math.isfinite(diff) and diff <= allowed
        ok &= passed
        print(f"{task:<16} {_fmt(a):>18} {_fmt(b):>18} {diff:>8.4f} {allowed:>8.4f}  "
              f"{'ok' if passed else 'FAIL'}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task and checkpoint")
    parser.add_argument("--floor", type=float, default=0.005,
                        help="smallest allowed difference of the means (default 0.005)")
    parser.add_argument("--only", metavar="NAME", help="check this shipped checkpoint only")
    parser.add_argument("--keep", metavar="DIR", help="write the reruns here (default: a "
                        "temporary directory, removed afterwards)")
    args = parser.parse_args()
    names = sorted(p.stem for p in (REPO / "pretrained").glob("*.json"))
    names = [n for n in names if args.only in (None, n)]
    if not names:
        parser.error(f"no shipped checkpoint {args.only!r}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        results = {name: check(name, args.seeds, args.floor, root / name) for name in names}
    failed = [n for n, ok in results.items() if not ok]
    print("reproduced: " + ", ".join(n for n in names if n not in failed) if not failed
          else f"NOT reproduced: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
