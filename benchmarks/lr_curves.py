"""The LRs a checkpoint emits on a few tasks at base-LR scales 0.3x, 1x and 3x (budget known).

Prints, per task and scale, the peak and final multiplier of the base LR (final well below peak:
it anneals), the mean *absolute* LR relative to the task's default (a network that corrects a
wrong base LR brings the three scales closer together than 0.3 : 1 : 3), the cuts (steps where
the LR falls to half or less at once: the loss back-off, ``NetConfig.guard``, or the ratio
ceiling's floor; the knee's anneal never falls that fast) and the final test metric; draws the
LR curves to a PNG (the checkpoint card's figure).

    python benchmarks/lr_curves.py --checkpoint metalr-es --out pretrained/metalr-es.lr_curves.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import metalr  # noqa: E402
from metalr.tasks import get_task  # noqa: E402

# A meta-training family, a held-in family at a budget it rarely saw, and held-out architectures.
TASKS = ("mnist1d-mlp:epochs=30", "digits-mlp", "mnist1d-gru:epochs=8", "charlm-lstm:fraction=0.25,epochs=1")
SCALES = (0.3, 1.0, 3.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=metalr.learned.DEFAULT_CHECKPOINT)
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.5 * len(TASKS), 3.8))
    print("| task | base-LR scale | peak multiplier | final multiplier | mean LR / task default | cuts | "
          "final test metric |")
    print("|---|---|---|---|---|---|---|")
    for ax, spec in zip(axes, TASKS):
        default = get_task(spec).base_lr
        for scale in SCALES:
            res = metalr.train(spec, f"metalr:checkpoint={args.checkpoint}", seed=args.seed,
                               base_lr=default * scale, eval_points=1)
            mult = [lr / (default * scale) for lr in res.lr]
            steps = range(1, len(res.lr) + 1)
            ax.plot(steps, res.lr, label=f"base LR x{scale:g}")
            ax.axhline(default * scale, ls=":", lw=0.8, color=ax.lines[-1].get_color())
            mean_rel = sum(res.lr) / len(res.lr) / default
            # a back-off halves the LR (0.55: a halving that meets a step of the knee's anneal); the
            # anneal's own last steps (2/n to 1/n to 0) are left out
            cuts = sum(b <= 0.55 * a for a, b in zip(res.lr[:-3], res.lr[1:-2]))
            print(f"| {spec} | {scale:g} | {max(mult):.3g} | {mult[-1]:.3g} | {mean_rel:.3g} | {cuts} | "
                  f"{res.final['test_metric']:.4g} |", flush=True)
        ax.set(title=spec, xlabel="step", ylabel="LR (dotted: the base LR)", yscale="log")
        ax.legend(fontsize=7)
    fig.suptitle(f"{args.checkpoint}: emitted LR at three base-LR scales (budget known)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
