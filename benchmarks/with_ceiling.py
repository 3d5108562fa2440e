"""Copy a checkpoint with a ceiling on the update-to-weight ratio (``NetConfig.max_ratio``).

The weights are unchanged; the copy's configuration gains ``max_ratio`` (and, with
``--adaptive``, ``max_ratio_adaptive``, the ceiling under Adam and AdamW; with
``--collapse-guard``, ``collapse_guard``: a run that lost most of its progress never raises
again; with ``--raise-needs-budget``, ``raise_needs_budget``: no raise without a known budget),
so the network may raise the LR above its base only while the measured ratio stays below
it (``--guard``: the loss back-off's threshold, ``NetConfig.guard``, or none; ``--hypergradient``:
``max_ratio_hypergradient``, the Adam ceiling while the hypergradient says a larger LR pays;
``--hypergradient-cap``: ``max_multiplier_hypergradient``, the multiplier's cap while it does;
``--hypergradient-z``: ``hypergradient_z``, the gate as a significance test that holds a raise). Used
to measure the ceiling on networks meta-trained without one, before meta-training with it
(``docs/unroll.md``, "A ceiling on the raise").

    python benchmarks/with_ceiling.py runs/raise-v5-w5-s2/metalr-unroll-raise-v5-w5-s2.json 0.01 runs/ceiling/s2-0.01
    python benchmarks/with_ceiling.py runs/raise-v5-w5-s2/metalr-unroll-raise-v5-w5-s2.json 0.01 runs/ceiling/s2-0.01-a0.03 --adaptive 0.03
    python benchmarks/with_ceiling.py runs/raise-v5-w5-s2/metalr-unroll-raise-v5-w5-s2.json 0.03 runs/ceiling/s2-0.03-cg0.2 --collapse-guard 0.2
    python benchmarks/with_ceiling.py runs/lock-s4/metalr-unroll-lock-s4.json 0.02 runs/ceiling/lock-s4-0.02-a0.01-cg0.3-f0.1 --adaptive 0.01 --collapse-guard 0.3 --floor 0.1
    python benchmarks/with_ceiling.py metalr-unroll-floor 0.02 pretrained/metalr-unroll-guard03 --adaptive 0.01 --collapse-guard 0.3 --floor 0.1 --raise-needs-budget --guard 0.3
    python benchmarks/with_ceiling.py metalr-unroll-floor 0.02 runs/hypergradient/g03-h0.03 --adaptive 0.01 --collapse-guard 0.3 --floor 0.1 --raise-needs-budget --guard 0.3 --hypergradient 0.03
"""

import argparse
import dataclasses

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.network import ScheduleNet


def add_ceiling(source: str, max_ratio: float, out: str, adaptive: float | None = None,
                collapse_guard: float | None = None, ratio_floor: float = 1.0, raise_needs_budget: bool = False,
                guard: float | None | str = "keep", hypergradient: float | None = None,
                hypergradient_cap: float | None = None, hypergradient_z: float | None = None):
    """Write ``out.json`` / ``out.safetensors``: ``source`` with ``max_ratio`` (and
    ``max_ratio_adaptive``, ``collapse_guard``, ``ratio_floor``, ``raise_needs_budget``,
    ``max_ratio_hypergradient``, ``max_multiplier_hypergradient``, ``hypergradient_z``, and
    ``guard`` unless it is ``"keep"``), recorded in its
    ``meta_training.ceiling``
    (``benchmarks/reproduce_pretrained.py`` reapplies it to a rerun)."""
    net, config = checkpoint.load(source)
    limits = dict(max_ratio=max_ratio, max_ratio_adaptive=adaptive, collapse_guard=collapse_guard,
                  ratio_floor=ratio_floor, raise_needs_budget=raise_needs_budget,
                  max_ratio_hypergradient=hypergradient, max_multiplier_hypergradient=hypergradient_cap,
                  hypergradient_z=hypergradient_z)
    if guard != "keep":
        limits["guard"] = guard
    capped = ScheduleNet(dataclasses.replace(net.config, **limits))
    capped.load_state_dict(net.state_dict())
    meta = dict(config.get("meta_training", {}))
    meta["ceiling"] = {"from": source, "from_sha256": config["sha256"], "max_ratio": max_ratio}
    if adaptive is not None:
        meta["ceiling"]["max_ratio_adaptive"] = adaptive
    if collapse_guard is not None:
        meta["ceiling"]["collapse_guard"] = collapse_guard
    if ratio_floor != 1.0:
        meta["ceiling"]["ratio_floor"] = ratio_floor
    if raise_needs_budget:
        meta["ceiling"]["raise_needs_budget"] = True
    if guard != "keep":
        meta["ceiling"]["guard"] = guard
    if hypergradient is not None:
        meta["ceiling"]["max_ratio_hypergradient"] = hypergradient
    if hypergradient_cap is not None:
        meta["ceiling"]["max_multiplier_hypergradient"] = hypergradient_cap
    if hypergradient_z is not None:
        meta["ceiling"]["hypergradient_z"] = hypergradient_z
    return checkpoint.save(capped, out, meta)


def guard_value(text: str) -> float | None:
    """``--guard``: a number, or ``none`` for no back-off."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 3] or 'none', got {text!r}") from None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint name or JSON path (hyper-v5, with max_multiplier)")
    parser.add_argument("max_ratio", type=float, help="the ceiling, in (0, 1]")
    parser.add_argument("out", help="the copy's path, without suffix")
    parser.add_argument("--adaptive", type=float, help="the ceiling under Adam and AdamW, in (0, 1] "
                        "(default: max_ratio's)")
    parser.add_argument("--collapse-guard", type=float, help="lock out every raise once rel_loss rises above this "
                        "fraction of its lowest, in (0, 1) (default: none)")
    parser.add_argument("--floor", type=float, default=1.0, help="under SGD with the budget known, the least the "
                        "ceiling may be as a multiple of the base LR, in [lo, 1] (default 1: never below the base LR)")
    parser.add_argument("--raise-needs-budget", action="store_true", help="without a known budget, never above the "
                        "base LR (default: the ceiling without a budget applies)")
    # SUPPRESS, not a "keep" default: argparse would pass a string default through guard_value
    parser.add_argument("--guard", type=guard_value, default=argparse.SUPPRESS, help="the back-off threshold on rel_min "
                        "(NetConfig.guard), in (0, 3], or 'none' for no back-off (default: the checkpoint's)")
    parser.add_argument("--hypergradient", type=float, help="under Adam and AdamW with the budget known, the "
                        "ceiling while the running mean hypergradient cosine is positive, in (--adaptive, 1] "
                        "(default: no gate)")
    parser.add_argument("--hypergradient-cap", type=float, help="the most the multiplier may be while that gate is "
                        "open, in (max_multiplier, hi) (default: max_multiplier)")
    parser.add_argument("--hypergradient-z", type=float, help="open that gate while the samples' mean is this many "
                        "standard errors above 0, hold a raise it made within as many of 0, shut it below; in "
                        "(0, 10] (default: open while their sum is positive)")
    args = parser.parse_args()
    try:
        print(add_ceiling(args.checkpoint, args.max_ratio, args.out, args.adaptive, args.collapse_guard, args.floor,
                          args.raise_needs_budget, getattr(args, "guard", "keep"), args.hypergradient,
                          args.hypergradient_cap, args.hypergradient_z))
    except MetalrError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
