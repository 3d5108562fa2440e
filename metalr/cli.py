"""The ``metalr`` command line.

Subcommands: ``meta-train`` (the same as ``python train_meta.py``), ``list`` (pretrained
checkpoints, policies, tasks). User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from metalr.errors import MetalrError


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
        from metalr.checkpoint import list_pretrained

        _print_table(list_pretrained(details=True))
    elif args.what == "policies":
        from metalr.policies import list_policies

        _print_table(list_policies())
    else:
        from metalr.tasks import list_tasks

        _print_table(list_tasks())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalr", description="Meta-learned LR schedules.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("meta-train", help="meta-train a schedule network (see meta-train --help)",
                   add_help=False)
    p = sub.add_parser("list", help="list pretrained checkpoints, policies or tasks")
    p.add_argument("what", choices=["pretrained", "policies", "tasks"])
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["meta-train"]:
        import train_meta

        return train_meta.main(argv[1:], prog="metalr meta-train")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MetalrError as err:
        print(f"metalr: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
