"""The learned schedule against the transfer and safety targets, from bench reports.

Usage::

    python benchmarks/transfer_targets.py [--summary docs/transfer/summary.csv [MORE.csv ...]]
        [--learned metalr:checkpoint=metalr-es2] [--exclude metalr:checkpoint=metalr-es | --alone]
        [--beside knee] [--seeds 3,4,5] [--tuned]

Several reports may be given (a checkpoint benchmarked into a store of its own, beside the
full report): which way is better on a task is read from the first, and each report's
``cells.csv`` beside its ``summary.csv`` gives the per-scale safety table.

Ranks are recomputed among the ranked rows (hand policies at their validation-selected base LR,
the learned policy and the LR-free peers at their defaults; with ``--tuned`` the learned policy at
its validation-selected base LR too) without the ``--exclude`` policies
(``--alone``: without every other learned policy): a store accumulates every policy ever
benchmarked into it, and a superseded checkpoint should not take a place. Per task it prints
the learned schedule's final test metric, its rank, tuned cosine's metric, the best tuned hand
policy's, and the LR-grid spread (x0.3-x3) of the learned schedule and of constant LR. Then the
targets: mean rank (<= 2.5), tasks where it beats tuned cosine (>= 8 of 11, issue 16), within 1
point of the best tuned hand policy on the budget and label-noise variants, and spread at most a
third of constant LR's (and at most constant LR's). Then safety: at each base-LR scale of the
grid, the learned schedule's mean final test metric against constant LR's at the same scale
(target: at most 2 points, 0.05 bits/char, worse; never collapsed, that is more than 20 points
or 0.5 bits/char worse, where constant LR trains).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

# The budget and label-noise variants of the transfer benchmark (the "within 1 point" target).
VARIANTS = ("mnist1d-mlp:epochs=30", "mnist1d-mlp:epochs=120", "mnist1d-cnn:noise=0.4")
# The safety target's tolerance and what counts as a collapse: accuracy points, bits/char.
LIMITS = {True: (2, 20), False: (0.05, 0.5)}


def shortfall(mine: float, other: float, higher_better: bool) -> float:
    """How much worse ``mine`` is than ``other``: accuracy points (metrics in [0, 1]), or the
    metric itself where lower is better (bits/char); negative when better."""
    return (other - mine) * 100 if higher_better else mine - other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", nargs="+", default=["docs/transfer/summary.csv"])
    parser.add_argument("--learned", default="metalr:checkpoint=metalr-es2")
    parser.add_argument("--exclude", nargs="*", default=["metalr:checkpoint=metalr-es"])
    parser.add_argument("--alone", action="store_true", help="exclude every learned policy but --learned "
                        "(the checkpoints added to a store one after another)")
    parser.add_argument("--seeds", default="", help="comma-separated seeds the safety table reads "
                        "(default: all; e.g. the seeds a choice made on other seeds never saw)")
    parser.add_argument("--tuned", action="store_true", help="rank the learned policy at its validation-selected "
                        "base LR, the tuning the hand schedules get, instead of at the task's default LR (schedule "
                        "quality apart from the LR level; the issue's targets are at the default)")
    parser.add_argument("--beside", default="", help="a hand policy shown beside constant LR in the "
                        "safety table, at the same scale (knee, for a network over the knee shape)")
    args = parser.parse_args()
    rows, higher_better, reported = [], {}, set()
    for path in args.summary:
        if not Path(path).is_file():
            parser.error(f"no report at {path} (a bench store's summary.csv, from `metalr bench --config ...`)")
        with open(path, newline="") as fh:
            every_row = list(csv.DictReader(fh))
        reported.update(r["policy"] for r in every_row if r["category"] == "learned")
        got = [r for r in every_row if r["policy"] not in args.exclude
               and not (args.alone and r["category"] == "learned" and r["policy"] != args.learned)]
        if not higher_better:  # which way is better, from the first report's ranks (rank 1: the best)
            for task in {r["task"] for r in got}:
                ranked = [r for r in got if r["task"] == task and r["rank"]]
                best = min(ranked, key=lambda r: float(r["rank"]))
                higher_better[task] = float(best["final_test_metric"]) >= max(
                    float(r["final_test_metric"]) for r in ranked)
        rows += got
    if args.learned not in reported:
        parser.error(f"--learned {args.learned} is not in {', '.join(args.summary)}; its learned policies: "
                     f"{', '.join(sorted(reported)) or 'none'}")
    if args.tuned:  # the learned policy's ranked row: its tuned one in place of its default one
        for r in rows:
            if r["policy"] == args.learned:
                r["rank"] = "1" if r["selection"] == "tuned" else ""
    by_task = defaultdict(list)
    for r in rows:
        if r["rank"]:  # the ranked rows: tuned hand policies, learned and peers at their defaults
            by_task[r["task"]].append(r)
    ranks, wins, print_rows, variants_ok, spread_ok, spread_le = [], 0, [], [], [], []
    every = defaultdict(list)  # each policy's rank per task, for the standings
    for task, ranked in by_task.items():
        higher = higher_better[task]
        sign = 1 if higher else -1
        value = {r["policy"]: sign * float(r["final_test_metric"]) for r in ranked}
        for policy, v in value.items():
            every[policy].append(1 + sum(w > v for w in value.values())
                                 + 0.5 * (sum(w == v for w in value.values()) - 1))
        mine = value[args.learned]
        rank = every[args.learned][-1]
        ranks.append(rank)
        hand = {r["policy"]: value[r["policy"]] for r in ranked if r["category"] == "hand"}
        best_hand = max(hand.values())
        cosine = hand.get("cosine")  # None in a report without it (a safety check beside constant LR)
        wins += cosine is not None and mine > cosine
        spread = {r["policy"]: float(r["lr_robustness_spread"]) for r in ranked if r["lr_robustness_spread"]}
        scale = 100 if higher else 1
        if task in VARIANTS:
            variants_ok.append(scale * (best_hand - mine) <= 1)
        ratio = spread[args.learned] / spread["constant"] if spread["constant"] else math.inf
        spread_ok.append(ratio <= 1 / 3)
        spread_le.append(ratio <= 1)
        shown = "-" if cosine is None else f"{sign * cosine * scale:.4g}"
        print_rows.append(f"| {task} | {sign * mine * scale:.4g} | {rank:g} | {shown} | "
                          f"{sign * best_hand * scale:.4g} | {spread[args.learned] * scale:.3g} | "
                          f"{spread['constant'] * scale:.3g} | {ratio:.2f} |")
    n = len({r['policy'] for t in by_task.values() for r in t})
    left_out = [*args.exclude, *(["every other learned policy"] if args.alone else [])]
    at = "at its validation-selected base LR" if args.tuned else "at the task's default LR"
    print(f"{args.learned} {at} among {n} policies (without {', '.join(left_out) or 'none'}); "
          "accuracy in %, bits/char as they are\n")
    print("| task | learned | rank | cosine (tuned) | best tuned hand | learned LR-grid spread | "
          "constant's spread | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(print_rows))
    standings = sorted((sum(r) / len(r), p) for p, r in every.items())
    print("\nmean rank of each: " + ", ".join(f"{p} {m:.2f}" for m, p in standings))
    print(f"\nmean rank {sum(ranks) / len(ranks):.2f} of {n} (target <= 2.5)")
    print(f"better than tuned cosine on {wins} of {len(ranks)} tasks (target >= 8)")
    print(f"within 1 point of the best tuned hand policy on {sum(variants_ok)} of {len(variants_ok)} "
          f"budget / label-noise variants (target: all)")
    print(f"LR-grid spread at most a third of constant LR's on {sum(spread_ok)} of {len(spread_ok)} "
          "tasks (target: all)")
    print(f"LR-grid spread at most constant LR's on {sum(spread_le)} of {len(spread_le)} tasks")
    safety(args, higher_better)


def safety(args, higher_better: dict) -> None:
    """The learned schedule against constant LR at each base-LR scale, from the cells."""
    seeds = {s for s in args.seeds.split(",") if s}
    # One run per (task, scale, policy, seed): a later report's replaces an earlier one's (the
    # same cell run again), and each policy's report is named, since runs of one cell on other
    # machines differ (docs/unroll.md, "A ceiling of its own under Adam").
    runs, source = {}, defaultdict(set)
    for summary in args.summary:
        path = Path(summary).with_name("cells.csv")
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                if seeds and r["seed"] not in seeds:
                    continue
                if r["policy"] in (args.learned, "constant", args.beside) and r["final_test_metric"]:
                    runs[r["task"], float(r["scale"]), r["policy"], r["seed"]] = (float(r["final_test_metric"]), path)
    cells = defaultdict(list)
    for (task, scale, policy, _), (value, path) in runs.items():
        cells[task, scale, policy].append(value)
        source[policy].add(str(path))
    if source["constant"] != source[args.learned]:
        print(f"\nnote: constant LR's runs are from {', '.join(sorted(source['constant']))}, the learned "
              f"policy's from {', '.join(sorted(source[args.learned]))}: runs of different sessions "
              "(and machines) of one cell can differ")
    beside = f" | {args.beside} | worse than {args.beside} by" if args.beside else ""
    print("\nsafety: mean final test metric at each base-LR scale, learned against constant LR"
          + (f" (seeds {args.seeds})" if seeds else "") + "\n")
    print(f"| task | scale | learned | constant | worse by | within target | collapsed{beside} |")
    print("|---|---|---|---|---|---|---|" + ("---|---|" if args.beside else ""))
    ok = collapsed = total = better_than_beside = better = 0
    gains, worst = [], defaultdict(list)  # gains in accuracy points; per task (learned, constant)
    for (task, scale, policy), values in sorted(cells.items()):
        if policy != "constant" or (task, scale, args.learned) not in cells:
            continue
        mine, const = (sum(v) / len(v) for v in (cells[task, scale, args.learned], values))
        scale_of = 100 if higher_better[task] else 1
        worse = shortfall(mine, const, higher_better[task])
        limit, collapse = LIMITS[higher_better[task]]
        total += 1
        ok += worse <= limit
        collapsed += worse > collapse
        better += worse < 0
        if higher_better[task]:
            gains.append(-worse)
        worst[task].append((mine, const))
        row = (f"| {task} | {scale:g} | {mine * scale_of:.4g} | {const * scale_of:.4g} | {worse:+.3g} | "
               f"{'yes' if worse <= limit else 'no'} | {'COLLAPSED' if worse > collapse else ''} |")
        if args.beside:
            values = cells.get((task, scale, args.beside), [])
            other = sum(values) / len(values) if values else math.nan
            behind = shortfall(mine, other, higher_better[task])
            better_than_beside += behind <= 0
            row += f" {other * scale_of:.4g} | {behind:+.3g} |"
        print(row)
    print(f"\nwithin 2 points (0.05 bits/char) of constant LR at the same scale in {ok} of {total} cells; "
          f"collapsed where constant LR trains in {collapsed}")
    print(f"better than constant LR at the same scale in {better} of {total} cells; mean gain over it "
          f"in the {len(gains)} accuracy cells {sum(gains) / max(len(gains), 1):+.2f} points")
    # The worst result over the grid (a robustness measure that, unlike the spread, a gain at
    # one scale cannot spoil), against constant LR's worst.
    pick = {task: (min if higher_better[task] else max) for task in worst}
    floors = {task: shortfall(pick[task](m for m, _ in pairs), pick[task](c for _, c in pairs),
                              higher_better[task]) for task, pairs in worst.items()}
    held = sum(floors[t] <= LIMITS[higher_better[t]][0] / 2 for t in floors)
    print(f"worst result over the grid within 1 point (0.025 bits/char) of constant LR's worst on "
          f"{held} of {len(floors)} tasks (at most {max(floors.values()):+.3g} behind)")
    if args.beside:
        print(f"at least as good as {args.beside} at the same scale in {better_than_beside} of {total} cells")

if __name__ == "__main__":
    main()
