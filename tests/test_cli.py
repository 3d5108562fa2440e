"""The command line a PyTorch user meets first (issue 17): one flag style, ``--version``, help
that states each default once and truly, progress that can be turned off, divergences reported
above the bar, and ``torchrun``. Run as a user's shell runs it: ``python -m metalr.cli`` in a
subprocess (the installed ``metalr`` entry point is exercised by test_packaging.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

import metalr
from metalr.learned.train.config import ESTIMATORS, MetaTrainConfig, build_parser, flag
from metalr.learned.train.outer_loop import STEP_COLUMNS, plot_es

ROOT = Path(__file__).resolve().parent.parent
# This checkout, whichever metalr is installed; no TQDM_DISABLE from the caller's shell.
ENV = {**{k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}, "PYTHONPATH": str(ROOT)}
# Options small enough for a run of a few seconds under every estimator (each ignores the
# others' options).
TINY = ["--meta-steps=1", "--pairs=1", "--episodes=2", "--budget-min=20", "--budget-max=20", "--eval-every=0",
        "--tasks=cancer-mlp", "--epochs=1", "--runs-per-task=1", "--unroll=2",
        "--meta-interval=5", "--val-batch=32", "--workers=1"]


def metalr_cli(*args: str, env: dict | None = None, cwd: Path = ROOT, launcher: tuple = ()):
    return subprocess.run([sys.executable, *launcher, "-m", "metalr.cli", *args], cwd=cwd,
                          env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=300)


def _checkpoint(out: Path) -> dict:
    return json.loads(next(out.glob("*.json")).read_text())


def _underscored(arg: str) -> str:
    option, eq, value = arg.partition("=")
    return "--" + option[2:].replace("-", "_") + eq + value


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_options_are_hyphenated_and_the_underscore_spelling_still_works(tmp_path, estimator):
    runs = {}
    for style, spell in (("hyphen", str), ("underscore", _underscored)):
        args = [spell(a) for a in (f"--estimator={estimator}", *TINY, "--meta-lr=0.02",
                                   "--no-progress")]
        proc = metalr_cli("meta-train", *args, f"--out={tmp_path / style}")
        assert proc.returncode == 0, proc.stderr
        runs[style] = _checkpoint(tmp_path / style)
    assert runs["hyphen"]["sha256"] == runs["underscore"]["sha256"]
    assert runs["hyphen"]["meta_training"]["config"]["meta_lr"] == 0.02
    proc = metalr_cli("meta-train", "--meta-stepz=1")
    assert proc.returncode == 2 and "unrecognized arguments: --meta-stepz=1" in proc.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "pretrained").glob("*.json")), ids=lambda p: p.stem)
def test_the_commands_shipped_checkpoints_record_still_parse_to_their_options(path):
    meta = json.loads(path.read_text())["meta_training"]
    argv = shlex.split(meta["command"])[2:]  # after "python train_meta.py"
    options = vars(build_parser("train_meta.py").parse_args(argv))
    for arg in argv:
        key = arg.partition("=")[0][2:].replace("-", "_")
        if key == "no_progress":  # how the run displayed itself, not part of its configuration
            assert options[key] is True and key not in meta["config"]
            continue
        assert options[key] == meta["config"][key], arg


def test_some_shipped_checkpoints_record_the_old_spelling_so_the_aliases_are_exercised():
    commands = [json.loads(p.read_text())["meta_training"]["command"]
                for p in (ROOT / "pretrained").glob("*.json")]
    assert any("--meta_steps=" in c for c in commands) and any("--meta-steps=" in c for c in commands)


def test_version():
    proc = metalr_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"metalr {metalr.__version__}"
    assert "--version" in metalr_cli("--help").stdout


def _help_entries(text: str) -> dict[str, str]:
    """Option -> its help, whitespace collapsed, from argparse's ``options:`` section."""
    entries = re.split(r"\n  (?=-)", text.split("options:")[1])
    return {e.split()[0].rstrip(","): " ".join(e.split()) for e in entries if e.strip()}


def _defaults_by_estimator(text: str) -> dict:
    """``(default: A for x and y; B for z)`` in a help entry -> {x: A, y: A, z: B}."""
    stated = {}
    for part in text.split("(default: ")[1].rstrip(")").split("; "):
        value, _, names = part.rpartition(" for ")
        for name in names.replace(" and ", ", ").split(", "):
            stated[name] = value
    return stated


def test_help_uses_hyphens_and_states_each_default_once_and_truly():
    entries = _help_entries(metalr_cli("meta-train", "--help", env={"COLUMNS": "1000"}).stdout)
    fields = {f.name: f for f in dataclasses.fields(MetaTrainConfig)}
    assert {flag(name) for name in fields} <= set(entries)
    assert not [option for option in entries if "_" in option]  # the aliases stay unlisted
    for option, text in entries.items():
        assert text.count("(default") <= 1 and "(default: )" not in text, text
    for name, f in fields.items():
        if f.type != "bool" and "(default" not in f.metadata["help"]:
            assert f"(default: {f.default})" in entries[flag(name)], entries[flag(name)]
    # the defaults that depend on the estimator: each one's, as the help states it
    stated = {option: _defaults_by_estimator(entries[option]) for option in ("--tasks", "--meta-lr")}
    for estimator in ESTIMATORS:
        cfg = MetaTrainConfig(estimator=estimator)
        assert stated["--tasks"][estimator] == cfg.tasks
        assert float(stated["--meta-lr"][estimator]) == cfg.meta_lr
    for command in ("bench", "plot-policy", "report"):
        options = _help_entries(metalr_cli(command, "--help").stdout)
        assert options and not [option for option in options if "_" in option]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("off", ["--no-progress", "TQDM_DISABLE=1", None])
def test_the_progress_bar_can_be_turned_off(tmp_path, estimator, off):
    args = [f"--estimator={estimator}", *TINY, f"--out={tmp_path}"]
    proc = metalr_cli("meta-train", *args, *([off] if off == "--no-progress" else []),
                      env={"TQDM_DISABLE": "1"} if off == "TQDM_DISABLE=1" else None)
    assert proc.returncode == 0, proc.stderr
    assert ("meta-training" in proc.stderr) == (off is None), proc.stderr


@pytest.mark.parametrize("estimator,pattern", [("es", r"[1-4] of 4 runs diverged \(.*\)"),
                                               ("unroll", r"[1-2] of 2 episodes blew up \(.*\)")])
def test_diverged_episodes_are_one_line_a_step_not_a_warning_each(tmp_path, estimator, pattern):
    # LR scales of 30-100x make some episodes diverge; two processes, so workers' too
    proc = metalr_cli("meta-train", f"--estimator={estimator}", "--meta-steps=3", "--pairs=2",
                      "--episodes=2", "--budget-min=60", "--budget-max=60", "--lr-scale-min=30",
                      "--lr-scale-max=100", "--eval-every=0", "--workers=2", "--no-progress",
                      f"--out={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and all(re.fullmatch(r"meta-step [123]: " + pattern, line) for line in lines), proc.stderr
    assert len({line.split(":")[0] for line in lines}) == len(lines)  # one line a step


def test_the_plot_has_an_evaluation_panel_only_when_the_run_evaluated(tmp_path):
    rows = [{"meta_step": s, "fitness": 1 - s / 10} for s in range(1, 4)]
    widths = {}
    for evaluated in (False, True):
        csv_path = tmp_path / f"{evaluated}.csv"
        lines = [",".join(STEP_COLUMNS)]
        for r in rows:
            ev = {"eval_train": 0.9, "eval_heldout": 0.8} if evaluated else {}
            lines.append(",".join(str({**r, **ev}.get(c, "")) for c in STEP_COLUMNS))
        csv_path.write_text("\n".join(lines) + "\n")
        plot_es(csv_path, tmp_path / f"{evaluated}.png")
        widths[evaluated] = matplotlib.image.imread(tmp_path / f"{evaluated}.png").shape[1]
    assert widths[True] == 2 * widths[False]  # one panel of the same size, not an empty second


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_torchrun_with_two_processes_writes_the_checkpoint_of_workers_2(tmp_path, estimator):
    args = ["meta-train", f"--estimator={estimator}", *TINY, "--no-progress"]
    launched = metalr_cli(*args, f"--out={tmp_path / 'torchrun'}", cwd=tmp_path,
                          launcher=("-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node=2"))
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("wrote ") == 1  # rank 0 reports; rank 1 does not fail
    plain = metalr_cli(*args, "--workers=2", f"--out={tmp_path / 'workers'}")
    assert plain.returncode == 0, plain.stderr
    assert _checkpoint(tmp_path / "torchrun")["sha256"] == _checkpoint(tmp_path / "workers")["sha256"]
    assert sorted(p.name for p in (tmp_path / "torchrun").iterdir()) == \
        sorted(p.name for p in (tmp_path / "workers").iterdir())
