"""The full-horizon outer loop: ES, exact unrolled gradients or both merged, over sampled
episodes, on N processes, resumable.

With ``--estimator=unroll`` each outer step draws ``episodes`` episodes, their base-LR scales
stratified over the range (one from each of ``episodes`` equal slices of log scale), and each
process computes the exact hypergradient of the episodes it claims
(:mod:`~metalr.learned.train.unroll`), bounds each one's norm by ``episode_clip`` and puts it in
its row of a table; one ``all_reduce`` of the table, summed in episode order, gives every process
the same mean gradient and the same Adam step. ``--estimator=hybrid`` puts both the raw exact
gradient and an ES estimate of each episode in its row and merges the two means by their
variances across the episodes (:mod:`~metalr.learned.train.hybrid`). What follows describes ES, whose machinery the
unroll shares.

Each outer step ``s`` draws ``pairs`` episodes from the :class:`TaskDistribution` and one noise
direction per pair, all from ``(seed, s, pair)`` alone. The N processes share out the pairs (two
whole runs each, :mod:`~metalr.learned.train.full_es`) as they go, longest budget first
(:func:`_claimed`), so that no process waits on another that drew the long episodes; one
``all_reduce`` of the ``(F+, F-)`` table gives every process the same table, and every process
takes the same Adam step, so the network is identical on every process and does not depend
on ``N``. With ``--pairs-per-episode P`` pairs ``i`` with the same ``i // P`` share an episode,
and ``--vectorize`` trains each episode's ``2P`` members as one vectorised model
(:mod:`~metalr.learned.train.population`), processes splitting episodes instead of pairs.
``--workers N`` starts the processes on this machine (``torch.distributed``, gloo);
under ``torchrun`` the launcher's processes are used, across machines too.

Every ``eval_every`` steps the unperturbed network runs a fixed set of episodes from the
training distribution and from held-out tasks (never trained on), so the logged curves are
comparable from step to step. Every ``save_every`` steps process 0 writes the resumable state
(network, Adam moments, step) atomically to ``NAME.state.safetensors``; a run restarted on the
same ``--out`` continues from it and ends with the network an uninterrupted run ends with.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from metalr.errors import MetalrError
from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.learned.train import full_es, hybrid, population, unroll
from metalr.learned.train.config import MetaTrainConfig
from metalr.learned.train.distribution import Episode, TaskDistribution
from metalr.processes import init_worker
from metalr.runlog import RunLog

# Held-out evaluation: families meta-training never sees (logistic regression on digits at 1x
# and 3x its default LR for 300 steps, the GRU at its own Adam LR for 150), so the curve shows
# transfer, not fit.
HELD_OUT = (
    Episode("digits-logreg", "sgd", 0.9, 1.0, 0.5, 300, 64, 0.0, True, 1),
    Episode("digits-logreg", "sgd", 0.9, 3.0, 1.5, 300, 64, 0.0, True, 2),
    Episode("mnist1d-gru", "adam", 0.0, 1.0, 0.01, 150, 100, 0.0, True, 3),
)
TRAIN_EVAL_EPISODES = 6
# Options that do not change the network a run ends with: a run may resume under other values.
RESUMABLE_CHANGES = {"meta_steps", "max_minutes", "workers", "device", "resume", "out", "overwrite", "wandb",
                     "eval_every", "save_every", "vectorize"}
STEP_COLUMNS = ["meta_step", "fitness", "mean_abs_diff", "grad_norm", "eval_train", "eval_heldout",
                "wall_time"]
EPISODE_COLUMNS = ["meta_step", "pair", "family", "optimizer", "momentum", "lr_scale", "budget",
                   "batch", "noise", "show_budget", "f_plus", "f_minus"]
# The unroll's logs: a step's blow-ups; per episode its meta-loss, raw gradient norm, blow-up step.
UNROLL_STEP_COLUMNS = ["meta_step", "fitness", "blowups", *STEP_COLUMNS[3:]]
UNROLL_EPISODE_COLUMNS = [*EPISODE_COLUMNS[:10], "meta_loss", "grad_norm", "blown_up_at"]
# The hybrid's: the weight of the unrolled mean in a step; per episode its ES pairs' mean fitness.
HYBRID_STEP_COLUMNS = [*UNROLL_STEP_COLUMNS[:3], "rp_weight", *UNROLL_STEP_COLUMNS[3:]]
HYBRID_EPISODE_COLUMNS = [*UNROLL_EPISODE_COLUMNS, "es_fitness"]
# Estimators that differentiate every parameter by reverse mode (and check memory first).
UNROLLED = ("unroll", "hybrid")


def meta_train_es(cfg: MetaTrainConfig, out_dir: Path, command: str = "", progress: bool = True) -> dict:
    """Meta-train by full-horizon ES, unrolled gradients or both (``cfg.estimator``); write the
    checkpoint, metrics and plot into ``out_dir``."""
    cfg.validate()
    out_dir = Path(out_dir)
    TaskDistribution(cfg.task_specs(), cfg.budget_min, cfg.budget_max, cfg.lr_scale_min,
                     cfg.lr_scale_max, cfg.label_noise, cfg.hide_budget)  # refuse bad specs here
    for family in cfg.task_specs():
        if cfg.estimator in UNROLLED:
            unroll.check_family(family, cfg.vectorize, cfg.budget_max, cfg.segment,
                                unroll.available_memory() / cfg.workers)
        if cfg.estimator != "unroll" and cfg.vectorize:
            population.check_family(family)
    _check_out_dir(cfg, out_dir)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun
        dist.init_process_group("gloo")
        try:
            return _run_in_group(cfg, out_dir, command, progress)
        finally:
            dist.destroy_process_group()
    if cfg.workers == 1:
        return _run(cfg, out_dir, command, progress)
    port = _free_port()
    ctx = mp.get_context("spawn")
    children = [ctx.Process(target=_child, args=(rank, cfg, out_dir, port, os.getpid()), daemon=True)
                for rank in range(1, cfg.workers)]
    for child in children:
        child.start()
    # The lead is one of the N processes: one thread like the others. With torch's default
    # (a thread per core) next to N - 1 single-threaded children the cores are oversubscribed:
    # measured on 2 cores, 2 workers ran 2.05 episodes/s with a 2-thread lead, 3.68 with 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _init(0, cfg.workers, port)
        return _run_in_group(cfg, out_dir, command, progress)
    finally:
        torch.set_num_threads(threads)
        if dist.is_initialized():
            dist.destroy_process_group()
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()


def _child(rank: int, cfg: MetaTrainConfig, out_dir: Path, port: int, lead_pid: int) -> None:
    init_worker(lead_pid)  # one thread, and die with the lead process however it dies
    _init(rank, cfg.workers, port)
    try:
        _run_in_group(cfg, out_dir, "", progress=False)
    finally:
        dist.destroy_process_group()


def _run_in_group(cfg: MetaTrainConfig, out_dir: Path, command: str, progress: bool) -> dict:
    """:func:`_run` in one process of a group, then wait for the others (rank 0's writes): a
    process that tears the gloo group down while a peer still holds it was seen to abort at exit
    ("terminate called without an active exception", SIGABRT; about 1 run in 6 under load)."""
    result = _run(cfg, out_dir, command, progress)
    dist.barrier()
    return result


def _init(rank: int, world: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _identity(cfg: MetaTrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES}


def _check_out_dir(cfg: MetaTrainConfig, out_dir: Path) -> None:
    """Refuse, before any work, an --out that cannot be written or holds something else."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MetalrError(f"cannot create output directory {out_dir}: {err.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise MetalrError(f"output directory {out_dir} is not writable")
    if (out_dir / f"{cfg.name}.json").exists() and not cfg.overwrite:
        raise MetalrError(f"{out_dir / cfg.name}.json already exists; pass --overwrite to replace "
                          "it or choose another --out / --name")
    state = _state_path(out_dir, cfg)
    if state.exists():
        # An option added after the state was written ran at its default there.
        saved = {f.name: f.default for f in dataclasses.fields(cfg) if f.name not in RESUMABLE_CHANGES}
        saved.update(_read_state(state)[1]["identity"])
        if saved != _identity(cfg):
            diff = sorted(k for k in saved.keys() | _identity(cfg).keys() if saved.get(k) != _identity(cfg).get(k))
            raise MetalrError(f"{state} holds the state of another run (different {', '.join(diff)}); "
                              "resume it with the same options or choose another --out")
    elif cfg.resume:
        raise MetalrError(f"--resume: no state to resume in {out_dir} ({state.name} is missing)")


def _state_path(out_dir: Path, cfg: MetaTrainConfig) -> Path:
    return out_dir / f"{cfg.name}.state.safetensors"


def _read_state(path: Path) -> tuple[dict, dict]:
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as fh:
            meta = json.loads(fh.metadata()["state"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise MetalrError(f"{path} is not a readable meta-training state: {err}") from None
    return tensors, meta


def _write_state(path: Path, theta, adam: torch.optim.Adam, step: int, cfg: MetaTrainConfig,
                 evals: list, elapsed: float) -> None:
    st = adam.state[adam.param_groups[0]["params"][0]]
    tensors = {"theta": theta.detach().clone(), "exp_avg": st["exp_avg"].clone(),
               "exp_avg_sq": st["exp_avg_sq"].clone()}
    meta = {"meta_step": step, "adam_step": float(st["step"]), "identity": _identity(cfg),
            "evals": evals, "elapsed_s": elapsed}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    os.replace(tmp, path)  # atomic: a kill leaves the previous state or this one


def _run(cfg: MetaTrainConfig, out_dir: Path, command: str, progress: bool) -> dict:
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    lead = rank == 0
    distribution = TaskDistribution(cfg.task_specs(), cfg.budget_min, cfg.budget_max,
                                    cfg.lr_scale_min, cfg.lr_scale_max, cfg.label_noise,
                                    cfg.hide_budget)
    torch.manual_seed(cfg.seed)
    config = CONFIGS[cfg.net]
    init = ScheduleNet(config)
    base = full_es.flat(init)
    # The unroll (and the hybrid's ES with it) moves every parameter; ES those --perturb names.
    index = full_es.perturbed_indices(init, "all" if cfg.estimator in UNROLLED else cfg.perturb)

    def full(sub: torch.Tensor) -> torch.Tensor:
        out = base.clone()
        out[index] = sub
        return out

    # theta: the parameters trained; the others stay at their seeded initialisation.
    theta = base[index].clone().requires_grad_(True)
    adam = torch.optim.Adam([theta], lr=cfg.meta_lr, weight_decay=cfg.meta_weight_decay)
    # elapsed: seconds of meta-training before this process started (a resumed run's earlier legs)
    start_step, evals, elapsed = 0, [], 0.0
    # Every process reads the state (checked before the others started); only process 0 writes
    # it, after the first step's all_reduce, so no process reads a newer one.
    state_path = _state_path(out_dir, cfg)
    if state_path.exists():
        tensors, meta = _read_state(state_path)
        with torch.no_grad():
            theta.copy_(tensors["theta"])
        adam.state[theta] = {"step": torch.tensor(meta["adam_step"]), "exp_avg": tensors["exp_avg"],
                             "exp_avg_sq": tensors["exp_avg_sq"]}
        start_step, evals, elapsed = meta["meta_step"], meta["evals"], meta.get("elapsed_s", 0.0)
    train_eval = [distribution.sample(full_es.derive_seed(cfg.seed, 1 << 30, j))
                  for j in range(TRAIN_EVAL_EPISODES)]

    if lead:
        steps_log, episodes_log = _open_logs(cfg, out_dir, start_step)
    began = time.perf_counter()
    bar = tqdm(total=cfg.meta_steps, initial=start_step, desc=f"meta-training ({cfg.estimator})", unit="step",
               disable=not (lead and progress), mininterval=10)
    if start_step == 0 and cfg.eval_every:
        evals.append(_evaluate(0, full(theta), config, train_eval, cfg))
        if lead:
            steps_log.log({"meta_step": 0, "eval_train": evals[-1][1], "eval_heldout": evals[-1][2],
                           "wall_time": 0.0})
    estimate = {"unroll": _unroll_step, "hybrid": _hybrid_step, "es": _es_step}[cfg.estimator]
    last = cfg.meta_steps
    for step in range(start_step + 1, cfg.meta_steps + 1):
        grad, row, episode_rows, note = estimate(step, theta.detach(), full, config, distribution, cfg)
        if lead and note:  # above the progress bar, one line a step
            tqdm.write(f"meta-step {step}: {note}", file=sys.stderr)
        norm = float(grad.norm())
        if norm > cfg.clip:
            grad *= cfg.clip / norm
        adam.zero_grad()
        theta.grad = grad.to(theta.dtype)
        adam.step()
        row.update(meta_step=step, grad_norm=norm)
        if _out_of_time(cfg, began):
            last = step
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == last):
            evals.append(_evaluate(step, full(theta), config, train_eval, cfg))
            row.update(eval_train=evals[-1][1], eval_heldout=evals[-1][2])
        if lead:
            row["wall_time"] = round(elapsed + time.perf_counter() - began, 1)
            steps_log.log(row)
            for episode_row in episode_rows:
                episodes_log.log({"meta_step": step, **episode_row})
            if step % cfg.save_every == 0 or step == last:
                _write_state(state_path, theta, adam, step, cfg, evals, elapsed + time.perf_counter() - began)
            bar.set_postfix(fitness=f"{row['fitness']:.3f}", refresh=False)
        bar.update(1)
        if step == last:
            if last < cfg.meta_steps and lead:
                tqdm.write(f"meta-step {step}: --max-minutes={cfg.max_minutes:g} reached; the checkpoint "
                           f"is this step's (the same command with --overwrite and a larger limit goes on from it)", file=sys.stderr)
            break
    bar.close()
    if not lead:
        return {}
    steps_log.close()
    episodes_log.close()
    wall = elapsed + time.perf_counter() - began
    net = full_es.network_at(config, full(theta.detach()))
    summary = {
        "command": command, "estimator": cfg.estimator, "config": dataclasses.asdict(cfg),
        "tasks": distribution.families, "held_out": sorted({e.family for e in HELD_OUT}),
        "perturbed_parameters": int(index.numel()),
        "meta_steps": last,
        "episodes": (cfg.episodes if cfg.estimator in UNROLLED else 2 * cfg.pairs) * last,
        "workers": world, "wall_time_s": round(wall, 1),
        "evaluations": [{"meta_step": s, "train_distribution": a, "held_out": b} for s, a, b in evals],
    }
    json_path = checkpoint.save(net, out_dir / cfg.name, meta_training=summary)
    png = out_dir / f"{cfg.name}.png"
    plot_es(out_dir / f"{cfg.name}.metrics.csv", png)
    lines = [f"fitness (mean final / initial val loss) of the unperturbed network at step {s}: "
             f"training distribution {a:.4f}, held-out {b:.4f}" for s, a, b in evals[:1] + evals[-1:]]
    return {"checkpoint": str(json_path), "metrics": str(out_dir / f"{cfg.name}.metrics.csv"),
            "plot": str(png), "lines": lines, **summary}


def _es_step(step: int, theta: torch.Tensor, full, config, distribution: TaskDistribution,
             cfg: MetaTrainConfig) -> tuple[torch.Tensor, dict, list, str]:
    """One ES step's gradient estimate, its log row, its pairs' rows and a note on its diverged
    runs (see the module docstring)."""
    dim = theta.numel()
    # Pair i runs episode i // per; with per = 1 (the default) each pair has its own.
    per = cfg.pairs_per_episode
    shared = [distribution.sample(full_es.derive_seed(cfg.seed, step, e, 0))
              for e in range(cfg.pairs // per)]
    episodes = [shared[i // per] for i in range(cfg.pairs)]
    seeds = [full_es.derive_seed(cfg.seed, step, i, 1) for i in range(cfg.pairs)]
    table = torch.zeros(cfg.pairs, 2, dtype=torch.float64)
    if cfg.vectorize:  # each process runs whole episodes: their 2 * per members at once
        for e in _claimed([ep.budget for ep in shared], f"step-{step}"):
            thetas = [full(theta + sign * cfg.sigma * full_es.noise(dim, seeds[i]))
                      for i in range(e * per, (e + 1) * per) for sign in (1.0, -1.0)]
            reference = full_es.reference_loss(shared[e], cfg.device)
            fitness = population.population_fitness(config, thetas, shared[e], reference, cfg.device,
                                                     cfg.fitness_evals)
            table[e * per:(e + 1) * per] = torch.tensor(fitness, dtype=torch.float64).view(per, 2)
    else:
        for i in _claimed([ep.budget for ep in episodes], f"step-{step}"):
            eps = full_es.noise(dim, seeds[i])
            reference = full_es.reference_loss(episodes[i], cfg.device)
            for j, sign in enumerate((1.0, -1.0)):
                net = full_es.network_at(config, full(theta + sign * cfg.sigma * eps))
                result = full_es.run_episode(net, episodes[i], cfg.device, cfg.fitness_evals)
                table[i, j] = full_es.fitness(result, reference, cfg.fitness_evals)
    table = _sum(table)
    capped = int((table == full_es.CAP).sum())
    note = (f"{capped} of {table.numel()} runs diverged (fitness capped at {full_es.CAP:g}: a NaN/inf "
            f"loss, or a final validation loss {full_es.CAP:g}x the initial one or more)") if capped else ""
    diffs = full_es.pair_differences(table.tolist(), cfg.diff_clip)
    row = {"fitness": float(table.mean()), "mean_abs_diff": sum(map(abs, diffs)) / len(diffs)}
    pairs = [{"pair": i, **ep.to_dict(), "f_plus": fp, "f_minus": fm}
             for i, (ep, (fp, fm)) in enumerate(zip(episodes, table.tolist()))]
    return full_es.gradient(dim, seeds, diffs, cfg.sigma), row, pairs, note


def _unroll_step(step: int, theta: torch.Tensor, full, config, distribution: TaskDistribution,
                 cfg: MetaTrainConfig) -> tuple[torch.Tensor, dict, list, str]:
    """One step's mean exact gradient over ``cfg.episodes`` stratified episodes, each weighted
    by :func:`unroll.weighted`."""
    n, dim = cfg.episodes, theta.numel()
    episodes = _stratified(step, distribution, cfg)
    net = full_es.network_at(config, full(theta))
    # Per episode: the weighted gradient, then meta-loss, raw norm and blow-up step (0: none).
    table = torch.zeros(n, dim + 3, dtype=torch.float64)
    for e in _claimed([ep.budget for ep in episodes], f"step-{step}"):
        result = unroll.episode_gradient(net, episodes[e], cfg.device, cfg.segment, cfg.vectorize)
        table[e, :dim] = unroll.weighted(result, cfg.episode_clip, cfg.blowup_weight)
        table[e, dim:] = torch.tensor([result.meta_loss, result.norm, result.blown_up_at or 0])
    table = _sum(table)
    grad = table[:, :dim].sum(0) / n  # summed in episode order: the same whatever the workers
    losses, norms, blown = table[:, dim].tolist(), table[:, dim + 1].tolist(), table[:, dim + 2].tolist()
    row = {"fitness": _mean(losses), "blowups": sum(b > 0 for b in blown)}
    rows = [{"pair": e, **ep.to_dict(), "meta_loss": f, "grad_norm": g, "blown_up_at": int(b) or ""}
            for e, (ep, f, g, b) in enumerate(zip(episodes, losses, norms, blown))]
    note = _blowup_note(row["blowups"], n)
    return grad.float(), row, rows, note


def _hybrid_step(step: int, theta: torch.Tensor, full, config, distribution: TaskDistribution,
                 cfg: MetaTrainConfig) -> tuple[torch.Tensor, dict, list, str]:
    """One step of :mod:`~metalr.learned.train.hybrid`: on each of ``cfg.episodes`` stratified
    episodes the raw exact gradient and ``cfg.pairs_per_episode`` ES pairs, merged by variance."""
    n, dim = cfg.episodes, theta.numel()
    episodes = _stratified(step, distribution, cfg)
    vector = full(theta)
    net = full_es.network_at(config, vector)
    # Per episode: the unrolled and the ES sample, then meta-loss, raw norm, blow-up step, ES fitness.
    table = torch.zeros(n, 2 * dim + 4, dtype=torch.float64)
    for e in _claimed([ep.budget for ep in episodes], f"step-{step}"):
        result = unroll.episode_gradient(net, episodes[e], cfg.device, cfg.segment, cfg.vectorize)
        seeds = [full_es.derive_seed(cfg.seed, step, e, 1, p) for p in range(cfg.pairs_per_episode)]
        es, pairs = hybrid.es_sample(config, vector, episodes[e], seeds, cfg.sigma, cfg.diff_clip,
                                     cfg.device, cfg.vectorize)
        table[e, :dim] = hybrid.unrolled_sample(result, cfg.episode_clip, cfg.blowup_weight)
        table[e, dim:2 * dim] = es
        table[e, 2 * dim:] = torch.tensor([result.meta_loss, result.norm, result.blown_up_at or 0,
                                           _mean([f for pair in pairs for f in pair])])
    table = _sum(table)
    grad, weight = hybrid.mix(table[:, :dim], table[:, dim:2 * dim])
    losses, norms, blown, es_fit = (table[:, 2 * dim + k].tolist() for k in range(4))
    row = {"fitness": _mean(losses), "blowups": sum(b > 0 for b in blown), "rp_weight": weight}
    rows = [{"pair": e, **ep.to_dict(), "meta_loss": f, "grad_norm": g, "blown_up_at": int(b) or "",
             "es_fitness": s}
            for e, (ep, f, g, b, s) in enumerate(zip(episodes, losses, norms, blown, es_fit))]
    note = _blowup_note(row["blowups"], n)
    return grad.float(), row, rows, note


def _stratified(step: int, distribution: TaskDistribution, cfg: MetaTrainConfig) -> list[Episode]:
    """The ``cfg.episodes`` episodes of an unrolled step, base-LR scales stratified over the range."""
    n = cfg.episodes
    return [distribution.sample(full_es.derive_seed(cfg.seed, step, e, 0), stratum=(e, n)) for e in range(n)]


def _blowup_note(blowups: int, n: int) -> str:
    """The one line a step with blown-up episodes gets above the progress bar ('' without)."""
    return (f"{blowups} of {n} episodes blew up (diverged, or rose back towards chance: stopped "
            "there, the LR pushed down)") if blowups else ""


def _out_of_time(cfg: MetaTrainConfig, began: float) -> bool:
    """Whether ``--max-minutes`` has passed since this process began; process 0's clock decides
    for all, so every process stops after the same step."""
    if not cfg.max_minutes:
        return False
    flag = torch.tensor([float(time.perf_counter() - began >= 60 * cfg.max_minutes)])
    if dist.is_initialized():
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def _claimed(budgets: list[int], key: str):
    """The indices of the items (episodes or pairs) this process runs, as it gets to them.

    Alone: all of them. Under torch.distributed each process takes the next unclaimed item from
    a counter in the process group's store (an atomic ``add``), items in descending order of
    budget, so a process that drew short episodes takes more instead of idling at the
    all-reduce (with a fixed split, item i to process i mod N, 2 workers ran 1.32-1.47x the
    episodes per second of one on two cores; 1.50x with claiming, within the noise).
    Which process runs an item does not change its result, so the network does not depend on N.
    """
    order = sorted(range(len(budgets)), key=lambda i: (-budgets[i], i))
    if not dist.is_initialized():
        yield from order
        return
    # The default store is what init_process_group rendezvoused on (TCP here, torchrun's store
    # under torchrun); torch exposes no public getter for it.
    store = dist.distributed_c10d._get_default_store()
    while (k := store.add(f"metalr-es/{key}", 1) - 1) < len(order):
        yield order[k]


def _sum(table: torch.Tensor) -> torch.Tensor:
    # Each pair's row is filled by exactly one process and zero elsewhere: the sum is exact.
    if dist.is_initialized():
        dist.all_reduce(table, op=dist.ReduceOp.SUM)
    return table


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _evaluate(step: int, vector, config, train_eval: list[Episode], cfg) -> list:
    """Mean fitness of the unperturbed network on the fixed training and held-out episodes."""
    episodes = [*train_eval, *HELD_OUT]
    table = torch.zeros(len(episodes), dtype=torch.float64)
    net = full_es.network_at(config, vector.detach())
    for i in _claimed([ep.budget for ep in episodes], f"eval-{step}"):
        result = full_es.run_episode(net, episodes[i], cfg.device)
        table[i] = full_es.fitness(result, full_es.reference_loss(episodes[i], cfg.device))
    values = _sum(table).tolist()
    return [step, _mean(values[:len(train_eval)]), _mean(values[len(train_eval):])]


def _open_logs(cfg: MetaTrainConfig, out_dir: Path, start_step: int) -> tuple[RunLog, RunLog]:
    """The step and episode CSVs; on resume, rows past the saved step are dropped first."""
    logs = []
    step_columns, episode_columns = {"unroll": (UNROLL_STEP_COLUMNS, UNROLL_EPISODE_COLUMNS),
                                     "hybrid": (HYBRID_STEP_COLUMNS, HYBRID_EPISODE_COLUMNS),
                                     "es": (STEP_COLUMNS, EPISODE_COLUMNS)}[cfg.estimator]
    for suffix, columns, use_wandb in (("metrics", step_columns, cfg.wandb),
                                       ("episodes", episode_columns, False)):
        path = out_dir / f"{cfg.name}.{suffix}.csv"
        kept = []
        if start_step and path.exists():
            with open(path, newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["meta_step"]) <= start_step]
        log = RunLog(path, columns, use_wandb=use_wandb, config=dataclasses.asdict(cfg), name=cfg.name)
        for r in kept:
            log.log(r, mirror=False)
        logs.append(log)
    return logs[0], logs[1]


def plot_es(metrics_csv: Path, png: Path) -> None:
    """Fitness per outer step (perturbed pairs) and, in a second panel when the run evaluated
    it (``--eval-every`` > 0), of the unperturbed network on fixed episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv) as fh:
        rows = list(csv.DictReader(fh))
    ev = [(int(r["meta_step"]), float(r["eval_train"]), float(r["eval_heldout"]))
          for r in rows if r["eval_train"]]
    fig, axes = plt.subplots(1, 2 if ev else 1, figsize=(12 if ev else 6, 4), squeeze=False)
    axes = axes[0]
    steps = [(int(r["meta_step"]), float(r["fitness"])) for r in rows if r["fitness"]]
    if steps:
        xs, ys = zip(*steps)
        k = max(1, len(ys) // 20)
        smooth = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1]) for i in range(len(ys))]
        axes[0].plot(xs, ys, alpha=0.3, label="each step (its own random episodes)")
        axes[0].plot(xs, smooth, label=f"moving mean of {k}")
        axes[0].legend(fontsize=8)
    axes[0].set(title="sampled episodes' mean fitness per outer step", xlabel="outer step",
                ylabel="mean final / initial validation loss")
    if ev:
        xs, a, b = zip(*ev)
        axes[1].plot(xs, a, marker="o", label="training distribution (fixed episodes)")
        axes[1].plot(xs, b, marker="s", label="held-out tasks (digits-logreg, mnist1d-gru)")
        axes[1].legend(fontsize=8)
        axes[1].set(title="unperturbed network on fixed episodes", xlabel="outer step",
                    ylabel="mean final / initial validation loss")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
