"""Bilevel meta-training of a schedule network by unrolled lookahead (after MLR-SNet).

Inner loop: a task's model trains with the LRs that a :class:`MetaLRScheduler` over the
network being learned emits, exactly as a user's script would run it. Outer loop: every
``meta_interval`` inner steps, a differentiable lookahead of ``unroll`` steps starts from the
current weights *and* optimizer state (momentum buffers, Adam moments), built with ``higher``;
the loss of the lookahead's final weights on a batch of the clean validation split is
differentiated with respect to the network's parameters, and Adam updates them. The lookahead
is discarded; the real run continues with the updated network. Several inner runs (tasks x
seeds) are taken in turn, so the network is not fitted to one trajectory.

The lookahead follows the deployed timing exactly. The LR of a step is emitted after the loss
of the step before it; so the lookahead first re-emits the LR in effect from the network's last
input and hidden state (now differentiably), then for each unrolled step takes the training
loss, steps the differentiable optimizer with the emitted LR, and feeds the loss to the network
for the next LR.

Two hypergradients:

* first order (``--first-order``, MLR-SNet's code): the model gradients and the losses
  the network reads are held constant, so the hypergradient flows only through the LR values
  (and the network's own recurrence). Cheap.
* second order (the default): everything is differentiated, through the gradients, the optimizer state and
  the losses the network reads. Exact for the unrolled objective.

Short-horizon bias (Wu et al., ICLR 2018): a lookahead of a few steps rewards whatever lowers
the loss soonest, which pushes learned LRs too small. Part of the reason is that the validation
loss right after steps at a high LR sits on a higher noise floor, hiding the better region the
high LR reached. The *anneal* phase (our addition) appends ``anneal`` steps whose LR decays
linearly from the last emitted LR to 0 before the validation loss is taken, so the objective
measures where a run would end if it annealed now: what the explore-exploit ("Knee") view says
high LRs are for. The anneal LRs scale with the emitted LR, so the hypergradient flows through
them too. See ``docs/unroll_interval.md`` for the measurement behind the defaults.

``higher`` 0.2.1 knows SGD and Adam but predates AdamW; :class:`DifferentiableAdamW` adds it and
is registered when this module is imported (only meta-training by lookahead imports ``higher``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import higher
import higher.optim
import torch
from tqdm.auto import tqdm

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.scheduler import MetaLRScheduler
from metalr.learned.train.config import MetaTrainConfig
from metalr.policies.base import SchedulerPolicy
from metalr.runlog import RunLog
from metalr.tasks import Task, get_task
from metalr.trainer import StepContext, train


class DifferentiableAdamW(higher.optim.DifferentiableAdam):
    """AdamW for ``higher``: decoupled decay on the parameters, then Adam without L2 decay."""

    def _update(self, grouped_grads, **kwargs) -> None:
        decays = [group["weight_decay"] for group in self.param_groups]
        for group, grads, wd in zip(self.param_groups, grouped_grads, decays):
            if wd:
                group["params"] = [p if g is None else p * (1 - group["lr"] * wd)
                                   for p, g in zip(group["params"], grads)]
            group["weight_decay"] = 0.0
        try:
            super()._update(grouped_grads, **kwargs)
        finally:
            for group, wd in zip(self.param_groups, decays):
                group["weight_decay"] = wd


higher.register_optim(torch.optim.AdamW, DifferentiableAdamW)


def lookahead_loss(sched: MetaLRScheduler, model: torch.nn.Module, opt: torch.optim.Optimizer,
                   task: Task, train_batches, val_xy, unroll: int, second_order: bool,
                   anneal: int = 0) -> torch.Tensor:
    """Validation loss after ``unroll`` (+ ``anneal``) differentiable steps, as a function of
    the network.

    Starts from ``model``'s weights and ``opt``'s state and the scheduler's state; changes none
    of them. See the module docstring for the timing, the first/second-order variants and the
    anneal phase.
    """
    net = sched.net
    dtype = next(net.parameters()).dtype
    tracker = sched.tracker
    if sched.last_input is None:
        u = torch.tensor(sched.u, dtype=dtype)
        hidden = tuple(torch.as_tensor(a, dtype=dtype) for a in sched.hidden)
    else:
        before = tuple(torch.as_tensor(a, dtype=dtype) for a in sched.hidden_before)
        u, hidden = net.cell(torch.as_tensor(sched.last_input, dtype=dtype), before)
    state = dict(sched.features_state)
    detach = None if second_order else (lambda grads: [g.detach() for g in grads])
    with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
        for k in range(unroll + anneal):
            x, y = next(train_batches)
            loss = task.loss_fn(fmodel(x), y)
            # In the anneal phase the LR decays linearly from the last emitted one towards 0.
            decay = 1.0 if k < unroll else 1 - (k - unroll + 1) / (anneal + 1)
            mult = sched.multiplier_of(u)
            lrs = [b * mult * decay for b in sched.base_lrs]
            diffopt.step(loss, override={"lr": lrs}, grad_callback=detach)
            if k + 1 < unroll:
                seen = loss if second_order else loss.detach()
                feats, state = tracker.update(state, seen, sched.last_epoch + k + 1,
                                              sched.total_steps, u)
                x_in = torch.stack([torch.as_tensor(f, dtype=dtype) for f in feats])
                u, hidden = net.cell(x_in, hidden)
        xv, yv = val_xy
        return task.loss_fn(fmodel(xv), yv)


COLUMNS = ["run", "task", "seed", "budget_known", "step", "lr", "multiplier", "train_loss",
           "meta_val_loss", "val_metric", "test_metric", "wall_time"]


def meta_train_lookahead(cfg: MetaTrainConfig, out_dir: Path, command: str = "",
                         progress: bool = True) -> dict:
    """Meta-train by lookahead; write checkpoint, metrics.csv and a PNG into ``out_dir``.

    Each inner run is an ordinary :func:`metalr.train` run whose ``on_step`` hook takes the
    meta-update every ``meta_interval`` steps. Returns a summary dict (paths, per-run final
    metrics, wall time).
    """
    cfg.validate()
    tasks = [get_task(spec) for spec in cfg.task_specs()]
    out_dir = Path(out_dir)
    ckpt_base = out_dir / cfg.name
    if not cfg.overwrite and ckpt_base.with_suffix(".json").exists():
        raise MetalrError(f"{ckpt_base}.json already exists; pass --overwrite to replace it "
                          "or choose another --out / --name")
    torch.manual_seed(cfg.seed)
    net = ScheduleNet(CONFIGS[cfg.net])
    meta_opt = torch.optim.Adam(net.parameters(), lr=cfg.meta_lr, weight_decay=cfg.meta_weight_decay)

    # Inner runs alternate tasks (t0 s0, t1 s0, t0 s1, ...) so no task dominates the end.
    runs = [(task, cfg.seed + r) for r in range(cfg.runs_per_task) for task in tasks]
    rng = torch.Generator().manual_seed(cfg.seed)
    hidden = torch.rand(len(runs), generator=rng) < cfg.hide_budget
    budgets = [(cfg.epochs or t.epochs) * t.steps_per_epoch for t, _ in runs]
    log = RunLog(out_dir / f"{cfg.name}.metrics.csv", COLUMNS, use_wandb=cfg.wandb,
                 config=dataclasses.asdict(cfg), name=cfg.name)
    history: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(total=sum(budgets), desc="meta-training", disable=not progress, unit="step",
               mininterval=5)
    try:
        for r, ((task, seed), total) in enumerate(zip(runs, budgets)):
            history.append(_inner_run(r, task, seed, total, bool(hidden[r]), net, meta_opt, cfg,
                                      log, bar, start))
            if cfg.max_minutes and time.perf_counter() - start >= 60 * cfg.max_minutes and r + 1 < len(runs):
                tqdm.write(f"inner run {r}: --max-minutes={cfg.max_minutes:g} reached after {r + 1} of "
                           f"{len(runs)} inner runs; the checkpoint is this run's end", file=sys.stderr)
                break
    finally:
        bar.close()
        log.close()
    wall = time.perf_counter() - start

    summary = {
        "command": command, "estimator": "lookahead", "config": dataclasses.asdict(cfg),
        "tasks": [t.name for t in tasks], "inner_runs": len(history),
        "wall_time_s": round(wall, 2), "runs": history,
    }
    json_path = checkpoint.save(net, ckpt_base, meta_training=summary)
    png = out_dir / f"{cfg.name}.png"
    plot_meta_training(out_dir / f"{cfg.name}.metrics.csv", png)
    lines = [f"run {row['run']}: {row['task']} seed {row['seed']} budget_known={row['budget_known']}"
             f"  val {row['val_metric']:.4f}  test {row['test_metric']:.4f}" for row in history]
    return {"checkpoint": str(json_path), "metrics": str(out_dir / f"{cfg.name}.metrics.csv"),
            "plot": str(png), "lines": lines, **summary}


def _inner_run(r: int, task: Task, seed: int, total: int, hide: bool, net: ScheduleNet,
               meta_opt, cfg: MetaTrainConfig, log: RunLog, bar, start: float) -> dict:
    look_batches = task.batches(torch.Generator().manual_seed(10_000 + seed))
    val_batches = task.val_batches(torch.Generator().manual_seed(20_000 + seed), cfg.val_batch)
    # Log ~200 rows per run, always including the meta-update steps.
    every = math.gcd(max(1, total // 200), cfg.meta_interval)
    num_classes = task.num_classes if net.config.kind == "paper" else None

    def make_scheduler(opt, total_steps):
        return MetaLRScheduler(opt, net, total_steps=None if hide else total_steps,
                               num_classes=num_classes)

    def on_step(ctx: StepContext) -> None:
        sched = ctx.scheduler
        meta_loss = None
        if ctx.step % cfg.meta_interval == 0:
            meta_opt.zero_grad(set_to_none=True)
            val = lookahead_loss(sched, ctx.model, ctx.optimizer, task, look_batches,
                                 next(val_batches), cfg.unroll, not cfg.first_order, cfg.anneal)
            val.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            meta_opt.step()
            sched.refresh()
            meta_loss = val.item()
        if ctx.step % every == 0 or ctx.step == ctx.total_steps:
            lr = sched.get_last_lr()[0]
            log.log({"run": r, "task": task.name, "seed": seed, "budget_known": int(not hide),
                     "step": ctx.step, "lr": lr, "multiplier": lr / task.base_lr,
                     "train_loss": ctx.loss, "meta_val_loss": "" if meta_loss is None else meta_loss,
                     "wall_time": round(time.perf_counter() - start, 2)})
            bar.set_postfix(run=f"{r + 1}", lr=f"{lr:.3g}", refresh=False)
        bar.update(1)

    result = train(task, SchedulerPolicy("metalr", make_scheduler), seed=seed, steps=total,
                   eval_points=1, on_step=on_step)
    if result.diverged:
        raise MetalrError(
            f"inner run {r} ({task.name}, seed {seed}) diverged at step {len(result.train_loss)} "
            f"with LR {result.lr[-1]:.3g}; lower --meta-lr or the task's lr")
    row = {"run": r, "task": task.name, "seed": seed, "budget_known": int(not hide), "step": total,
           "val_metric": result.final["val_metric"], "test_metric": result.final["test_metric"],
           "wall_time": round(time.perf_counter() - start, 2)}
    log.log(row)
    return row


def plot_meta_training(metrics_csv: Path, png: Path) -> None:
    """LR multiplier, training loss and lookahead validation loss of every inner run."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv) as fh:
        rows = [r for r in csv.DictReader(fh) if r["multiplier"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run in sorted({int(r["run"]) for r in rows}):
        rs = [r for r in rows if int(r["run"]) == run]
        label = f"run {run}: {rs[0]['task']}" + ("" if rs[0]["budget_known"] == "1" else " (no budget)")
        steps = [int(r["step"]) for r in rs]
        axes[0].plot(steps, [float(r["multiplier"]) for r in rs], label=label)
        axes[1].plot(steps, [float(r["train_loss"]) for r in rs], alpha=0.7)
        meta = [(int(r["step"]), float(r["meta_val_loss"])) for r in rs if r["meta_val_loss"]]
        if meta:
            axes[2].plot(*zip(*meta), marker="o", ms=3, alpha=0.7)
    axes[0].set(title="emitted LR / base LR", xlabel="inner step", yscale="log")
    axes[1].set(title="training loss (mini-batch)", xlabel="inner step", yscale="log")
    axes[2].set(title="lookahead validation loss (at each meta-update)", xlabel="inner step", yscale="log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
