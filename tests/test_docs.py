"""The README and docs as a newcomer uses them (issue 17): every Python block runs as written,
every command shown takes its options as written there, in the one documented spelling, and
CI runs the README's test command."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from metalr.cli import build_parser
from metalr.learned.train.config import build_parser as meta_train_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "pretrained" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

# Runs one page's Python blocks in order in one namespace, as a reader runs them; a block that
# imports a package that is not installed (an optional extra) is skipped.
RUNNER = """
import importlib.util, json, sys
page, blocks = sys.argv[1], json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
for line, code, modules in blocks:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        print(f"{page}:{line}: skipped, {', '.join(missing)} not installed")
        continue
    exec(compile(code, f"{page}:{line}", "exec"), namespace)
"""


def _blocks(path: Path, language: str) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1) == language]


def _imports(code: str) -> list[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return sorted(names)


@pytest.mark.parametrize("path", [p for p in DOCS if _blocks(p, "python")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_as_written(path, tmp_path):
    blocks = [(line, code, _imports(code)) for line, code in _blocks(path, "python")]
    page = str(path.relative_to(ROOT))
    proc = subprocess.run([sys.executable, "-c", RUNNER, page], input=json.dumps(blocks),
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _code(text: str):
    """(line, code) of each line of the code blocks (fenced or indented) and each inline code
    span of ``text``, continuation lines joined."""
    fenced = False
    for number, line in enumerate(text.replace("\\\n", " ").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            yield number, line.strip()
        else:
            yield from ((number, span) for span in re.findall(r"`([^`]+)`", line))


def _commands():
    """(page:line, argv) of the code in the docs that runs metalr or train_meta.py (not a
    column named "metalr (LR tuned)"); a synopsis with [optional] parts is no command."""
    for path in DOCS:
        for number, code in _code(path.read_text()):
            code = code.removeprefix("$ ")
            if re.match(r"(metalr [-a-z]|python train_meta\.py( |$))", code) and "[" not in code:
                yield f"{path.relative_to(ROOT)}:{number}", shlex.split(code, comments=True)


COMMANDS = list(_commands())


def test_the_docs_show_commands():
    assert len(COMMANDS) > 10 and any(argv[:2] == ["python", "train_meta.py"] for _, argv in COMMANDS)


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_each_command_in_the_docs_takes_its_options_as_written(where, argv):
    if argv[:2] == ["python", "train_meta.py"]:
        parser, args = meta_train_parser("train_meta.py"), argv[2:]
    elif argv[1:2] == ["meta-train"]:
        parser, args = meta_train_parser("metalr meta-train"), argv[2:]
    else:
        parser, args = build_parser(), argv[1:]
    try:
        parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: {shlex.join(argv)} is refused")


def test_the_docs_spell_options_with_hyphens():
    underscored = [f"{path.relative_to(ROOT)}: {option}" for path in DOCS
                   for option in re.findall(r"(?<![\w-])--[a-z0-9]+_[a-z0-9_]+", path.read_text())]
    assert not underscored


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = FENCE.search(readme, readme.index("Run the tests:")).group(2).strip()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
