"""Peak memory and time of one unrolled hypergradient against the horizon, with and without
segment checkpointing, next to a plain training run of the same episode.

Each cell runs in a fresh process (so its peak resident memory is its own): the episode
(``--family``, SGD with momentum, batch 128, base LR at the family default) is trained once by
the same functional inner run outside any graph (:func:`population.run_population`, one member:
"plain run"), or its exact hypergradient is computed by
:func:`unroll.episode_gradient` with ``--segment`` steps per checkpointed segment, or with the
whole horizon as one segment (no checkpointing). Printed per horizon: seconds and the peak
resident memory above the process's baseline (imports and data loaded), and
:func:`unroll.memory_needed`'s estimate, which ``train_meta.py`` checks against the memory
available before a run starts.

    python benchmarks/unroll_memory.py --horizons 500,1000,2000,5000 --plain-max 2000
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def cell(family: str, horizon: int, mode: str, segment: int) -> dict:
    import torch

    from metalr.learned.network import CONFIGS, ScheduleNet
    from metalr.learned.train import population, unroll
    from metalr.learned.train.distribution import Episode
    from metalr.tasks import get_task

    torch.set_num_threads(1)
    lr = get_task(family).base_lr
    episode = Episode(family, "sgd", 0.9, 1.0, lr, horizon, 128, 0.0, True, 1)
    get_task(episode.spec()).train  # load the data before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    net = ScheduleNet(CONFIGS["default"])
    if mode == "plain run":
        population.run_population([net], episode)
    else:
        unroll.episode_gradient(net, episode, segment=segment if mode == "segmented" else horizon)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mib": (peak - base) / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="mnist1d-mlp")
    parser.add_argument("--horizons", default="500,1000,2000,5000")
    parser.add_argument("--segment", type=int, default=100)
    parser.add_argument("--plain-max", type=int, default=2000,
                        help="longest horizon unrolled without checkpointing (its memory grows with it)")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        horizon, mode = args.cell.split(":", 1)
        print(json.dumps(cell(args.family, int(horizon), mode, args.segment)))
        return
    from metalr.learned.train import unroll

    print(f"{args.family}, SGD momentum 0.9, batch 128; segment {args.segment}")
    print("| horizon | plain run s | segmented unroll s (x plain) | peak MiB | estimate MiB "
          "| one-segment unroll s | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for horizon in map(int, args.horizons.split(",")):
        got = {}
        modes = ["plain run", "segmented"] + (["one segment"] if horizon <= args.plain_max else [])
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, f"--family={args.family}", f"--segment={args.segment}",
                                  f"--cell={horizon}:{mode}"], capture_output=True, text=True, check=True)
            got[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        estimate = unroll.memory_needed(args.family, horizon, args.segment, 128) / 2**20
        plain, seg = got["plain run"], got["segmented"]
        one = got.get("one segment")
        print(f"| {horizon} | {plain['seconds']:.1f} | {seg['seconds']:.1f} ({seg['seconds'] / plain['seconds']:.1f}x) "
              f"| {seg['peak_mib']:.0f} | {estimate:.0f} | "
              + (f"{one['seconds']:.1f} | {one['peak_mib']:.0f} |" if one else "- | - |"), flush=True)


if __name__ == "__main__":
    main()
