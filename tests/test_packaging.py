"""What a user who installs metalr from a wheel (not a clone) gets, and what importing it costs."""

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


def test_wheel_installs_into_a_fresh_venv_and_loads_the_shipped_checkpoint_by_name(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("metalr-*.whl"))
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True,
                           text=True, check=True).stdout
    assert "metalr/learned/pretrained/metalr-mnist1d.safetensors" in names
    assert "train_meta.py" not in names
    env = tmp_path / "venv"
    # The venv sees this interpreter's packages (torch, no network needed) but not the checkout.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                    "--target", site, str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import metalr, torch; opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1); "
            "s = metalr.MetaLRScheduler.from_pretrained('metalr-mnist1d', opt, total_steps=10); "
            "print(metalr.__file__); print(metalr.list_pretrained())")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    location, names = out.stdout.strip().splitlines()
    assert location.startswith(site)
    assert "metalr-mnist1d" in names
