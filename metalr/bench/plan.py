"""What a bench runs: its configuration, checked up front, expanded into cells.

A cell is one training run: ``(task spec, policy spec, base-LR scale, seed)``. The base LR of
a cell is the task's own base LR times the scale. Policies fall into three categories:

- ``hand``: every registry schedule and online tuner; run at every scale of the grid, and
  reported at the scale that is best on the validation split, and across the grid;
- ``learned``: metalr's schedule network (``metalr[:checkpoint=NAME]``); reported at its
  default (scale 1, no tuning: its promise), and also run across the grid, since its output
  multiplies the base LR and its robustness to that base LR is part of the claim;
- ``peer``: the LR-free optimizers; they take no base LR from the task, so they run once per
  seed at their own defaults (stored with scale 1).

A configuration may come from a JSON file (``metalr bench --config FILE``) whose keys are the
long options (``tasks``, ``policies``, ``seeds``, ``lr_grid``, ``workers``, ``store``, ``out``,
``eval_points``, ``target_policy``) plus ``title``, ``description`` and ``notes`` (task spec ->
one line shown in the report); options given on the command line win over the file. In a file,
``eval_points`` may also map task specs (and ``"default"``) to numbers, so a task whose
evaluation is expensive (the text tasks) can be evaluated less often.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from metalr.errors import MetalrError

DEFAULT_GRID = (0.3, 1.0, 3.0)
DEFAULT_STORE = "runs/bench/results.sqlite"
_CONFIG_KEYS = ("tasks", "policies", "seeds", "lr_grid", "workers", "store", "out",
                "eval_points", "target_policy", "title", "description", "notes")


@dataclass
class BenchConfig:
    """Everything that defines a bench run (see the module docstring)."""

    tasks: list[str]
    policies: list[str]
    seeds: int = 3
    lr_grid: tuple[float, ...] = DEFAULT_GRID
    workers: int = 0
    store: str = DEFAULT_STORE
    out: str = ""
    eval_points: int | dict[str, int] = 20
    target_policy: str = "cosine"
    title: str = "metalr bench"
    description: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("tasks", "policies"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise MetalrError(f"{name} must be a list of specs, got {getattr(self, name)!r}")
        self.tasks = [str(t).strip() for t in self.tasks]
        self.policies = [str(p).strip() for p in self.policies]
        if not self.tasks or not all(self.tasks):
            raise MetalrError("bench needs at least one task (--tasks SPEC ...)")
        if not self.policies or not all(self.policies):
            raise MetalrError("bench needs at least one policy (--policies SPEC ...)")
        self.lr_grid = parse_grid(self.lr_grid)
        self.seeds = _positive_int("--seeds", self.seeds)
        if isinstance(self.eval_points, dict):
            unknown = sorted(set(self.eval_points) - {*self.tasks, "default"})
            if unknown:
                raise MetalrError(f"eval_points names {', '.join(map(repr, unknown))}, which is "
                                  "neither a task of this bench nor 'default'")
            self.eval_points = {k: _positive_int(f"eval_points[{k!r}]", v)
                                for k, v in self.eval_points.items()}
        else:
            self.eval_points = _positive_int("--eval-points", self.eval_points)
        self.workers = _positive_int("--workers", self.workers) if self.workers else default_workers()
        self.out = self.out or str(Path(self.store).parent)

    def to_dict(self) -> dict:
        return asdict(self)

    def evals(self, task: str) -> int:
        """Evaluation points of each run of ``task``."""
        if isinstance(self.eval_points, dict):
            return self.eval_points.get(task, self.eval_points.get("default", 20))
        return self.eval_points


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _positive_int(option: str, value) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number <= 0 or str(value).strip() != str(number):
        raise MetalrError(f"{option}: {value!r} is not a positive integer")
    return number


def parse_grid(grid) -> tuple[float, ...]:
    """Base-LR scales from ``"0.3,1,3"`` (an ``x`` suffix is allowed) or a list of numbers.

    Each must be a finite number > 0; duplicates are dropped; the result is sorted.
    """
    items = grid.split(",") if isinstance(grid, str) else list(grid)
    scales = set()
    for item in items:
        text = str(item).strip().lower().removesuffix("x")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise MetalrError(f"--lr-grid: {str(item).strip()!r} is not a positive number; give "
                              "scales of each task's base LR, e.g. 0.3,1,3")
        scales.add(value)
    if not scales:
        raise MetalrError("--lr-grid is empty; give scales of each task's base LR, e.g. 0.3,1,3")
    return tuple(sorted(scales))


def load_config(path: str | Path) -> dict:
    """The options in a bench configuration file (JSON)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MetalrError(f"no bench configuration {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetalrError(f"bench configuration {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise MetalrError(f"bench configuration {path} must be a JSON object")
    unknown = sorted(set(data) - set(_CONFIG_KEYS))
    if unknown:
        raise MetalrError(f"bench configuration {path}: unknown key(s) {', '.join(unknown)}; "
                          f"accepted: {', '.join(_CONFIG_KEYS)}")
    return data


def policy_category(spec: str) -> str:
    """``hand``, ``learned`` or ``peer`` for a policy spec (see the module docstring)."""
    from metalr.policies import policy_kind
    from metalr.policies.params import split_spec

    if policy_kind(spec) == "optimizer":
        return "peer"
    return "learned" if split_spec(spec)[0] == "metalr" else "hand"


def fingerprint(spec: str) -> str:
    """What a policy's results depend on beyond its spec: the learned checkpoint's SHA-256."""
    if policy_category(spec) != "learned":
        return ""
    from metalr.learned import checkpoint
    from metalr.policies import get_policy, learned
    from metalr.policies.params import policy_params

    name = get_policy(spec).params.get("checkpoint", policy_params(learned)["checkpoint"])
    return checkpoint.load(name)[1]["sha256"]


def check_policy(spec: str, total_steps: int) -> None:
    """Build ``spec`` once on a throwaway optimizer at a task's budget, so bad names,
    parameters, checkpoints and budget-dependent settings fail before any cell runs."""
    from metalr.policies import get_policy, make_policy

    policy = get_policy(spec)
    if not policy.replaces_optimizer:
        param = torch.nn.Parameter(torch.zeros(1))
        make_policy(spec, torch.optim.SGD([param], lr=0.1), total_steps)


@dataclass(frozen=True)
class Cell:
    """One training run of the bench; ``base_lr`` is the task's base LR times ``scale``."""

    task: str
    policy: str
    scale: float
    seed: int
    category: str
    base_lr: float
    eval_points: int
    fingerprint: str

    @property
    def key(self) -> tuple[str, str, float, int]:
        return (self.task, self.policy, float(self.scale), int(self.seed))


def expand(config: BenchConfig) -> list[Cell]:
    """Check every task and policy, then list the bench's cells (task-major order)."""
    from metalr.tasks import get_task

    if len(set(config.tasks)) != len(config.tasks) or \
            len(set(config.policies)) != len(config.policies):
        raise MetalrError("a task or policy spec is listed twice")
    tasks = {spec: get_task(spec) for spec in config.tasks}
    categories, prints = {}, {}
    for spec in config.policies:
        for task in tasks.values():
            check_policy(spec, task.total_steps)
        categories[spec] = policy_category(spec)
        prints[spec] = fingerprint(spec)
    base_lrs = {spec: task.base_lr for spec, task in tasks.items()}
    cells = []
    for task in config.tasks:
        for policy in config.policies:
            scales = (1.0,) if categories[policy] == "peer" else config.lr_grid
            if categories[policy] == "learned" and 1.0 not in scales:
                scales = tuple(sorted((*scales, 1.0)))
            cells.extend(Cell(task, policy, scale, seed, categories[policy],
                              base_lrs[task] * scale, config.evals(task), prints[policy])
                         for scale in scales for seed in range(config.seeds))
    return cells
