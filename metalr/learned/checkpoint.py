"""Schedule-network checkpoints: safetensors weights plus a JSON config. Never pickles.

A checkpoint ``NAME`` is two files side by side: ``NAME.safetensors`` (the weights) and
``NAME.json``::

    {"format": "metalr-schedule-net", "format_version": 1,
     "net": {kind, features, hidden, mlp, lo, hi},        # metalr.metanet.NetConfig
     "feature_schema": "transfer-v1", "features": [...],  # names, in input order
     "tensors": {name: shape}, "sha256": "<of the .safetensors file>",
     "metalr_version": "...", "meta_training": {command, config, tasks, ...}}

A name (no ``/``, no suffix) is looked up first among the shipped checkpoints (package data:
``metalr/learned/pretrained``, which is the repository's top-level ``pretrained/``), then in the
user's directory: ``$METALR_HOME``, by default ``$XDG_CACHE_HOME/metalr`` (``~/.cache/metalr``).
Anything else is a path.

Loading checks, in order, and refuses with a message that says which check failed: the path
names a checkpoint (not a pickle or ``torch.save`` file: those are never opened), both files
exist, the JSON parses, the format and version are known, the weights file's SHA-256 matches
(a truncated or corrupted file is caught here), the safetensors header parses, and every
tensor has the shape the config implies.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metalr.errors import MetalrError
from metalr.learned.features import SCHEMAS
from metalr.learned.network import NetConfig, ScheduleNet

FORMAT = "metalr-schedule-net"
FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
# What `from_pretrained` and the `metalr` policy load when no checkpoint is named.
DEFAULT_CHECKPOINT = "metalr-mnist1d"
# Files written by pickle (protocol 2+ starts with 0x80) or torch.save (a zip archive).
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(net: ScheduleNet, path: str | Path, meta_training: dict | None = None) -> Path:
    """Write ``path.safetensors`` and ``path.json``; returns the JSON path."""
    from metalr import __version__

    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".json", ".safetensors") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    weights = base.with_name(base.name + ".safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(tensors, str(weights))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": base.name,
        "net": net.config.to_dict(),
        "feature_schema": net.config.features,
        "features": list(SCHEMAS[net.config.features]),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "sha256": _sha256(weights),
        "metalr_version": __version__,
        "meta_training": meta_training or {},
    }
    json_path = base.with_name(base.name + ".json")
    json_path.write_text(json.dumps(config, indent=2) + "\n")
    return json_path


def user_dir() -> Path:
    """Where checkpoints found by name live besides the shipped ones (``$METALR_HOME``)."""
    if os.environ.get("METALR_HOME"):
        return Path(os.environ["METALR_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "metalr"


def _by_name(text: str) -> Path | None:
    if "/" in text or text.endswith((".json", ".safetensors")):
        return None
    for folder in (PRETRAINED_DIR, user_dir()):
        if (folder / f"{text}.json").is_file():
            return folder / text
    return None


def _resolve(name_or_path: str | Path) -> tuple[Path, Path]:
    text = str(name_or_path)
    base = _by_name(text)
    if base is None:
        p = Path(text).expanduser()
        if p.suffix in (".json", ".safetensors"):
            base = p.with_suffix("")
        else:
            if p.is_file():
                head = p.read_bytes()[:4]
                kind = "a pickle or torch.save file" if head.startswith(_PICKLE_MAGIC) else "not a checkpoint"
                raise MetalrError(
                    f"{p} is {kind}: metalr loads only NAME.safetensors + NAME.json and never "
                    "unpickles; convert the weights with safetensors.torch.save_file"
                )
            base = p
    json_path = base.with_name(base.name + ".json")
    weights = base.with_name(base.name + ".safetensors")
    if not json_path.exists() and not weights.exists():
        raise MetalrError(
            f"no checkpoint {text!r}: neither a shipped name (shipped: "
            f"{', '.join(list_pretrained()) or 'none'}), nor a name in {user_dir()} ($METALR_HOME), "
            "nor a path to NAME.json/NAME.safetensors"
        )
    for f in (json_path, weights):
        if not f.exists():
            raise MetalrError(f"checkpoint {text!r} is incomplete: {f} is missing")
    return json_path, weights


def load(name_or_path: str | Path) -> tuple[ScheduleNet, dict]:
    """Load a checkpoint by shipped name or path; returns (network in eval mode, JSON config)."""
    json_path, weights = _resolve(name_or_path)
    try:
        config = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetalrError(f"checkpoint config {json_path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MetalrError(f"{json_path} is not a metalr checkpoint config (format must be {FORMAT!r})")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise MetalrError(
            f"{json_path} has format_version {version!r}; this metalr reads version {FORMAT_VERSION}"
        )
    try:
        net_config = NetConfig(**config["net"])
    except (KeyError, TypeError, ValueError) as err:
        raise MetalrError(f"{json_path}: bad 'net' section: {err}") from None
    if config.get("feature_schema") != net_config.features or \
            list(config.get("features", [])) != list(SCHEMAS[net_config.features]):
        raise MetalrError(
            f"{json_path}: feature schema {config.get('feature_schema')!r} with features "
            f"{config.get('features')} does not match this metalr's {net_config.features!r} "
            f"{list(SCHEMAS[net_config.features])}"
        )
    actual = _sha256(weights)
    if actual != config.get("sha256"):
        raise MetalrError(
            f"{weights} is corrupted or truncated: its SHA-256 is {actual[:12]}..., the config "
            f"records {str(config.get('sha256'))[:12]}..."
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise MetalrError(f"{weights} is not a readable safetensors file: {err}") from None
    net = ScheduleNet(net_config)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        diff = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        detail = "; ".join(f"{k}: file {got.get(k)}, config implies {expected.get(k)}" for k in diff)
        raise MetalrError(f"{weights}: tensors do not match the config's architecture ({detail})")
    net.load_state_dict(tensors)
    return net.eval(), config


def list_pretrained(details: bool = False) -> list:
    """Names of the shipped checkpoints, then the user's (with a summary row each when ``details``)."""
    rows = []
    seen = set()
    paths = [*sorted(PRETRAINED_DIR.glob("*.json")), *sorted(user_dir().glob("*.json"))]
    for path in paths:
        if path.stem in seen:
            continue
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if config.get("format") != FORMAT:
            continue
        mt = config.get("meta_training", {})
        seen.add(path.stem)
        rows.append({
            "name": path.stem, "where": "shipped" if path.parent == PRETRAINED_DIR else "user",
            "net": config["net"]["kind"], "features": config["feature_schema"],
            "tasks": ",".join(mt.get("tasks", [])),
        })
    return rows if details else [r["name"] for r in rows]
