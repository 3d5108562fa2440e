"""The bench report: ``report.md``, ``summary.csv``, ``cells.csv`` and the PNG plots.

:func:`write_report` reads everything from the store (records and the bench configuration kept
in its ``meta`` table), so ``metalr report STORE`` rebuilds exactly what ``metalr bench``
wrote. ``cells.csv`` has one line per stored cell with the numbers as stored (floats written
with ``repr``, so they read back equal); ``summary.csv`` has one line per row of the per-task
tables.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from metalr.bench import metrics as M
from metalr.bench.plots import write_plots
from metalr.bench.store import Store
from metalr.bench.summary import Row, TaskSummary, cell_metrics, mean_ranks, summarize

CELL_COLUMNS = ["task", "policy", "category", "scale", "seed", "base_lr", "status", "metric",
                "final_test_metric", "best_test_metric", "final_test_loss", "final_val_metric",
                "final_train_loss", "gap", "confidence", "target", "steps_to_target",
                "time_to_target", "steps_run", "total_steps", "wall_time", "error"]
SUMMARY_COLUMNS = ["task", "policy", "category", "selection", "scale", "base_lr", "seeds",
                   "final_test_metric", "final_test_metric_std", "best_test_metric",
                   "final_test_loss", "final_val_metric", "target", "reached_target",
                   "steps_to_target", "time_to_target", "wall_time", "confidence", "gap",
                   "lr_robustness_spread", "diverged", "rank"]


def _fmt(value, digits: int = 3, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "diverged" if math.isnan(value) else "inf"
    return f"{value * scale:.{digits}f}"


def _metric(value, name: str) -> str:
    """Accuracy in percent with one decimal; other metrics with three decimals."""
    return _fmt(value, 1, 100.0) if name == "accuracy" else _fmt(value)


def _metric_unit(name: str) -> str:
    return "%" if name == "accuracy" else ""


def _with_std(value, std, name: str) -> str:
    text = _metric(value, name)
    return text if std is None else f"{text} ± {_metric(std, name)}"


def _lr_label(row: Row, s: TaskSummary) -> str:
    if row.category == "peer":
        return "own default"
    tag = "default" if row.selection == "default" else "tuned"
    return f"x{row.scale:g} ({s.base_lr * row.scale:.3g}, {tag})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _overview(summaries: list[TaskSummary]) -> list[str]:
    ranks = mean_ranks(summaries)
    order = sorted(ranks, key=lambda p: ranks[p])
    header = ["policy", *[f"{s.task} ({s.metric_name}{', lower is better' if not s.higher else ''})"
                          for s in summaries], "mean rank"]
    body = []
    for policy in order:
        line = [f"`{policy}`"]
        for s in summaries:
            row = next((r for r in s.rows if r.policy == policy and r.ranked), None)
            line.append("-" if row is None else
                        f"{_metric(row.final, s.metric_name)} ({_fmt(row.rank, 1)})")
        body.append(line + [_fmt(ranks[policy], 2)])
    return _table(header, body)


def _learned_vs_hand(summaries: list[TaskSummary]) -> list[str]:
    """Each learned row at its defaults against the best tuned hand policy, the tuned target
    policy, and the target policy at the same base LR without tuning (equal effort)."""
    body = []
    for s in summaries:
        hand = [r for r in s.rows if r.category == "hand" and r.ranked]
        best_hand = min(hand, key=lambda r: r.rank, default=None)
        target = next((r for r in hand if r.policy == s.target_policy), None)
        for row in s.rows:
            if row.category != "learned" or not row.ranked:
                continue
            line = [s.task, f"`{row.policy}`", _with_std(row.final, row.final_std, s.metric_name)]
            for ref in (best_hand, target):
                if ref is None:
                    line += ["-", "-"]
                    continue
                line += [f"`{ref.policy}` x{ref.scale:g}: "
                         f"{_with_std(ref.final, ref.final_std, s.metric_name)}",
                         _metric(row.final - ref.final, s.metric_name)]
            same = s.grid.get(s.target_policy, {}).get(row.scale)
            if same:
                mean = M.mean(same)
                line += [_with_std(mean, M.seed_std(same), s.metric_name),
                         _metric(row.final - mean, s.metric_name)]
            else:
                line += ["-", "-"]
            line.append(f"{_fmt(row.rank, 1)} of {sum(r.ranked for r in s.rows)}")
            body.append(line)
    if not body:
        return []
    policy = summaries[0].target_policy
    return ["## The learned schedule at its defaults against hand policies", "",
            "Δ: learned minus reference, in the metric's unit (points for accuracy; for a "
            "lower-is-better metric a negative Δ favours the learned schedule).", "",
            *_table(["task", "learned", "learned (default LR)", "best tuned hand policy", "Δ",
                     f"{policy} (tuned)", "Δ", f"{policy} at the same base LR (untuned)", "Δ",
                     "rank"], body)]


def _task_section(s: TaskSummary) -> list[str]:
    title = f"### {s.task}" + (f": {s.note}" if s.note else "")
    direction = "higher is better" if s.higher else "lower is better"
    lines = [title, ""]
    if not s.rows:
        return lines + [f"No finished cells ({len(s.errors)} errors).", ""]
    target = "-" if s.target is None else _metric(s.target, s.metric_name)
    unit = _metric_unit(s.metric_name)
    lines += [f"Metric: test {s.metric_name} ({direction}); budget {s.total_steps} steps; "
              f"task base LR {s.base_lr:.3g}. Target {target}{unit}: {s.target_note}.", ""]
    body = []
    for row in s.rows:
        steps = "-" if row.steps_to_target is None else f"{row.steps_to_target:.0f}"
        time_ = "-" if row.time_to_target is None else f"{row.time_to_target:.1f}"
        body.append([
            f"`{row.label}`", _lr_label(row, s),
            _with_std(row.final, row.final_std, s.metric_name),
            _metric(row.best, s.metric_name), _fmt(row.test_loss),
            f"{steps} ({row.reached}/{len(row.cells)})", time_, _fmt(row.wall_time, 1),
            _fmt(row.confidence), _fmt(row.gap),
            _metric(row.robustness, s.metric_name) if row.robustness is not None else "-",
            _fmt(row.rank, 1) if row.rank is not None else "-",
        ])
    header = ["policy", "base LR", f"final test{' ' + unit if unit else ''}", "best test",
              "test loss", "steps to target (reached)", "time to target (s)", "wall (s)",
              "confidence", "test-train loss gap", "LR-grid spread", "rank"]
    lines += _table(header, body)
    for e in s.errors:
        lines.append(f"- error: `{e['policy']}` x{e['scale']:g} seed {e['seed']}: {e['error']}")
    return lines + ([""] if s.errors else [])


def _markdown(summaries, records, meta: dict, plots: list[str], store: Path) -> str:
    config = meta.get("config", {})
    status = {k: sum(r["status"] == k for r in records) for k in ("ok", "diverged", "error")}
    grid = ", ".join(f"x{s:g}" for s in sorted({r["scale"] for r in records
                                                 if r["category"] == "hand"}))
    seeds = sorted({r["seed"] for r in records})
    lines = [f"# {config.get('title', 'metalr bench')}", ""]
    if config.get("description"):
        lines += [config["description"], ""]
    if meta.get("command"):
        lines += ["Command:", "", "```", meta["command"], "```", ""]
    lines += [
        f"Store `{store}`: {len(records)} cells ({status['ok']} ok, {status['diverged']} "
        f"diverged, {status['error']} errors); seeds {', '.join(map(str, seeds))}; base-LR grid "
        f"{grid or '-'} (scales of each task's base LR).", "",
        *[line for policy, fp in sorted({(r["policy"], r["fingerprint"]) for r in records
                                          if r.get("fingerprint")})
          for line in (f"Learned policy `{policy}`: checkpoint weights SHA-256 `{fp}`.", "")],
        "How to read: hand policies are shown at the grid point with the best mean final "
        "*validation* metric (`tuned`); the learned schedule and the LR-free peers at their "
        "defaults with no tuning; `metalr (tuned)` rows are for information and not ranked. "
        "Figures are means over seeds ± the sample standard deviation over seeds. *Target*: "
        "the final test metric of the tuned target policy; *steps/time to target*: first "
        "evaluation at which a run's test metric reaches it (mean over the runs that reach "
        "it; time excludes evaluations); *confidence*: mean max-softmax on correctly "
        "classified test samples; *gap*: final test loss minus the mean of the last 50 "
        "training-batch losses; *LR-grid spread*: max minus min of the seed-mean final test "
        "metric across the base-LR grid (robustness; smaller is more robust); *rank*: by mean "
        "final test metric among the ranked rows.", "",
        "## Overview: final test metric (rank) per task", "",
        *_overview(summaries),
        *_learned_vs_hand(summaries),
        "## Per task", "",
    ]
    for s in summaries:
        lines += _task_section(s)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
        lines.append("")
    return "\n".join(lines)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})


def _summary_rows(summaries: list[TaskSummary]) -> list[dict]:
    out = []
    for s in summaries:
        for r in s.rows:
            out.append({
                "task": s.task, "policy": r.policy, "category": r.category,
                "selection": r.selection, "scale": r.scale,
                "base_lr": None if r.category == "peer" else s.base_lr * r.scale,
                "seeds": len(r.cells), "final_test_metric": r.final,
                "final_test_metric_std": r.final_std, "best_test_metric": r.best,
                "final_test_loss": r.test_loss, "final_val_metric": r.val, "target": s.target,
                "reached_target": r.reached, "steps_to_target": r.steps_to_target,
                "time_to_target": r.time_to_target, "wall_time": r.wall_time,
                "confidence": r.confidence, "gap": r.gap, "lr_robustness_spread": r.robustness,
                "diverged": r.diverged, "rank": r.rank,
            })
    return out


def write_report(store_path: str | Path, out: str | Path | None = None,
                 target_policy: str | None = None, cells=None) -> dict[str, Path]:
    """Write the report of the store at ``store_path`` into ``out`` (default: its directory).

    ``cells``: the ``(task, policy, scale, seed)`` keys to report (a bench's own cells, where
    several benches share a store: one with seeds 0-5 of a policy must not turn another's
    3-seed means into 6-seed ones); None: every stored cell.
    Returns the paths written: ``markdown``, ``summary``, ``cells`` and one per plot.
    """
    from metalr.bench.plan import known_policy
    from metalr.specs import check_output

    store_path = Path(store_path)
    out = check_output(out or store_path.parent, "--out", directory=True)
    if target_policy is not None:
        target_policy = known_policy(target_policy)
    with Store(store_path, create=False) as store:
        records = store.records()
        if cells is not None:
            records = [r for r in records if (r["task"], r["policy"], r["scale"], r["seed"]) in cells]
        meta = {"config": store.get_meta("config", {}), "command": store.get_meta("command")}
    config = meta["config"]
    target_policy = target_policy or config.get("target_policy", "cosine")
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarize(records, target_policy, config.get("notes", {}),
                          [*config.get("tasks", []), *config.get("policies", [])])
    targets = {s.task: s.target for s in summaries}
    paths = {"markdown": out / "report.md", "summary": out / "summary.csv",
             "cells": out / "cells.csv"}
    _write_csv(paths["cells"], CELL_COLUMNS,
               [cell_metrics(r, targets.get(r["task"])) for r in records])
    _write_csv(paths["summary"], SUMMARY_COLUMNS, _summary_rows(summaries))
    plots = write_plots(summaries, out) if any(s.rows for s in summaries) else {}
    paths.update(plots)
    paths["markdown"].write_text(_markdown(summaries, records, meta,
                                           [str(p) for p in plots.values()], store_path))
    return paths


__all__ = ["CELL_COLUMNS", "SUMMARY_COLUMNS", "write_report"]
