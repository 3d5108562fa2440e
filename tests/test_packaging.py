"""What a user who installs metalr from a wheel (not a clone) gets, and what importing it costs."""

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_and_loading_a_checkpoint_do_not_import_higher_or_the_policies():
    code = ("import sys, torch, metalr; "
            "s = metalr.MetaLRScheduler.from_pretrained('metalr-mnist1d', "
            "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)); "
            "print(sorted(m for m in ('higher', 'metalr.policies', 'metalr.learned.train', "
            "'metalr.tasks', 'metalr.bench') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wheel_builds_without_warnings_installs_into_a_fresh_venv_and_runs(tmp_path):
    dist = tmp_path / "dist"
    # Without PYTHONDONTWRITEBYTECODE, whose "byte-compiling is disabled" note is the caller's.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                            str(dist), str(ROOT)], capture_output=True, text=True, timeout=300, env=env)
    assert build.returncode == 0, build.stderr
    log = (build.stdout + build.stderr).replace(str(tmp_path), "TMP")  # the test's name has "warn"
    assert not [line for line in log.splitlines() if re.search("warn|deprecat", line, re.I)], log
    wheel = next(dist.glob("metalr-*.whl"))
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True,
                           text=True, check=True).stdout
    assert "metalr/learned/pretrained/metalr-mnist1d.safetensors" in names
    assert "train_meta.py" not in names
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The new venv sees the packages of the interpreter running the tests (torch, no network
    # needed), whether that is the system's or a venv's, but not the checkout: a venv's
    # system_site_packages would give it the base interpreter's, which a venv may not have.
    running = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (Path(site) / "running-interpreter.pth").write_text("\n".join(running) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "--quiet", str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import metalr, torch; opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1); "
            "s = metalr.MetaLRScheduler.from_pretrained('metalr-mnist1d', opt, total_steps=10); "
            "print(metalr.__file__); print(metalr.list_pretrained())")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    location, names = out.stdout.strip().splitlines()
    assert location.startswith(site)
    assert "metalr-mnist1d" in names
    # the installed entry point: its version is the wheel's, its options take hyphens
    version = wheel.name.split("-")[1]
    out = subprocess.run([str(env / "bin" / "metalr"), "--version"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"metalr {version}", out.stderr
    out = subprocess.run([str(env / "bin" / "metalr"), "meta-train", "--meta-steps=0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "--meta-steps must be a positive integer" in out.stderr
