"""``metalr.train``: train a task under any LR policy and return its curves and final metrics.

Every comparison in metalr (the README tables, the benchmarks, the bench command) goes through
this one loop, so methods differ only in the LR they set. The loop is the textbook one:
``loss.backward(); optimizer.step(); scheduler.step(loss)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from metalr.lr_policy import step_scheduler
from metalr.policies.base import Policy, SchedulerPolicy
from metalr.tasks import Task, get_task


class DivergenceWarning(UserWarning):
    """A run's training loss became NaN or infinite; :func:`train` stopped the run there."""


@dataclass
class TrainResult:
    """Curves and final metrics of one training run.

    Per step: ``lr`` (group 0) and ``train_loss``. Per evaluation point ``eval_step``: val/test
    loss and metric, and ``eval_time``, the seconds spent training so far with the evaluations
    left out (what time-to-target is measured in). ``final`` holds the end-of-training figures,
    including ``confidence`` (mean max-softmax on correctly classified test samples, LRBench's
    AC; 0 when none is correct) for classifiers.
    ``diverged`` is True if a training loss became NaN or infinite; training stops there.
    """

    task: str
    policy: str
    seed: int
    metric_name: str
    lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_time: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_metric: list[float] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    wall_time: float = 0.0
    diverged: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepContext:
    """What an ``on_step`` hook of :func:`train` sees after each optimizer and scheduler step."""

    step: int
    total_steps: int
    loss: float
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object


def resolve_policy(policy) -> Policy:
    """None (constant LR), a registry spec string, a :class:`Policy`, or ``f(opt, total_steps)``."""
    if policy is None:
        return SchedulerPolicy("constant", None)
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        from metalr.policies import get_policy

        return get_policy(policy)
    if callable(policy):
        return SchedulerPolicy(getattr(policy, "__name__", "custom"), policy)
    raise TypeError(f"policy must be None, a name, a Policy or a callable, got {type(policy).__name__}")


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, split, device, chunk: int = 1000) -> dict:
    """Loss, metric and (for classifiers) confidence of ``model`` on a whole split."""
    was_training = model.training
    model.eval()
    outputs = [model(split.x[i:i + chunk].to(device)).float().cpu() for i in range(0, len(split), chunk)]
    model.train(was_training)
    out = torch.cat(outputs)
    result = {"loss": task.loss_fn(out, split.y).item(), "metric": task.metric(out, split.y)}
    if task.metric_name == "accuracy":
        probs = out.reshape(-1, out.shape[-1]).softmax(-1)
        y = split.y.reshape(-1)
        correct = probs.argmax(-1) == y
        result["confidence"] = probs.max(-1).values[correct].mean().item() if correct.any() else 0.0
    return result


def train(task: Task | str, policy=None, *, seed: int = 0, epochs: int | None = None,
          steps: int | None = None, batch_size: int | None = None, base_lr: float | None = None,
          optimizer: str | None = None, eval_points: int = 20, device: str = "cpu",
          progress: bool = False, evaluate_test: bool = True,
          on_step: Callable[[StepContext], None] | None = None) -> TrainResult:
    """Train ``task`` from scratch with ``policy`` setting the LR; return a :class:`TrainResult`.

    ``epochs``, ``batch_size``, ``base_lr`` and ``optimizer`` override the task's recipe;
    ``steps`` sets the budget in optimizer steps instead of epochs. The model is evaluated on
    the validation (and, with ``evaluate_test``, the test) split at ``eval_points`` evenly
    spaced steps and always at the end. ``on_step`` is called after every step's scheduler
    step with a :class:`StepContext` (meta-training does its lookahead update there). The same
    ``seed`` gives the same run on CPU.
    """
    task = get_task(task)
    pol = resolve_policy(policy)
    epochs = epochs or task.epochs
    batch_size = batch_size or task.batch_size
    lr = base_lr if base_lr is not None else task.base_lr
    task = dataclasses.replace(task, epochs=epochs, batch_size=batch_size)
    total = steps or task.total_steps
    device = torch.device(device)

    torch.manual_seed(seed)
    model = task.make_model().to(device)
    opt = pol.make_optimizer(model.parameters(), optimizer or task.optimizer, lr,
                             task.momentum, task.weight_decay)
    sched = pol.make_scheduler(opt, total)
    batches = task.batches(torch.Generator().manual_seed(seed))
    eval_at = set(evaluation_steps(total, eval_points))

    res = TrainResult(task=task.name, policy=pol.name, seed=seed, metric_name=task.metric_name)
    start = time.perf_counter()
    evaluating = 0.0
    model.train()
    pol.train_mode(opt)
    for step in tqdm(range(1, total + 1), desc=f"{task.name} / {pol.name}", disable=not progress,
                     leave=False):
        x, y = next(batches)
        res.lr.append(opt.param_groups[0]["lr"])
        loss = task.loss_fn(model(x.to(device)), y.to(device))
        value = loss.item()
        res.train_loss.append(value)
        if not math.isfinite(value):
            res.diverged = True
            warnings.warn(f"{task.name} / {pol.name} seed {seed}: training loss became {value} "
                          f"at step {step} (LR {res.lr[-1]:.3g}); stopping this run", DivergenceWarning,
                          stacklevel=2)
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pol.after_step(opt, model)
        if sched is not None:
            step_scheduler(sched, value)
        if on_step is not None:
            on_step(StepContext(step, total, value, model, opt, sched))
        if step in eval_at:
            evaluating += _record_eval(res, step, model, task, pol, opt, device,
                                       time.perf_counter() - start - evaluating, evaluate_test)
    if res.diverged or not res.eval_step or res.eval_step[-1] != len(res.train_loss):
        _record_eval(res, len(res.train_loss), model, task, pol, opt, device,
                     time.perf_counter() - start - evaluating, evaluate_test)
    res.wall_time = time.perf_counter() - start
    return res


def evaluation_steps(total: int, eval_points: int) -> list[int]:
    """The steps :func:`train` evaluates at: ``eval_points`` evenly spaced over ``total`` steps,
    the last one at ``total`` (fewer when steps coincide), in order."""
    return sorted({min(total, max(1, round(total * (i + 1) / eval_points))) for i in range(eval_points)})


def _record_eval(res: TrainResult, step: int, model, task: Task, pol: Policy, opt, device,
                 trained: float, evaluate_test: bool) -> float:
    """Evaluate at ``step`` after ``trained`` seconds of training; returns the seconds it took."""
    began = time.perf_counter()
    res.eval_time.append(trained)
    pol.eval_mode(opt, model)
    target = pol.eval_model(model)
    val = evaluate(target, task, task.val, device)
    nan = float("nan")
    test = evaluate(target, task, task.test, device) if evaluate_test else {"loss": nan, "metric": nan}
    pol.train_mode(opt)
    res.eval_step.append(step)
    res.val_loss.append(val["loss"])
    res.val_metric.append(val["metric"])
    res.test_loss.append(test["loss"])
    res.test_metric.append(test["metric"])
    recent = [v for v in res.train_loss[-50:] if math.isfinite(v)]
    res.final = {
        "step": step,
        "train_loss": sum(recent) / len(recent) if recent else float("nan"),
        "val_loss": val["loss"], "val_metric": val["metric"],
        "test_loss": test["loss"], "test_metric": test["metric"],
        **({"confidence": test["confidence"]} if "confidence" in test else {}),
    }
    return time.perf_counter() - began
