"""How consistent a finished ES run's per-step gradient estimates were, from its own logs.

Rebuilds every step's estimate ``g_t = mean_i(d_i eps_i) / (2 sigma)`` from the run's episodes
CSV (``F+`` and ``F-`` of each pair, ``d`` clipped as the run clipped it) and the noise seeds
(regenerated from the run's seed, as the outer loop draws them), then prints:

* the mean cosine between the estimates of two different steps (about 0 for pure noise; the
  network moves little between steps, so a real gradient would show as a positive cosine);
* ``|mean_t g_t| / mean_t |g_t|`` against ``1 / sqrt(T)``, its value for pure noise, and the
  per-step signal-to-noise ratio this implies: ``|signal| / |noise|`` per step, with the
  signal estimated as ``sqrt(|mean g|^2 - mean |g|^2 / T)``;
* per parameter, the t-statistic of the mean estimate (|t| > 2 on about 1 in 20 by chance).

    python benchmarks/es_step_consistency.py pretrained/metalr-es2.json
"""

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from metalr.learned.train import full_es


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_json", help="an ES checkpoint's JSON; its .episodes.csv beside it")
    args = parser.parse_args()
    path = Path(args.checkpoint_json)
    meta = json.loads(path.read_text())["meta_training"]
    if meta.get("estimator") != "es":
        parser.error(f"{path} was not meta-trained by ES (estimator {meta.get('estimator')!r})")
    cfg, dim = meta["config"], meta["perturbed_parameters"]
    episodes = path.with_name(path.name.removesuffix(".json") + ".episodes.csv")
    pairs = defaultdict(list)
    with episodes.open() as f:
        for row in csv.DictReader(f):
            pairs[int(row["meta_step"])].append((int(row["pair"]), float(row["f_plus"]) - float(row["f_minus"])))
    if not all(np.isfinite(d) for rows in pairs.values() for _, d in rows):
        parser.error(f"{episodes} holds non-finite fitness values: the run predates the ratio "
                     "fitness (metalr-es ranked log losses), so its steps cannot be rebuilt from "
                     "raw differences")
    grads = np.stack([
        full_es.gradient(dim, [full_es.derive_seed(cfg["seed"], step, i, 1) for i, _ in rows],
                         full_es.pair_differences([[d, 0.0] for _, d in rows], cfg.get("diff_clip", 0.0)),
                         cfg["sigma"]).numpy()
        for step, rows in sorted(pairs.items())])
    steps = len(grads)
    unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    cos = unit @ unit.T
    off = cos[~np.eye(steps, dtype=bool)]
    mean_norm = np.linalg.norm(grads, axis=1).mean()
    ratio = np.linalg.norm(grads.mean(0)) / mean_norm
    signal = np.sqrt(max(np.linalg.norm(grads.mean(0)) ** 2 - mean_norm ** 2 / steps, 0.0))
    t = grads.mean(0) / (grads.std(0, ddof=1) / np.sqrt(steps))
    print(f"{path.name}: {steps} steps, {len(next(iter(pairs.values())))} pairs a step, "
          f"{dim} parameters, sigma {cfg['sigma']}")
    print(f"mean cosine between two steps' estimates  {off.mean():+.3f} (sd {off.std():.3f})")
    print(f"|mean g| / mean |g|                        {ratio:.3f} (pure noise: {1 / np.sqrt(steps):.3f})")
    print(f"per-step signal / noise                    {signal / mean_norm:.3f}")
    print(f"signal / noise summed over the run         {signal * steps / (mean_norm * np.sqrt(steps)):.2f}")
    print(f"parameters with |t| > 2                    {int((np.abs(t) > 2).sum())} of {dim} "
          f"(chance: {0.0455 * dim:.1f})")


if __name__ == "__main__":
    main()
