"""See a policy before using it: its LR curve as a PNG and a CSV (``metalr plot-policy``).

A fixed schedule is drawn from the scheduler alone, stepped ``steps`` times on a one-parameter
optimizer. A policy that reads the loss (``lrtuner``, ``exptest``, ``plateau``, ``metalr``) has
no curve without training, so it is drawn from a short real run of :func:`metalr.train` on a
task (MNIST-1D MLP by default; the run is rounded up to whole epochs and cut at ``steps``), and
``TrainResult.lr`` gives its per-step LR. The LR-free optimizers set their step size inside the
optimizer and have no curve to draw.

The CSV is long-form, one row per policy and step: ``policy,step,lr`` (``step`` counts from 1,
``lr`` is the LR that step trained with, with the base LR ``base_lr``).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Callable

import torch

from metalr.policies import get_policy, policy_kind
from metalr.policies.params import check, format_params, number, steps as whole_steps

# Bounds on a drawing: a fixed schedule costs one scheduler step per point, a loss-reading one a
# training step, so at most MAX_STEPS keeps a plot to seconds or minutes, never a hang.
MAX_STEPS = 100_000
MAX_SEED = 2 ** 63 - 1


def parse_assignments(items: list[str]) -> dict:
    """``["explore=0.3", "checkpoint=a/b.json"]`` -> ``{"explore": "0.3", ...}`` (text: each
    value is parsed with the policy's spec, by the kind of its parameter)."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        check(bool(eq and key.strip() and value.strip()),
              f"--param {item!r} is not of the form k=v")
        out[key.strip()] = value.strip()
    return out


def lr_curve(spec: str, steps: int, *, params: dict | None = None, base_lr: float | None = None,
             task: str = "mnist1d-mlp", seed: int = 0) -> list[float]:
    """The LR of each of ``steps`` steps under ``spec`` (``params`` add to the spec's own).

    ``base_lr`` defaults to the task's base LR, so schedules and online tuners share units.
    """
    from metalr.tasks import get_task

    steps = whole_steps("steps", steps)
    full = label(spec, params)
    kind = policy_kind(full)
    check(kind != "optimizer", f"{full!r} replaces the optimizer, which sets its own step size; "
                               "it has no LR curve to plot")
    # parsed by each parameter's kind: a checkpoint path keeps its "/"
    policy = get_policy(full)
    the_task = get_task(task)
    lr = base_lr if base_lr is not None else the_task.base_lr
    if kind == "online":
        from metalr.trainer import train

        result = train(the_task, policy, seed=seed, epochs=_epochs(the_task, steps), base_lr=lr)
        return result.lr[:steps]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = policy.make_scheduler(optimizer, steps)
    curve = []
    for _ in range(steps):
        curve.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return curve


def _epochs(task, steps: int) -> int:
    """Whole epochs of ``task`` that cover ``steps`` (a loss-reading policy's drawing run)."""
    return math.ceil(steps / task.steps_per_epoch)


def write_csv(curves: dict[str, list[float]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["policy", "step", "lr"])
        for label, curve in curves.items():
            writer.writerows([label, step, f"{lr:.8g}"] for step, lr in enumerate(curve, 1))


def write_png(curves: dict[str, list[float]], path: Path, base_lr: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(curves), 4)
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False,
                             sharey=True)
    for ax, (label, curve) in zip(axes.flat, curves.items()):
        ax.plot(range(1, len(curve) + 1), curve, lw=1.2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"LR (base {base_lr:g})", fontsize=8)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def label(spec: str, params: dict | None) -> str:
    """The spec with ``params`` appended, as the curve's title and CSV key."""
    extra = ",".join(format_params({k: v}) for k, v in (params or {}).items())
    return spec if not extra else f"{spec}{',' if ':' in spec else ':'}{extra}"


def default_out(specs: list[str]) -> Path:
    stem = re.sub(r"[^\w.-]+", "_", specs[0]).strip("_") if len(specs) == 1 else "policies"
    return Path(f"lr_{stem}.png")


def plot_policies(specs: list[str], steps: int, *, params: dict | None = None,
                  out: str | Path | None = None, base_lr: float | None = None,
                  task: str = "mnist1d-mlp", seed: int = 0,
                  announce: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Draw each spec's LR curve (side by side) to ``out`` (PNG) and a CSV beside it.

    Everything is checked before any curve is computed; ``announce`` then receives one line
    saying how many steps (and training runs) the drawing takes.
    """
    from metalr.bench.plan import check_policy
    from metalr.specs import check_output
    from metalr.tasks import get_task

    check(bool(specs), "name at least one policy to plot")
    check(not params or len(specs) == 1,
          "--param applies to a single policy; with several, write each as name:k=v,k=v")
    steps = whole_steps("--steps", steps)
    check(steps <= MAX_STEPS, f"--steps must be at most {MAX_STEPS}, got {steps}")
    check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED,
          f"--seed must be a whole number in [0, 2**63 - 1], got {str(seed)[:40]}")
    if base_lr is not None:
        number("--base-lr", base_lr, 0, math.inf, low_open=True, high_open=True)
    png = Path(out) if out is not None else default_out(specs)
    check(png.suffix.lower() == ".png", f"--out must end in .png, got {str(png)!r}")
    check_output(png, "--out", directory=False)
    check_output(png.with_suffix(".csv"), "--out (its CSV)", directory=False)
    the_task = get_task(task)
    online = []
    for spec in specs:
        full = label(spec, params)
        kind = policy_kind(full)
        check(kind != "optimizer", f"{full!r} replaces the optimizer, which sets its own step "
                                   "size; it has no LR curve to plot")
        if kind == "online":
            online.append(full)
        check_policy(full, steps)
    if announce is not None:
        runs = (f"; {len(online)} read the loss, so each trains {task} for "
                f"{_epochs(the_task, steps)} epochs" if online else "")
        announce(f"plot-policy: {len(specs)} policies x {steps} steps{runs}")
    lr = base_lr if base_lr is not None else the_task.base_lr
    curves = {label(spec, params): lr_curve(spec, steps, params=params, base_lr=lr, task=task,
                                            seed=seed)
              for spec in specs}
    png.parent.mkdir(parents=True, exist_ok=True)
    csv_path = png.with_suffix(".csv")
    write_png(curves, png, lr)
    write_csv(curves, csv_path)
    return png, csv_path
