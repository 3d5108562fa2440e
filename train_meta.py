"""Meta-train a schedule network.  ``python train_meta.py [--option=value ...]``

With no arguments it meta-trains the default network on MNIST-1D (MLP and CNN, two inner runs
each, generated offline) in a few minutes on a laptop CPU, and writes to ``runs/NAME-TIME/``:
the checkpoint (``NAME.safetensors`` + ``NAME.json``), ``NAME.metrics.csv`` and ``NAME.png``
(emitted LR and losses over meta-training). Every option is a field of
:class:`metalr.meta_train.MetaTrainConfig`; ``--help`` lists them with their defaults.
``metalr meta-train`` is the same command.

Use the result in a training script::

    sched = MetaLRScheduler.from_pretrained("runs/.../NAME.json", optimizer, total_steps=T)
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch

from metalr.cli import OneLineParser
from metalr.errors import MetalrError
from metalr.meta_train import MetaTrainConfig, meta_train


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=__doc__.split("\n\n")[1],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(MetaTrainConfig):
        if f.type in (bool, "bool"):
            parser.add_argument(f"--{f.name}", action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            parser.add_argument(f"--{f.name}", type=kind, default=f.default, help=f.metadata["help"],
                                metavar=kind.__name__.upper())
    return parser


def main(argv: list[str] | None = None, prog: str = "train_meta.py") -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The models here are tiny: one thread is faster, and never oversubscribes shared cores.
    torch.set_num_threads(1)
    cfg = MetaTrainConfig(**vars(_parser(prog).parse_args(argv)))
    out = Path(cfg.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    command = " ".join(["python train_meta.py", *map(shlex.quote, argv)])
    try:
        result = meta_train(cfg, out, command=command)
    except MetalrError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {result['checkpoint']} ({result['inner_runs']} inner runs, "
          f"{result['wall_time_s']:.0f} s)")
    for row in result["runs"]:
        print(f"  run {row['run']}: {row['task']} seed {row['seed']} budget_known={row['budget_known']}"
              f"  val {row['val_metric']:.4f}  test {row['test_metric']:.4f}")
    print(f"metrics: {result['metrics']}\nplot: {result['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
