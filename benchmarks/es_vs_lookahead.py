"""Full-horizon ES against MLR-SNet's lookahead at equal meta-training wall time.

1. Meta-trains by ES with the given options and measures its wall time W.
2. Meta-trains by lookahead (``--net=transfer-v1``, its own network) with as many inner runs per
   task as fit in W (timed from one run per task first), on the same families at their default
   recipes.
3. Scores both, and the untrained network (a constant multiplier of 1: the base LR), on
   ``--episodes`` fresh episodes of the training distribution (seeds neither meta-training
   drew) and the ES outer loop's held-out episodes: the ES fitness (final validation loss
   over the initial one, 2 for a diverged run), lower is better; one line per episode, the
   means, and on how many episodes ES beats lookahead.

    python benchmarks/es_vs_lookahead.py --es "--meta-steps=40 --workers=2" --out runs/es_vs_lookahead
"""

import argparse
import json
import shlex
import time
from pathlib import Path

import torch

from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.train import full_es
from metalr.learned.train.config import MetaTrainConfig, build_parser
from metalr.learned.train.distribution import TaskDistribution
from metalr.learned.train.lookahead import meta_train_lookahead
from metalr.learned.train.outer_loop import HELD_OUT, meta_train_es


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--es", default="", help="options of the ES run, as on train_meta.py's command line")
    parser.add_argument("--out", required=True)
    parser.add_argument("--episodes", type=int, default=24,
                        help="fresh training-distribution episodes to score on (plus the held-out ones)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    es_cfg = MetaTrainConfig(**vars(build_parser("es").parse_args(shlex.split(args.es))))
    began = time.perf_counter()
    meta_train_es(es_cfg, out / "es", command=f"python train_meta.py {args.es}", progress=False)
    wall = time.perf_counter() - began

    families = [f for f in es_cfg.task_specs()]
    probe = time.perf_counter()
    meta_train_lookahead(MetaTrainConfig(estimator="lookahead", net="transfer-v1", tasks=",".join(families),
                                         runs_per_task=1, name="probe"), out / "probe", progress=False)
    per_round = time.perf_counter() - probe
    rounds = max(1, int(wall // per_round))
    began = time.perf_counter()
    meta_train_lookahead(MetaTrainConfig(estimator="lookahead", net="transfer-v1", tasks=",".join(families),
                                         runs_per_task=rounds, name="lookahead"), out / "lookahead", progress=False)
    look_wall = time.perf_counter() - began

    dist = TaskDistribution(families, es_cfg.budget_min, es_cfg.budget_max, es_cfg.lr_scale_min,
                            es_cfg.lr_scale_max, es_cfg.label_noise, es_cfg.hide_budget)
    # a key the outer loop never uses (its steps count from 1, its evaluations use 1 << 30)
    episodes = [dist.sample(full_es.derive_seed(es_cfg.seed, 1 << 29, j)) for j in range(args.episodes)]
    episodes += list(HELD_OUT)
    nets = {"untrained (base LR)": ScheduleNet(CONFIGS["default"]),
            "es": checkpoint.load(out / "es" / f"{es_cfg.name}.json")[0],
            "lookahead": checkpoint.load(out / "lookahead" / "lookahead.json")[0]}
    print(f"ES: {wall:.0f} s; lookahead: {rounds} inner runs per task in {look_wall:.0f} s")
    print("| episode | " + " | ".join(nets) + " |")
    print("|---|" + "---|" * len(nets))
    scores = {k: [] for k in nets}
    for ep in episodes:
        row = []
        for name, net in nets.items():
            f = full_es.fitness(full_es.run_episode(net, ep), full_es.reference_loss(ep))
            scores[name].append(f)
            row.append(f"{f:.4f}")
        held = " (held out)" if ep in HELD_OUT else ""
        print(f"| {ep.spec()} budget {ep.budget}{held} | " + " | ".join(row) + " |", flush=True)
    means = {k: sum(v) / len(v) for k, v in scores.items()}
    print("| **mean final / initial val loss** | " + " | ".join(f"**{means[k]:.4f}**" for k in nets) + " |")
    wins = sum(e < la for e, la in zip(scores["es"], scores["lookahead"]))
    print(f"ES better than lookahead on {wins} of {len(episodes)} episodes")
    (out / "summary.json").write_text(json.dumps({"es_wall_s": wall, "lookahead_wall_s": look_wall,
                                                  "lookahead_runs_per_task": rounds, "means": means,
                                                  "es_wins": wins, "episodes": len(episodes)}, indent=2))


if __name__ == "__main__":
    main()
