"""Schedule-network checkpoints: safetensors weights plus a JSON config. Never pickles.

A checkpoint ``NAME`` is two files side by side: ``NAME.safetensors`` (the weights) and
``NAME.json``::

    {"format": "metalr-schedule-net", "format_version": 1,
     "net": {kind, features, hidden, mlp, lo, hi, skip},  # metalr.learned.network.NetConfig
     "feature_schema": "transfer-v1", "features": [...],  # names, in input order
     "tensors": {name: shape}, "sha256": "<of the .safetensors file>",
     "metalr_version": "...", "meta_training": {command, config, tasks, ...}}

A name (no ``/``, no suffix) is looked up first among the shipped checkpoints (package data:
``metalr/learned/pretrained``, which is the repository's top-level ``pretrained/``), then in the
user's directory: ``$METALR_HOME``, by default ``$XDG_CACHE_HOME/metalr`` (``~/.cache/metalr``).
Anything else is a path.

Loading trusts nothing in the files and checks, in order, refusing with a one-line
:class:`MetalrError` that says which check failed:

1. the path names a checkpoint (a pickle or ``torch.save`` file is refused after reading its
   first 4 bytes, never unpickled);
2. each file is a regular file (a symlink is followed; a directory, FIFO or device such as
   ``/dev/zero`` is refused from ``os.stat`` alone, before it is opened) no larger than its cap
   (:data:`MAX_JSON_BYTES`; for the weights, what the configuration implies), checked before
   reading;
3. the JSON parses (strict JSON: no ``NaN``/``Infinity``; absurd nesting is refused) and every
   field is valid: format and version, the network configuration (types, size and output-range
   bounds of :class:`~metalr.learned.network.NetConfig`), the feature schema, the tensor shapes
   and the SHA-256;
4. the weights' SHA-256 matches the config (a truncated or corrupted file is caught here);
5. the safetensors header (its 8-byte length and JSON, read here with a size cap) lists exactly
   the tensors the configuration implies, each float32 with the implied shape, tiling the data;
6. every weight is finite.

Only then is the network built, so a crafted configuration cannot make the loader allocate.

Saving is atomic for the pair. The JSON is the commit record: it names the weights by SHA-256.
:func:`save` (1) writes the new weights under a content-addressed name
``NAME.pending-<sha256>.safetensors`` (a temporary in the same directory, fsynced, then
renamed), (2) replaces ``NAME.json`` the same way (the commit point), then (3) renames the
pending weights to ``NAME.safetensors``. Killed before (2), the old JSON and old weights are
untouched; killed between (2) and (3), the new JSON's hash names the pending file, which the
loader reads when ``NAME.safetensors`` does not match. Temporaries (``.NAME.*.tmp``) and pending
files left by a killed save are removed by the next save of ``NAME``, which first completes an
interrupted step (3).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors, save as save_safetensors

from metalr.errors import MetalrError
from metalr.learned.features import SCHEMAS
from metalr.learned.network import NetConfig, ScheduleNet
from metalr.specs import parse_json, read_regular

FORMAT = "metalr-schedule-net"
FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
# What the `metalr` policy loads when no checkpoint is named, and what the docs recommend. The
# network over the knee shape, meta-trained with its limits in place (``knee-floor``): it may
# raise the LR to 3x while the update-to-weight ratio stays under 2% (SGD) or, under Adam and
# AdamW, 1%, or 3% (and then to 5x) while the hypergradient (the next gradient against the last
# update) says, by more than a standard error, that a longer step would have gone further down,
# holding a raise it made until it says the opposite as clearly; never again once a run has
# given back 70% of its progress; under SGD a ratio above 2% cuts the LR below its base (to 0.1x at most); without a
# budget it never raises. Its loss back-off fires when the smoothed loss is 35% above its best.
# On the 11 transfer tasks at 0.3x, 1x and 3x their default LR it was never 2 points worse than
# constant LR (33 of 33 cells, seeds 0-2 and 3-5) and never collapsed, on 7 task variants 21 of
# 21, and it ranks first of nine at zero tuning (mean rank 2.18), first on the held-out char-LM
# (pretrained/README.md).
DEFAULT_CHECKPOINT = "metalr-unroll-hypergradient-hold"
# Files written by pickle (protocol 2+ starts with 0x80) or torch.save (a zip archive).
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")
# Caps checked before reading. A config with its meta-training log is a few kB to a few hundred
# kB; a safetensors header for the ten tensors of a network is about 1 kB.
MAX_JSON_BYTES = 8 << 20
MAX_HEADER_BYTES = 64 << 10
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _read_config(json_path: Path) -> dict:
    config = parse_json(read_regular(json_path, "checkpoint config", MAX_JSON_BYTES),
                         f"checkpoint config {json_path}")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MetalrError(f"{json_path} is not a metalr checkpoint config (format must be {FORMAT!r})")
    return config


def _check_config(config: dict, json_path: Path) -> NetConfig:
    """Validate every field the loader uses; returns the network configuration."""
    version = config.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise MetalrError(
            f"{json_path} has format_version {version!r}; this metalr reads version {FORMAT_VERSION}"
        )
    try:
        net_config = NetConfig.from_dict(config.get("net"))
    except MetalrError as err:
        raise MetalrError(f"{json_path}: bad 'net' section: {err}") from None
    features = config.get("features")
    if config.get("feature_schema") != net_config.features or not isinstance(features, list) \
            or features != list(SCHEMAS[net_config.features]):
        raise MetalrError(
            f"{json_path}: feature schema {config.get('feature_schema')!r} with features "
            f"{str(features)[:200]} does not match this metalr's {net_config.features!r} "
            f"{list(SCHEMAS[net_config.features])}"
        )
    implied = {k: list(v) for k, v in net_config.tensor_shapes().items()}
    if config.get("tensors") != implied:
        raise MetalrError(f"{json_path}: 'tensors' {str(config.get('tensors'))[:200]} is not what "
                          f"its 'net' implies ({implied})")
    sha = config.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise MetalrError(f"{json_path}: 'sha256' must be 64 lowercase hex digits, got {str(sha)[:80]!r}")
    if not isinstance(config.get("meta_training", {}), dict):
        raise MetalrError(f"{json_path}: 'meta_training' must be an object")
    return net_config


def _pending(weights: Path, sha: str) -> Path:
    """Where :func:`save` puts new weights before its commit (see the module docstring)."""
    return weights.with_name(f"{weights.name.removesuffix('.safetensors')}.pending-{sha}.safetensors")


def _read_weights(weights: Path, sha: str, net_config: NetConfig) -> bytes:
    """The weights file's bytes, size-capped by the configuration and matching ``sha``.

    ``NAME.safetensors`` is the weights unless a save was killed after its commit point; then
    the content-addressed pending file the JSON's hash names is.
    """
    data_bytes = 4 * sum(math.prod(s) for s in net_config.tensor_shapes().values())
    cap = 8 + MAX_HEADER_BYTES + data_bytes
    pending = _pending(weights, sha)
    candidates = [p for p in (weights, pending) if os.path.lexists(p)]
    if not candidates:
        raise MetalrError(f"checkpoint {weights.with_suffix('')} is incomplete: {weights} is missing")
    actual = ""
    for path in candidates:
        data = read_regular(path, "weights", cap)
        actual = hashlib.sha256(data).hexdigest()
        if actual == sha:
            return data
    raise MetalrError(f"{weights} is corrupted or truncated: its SHA-256 is {actual[:12]}..., the "
                      f"config records {sha[:12]}...")


def _check_header(data: bytes, net_config: NetConfig, weights: Path) -> None:
    """The safetensors header lists exactly the implied float32 tensors, tiling the data."""
    bad = f"{weights} is not a readable safetensors file"
    if len(data) < 8:
        raise MetalrError(f"{bad}: {len(data)} bytes, shorter than the 8-byte header length")
    size = int.from_bytes(data[:8], "little")
    if size > MAX_HEADER_BYTES or 8 + size > len(data):
        raise MetalrError(f"{bad}: header length {size} exceeds the file or {MAX_HEADER_BYTES} bytes")
    header = parse_json(data[8:8 + size], f"{bad}: header")
    if not isinstance(header, dict):
        raise MetalrError(f"{bad}: the header is not a JSON object")
    header.pop("__metadata__", None)
    expected = net_config.tensor_shapes()
    got = {k: tuple(v["shape"]) if isinstance(v, dict) and isinstance(v.get("shape"), list)
           else None for k, v in header.items()}
    if got != expected:
        diff = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        detail = "; ".join(f"{k}: file {got.get(k)}, config implies {expected.get(k)}"
                           for k in diff[:4])
        raise MetalrError(f"{weights}: tensors do not match the config's architecture ({detail})")
    spans = []
    for name, shape in expected.items():
        entry = header[name]
        if entry.get("dtype") != "F32":
            raise MetalrError(f"{weights}: tensor {name} has dtype {str(entry.get('dtype'))[:20]}; "
                              "checkpoints hold float32 (F32) weights only")
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets)
                and offsets[1] - offsets[0] == 4 * math.prod(shape)):
            raise MetalrError(f"{bad}: tensor {name} has data_offsets {str(offsets)[:60]}, not a "
                              f"span of {4 * math.prod(shape)} bytes")
        spans.append(offsets)
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise MetalrError(f"{bad}: tensor data overlaps or leaves gaps")
        end = stop
    if 8 + size + end != len(data):
        raise MetalrError(f"{bad}: {len(data)} bytes, the header describes {8 + size + end}")


def _tensors(data: bytes, net_config: NetConfig, weights: Path) -> dict[str, torch.Tensor]:
    _check_header(data, net_config, weights)
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError) as err:
        raise MetalrError(f"{weights} is not a readable safetensors file: "
                          f"{' '.join(str(err).split())}") from None
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32:  # the header said F32; the parser must agree
            raise MetalrError(f"{weights}: tensor {name} is {tensor.dtype}, not float32")
        if not bool(torch.isfinite(tensor).all()):
            raise MetalrError(f"{weights}: tensor {name} has NaN or infinite weights; a network "
                              "with them would emit NaN learning rates")
    return tensors


def _write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` completely or keeps what it held: a fsynced temporary in the same
    directory replaces it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a checkpoint gets an ordinary file's mode
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _recover(base: Path) -> None:
    """Finish or clean up what a killed :func:`save` of ``base`` left: complete its step (3) if
    it committed, then remove its temporaries and uncommitted pending weights."""
    json_path = base.with_name(base.name + ".json")
    weights = base.with_name(base.name + ".safetensors")
    try:
        sha = str(_read_config(json_path).get("sha256", ""))
    except MetalrError:
        sha = ""
    if _SHA256.fullmatch(sha) and _pending(weights, sha).is_file():
        os.replace(_pending(weights, sha), weights)
    name = glob.escape(base.name)
    stale = [*base.parent.glob(f".{name}.json.*.tmp"), *base.parent.glob(f".{name}.pending-*.tmp"),
             *base.parent.glob(f"{name}.pending-*.safetensors")]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def save(net: ScheduleNet, path: str | Path, meta_training: dict | None = None) -> Path:
    """Write ``path.safetensors`` and ``path.json`` atomically as a pair (see the module
    docstring); returns the JSON path."""
    from metalr import __version__

    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".json", ".safetensors") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    _recover(base)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    data = save_safetensors(tensors)
    sha = hashlib.sha256(data).hexdigest()
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": base.name,
        "net": net.config.to_dict(),
        "feature_schema": net.config.features,
        "features": list(SCHEMAS[net.config.features]),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "sha256": sha,
        "metalr_version": __version__,
        "meta_training": meta_training or {},
    }
    weights = base.with_name(base.name + ".safetensors")
    json_path = base.with_name(base.name + ".json")
    _write_atomic(_pending(weights, sha), data)
    _fsync_dir(base.parent)
    _write_atomic(json_path, (json.dumps(config, indent=2) + "\n").encode())
    _fsync_dir(base.parent)
    os.replace(_pending(weights, sha), weights)
    _fsync_dir(base.parent)
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
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path).strip() \
            or "\0" in str(name_or_path):
        raise MetalrError(f"a checkpoint is a shipped name ({', '.join(list_pretrained()) or 'none'}) "
                          f"or a path to NAME.json, got {name_or_path!r}")
    text = str(name_or_path)
    base = _by_name(text)
    if base is None:
        p = Path(text).expanduser()
        if p.suffix in (".json", ".safetensors"):
            base = p.with_suffix("")
        else:
            if p.is_file():
                kind = ("a pickle or torch.save file"
                        if read_regular(p, "file", 4, prefix=True).startswith(_PICKLE_MAGIC)
                        else "not a checkpoint")
                raise MetalrError(
                    f"{p} is {kind}: metalr loads only NAME.safetensors + NAME.json and never "
                    "unpickles; convert the weights with safetensors.torch.save_file"
                )
            base = p
    if not base.name or base.name in (".", ".."):
        raise MetalrError(f"checkpoint {text!r} names a directory, not NAME.json")
    json_path = base.with_name(base.name + ".json")
    weights = base.with_name(base.name + ".safetensors")
    if not os.path.lexists(json_path) and not os.path.lexists(weights):
        raise MetalrError(
            f"no checkpoint {text!r}: neither a shipped name (shipped: "
            f"{', '.join(list_pretrained()) or 'none'}), nor a name in {user_dir()} ($METALR_HOME), "
            "nor a path to NAME.json/NAME.safetensors"
        )
    if not os.path.lexists(json_path):
        raise MetalrError(f"checkpoint {text!r} is incomplete: {json_path} is missing")
    return json_path, weights


def load(name_or_path: str | Path) -> tuple[ScheduleNet, dict]:
    """Load a checkpoint by shipped name or path; returns (network in eval mode, JSON config)."""
    json_path, weights = _resolve(name_or_path)
    config = _read_config(json_path)
    net_config = _check_config(config, json_path)
    tensors = _tensors(_read_weights(weights, config["sha256"], net_config), net_config, weights)
    net = ScheduleNet(net_config)
    net.load_state_dict(tensors)
    return net.eval(), config


def list_pretrained(details: bool = False) -> list:
    """Names of the shipped checkpoints, then the user's (with a summary row each when ``details``).

    A file that is not a valid checkpoint config is left out.
    """
    rows = []
    seen = set()
    # Sorted by name, not file name ("a-b.json" sorts before "a.json", "a" before "a-b").
    paths = [*sorted(PRETRAINED_DIR.glob("*.json"), key=lambda p: p.stem),
             *sorted(user_dir().glob("*.json"), key=lambda p: p.stem)]
    for path in paths:
        if path.stem in seen:
            continue
        try:
            config = _read_config(path)
            net_config = _check_config(config, path)
        except MetalrError:
            continue
        mt = config.get("meta_training", {})
        tasks = mt.get("tasks", [])
        seen.add(path.stem)
        rows.append({
            "name": path.stem, "where": "shipped" if path.parent == PRETRAINED_DIR else "user",
            "net": net_config.kind, "features": net_config.features,
            "tasks": ",".join(map(str, tasks)) if isinstance(tasks, list) else "",
        })
    return rows if details else [r["name"] for r in rows]
