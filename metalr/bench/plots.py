"""The bench's PNG plots, one panel per task, one colour per policy across all panels.

PNGs are saved with a 128-colour palette to keep them small enough to commit.

- ``lr_curves.png``: the per-step LR of the best cell (best final validation metric among the
  seeds of the reported row) of each policy; the LR-free peers set their step size inside the
  optimizer, so their nominal LR is not drawn.
- ``val_curves.png``: the validation metric of the same cells over training.
- ``lr_sensitivity.png``: final test metric (mean ± std over seeds) against the base-LR scale;
  peers, which take no base LR, are horizontal dashed lines; the target is a dotted line.
- ``steps_to_target.png``: mean steps to reach the target over the seeds that reach it; a
  hatched bar at the full budget marks a policy none of whose runs reaches it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from metalr.bench import metrics as M  # noqa: E402
from metalr.bench.summary import TaskSummary  # noqa: E402

_DPI = 72


_LEARNED = ("black", "dimgray", "saddlebrown", "darkred")


def _colors(summaries: list[TaskSummary]) -> dict[str, dict]:
    """Line style per policy: tab10 (tab20 past ten) colours for hand policies and peers, dark and thick for
    the learned schedules."""
    learned = list(dict.fromkeys(r.policy for s in summaries for r in s.rows
                                 if r.category == "learned"))
    others = list(dict.fromkeys(r.policy for s in summaries for r in s.rows
                                if r.category != "learned"))
    cmap = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
    out = {n: {"color": cmap(i % cmap.N), "lw": 1.1, "label": n} for i, n in enumerate(others)}
    out.update({n: {"color": _LEARNED[i % len(_LEARNED)], "lw": 2.2, "label": n}
                for i, n in enumerate(learned)})
    return out


def _grid(summaries: list[TaskSummary]):
    n = len(summaries)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows + 0.5), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _finish(fig, axes, path: Path) -> Path:
    """Add one legend for all panels and save as a palette PNG (a few times smaller)."""
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    width = fig.get_size_inches()[0]
    ncol = max(1, min(len(labels), int(width / 1.4)))
    legend_rows = math.ceil(len(labels) / ncol) if labels else 0
    if handles:
        fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=ncol,
                   fontsize=7, frameon=False)
    bottom = (0.22 * legend_rows + 0.1) / fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, bottom, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=_DPI)
    plt.close(fig)
    image = Image.open(buffer).convert("RGB").quantize(colors=128)
    image.save(path, optimize=True)
    return path


def _label(ax, title: str, xlabel: str, ylabel: str = "") -> None:
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=7)


def _plot_curves(summaries, path: Path, colors: dict, x: str, y: str, ylabel, *,
                 peers: bool, log: bool) -> Path:
    """One curve per reported row: ``curves[y]`` against ``curves[x]`` of its best cell."""
    fig, axes = _grid(summaries)
    for ax, s in zip(axes, summaries):
        for row in s.rows:
            if row.ranked and (peers or row.category != "peer"):
                c = row.best_cell["curves"]
                ax.plot(c[x], c[y], **colors[row.policy])
        if log:
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            ax.set_ylim(max(low, high * 1e-4), high)  # annealing to ~0 would squash the rest
        _label(ax, s.task, "step", ylabel(s))
    return _finish(fig, axes, path)


def plot_lr_curves(summaries, path: Path, colors: dict) -> Path:
    return _plot_curves(summaries, path, colors, "lr_step", "lr", lambda s: "LR (group 0)",
                        peers=False, log=True)


def plot_val_curves(summaries, path: Path, colors: dict) -> Path:
    return _plot_curves(summaries, path, colors, "eval_step", "val_metric",
                        lambda s: f"validation {s.metric_name}", peers=True, log=False)


def plot_sensitivity(summaries, path: Path, colors: dict) -> Path:
    fig, axes = _grid(summaries)
    for ax, s in zip(axes, summaries):
        for policy, by_scale in s.grid.items():
            if policy not in colors:
                continue
            stats = [(scale, M.mean(v), M.seed_std(v) or 0.0) for scale, v in by_scale.items()]
            if s.categories[policy] == "peer":
                ax.axhline(stats[0][1], ls="--", **colors[policy])
                continue
            xs, ms, sds = zip(*stats)
            ax.errorbar(xs, ms, yerr=sds, marker="o", ms=3, capsize=2, **colors[policy])
        if s.target is not None:
            ax.axhline(s.target, color="0.5", ls=":", lw=1)
        scales = sorted({x for by_scale in s.grid.values() for x in by_scale})
        ax.set_xscale("log")
        ax.set_xticks(scales, [f"x{x:g}" for x in scales])
        ax.minorticks_off()
        _label(ax, s.task, "base-LR scale", f"final test {s.metric_name}")
    return _finish(fig, axes, path)


def plot_steps_to_target(summaries, path: Path, colors: dict) -> Path:
    fig, axes = _grid(summaries)
    for ax, s in zip(axes, summaries):
        rows = [r for r in s.rows if r.ranked]
        for y, row in enumerate(rows):
            reached = row.steps_to_target is not None
            width = row.steps_to_target if reached else s.total_steps
            color = colors[row.policy]["color"]
            ax.barh(y, width, color=color if reached else "none", edgecolor=color,
                    hatch=None if reached else "///", label=row.policy)
            ax.text(width, y, f" {row.reached}/{len(row.cells)}", va="center", fontsize=6)
        ax.set_yticks(range(len(rows)), [r.policy for r in rows], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlim(0, s.total_steps * 1.15)
        _label(ax, s.task + ("" if s.target is None else f" (target {s.target:.4g})"),
               "steps to target (hatched: not reached)")
    return _finish(fig, axes, path)


def write_plots(summaries: list[TaskSummary], out: Path) -> dict[str, Path]:
    """Write the four PNGs into ``out``; returns ``{name: path}``."""
    summaries = [s for s in summaries if s.rows]
    colors = _colors(summaries)
    return {
        "lr_curves": plot_lr_curves(summaries, out / "lr_curves.png", colors),
        "val_curves": plot_val_curves(summaries, out / "val_curves.png", colors),
        "lr_sensitivity": plot_sensitivity(summaries, out / "lr_sensitivity.png", colors),
        "steps_to_target": plot_steps_to_target(summaries, out / "steps_to_target.png", colors),
    }
