"""Every option of ``python train_meta.py`` / ``metalr meta-train``, and the command itself.

Options are the fields of :class:`MetaTrainConfig`, given as ``--field-name=value`` (a field
``meta_steps`` is the option ``--meta-steps``; ``--meta_steps``, the spelling shipped
checkpoints record, is accepted too); ``--help`` lists them with their defaults. Two
estimators share the command:

* ``--estimator=unroll`` (default): the exact gradient of each sampled episode's final
  validation loss, by reverse mode through the whole run (:mod:`metalr.learned.train.unroll`).
* ``--estimator=hybrid``: both on every episode, merged by inverse variance (Metz et al.
  2019; :mod:`metalr.learned.train.hybrid`).
* ``--estimator=es``: antithetic evolution strategies over whole training runs sampled from the
  same task distribution (:mod:`metalr.learned.train.full_es`).
* ``--estimator=lookahead``: MLR-SNet's online, ``higher``-unrolled lookahead inside a few
  training runs (:mod:`metalr.learned.train.lookahead`), kept as the baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from metalr.errors import MetalrError
from metalr.learned.network import CONFIGS

ESTIMATORS = ("es", "unroll", "hybrid", "lookahead")
# Task families each ES episode draws from; the GRU, the char-LMs and logistic regression are
# held out of meta-training so the transfer benchmark measures architectures never seen.
ES_FAMILIES = "mnist1d-mlp,mnist1d-cnn,digits-mlp,digits-cnn:width=8,cancer-mlp"
LOOKAHEAD_TASKS = "mnist1d-mlp,mnist1d-cnn"
# torch.manual_seed's range, as plot-policy's --seed.
MAX_SEED = 2 ** 63 - 1
# Lookahead's inner steps in all (runs x budgets): the default plan is 16,800 (about 20 s);
# 10 million take hours and are still a deliberate run, where 35 billion are a typo.
MAX_LOOKAHEAD_STEPS = 10_000_000


def flag(name: str) -> str:
    """The command-line option of the field ``name``: ``meta_steps`` -> ``--meta-steps``."""
    return "--" + name.replace("_", "-")


def _opt(help_text: str, **kw):
    return field(metadata={"help": help_text}, **kw)


@dataclass
class MetaTrainConfig:
    """Options of meta-training; see the module docstring."""

    estimator: str = _opt("unroll (exact gradients through whole training runs), es "
                          "(full-horizon evolution strategies), hybrid (both on each episode, merged by "
                          "inverse variance) or lookahead (MLR-SNet's higher-unrolled lookahead)",
                          default="unroll")
    tasks: str | None = _opt("comma-separated task specs: the families unroll and ES sample from, "
                             f"or the tasks lookahead trains in (default: {ES_FAMILIES} for unroll, hybrid "
                             f"and es; {LOOKAHEAD_TASKS} for lookahead)", default=None)
    net: str = _opt(f"network configuration: {', '.join(CONFIGS)}", default="default")
    seed: int = _opt("seed of the network init, the episodes and the noise", default=0)
    # --- unrolled gradients (and the ES options below that the two share: meta_steps, clip,
    # budgets, base-LR scales, label noise, evaluation, workers)
    episodes: int = _opt("unroll: episodes per outer step, their base-LR scales stratified over "
                         "the range", default=8)
    segment: int = _opt("unroll: inner steps per checkpointed segment of the backward pass (memory "
                        "holds one segment's graph)", default=100)
    episode_clip: float = _opt("unroll: bound each episode's gradient to this norm (a chaotic "
                               "episode weighs at most this much); a blown-up episode's push "
                               "weighs exactly this much", default=1.0)
    blowup_weight: float = _opt("unroll and hybrid: a blown-up episode's push weighs this many "
                                "times --episode-clip (1: as much as any episode can; more charges "
                                "a collapse more than the largest gain of another episode)",
                                default=1.0)
    # --- evolution strategies
    meta_steps: int = _opt("ES: outer steps", default=40)
    pairs: int = _opt("ES: antithetic pairs per outer step (each pair: two whole runs)", default=4)
    sigma: float = _opt("ES: perturbation scale in parameter space", default=0.05)
    clip: float = _opt("ES: clip the gradient estimate to this norm", default=1.0)
    diff_clip: float = _opt("ES: clip each pair's fitness difference F+ - F- to [-C, C] so a "
                            "pair where one member collapses cannot dominate a step (0: raw "
                            "differences)", default=0.05)
    pairs_per_episode: int = _opt("ES: antithetic pairs sharing one episode (pair i runs episode "
                                  "i // pairs_per_episode; --pairs must be a multiple); hybrid: "
                                  "the ES pairs on each episode", default=1)
    fitness_evals: int = _opt("ES: the fitness averages the normalised validation loss over the "
                              "last N of 20 evaluations (full_es.EVAL_POINTS), 5%% of the budget "
                              "apart (1: the final loss alone)", default=1)
    vectorize: bool = _opt("ES: train the members of an episode as one vectorised model "
                           "(torch.func.vmap; processes split episodes, not pairs); the "
                           "families must have no BatchNorm, recurrent or dropout layers",
                           default=False)
    perturb: str = _opt("ES: the parameters ES moves: head (the output layer and the linear skip "
                        "path; the LSTM keeps its seeded random init as fixed recurrent features) "
                        "or all", default="head")
    budget_min: int = _opt("ES: shortest episode, in optimizer steps (log-uniform)", default=50)
    budget_max: int = _opt("ES: longest episode, in optimizer steps", default=300)
    lr_scale_min: float = _opt("ES: smallest base-LR scale of the family default (log-uniform)",
                               default=0.1)
    lr_scale_max: float = _opt("ES: largest base-LR scale", default=10.0)
    label_noise: float = _opt("ES: largest label-noise rate (half the episodes are clean)",
                              default=0.4)
    eval_every: int = _opt("ES: outer steps between evaluations of the unperturbed network on "
                           "fixed training-distribution and held-out episodes (0: never)",
                           default=10)
    save_every: int = _opt("ES: outer steps between resumable state writes", default=5)
    workers: int = _opt("ES: processes evaluating the population (torch.distributed, gloo); "
                        "under torchrun the launcher's world is used instead", default=2)
    device: str = _opt("device the inner runs train on (cpu, cuda)", default="cpu")
    max_minutes: float = _opt("stop at the end of the first outer step (lookahead: inner run) "
                              "that ends this many minutes of wall time after the command "
                              "started (a resumed run's count starts again) and write the "
                              "checkpoint there; the network then depends on the machine's "
                              "speed (0: no limit)", default=0.0)
    resume: bool = _opt("continue the run whose state is in --out (also automatic when --out "
                        "holds this run's state)", default=False)
    # --- lookahead (MLR-SNet)
    runs_per_task: int = _opt("lookahead: inner training runs per task, each with its own seed",
                              default=4)
    unroll: int = _opt("lookahead: steps at the emitted LRs in each differentiable lookahead",
                       default=20)
    anneal: int = _opt("lookahead: steps of linear LR decay to 0 appended to each lookahead "
                       "(0: a plain lookahead)", default=30)
    meta_interval: int = _opt("lookahead: inner steps between meta-updates", default=400)
    first_order: bool = _opt("lookahead: hold model gradients and observed losses constant, as "
                             "MLR-SNet's code (default: exact second order)", default=False)
    val_batch: int = _opt("lookahead: validation examples per meta-objective", default=256)
    epochs: int = _opt("lookahead: inner-run epochs (0: each task's default budget)", default=0)
    # --- both
    meta_lr: float | None = _opt("Adam learning rate of the outer loop (default: 0.003 for unroll "
                                 "and hybrid; 0.01 for es; 0.001 for lookahead)", default=None)
    meta_weight_decay: float = _opt("Adam weight decay of the outer loop", default=1e-4)
    hide_budget: float = _opt("fraction of runs trained without total_steps, so the network "
                              "also serves unknown budgets", default=0.25)
    name: str | None = _opt("checkpoint name (default: metalr-ESTIMATOR)", default=None)
    out: str = _opt("output directory (default: runs/NAME-TIMESTAMP)", default="")
    overwrite: bool = _opt("replace a finished checkpoint of the same name in --out", default=False)
    wandb: bool = _opt("also log to Weights & Biases (offline without a key or network)",
                       default=False)

    def __post_init__(self):
        # None is "not given": an explicit --tasks= or --meta-lr=0 is refused by validate().
        if self.estimator in ESTIMATORS:
            if self.tasks is None:
                self.tasks = LOOKAHEAD_TASKS if self.estimator == "lookahead" else ES_FAMILIES
            if self.name is None:
                self.name = f"metalr-{self.estimator}"
            if self.meta_lr is None:
                self.meta_lr = {"es": 1e-2, "unroll": 3e-3, "hybrid": 3e-3, "lookahead": 1e-3}[self.estimator]

    def validate(self) -> None:
        """Refuse, with one line naming the option, any value the run could not use; for
        lookahead this builds the tasks (their budgets and validation splits bound options)."""
        if self.estimator not in ESTIMATORS:
            raise MetalrError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        positive = ["meta_steps", "pairs", "pairs_per_episode", "episodes", "segment", "budget_min", "save_every",
                    "runs_per_task", "unroll", "meta_interval", "val_batch"]
        for key in positive:
            value = getattr(self, key)
            if value <= 0:
                raise MetalrError(f"{flag(key)} must be a positive integer, got {value}")
        if not 0 <= self.seed <= MAX_SEED:
            raise MetalrError(f"--seed must be a whole number in [0, 2**63 - 1], got {str(self.seed)[:40]}")
        if not 1 <= self.fitness_evals <= 20:
            raise MetalrError(f"--fitness-evals must be an integer in [1, 20] (evaluations 5% of "
                              f"the budget apart), got {self.fitness_evals}")
        if self.perturb not in ("head", "all"):
            raise MetalrError(f"--perturb must be head or all, got {self.perturb!r}")
        if self.pairs % self.pairs_per_episode:
            raise MetalrError(f"--pairs ({self.pairs}) must be a multiple of --pairs-per-episode "
                              f"({self.pairs_per_episode})")
        if self.workers <= 0:
            raise MetalrError(f"--workers must be a positive integer (processes), got {self.workers}")
        for key in ("anneal", "epochs", "eval_every"):
            if getattr(self, key) < 0:
                raise MetalrError(f"{flag(key)} must be >= 0, got {getattr(self, key)}")
        if self.budget_max < self.budget_min:
            raise MetalrError(f"--budget-max ({self.budget_max}) must be >= --budget-min "
                              f"({self.budget_min})")
        for key in ("sigma", "clip", "episode_clip", "blowup_weight", "meta_lr", "lr_scale_min", "lr_scale_max"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise MetalrError(f"{flag(key)} must be a finite number > 0, got {value}")
        if self.lr_scale_max < self.lr_scale_min:
            raise MetalrError(f"--lr-scale-max ({self.lr_scale_max}) must be >= --lr-scale-min "
                              f"({self.lr_scale_min})")
        if not (math.isfinite(self.max_minutes) and self.max_minutes >= 0):
            raise MetalrError(f"--max-minutes must be a finite number >= 0 (0: no limit), got {self.max_minutes}")
        if self.estimator == "hybrid" and self.episodes < 2:
            raise MetalrError(f"--estimator=hybrid weighs its two estimators by their variance across "
                              f"a step's episodes: --episodes must be at least 2, got {self.episodes}")
        if not (math.isfinite(self.diff_clip) and self.diff_clip >= 0):
            raise MetalrError(f"--diff-clip must be a finite number >= 0 (0: no clipping), got {self.diff_clip}")
        if not (math.isfinite(self.meta_weight_decay) and self.meta_weight_decay >= 0):
            raise MetalrError(f"--meta-weight-decay must be a finite number >= 0, got {self.meta_weight_decay}")
        if not 0 <= self.hide_budget <= 1:
            raise MetalrError(f"--hide-budget must be a fraction in [0, 1], got {self.hide_budget}")
        if not 0 <= self.label_noise < 1:
            raise MetalrError(f"--label-noise must be a rate in [0, 1), got {self.label_noise}")
        if self.net not in CONFIGS:
            raise MetalrError(f"--net must be one of {', '.join(CONFIGS)}, got {self.net!r}")
        if not self.name or self.name.strip(".") == "" or "/" in self.name or "\\" in self.name:
            raise MetalrError(f"--name must be a plain file name, got {self.name!r}")
        if self.estimator != "lookahead" and CONFIGS[self.net].kind == "paper":
            raise MetalrError(f"--net=paper emits an absolute LR from MLR-SNet's gamma rule; "
                              f"--estimator={self.estimator} trains base-LR multipliers: use "
                              "--net=default or --estimator=lookahead")
        if self.estimator == "lookahead" and CONFIGS[self.net].shape is not None:
            raise MetalrError(f"--net={self.net} multiplies the {CONFIGS[self.net].shape} shape, which "
                              "the lookahead's differentiable LR does not apply: use "
                              "--estimator=unroll or es")
        specs = self.task_specs()
        if self.estimator == "lookahead":
            self._check_lookahead_plan(specs)

    def _check_lookahead_plan(self, specs: list[str]) -> None:
        from metalr.tasks import get_task

        tasks = [get_task(spec) for spec in specs]
        steps = self.runs_per_task * sum((self.epochs or t.epochs) * t.steps_per_epoch for t in tasks)
        if steps > MAX_LOOKAHEAD_STEPS:
            raise MetalrError(f"this plan trains {steps:,} inner steps (--runs-per-task x the tasks' "
                              f"--epochs x steps per epoch); at most {MAX_LOOKAHEAD_STEPS:,}")
        smallest = min(tasks, key=lambda t: len(t.val))
        if self.val_batch > len(smallest.val):
            raise MetalrError(f"--val-batch must be at most {len(smallest.val)} (the validation split "
                              f"of {smallest.name}), got {self.val_batch}")

    def task_specs(self) -> list[str]:
        specs = [s.strip() for s in self.tasks.split(",") if s.strip()]
        if not specs:
            raise MetalrError("--tasks is empty; give at least one task spec (metalr list tasks names them)")
        return specs


def build_parser(prog: str) -> argparse.ArgumentParser:
    """One option per field of :class:`MetaTrainConfig` (:func:`flag` spells it), and
    ``--no-progress``, which changes no result and so is no field."""
    from metalr.cli import OneLineParser

    parser = OneLineParser(prog=prog, description="Meta-train a schedule network.")
    for f in dataclasses.fields(MetaTrainConfig):
        text = f.metadata["help"]
        kind = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type).split(" |")[0]]
        if kind is bool:  # a switch: off unless given
            parser.add_argument(flag(f.name), action="store_true", help=text)
            continue
        if "(default" not in text:  # where the help says its default, that one is the true one
            text += " (default: %(default)s)"
        parser.add_argument(flag(f.name), type=kind, default=f.default, help=text,
                            metavar=kind.__name__.upper())
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (also: TQDM_DISABLE=1)")
    return parser


def _torchrun_rank() -> int:
    """This process's rank under torchrun (which sets RANK and WORLD_SIZE), else 0."""
    return int(os.environ["RANK"]) if "RANK" in os.environ and "WORLD_SIZE" in os.environ else 0


def main(argv: list[str] | None = None, prog: str = "train_meta.py") -> int:
    """Parse ``argv``, meta-train, print where the results are; user errors exit 2.

    Every option is checked before anything is written. Under torchrun every process runs
    this: ES shares its population among them (see :mod:`~metalr.learned.train.outer_loop`),
    and only rank 0 writes and reports; the single-process estimators run on rank 0 alone.
    """
    import torch

    from metalr.cli import show_progress
    from metalr.specs import check_output

    argv = sys.argv[1:] if argv is None else argv
    # The models here are tiny: one thread per process is faster and never oversubscribes cores.
    torch.set_num_threads(1)
    try:
        options = vars(build_parser(prog).parse_args(argv))
        progress = show_progress(options.pop("no_progress"))
        cfg = MetaTrainConfig(**options)
        cfg.validate()
        out = check_output(cfg.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}", "--out",
                           directory=True)
        command = " ".join(["python train_meta.py", *map(shlex.quote, argv)])
        if cfg.estimator != "lookahead":
            from metalr.learned.train.outer_loop import meta_train_es as run
        elif _torchrun_rank():
            print(f"{prog}: rank {_torchrun_rank()}: --estimator={cfg.estimator} runs in one "
                  "process, rank 0", file=sys.stderr)
            return 0
        else:
            from metalr.learned.train.lookahead import meta_train_lookahead as run
        result = run(cfg, out, command=command, progress=progress)
    except MetalrError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if _torchrun_rank():  # rank 0 wrote the run and reports it
        return 0
    print(f"wrote {result['checkpoint']} ({result['wall_time_s']:.0f} s)")
    for line in result.get("lines", []):
        print(f"  {line}")
    print(f"metrics: {result['metrics']}\nplot: {result['plot']}")
    return 0
