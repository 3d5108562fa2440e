"""One bench cell, run inside a worker process: train, time the evaluations, build the record.

:func:`run_cell` trains the cell through :func:`metalr.train` and returns a JSON-ready record
(nothing is written here: the parent process owns the store). It never raises: an exception
becomes a record with status ``error`` and the message. A learned checkpoint whose SHA-256
no longer matches the one the bench was planned with (the file was replaced mid-bench) is
such an error, checked before and after training. What a library prints during training
(Prodigy announces its weight-decay mode) is dropped, so it cannot garble the progress bar;
warnings are kept in the record.

Evaluation times are the trainer's ``eval_time``: the training time spent so far at each
evaluation point, with the evaluations left out. That is what time-to-target is measured in.

Record fields: the cell's identity and category, ``status`` (``ok``, ``diverged`` or
``error``), ``metric_name``, ``higher_is_better``, ``base_lr``, ``optimizer``, ``total_steps``,
``steps_run``, ``wall_time`` (the trainer's, seconds), ``final`` (the trainer's end-of-run
figures), ``curves`` and ``warnings``. ``curves`` holds the evaluation curves in full
(``eval_step``, ``eval_time``, ``val_loss``, ``val_metric``, ``test_loss``, ``test_metric``)
and the per-step LR and training loss downsampled to at most :data:`MAX_POINTS` points
(``lr_step``/``lr`` sampled, ``loss_step``/``train_loss`` averaged over each stretch).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import traceback
import warnings

from metalr.bench.plan import fingerprint
from metalr.errors import MetalrError

MAX_POINTS = 500


def sample_points(n: int, max_points: int = MAX_POINTS) -> list[int]:
    """At most ``max_points`` indices into ``range(n)``, evenly spread, first and last included."""
    if n <= max_points:
        return list(range(n))
    return sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})


def downsample(values: list[float], max_points: int = MAX_POINTS) -> tuple[list, list, list]:
    """``(steps, sampled, averaged)`` for a per-step series (steps are 1-based).

    ``sampled`` is the value at each kept step; ``averaged`` is the mean from that step up to
    the next kept one (a NaN anywhere in a stretch makes its mean NaN).
    """
    idx = sample_points(len(values), max_points)
    ends = idx[1:] + [len(values)]
    means = [math.fsum(values[a:b]) / (b - a) for a, b in zip(idx, ends)]
    return [i + 1 for i in idx], [values[i] for i in idx], means


@functools.lru_cache(maxsize=8)
def _task(spec: str):
    from metalr.tasks import get_task

    return get_task(spec)


def _identity(cell: dict) -> dict:
    return {k: cell[k] for k in ("task", "policy", "scale", "seed", "category", "base_lr",
                                 "fingerprint")}


def _check_fingerprint(cell: dict) -> None:
    """Refuse a cell whose learned checkpoint changed on disk after the bench was planned."""
    if cell["fingerprint"] and fingerprint(cell["policy"]) != cell["fingerprint"]:
        raise MetalrError(f"the checkpoint of {cell['policy']!r} changed on disk during the "
                          "bench; use a new --store for the new checkpoint")


def run_cell(cell: dict) -> dict:
    """Train one cell (a :class:`~metalr.bench.plan.Cell` as a dict); return its record."""
    from metalr.policies import get_policy
    from metalr.trainer import train

    try:
        _check_fingerprint(cell)
        task = _task(cell["task"])
        policy = get_policy(cell["policy"])
        with warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("always")
            res = train(task, policy, seed=cell["seed"], base_lr=cell["base_lr"],
                        eval_points=cell["eval_points"])
        _check_fingerprint(cell)
    except Exception as err:  # the parent stores it as an error row; the bench goes on
        return {**_identity(cell), "status": "error",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=8)}
    lr_step, lr, _ = downsample(res.lr)
    loss_step, _, train_loss = downsample(res.train_loss)
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    return {
        **_identity(cell),
        "status": "diverged" if res.diverged else "ok",
        "metric_name": res.metric_name,
        "higher_is_better": task.higher_is_better,
        "optimizer": task.optimizer,
        "total_steps": task.total_steps,
        "steps_run": len(res.train_loss),
        "wall_time": res.wall_time,
        "final": res.final,
        "curves": {
            "eval_step": res.eval_step, "eval_time": res.eval_time,
            "val_loss": res.val_loss, "val_metric": res.val_metric,
            "test_loss": res.test_loss, "test_metric": res.test_metric,
            "lr_step": lr_step, "lr": lr, "loss_step": loss_step, "train_loss": train_loss,
        },
        "warnings": messages[:5],
    }
