"""The ``metalr`` command line.

Subcommands: ``meta-train`` (the same as ``python train_meta.py``), ``list`` (pretrained
checkpoints, policies, tasks), ``plot-policy`` (a policy's LR curve as PNG and CSV), ``bench``
(benchmark policies on tasks, resumable; see :mod:`metalr.bench`) and ``report`` (rebuild a
bench report from its store). User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from metalr import __version__
from metalr.errors import MetalrError


def _announce(line: str) -> None:
    """What a command is about to do (how many runs and steps), before it does it."""
    print(line, file=sys.stderr, flush=True)


def show_progress(no_progress: bool) -> bool:
    """Whether to draw progress bars: not with ``--no-progress``, nor with ``TQDM_DISABLE`` set
    (to any non-empty value, as tqdm reads it: an explicit ``disable=`` would override it)."""
    return not (no_progress or os.environ.get("TQDM_DISABLE"))


def _print_table(rows: list[dict]) -> None:
    if not rows:
        print("(none)")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols).rstrip())


def _cmd_list(args) -> None:
    if args.what == "pretrained":
        from metalr.learned.checkpoint import list_pretrained

        _print_table(list_pretrained(details=True))
    elif args.what == "policies":
        from metalr.policies import list_policies

        _print_table(list_policies())
    else:
        from metalr.tasks import list_tasks

        _print_table(list_tasks())


def _cmd_plot_policy(args) -> None:
    from metalr.policies.plot import parse_assignments, plot_policies

    png, csv_path = plot_policies(args.names, args.steps, params=parse_assignments(args.param),
                                  out=args.out, base_lr=args.base_lr, task=args.task,
                                  seed=args.seed, announce=_announce)
    print(f"wrote {png} and {csv_path}")


def _cmd_bench(args) -> None:
    import shlex

    from metalr.bench import BenchConfig, load_config, run_bench

    options = load_config(args.config) if args.config else {}
    given = {"tasks": args.tasks, "policies": args.policies, "seeds": args.seeds,
             "lr_grid": args.lr_grid, "workers": args.workers, "store": args.store,
             "out": args.out, "eval_points": args.eval_points,
             "target_policy": args.target_policy}
    options.update({k: v for k, v in given.items() if v is not None})
    config = BenchConfig(**{"tasks": [], "policies": [], **options})
    command = "metalr " + shlex.join(args.argv)
    try:
        result = run_bench(config, progress=show_progress(args.no_progress), use_wandb=args.wandb,
                           wandb_project=args.wandb_project, command=command)
    except KeyboardInterrupt:
        print(f"metalr: interrupted; finished cells are stored in {config.store}: rerun the "
              "same command to continue", file=sys.stderr)
        raise SystemExit(130) from None
    c = result["counts"]
    print(f"{c['total']} cells: {c['skipped']} already stored, {c['ran']} run, "
          f"{c['errors']} errors; store {config.store}")
    print(f"report: {result['report']['markdown']}")


def _cmd_report(args) -> None:
    from metalr.bench import write_report

    paths = write_report(args.store, args.out, args.target_policy)
    print(f"report: {paths['markdown']} (with {paths['summary'].name}, {paths['cells'].name} "
          f"and {sum(p.suffix == '.png' for p in paths.values())} PNGs)")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit status 2, and whose options are
    spelled with hyphens (``--meta-steps``) and also answer, unlisted, to underscores
    (``--meta_steps``: meta-train's spelling up to metalr 0.2, which shipped checkpoints
    record as their command). Subcommands inherit both."""

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        aliases = ["--" + n[2:].replace("-", "_") for n in names if n.startswith("--") and "-" in n[2:]]
        if aliases:
            # Its own default is SUPPRESS, so it never overwrites the documented option's.
            super().add_argument(*aliases, **{**kwargs, "dest": action.dest, "default": argparse.SUPPRESS,
                                              "help": argparse.SUPPRESS})
        return action

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="metalr", description="Meta-learned LR schedules.")
    parser.add_argument("--version", action="version", version=f"metalr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("meta-train", help="meta-train a schedule network (see meta-train --help)",
                   add_help=False)
    p = sub.add_parser("list", help="list pretrained checkpoints, policies or tasks")
    p.add_argument("what", choices=["pretrained", "policies", "tasks"])
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("plot-policy", help="draw policies' LR curves to a PNG and a CSV")
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="policy name or spec name:k=v,k=v; several are drawn side by side")
    p.add_argument("--steps", type=int, required=True, help="number of steps to draw")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="a parameter of the (single) policy; repeat for more")
    p.add_argument("--out", help="PNG path (default lr_NAME.png); the CSV is written beside it")
    p.add_argument("--base-lr", type=float, help="base LR (default: the task's)")
    p.add_argument("--task", default="mnist1d-mlp",
                   help="task of the short real run that draws loss-reading policies")
    p.add_argument("--seed", type=int, default=0, help="seed of that run")
    p.set_defaults(func=_cmd_plot_policy)
    p = sub.add_parser("bench", help="benchmark policies on tasks over seeds and a base-LR "
                       "grid, in parallel and resumable; writes a report")
    p.add_argument("--config", metavar="FILE",
                   help="JSON file with any of the options below (options given here win)")
    p.add_argument("--tasks", nargs="+", metavar="SPEC", help="task specs (see metalr list tasks)")
    p.add_argument("--policies", nargs="+", metavar="SPEC",
                   help="policy specs (see metalr list policies); metalr[:checkpoint=NAME] is "
                        "the learned schedule")
    p.add_argument("--seeds", metavar="N", help="run every configuration with seeds 0..N-1 (default 3)")
    p.add_argument("--lr-grid", metavar="S,S,...",
                   help="scales of each task's base LR for the hand policies (default 0.3,1,3)")
    p.add_argument("--workers", metavar="K", help="worker processes (default: one per core)")
    p.add_argument("--store", metavar="PATH",
                   help="SQLite results store; finished cells in it are skipped "
                        "(default runs/bench/results.sqlite)")
    p.add_argument("--out", metavar="DIR", help="report directory (default: the store's)")
    p.add_argument("--eval-points", metavar="N", help="evaluations per run (default 20)")
    p.add_argument("--target-policy", metavar="SPEC",
                   help="its tuned final test metric is the steps-to-target target "
                        "(default cosine)")
    p.add_argument("--wandb", action="store_true",
                   help="log each cell as a wandb run, one group (offline without a key)")
    p.add_argument("--wandb-project", default="metalr", metavar="NAME",
                   help="wandb project (default metalr)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also: TQDM_DISABLE=1)")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("report", help="rebuild a bench report (markdown, CSV, PNG) from its store")
    p.add_argument("store", metavar="STORE", help="results store written by metalr bench")
    p.add_argument("--out", metavar="DIR", help="report directory (default: the store's)")
    p.add_argument("--target-policy", metavar="SPEC",
                   help="target policy (default: the bench's, else cosine)")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["meta-train"]:
        from metalr.learned.train.config import main as meta_train_main

        return meta_train_main(argv[1:], prog="metalr meta-train")
    args = build_parser().parse_args(argv)
    args.argv = argv
    # The models here are tiny: one thread is faster, and never oversubscribes shared cores.
    torch.set_num_threads(1)
    try:
        args.func(args)
    except MetalrError as err:
        print(f"metalr: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
