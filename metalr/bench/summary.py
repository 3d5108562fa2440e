"""From stored records to the report's tables: grid-point selection, targets, ranks.

All of it is computed at report time from the store, so a report can be rebuilt (and a target
redefined) without training anything.

Per task:

1. Every (policy, scale) group of cells is scored by its mean final **validation** metric
   over seeds. A hand policy's ``tuned`` row is its best-scoring scale; the learned
   scheduler's and the peers' ``default`` row is scale 1 (no tuning). The learned scheduler
   also gets a ``tuned`` row, shown for information and left out of the ranks.
2. The target is the mean final test metric of the target policy's tuned row (by default
   cosine at its validation-selected base LR). Each cell's steps and time to reach it are
   read from its stored test curve.
3. Each row gets: mean and seed spread of the final test metric, mean best test metric, test
   loss, steps and time to target (means over the seeds that reach it, and how many do), wall
   time, confidence, train/test gap, robustness (spread of the seed-mean final test metric
   over the base-LR grid), and its rank among the ranked rows (hand ``tuned``, learned
   ``default``, peers ``default``) by mean final test metric.

Error cells (a run that raised) are counted, never averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from metalr.bench import metrics as M


@dataclass
class Row:
    """One line of a task's table: a policy at a selected (or default) base-LR scale."""

    policy: str
    category: str
    selection: str
    scale: float
    ranked: bool
    cells: list[dict]
    final: float = math.nan
    final_std: float | None = None
    best: float = math.nan
    test_loss: float = math.nan
    val: float = math.nan
    steps_to_target: float | None = None
    time_to_target: float | None = None
    reached: int = 0
    wall_time: float = math.nan
    confidence: float | None = None
    gap: float = math.nan
    robustness: float | None = None
    diverged: int = 0
    rank: float | None = None

    @property
    def label(self) -> str:
        return f"{self.policy} (tuned)" if self.category == "learned" and \
            self.selection == "tuned" else self.policy

    @property
    def best_cell(self) -> dict:
        """The seed whose final validation metric is best (for the curve plots)."""
        higher = self.cells[0]["higher_is_better"]
        scores = {i: c["final"]["val_metric"] for i, c in enumerate(self.cells)}
        best = M.select(scores, higher)
        return self.cells[0 if best is None else best]


@dataclass
class TaskSummary:
    task: str
    metric_name: str
    higher: bool
    total_steps: int
    base_lr: float
    note: str = ""
    target_policy: str = "cosine"
    target: float | None = None
    target_note: str = ""
    rows: list[Row] = field(default_factory=list)
    grid: dict[str, dict[float, list[float]]] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)


def cell_metrics(record: dict, target: float | None) -> dict:
    """The per-cell figures (the report's CSV columns) of one stored record."""
    out = {k: record[k] for k in ("task", "policy", "category", "scale", "seed", "base_lr",
                                  "status")}
    if record["status"] == "error":
        return {**out, "error": record["error"]}
    final, curves, higher = record["final"], record["curves"], record["higher_is_better"]
    steps = times = None
    if target is not None:
        steps = M.steps_to_target(curves["eval_step"], curves["test_metric"], target, higher)
        times = M.time_to_target(curves["eval_time"], curves["test_metric"], target, higher)
    return {
        **out,
        "metric": record["metric_name"],
        "final_test_metric": final["test_metric"],
        "best_test_metric": M.best_value(curves["test_metric"], higher),
        "final_test_loss": final["test_loss"],
        "final_val_metric": final["val_metric"],
        "final_train_loss": final["train_loss"],
        "gap": M.gap(final),
        "confidence": final.get("confidence"),
        "target": target,
        "steps_to_target": steps,
        "time_to_target": times,
        "steps_run": record["steps_run"],
        "total_steps": record["total_steps"],
        "wall_time": record["wall_time"],
    }


def _mean_of(cells: list[dict], key: str) -> float | None:
    values = [c[key] for c in cells if c.get(key) is not None]
    return M.mean(values) if values else None


def _fill(row: Row, metrics: list[dict], grid_means: dict[float, float]) -> None:
    row.final = M.mean([m["final_test_metric"] for m in metrics])
    row.final_std = M.seed_std([m["final_test_metric"] for m in metrics])
    row.best = M.mean([m["best_test_metric"] for m in metrics])
    row.test_loss = M.mean([m["final_test_loss"] for m in metrics])
    row.val = M.mean([m["final_val_metric"] for m in metrics])
    row.reached = sum(m["steps_to_target"] is not None for m in metrics)
    row.steps_to_target = _mean_of(metrics, "steps_to_target")
    row.time_to_target = _mean_of(metrics, "time_to_target")
    row.wall_time = M.mean([m["wall_time"] for m in metrics])
    row.confidence = _mean_of(metrics, "confidence")
    row.gap = M.mean([m["gap"] for m in metrics])
    row.diverged = sum(m["status"] == "diverged" for m in metrics)
    if row.category != "peer":
        row.robustness = M.spread(list(grid_means.values()))


def summarize(records: list[dict], target_policy: str = "cosine",
              notes: dict[str, str] | None = None,
              order: list[str] | None = None) -> list[TaskSummary]:
    """One :class:`TaskSummary` per task in ``records`` (tasks and policies in ``order``,
    then in stored order)."""
    notes = notes or {}
    order = order or []
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    rank = {name: i for i, name in enumerate(order)}
    stored = {t: i for i, t in enumerate(by_task)}
    tasks = sorted(by_task, key=lambda t: (rank.get(t, len(rank)), stored[t]))
    return [_summarize_task(task, by_task[task], target_policy, notes.get(task, ""), rank)
            for task in tasks]


def _summarize_task(task: str, records: list[dict], target_policy: str, note: str,
                    rank: dict[str, int]) -> TaskSummary:
    good = [r for r in records if r["status"] != "error"]
    errors = [r for r in records if r["status"] == "error"]
    if not good:
        return TaskSummary(task, "", True, 0, math.nan, note=note, errors=errors,
                           target_policy=target_policy, target_note="no finished cells")
    first = good[0]
    out = TaskSummary(task, first["metric_name"], first["higher_is_better"],
                      first["total_steps"], first["base_lr"] / first["scale"], note=note,
                      target_policy=target_policy, errors=errors)
    higher = out.higher
    groups: dict[str, dict[float, list[dict]]] = {}
    for r in good:
        groups.setdefault(r["policy"], {}).setdefault(r["scale"], []).append(r)
        out.categories[r["policy"]] = r["category"]
    policies = sorted(groups, key=lambda p: (rank.get(p, len(rank)), p))

    def pick(policy: str, tuned: bool) -> tuple[float, str] | None:
        """The reported scale; a policy that diverged at every scale is shown at its first."""
        by_scale = groups[policy]
        if not tuned:
            return (1.0, "default") if 1.0 in by_scale else None
        scores = {s: M.mean([c["final"]["val_metric"] for c in cells])
                  for s, cells in sorted(by_scale.items())}
        best = M.select(scores, higher)
        return (next(iter(scores)) if best is None else best, "tuned")

    picks: list[tuple[str, float, str, bool]] = []
    for policy in policies:
        category = out.categories[policy]
        if category == "hand":
            picks.append((policy, *pick(policy, tuned=True), True))
        else:
            choice = pick(policy, tuned=False)
            if choice:
                picks.append((policy, *choice, True))
            if category == "learned" and len(groups[policy]) > 1:
                picks.append((policy, *pick(policy, tuned=True), False))

    target_pick = next((p for p in picks if p[0] == target_policy and p[3]), None)
    if target_pick is not None:
        cells = groups[target_policy][target_pick[1]]
        target = M.mean([c["final"]["test_metric"] for c in cells])
        if M.finite(target):
            out.target = target
            out.target_note = (f"final test {out.metric_name} of {target_policy} at its "
                               f"validation-selected base LR (x{target_pick[1]:g}), mean of "
                               f"{len(cells)} seeds")
    if out.target is None:
        out.target_note = (f"no target: {target_policy} was not run on this task, or all its "
                           "runs failed")

    metrics = {id(r): cell_metrics(r, out.target) for r in good}
    for policy in policies:
        out.grid[policy] = {s: [metrics[id(c)]["final_test_metric"] for c in cells]
                            for s, cells in sorted(groups[policy].items())}
    for policy, scale, selection, ranked in picks:
        cells = sorted(groups[policy][scale], key=lambda c: c["seed"])
        row = Row(policy, out.categories[policy], selection, scale, ranked, cells)
        grid_means = {s: M.mean(v) for s, v in out.grid[policy].items()}
        _fill(row, [metrics[id(c)] for c in cells], grid_means)
        out.rows.append(row)
    ranked = {i: row.final for i, row in enumerate(out.rows) if row.ranked}
    for i, value in M.ranks(ranked, higher).items():
        out.rows[i].rank = value
    return out


def mean_ranks(summaries: list[TaskSummary]) -> dict[str, float]:
    """Each ranked policy's mean rank over the tasks it was ranked on."""
    seen: dict[str, list[float]] = {}
    for s in summaries:
        for row in s.rows:
            if row.rank is not None:
                seen.setdefault(row.policy, []).append(row.rank)
    return {p: M.mean(v) for p, v in seen.items()}
