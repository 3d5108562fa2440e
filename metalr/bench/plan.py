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

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from metalr.errors import MetalrError

DEFAULT_GRID = (0.3, 1.0, 3.0)
DEFAULT_STORE = "runs/bench/results.sqlite"
# Bounds that keep planning and each run proportional to real work: a bench is a list of cells
# held in memory, and evaluations beyond one per step add nothing (see ``expand``).
MAX_SEEDS = 1000
MAX_EVAL_POINTS = 100_000
MAX_WORKERS = 256
MAX_CELLS = 100_000
MAX_CONFIG_BYTES = 1 << 20
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
        from metalr.specs import canonical

        for name in ("tasks", "policies"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise MetalrError(f"{name} must be a list of specs, got {getattr(self, name)!r}")
        for name in ("store", "out", "target_policy", "title", "description"):
            if not isinstance(getattr(self, name), str):
                raise MetalrError(f"{name} must be text, got {getattr(self, name)!r}")
        if not isinstance(self.notes, dict) or \
                not all(isinstance(v, str) for v in self.notes.values()):
            raise MetalrError(f"notes must map task specs to text, got {self.notes!r}")
        if not self.tasks or not all(isinstance(t, str) and t.strip() for t in self.tasks):
            raise MetalrError("bench needs at least one task (--tasks SPEC ...)")
        if not self.policies or not all(isinstance(p, str) and p.strip() for p in self.policies):
            raise MetalrError("bench needs at least one policy (--policies SPEC ...)")
        # One spelling per spec, so "cancer-mlp:" and "cancer-mlp" are one task in the store.
        self.tasks = [canonical(t, "task") for t in self.tasks]
        self.policies = [canonical(p, "policy") for p in self.policies]
        self.target_policy = known_policy(self.target_policy)
        self.lr_grid = parse_grid(self.lr_grid)
        self.seeds = _positive_int("--seeds", self.seeds, MAX_SEEDS)
        if isinstance(self.eval_points, dict):
            unknown = sorted(set(self.eval_points) - {*self.tasks, "default"})
            if unknown:
                raise MetalrError(f"eval_points names {', '.join(map(repr, unknown))}, which is "
                                  "neither a task of this bench nor 'default'")
            self.eval_points = {k: _positive_int(f"eval_points[{k!r}]", v, MAX_EVAL_POINTS)
                                for k, v in self.eval_points.items()}
        else:
            self.eval_points = _positive_int("--eval-points", self.eval_points, MAX_EVAL_POINTS)
        self.workers = (_positive_int("--workers", self.workers, MAX_WORKERS) if self.workers
                        else default_workers())
        self.out = self.out or str(Path(self.store).parent)

    def check_outputs(self) -> None:
        """Refuse, before any cell runs, a store or report directory that cannot be written."""
        from metalr.specs import check_output

        check_output(self.store, "--store", directory=False)
        check_output(self.out, "--out", directory=True)

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


def _positive_int(option: str, value, maximum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:  # not digits, or more than Python converts
        number = 0
    if not 0 < number <= maximum or str(value).strip() != str(number):
        raise MetalrError(f"{option}: {str(value)[:40]!r} is not an integer in [1, {maximum}]")
    return number


def known_policy(spec) -> str:
    """A target policy: a known policy spec, in its one spelling."""
    from metalr.policies import get_policy
    from metalr.specs import canonical

    if not isinstance(spec, str) or not spec.strip():
        raise MetalrError(f"--target-policy must be a policy spec, got {spec!r}")
    try:
        get_policy(spec)
    except MetalrError as err:
        raise MetalrError(f"--target-policy: {err}") from None
    return canonical(spec, "policy")


def parse_grid(grid) -> tuple[float, ...]:
    """Base-LR scales from ``"0.3,1,3"`` (an ``x`` suffix is allowed) or a list of numbers.

    Each must be a finite number > 0; duplicates are dropped; the result is sorted.
    """
    if not isinstance(grid, (str, list, tuple)):
        raise MetalrError(f"--lr-grid must be scales like 0.3,1,3 (a list in a config file), "
                          f"got {grid!r}")
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
    from metalr.specs import parse_json, read_regular

    data = parse_json(read_regular(path, "bench configuration", MAX_CONFIG_BYTES),
                      f"bench configuration {path}")
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
    total_steps: int

    @property
    def key(self) -> tuple[str, str, float, int]:
        return (self.task, self.policy, float(self.scale), int(self.seed))


def expand(config: BenchConfig) -> list[Cell]:
    """Check every task and policy, then list the bench's cells (task-major order).

    A cell's evaluation points are capped at its task's steps: more would evaluate at the same
    steps (every one), so the cap changes nothing but the cost of planning them.
    """
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
    scales = {}
    for policy in config.policies:
        scales[policy] = (1.0,) if categories[policy] == "peer" else config.lr_grid
        if categories[policy] == "learned" and 1.0 not in scales[policy]:
            scales[policy] = tuple(sorted((*scales[policy], 1.0)))
    count = len(tasks) * config.seeds * sum(map(len, scales.values()))
    if count > MAX_CELLS:
        raise MetalrError(f"this bench has {count} cells (tasks x policies x LR scales x seeds); "
                          f"at most {MAX_CELLS} are accepted: split it into several stores")
    cells = []
    for spec, task in tasks.items():
        evals = min(config.evals(spec), task.total_steps)
        for policy in config.policies:
            cells.extend(Cell(spec, policy, scale, seed, categories[policy],
                              task.base_lr * scale, evals, prints[policy], task.total_steps)
                         for scale in scales[policy] for seed in range(config.seeds))
    return cells
