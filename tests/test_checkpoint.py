"""Checkpoints: safetensors + JSON only; every kind of bad checkpoint is refused with its reason."""

import hashlib
import json
import math
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from metalr.learned import checkpoint
from metalr.errors import MetalrError
from metalr.learned.network import CONFIGS, NetConfig, ScheduleNet


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = ScheduleNet(CONFIGS["transfer-v1"])
    checkpoint.save(net, tmp_path / "ck", meta_training={"tasks": ["mnist1d-mlp"], "command": "x"})
    return tmp_path / "ck", net


def test_round_trip_by_json_safetensors_or_base_path(saved):
    base, net = saved
    for path in (base, f"{base}.json", f"{base}.safetensors"):
        loaded, config = checkpoint.load(path)
        assert config["format_version"] == checkpoint.FORMAT_VERSION
        assert config["feature_schema"] == "transfer-v1"
        assert config["meta_training"]["tasks"] == ["mnist1d-mlp"]
        for k, v in net.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k])


def test_pickle_and_torch_save_files_are_refused_unopened(tmp_path):
    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(pickle.dumps({"evil": 1}))
    pt = tmp_path / "net.pt"
    torch.save(ScheduleNet(CONFIGS["transfer-v1"]).state_dict(), pt)
    for path in (pkl, pt):
        with pytest.raises(MetalrError, match="pickle or torch.save.*never unpickles"):
            checkpoint.load(path)


def test_truncated_weights_refused(saved):
    base, _ = saved
    weights = base.with_name("ck.safetensors")
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(MetalrError, match="corrupted or truncated"):
        checkpoint.load(base)


def test_corrupted_weights_refused(saved):
    base, _ = saved
    weights = base.with_name("ck.safetensors")
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(MetalrError, match="corrupted or truncated"):
        checkpoint.load(base)


def test_garbage_weights_with_matching_hash_refused(saved):
    base, _ = saved
    weights = base.with_name("ck.safetensors")
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    config = json.loads(base.with_name("ck.json").read_text())
    config["sha256"] = _sha(weights)
    base.with_name("ck.json").write_text(json.dumps(config))
    with pytest.raises(MetalrError, match="not a readable safetensors file"):
        checkpoint.load(base)


def _edit_config(base, **changes):
    path = base.with_name("ck.json")
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_unknown_format_version_refused(saved):
    base, _ = saved
    _edit_config(base, format_version=99)
    with pytest.raises(MetalrError, match="format_version 99; this metalr reads version 1"):
        checkpoint.load(base)


def test_not_a_metalr_config_refused(saved):
    base, _ = saved
    _edit_config(base, format="something-else")
    with pytest.raises(MetalrError, match="not a metalr checkpoint config"):
        checkpoint.load(base)


def test_invalid_json_refused(saved):
    base, _ = saved
    base.with_name("ck.json").write_text("{truncated")
    with pytest.raises(MetalrError, match="not valid JSON"):
        checkpoint.load(base)


def test_mismatched_shapes_refused(saved):
    base, _ = saved
    other = ScheduleNet(NetConfig(kind="default", features="transfer-v1", hidden=16, mlp=32))
    checkpoint.save(other, base.with_name("small"))
    # weights of a hidden-16 network under a config that says hidden 32
    base.with_name("ck.safetensors").write_bytes(base.with_name("small.safetensors").read_bytes())
    _edit_config(base, sha256=_sha(base.with_name("ck.safetensors")))
    with pytest.raises(MetalrError, match="do not match the config's architecture.*file \\(64, 32\\), config implies \\(128, 32\\)"):
        checkpoint.load(base)


def test_feature_schema_mismatch_refused(saved):
    base, _ = saved
    _edit_config(base, features=["loss"])
    with pytest.raises(MetalrError, match="feature schema"):
        checkpoint.load(base)


def test_missing_files_refused(saved, tmp_path):
    base, _ = saved
    with pytest.raises(MetalrError, match="no checkpoint 'nope'.*shipped"):
        checkpoint.load("nope")
    base.with_name("ck.safetensors").unlink()
    with pytest.raises(MetalrError, match="incomplete.*ck.safetensors is missing"):
        checkpoint.load(base)


def test_shipped_checkpoints_load_and_are_listed():
    names = checkpoint.list_pretrained()
    assert names, "pretrained/ must ship at least one checkpoint"
    for name in names:
        net, config = checkpoint.load(name)
        assert config["meta_training"]["command"].startswith("python train_meta.py")
        meta = config["meta_training"]
        assert (meta.get("episodes") or meta["inner_runs"]) >= 2  # ES episodes, lookahead runs


# ---- Crafted checkpoints: each probe is generated here from a good pair, and must be refused
# with a one-line MetalrError before the network is built (ScheduleNet is replaced by a tripwire),
# within a few seconds (an alarm turns a hang into a failure).

class _Built(Exception):
    pass


def _refused(monkeypatch, target, match: str | None = None):
    def tripwire(*args, **kwargs):
        raise _Built("the network was built before the checkpoint was refused")

    monkeypatch.setattr(checkpoint, "ScheduleNet", tripwire)
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("hang")))
    signal.alarm(10)
    try:
        with pytest.raises(MetalrError, match=match) as info:
            checkpoint.load(target)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert "\n" not in str(info.value) and str(info.value).strip()
    return str(info.value)


def _config(base):
    return json.loads(base.with_name("ck.json").read_text())


def _write_json(base, config, raw=None):
    """Write ``config``; ``raw`` replaces the string "@RAW@" in the text with a bare token."""
    text = json.dumps(config)
    base.with_name("ck.json").write_text(text.replace('"@RAW@"', raw) if raw else text)


def _write_weights(base, data: bytes):
    """Replace the weights and record their hash, so only the checks after the hash can refuse."""
    base.with_name("ck.safetensors").write_bytes(data)
    config = _config(base)
    config["sha256"] = hashlib.sha256(data).hexdigest()
    _write_json(base, config)


def _tensors(net, name=None, change=None):
    tensors = {k: v.clone() for k, v in net.state_dict().items()}
    if name:
        tensors[name] = change(tensors[name])
    return tensors


NET_PROBES = [  # (net field, JSON value as text, what the message names)
    ("hidden", "-1", "hidden"), ("hidden", "0", "hidden"), ("hidden", "32.5", "hidden"),
    ("hidden", '"32"', "hidden"), ("hidden", "1e400", "hidden"), ("hidden", "1000000", "hidden"),
    ("hidden", "1e6", "hidden"), ("hidden", "true", "hidden"), ("hidden", "null", "hidden"),
    ("hidden", "[32]", "hidden"), ("hidden", "1" + "0" * 5000, "not valid JSON"),
    ("mlp", "10000000", "mlp"), ("mlp", "-32", "mlp"), ("mlp", "{}", "mlp"),
    ("hi", "1e308", "hi"), ("hi", "Infinity", "not valid JSON"), ("hi", "-Infinity", "not valid JSON"),
    ("hi", "NaN", "not valid JSON"), ("hi", "1e400", "hi"), ("hi", "101", "hi"),
    ("hi", '"2"', "hi"), ("hi", "0.001", "lo < hi"), ("hi", "true", "hi"),
    ("lo", "1e-320", "lo"), ("lo", "0", "lo"), ("lo", "-1", "lo"), ("lo", "5", "lo < hi"),
    ("kind", '"evil"', "kind"), ("kind", "5", "kind"), ("features", "5", "features"),
    ("features", '"nope"', "features"), ("skip", '"yes"', "skip"), ("skip", "1", "skip"),
]


@pytest.mark.parametrize("field,raw,match", NET_PROBES, ids=[f"{f}={r[:12]}" for f, r, _ in NET_PROBES])
def test_crafted_net_values_refused_before_building(saved, monkeypatch, field, raw, match):
    base, _ = saved
    config = _config(base)
    config["net"][field] = "@RAW@"
    _write_json(base, config, raw)
    _refused(monkeypatch, base, match)


TOP_PROBES = [  # (top-level field, JSON value as text)
    ("net", "null"), ("net", "[]"), ("net", '{"kind": "default"}'), ("features", "5"),
    ("features", "null"), ("feature_schema", '"hyper-v2"'), ("tensors", "5"),
    ("tensors", '{"head.bias": [1]}'), ("sha256", "5"), ("sha256", '"../../etc/passwd"'),
    ("format_version", "true"), ("format_version", '"1"'), ("format_version", "2"),
    ("meta_training", "5"), ("format", '"metalr-schedule-net-v0"'),
]


@pytest.mark.parametrize("field,raw", TOP_PROBES, ids=[f"{f}={r[:12]}" for f, r in TOP_PROBES])
def test_crafted_config_fields_refused(saved, monkeypatch, field, raw):
    base, _ = saved
    config = _config(base)
    config[field] = "@RAW@"
    _write_json(base, config, raw)
    _refused(monkeypatch, base)


def test_net_with_extra_or_missing_keys_refused(saved, monkeypatch):
    base, _ = saved
    config = _config(base)
    _write_json(base, {**config, "net": {**config["net"], "evil": 1}})
    _refused(monkeypatch, base, "unknown keys")
    del config["net"]["hidden"]
    _write_json(base, config)
    _refused(monkeypatch, base, "lacks")


JSON_TEXTS = {
    "nested-100000": "[" * 100_000 + "]" * 100_000,
    "nested-object-50000": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "array": "[1, 2]",
    "empty": "",
    "not-utf8": b"\xff\xfe{}",
    "nan-field": '{"format": NaN}',
}


@pytest.mark.parametrize("name", JSON_TEXTS)
def test_malformed_json_refused(saved, monkeypatch, name):
    base, _ = saved
    text = JSON_TEXTS[name]
    path = base.with_name("ck.json")
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    _refused(monkeypatch, base)


WEIGHT_PROBES = {
    "one-nan": ("head.bias", lambda t: t.fill_(math.nan)),
    "one-inf": ("in_mlp.0.weight", lambda t: t.view(-1).index_fill_(0, torch.tensor([3]), math.inf)),
    "one-minus-inf": ("hid_mlp.2.bias", lambda t: t.index_fill_(0, torch.tensor([0]), -math.inf)),
    "int64": ("head.bias", lambda t: t.long()),
    "int32": ("in_mlp.0.bias", lambda t: t.int()),
    "bool": ("head.weight", lambda t: t.bool()),
    "float16": ("in_mlp.2.weight", lambda t: t.half()),
    "bfloat16": ("in_mlp.2.bias", lambda t: t.bfloat16()),
    "float64": ("head.weight", lambda t: t.double()),
    "wrong-shape": ("head.weight", lambda t: t.reshape(32, 1)),
    "missing-tensor": ("head.bias", None),
}


@pytest.mark.parametrize("probe", WEIGHT_PROBES)
def test_bad_weights_refused(saved, monkeypatch, probe):
    base, net = saved
    name, change = WEIGHT_PROBES[probe]
    tensors = _tensors(net)
    if change is None:
        del tensors[name]
    else:
        tensors[name] = change(tensors[name])
    _write_weights(base, save_safetensors(tensors))
    _refused(monkeypatch, base)


def test_extra_tensor_refused(saved, monkeypatch):
    base, net = saved
    _write_weights(base, save_safetensors({**_tensors(net), "evil": torch.zeros(3)}))
    _refused(monkeypatch, base, "evil")


def _raw_safetensors(header, data: bytes, length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(text) if length is None else length).to_bytes(8, "little") + text + data


def _good_header(net):
    header, offset = {}, 0
    for k, v in net.state_dict().items():
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + 4 * v.numel()]}
        offset += 4 * v.numel()
    return header, offset


def _header_probes(net):
    header, size = _good_header(net)
    data = b"\0" * size
    first = next(iter(header))
    overlap = json.loads(json.dumps(header))
    overlap[first]["data_offsets"] = [4, 4 + 4 * math.prod(header[first]["shape"])]
    negative = json.loads(json.dumps(header))
    negative[first]["data_offsets"] = [-4, -4 + 4 * math.prod(header[first]["shape"])]
    floats = json.loads(json.dumps(header))
    floats[first]["data_offsets"] = [float(o) for o in floats[first]["data_offsets"]]
    return {
        "length-2**63": _raw_safetensors(header, data, 2 ** 63),
        "length-past-end": _raw_safetensors(header, data, 10 ** 6),
        "length-over-cap": _raw_safetensors(b" " * 70_000 + json.dumps(header).encode(), data),
        "short": b"\x01\x00",
        "header-array": _raw_safetensors([1, 2], data),
        "header-deep": _raw_safetensors(b"[" * 30_000 + b"]" * 30_000, data),
        "trailing-bytes": _raw_safetensors(header, data + b"\0" * 16),
        "missing-data": _raw_safetensors(header, data[:-16]),
        "overlapping": _raw_safetensors(overlap, data),
        "negative-offsets": _raw_safetensors(negative, data),
        "float-offsets": _raw_safetensors(floats, data),
        "entry-not-object": _raw_safetensors({**header, first: 5}, data),
    }


@pytest.mark.parametrize("probe", list(_header_probes(ScheduleNet(CONFIGS["transfer-v1"]))))
def test_crafted_safetensors_headers_refused(saved, monkeypatch, probe):
    base, net = saved
    _write_weights(base, _header_probes(net)[probe])
    _refused(monkeypatch, base)


def test_huge_config_refused_without_allocating(saved, monkeypatch):
    """hidden=512 (the bound) over the weights of a hidden-32 net: refused by the header; a bigger claim is
    refused by the bound, and neither reaches the network's constructor (the tripwire)."""
    base, _ = saved
    config = _config(base)
    for hidden, match in ((512, "do not match the config"), (10 ** 6, "hidden"), (10 ** 9, "hidden")):
        net = NetConfig(**{**config["net"], "hidden": 512}) if hidden == 512 else None
        config["net"]["hidden"] = hidden
        if net is not None:
            config["tensors"] = {k: list(v) for k, v in net.tensor_shapes().items()}
        _write_json(base, config)
        _refused(monkeypatch, base, match)


FILE_KINDS = ["json-dir", "json-fifo", "json-dev-zero", "weights-dev-zero", "weights-fifo",
              "weights-dir", "json-oversized", "weights-oversized", "json-dangling-link",
              "weights-dev-zero-as-pending"]


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_special_files_refused_without_hanging(saved, monkeypatch, kind):
    base, _ = saved
    which, _, what = kind.partition("-")
    path = base.with_name("ck.json" if which == "json" else "ck.safetensors")
    sha = _config(base)["sha256"]
    if what == "dev-zero-as-pending":  # the file a killed save would leave, faked
        path.write_bytes(b"garbage")
        os.symlink("/dev/zero", base.with_name(f"ck.pending-{sha}.safetensors"))
    else:
        path.unlink()
    if what == "dir":
        path.mkdir()
    elif what == "fifo":
        os.mkfifo(path)
    elif what == "dev-zero":
        os.symlink("/dev/zero", path)
    elif what == "dangling-link":
        os.symlink(base.with_name("nowhere"), path)
    elif what == "oversized":  # sparse: no disk used, but stat says 9 MB
        with open(path, "wb") as fh:
            fh.truncate(9 << 20)
    _refused(monkeypatch, base)
    _refused(monkeypatch, f"{base}.json")


@pytest.mark.parametrize("name", ["", "   ", "a\0b", ".", "..", "/", "~", 5, None, b"ck"])
def test_bad_names_refused(monkeypatch, name):
    _refused(monkeypatch, name)


def test_directory_named_like_a_checkpoint_refused(tmp_path, monkeypatch):
    (tmp_path / "ck.json").mkdir()
    (tmp_path / "ck.safetensors").write_bytes(b"x")
    _refused(monkeypatch, tmp_path / "ck.json", "not a regular file")


def test_pickle_sniffing_reads_no_special_file(tmp_path, monkeypatch):
    os.symlink("/dev/zero", tmp_path / "zero")
    os.mkfifo(tmp_path / "fifo")
    for name in ("zero", "fifo"):
        _refused(monkeypatch, tmp_path / name)


def test_from_pretrained_empty_name_refused():
    from metalr.learned.scheduler import MetaLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(MetalrError, match="shipped name"):
        MetaLRScheduler.from_pretrained("", opt, total_steps=10)


def test_list_pretrained_skips_crafted_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("METALR_HOME", str(tmp_path))
    (tmp_path / "bad.json").write_text(json.dumps({"format": checkpoint.FORMAT, "net": 5}))
    (tmp_path / "dir.json").mkdir()
    os.mkfifo(tmp_path / "fifo.json")
    assert "bad" not in checkpoint.list_pretrained()
    assert checkpoint.list_pretrained() == sorted(p.stem for p in checkpoint.PRETRAINED_DIR.glob("*.json"))


def test_configs_shapes_match_the_network():
    for config in CONFIGS.values():
        net = ScheduleNet(config)
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == config.tensor_shapes()


# ---- Atomic pair save: a child process saves a new pair over an old one and SIGKILLs itself at
# its k-th file-system step (each os.fsync, os.replace, os.unlink), for every k; the directory
# must then hold a loadable pair, the old one before the commit and the new one after, and the
# next save must leave no temporaries behind.

_SAVE_AND_DIE = r"""
import os, signal, sys, torch
from metalr.learned import checkpoint
from metalr.learned.network import CONFIGS, ScheduleNet
kill_at, count = int(sys.argv[2]), [0]
def hooked(real):
    def call(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
for name in ("fsync", "replace", "unlink"):
    setattr(os, name, hooked(getattr(os, name)))
torch.manual_seed(2)
checkpoint.save(ScheduleNet(CONFIGS["transfer-v1"]), sys.argv[1], meta_training={"command": "new"})
print(count[0])
"""


def _save_in_child(base, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _SAVE_AND_DIE, str(base), str(kill_at)],
                          capture_output=True, text=True, timeout=120)


def test_save_killed_at_any_step_leaves_a_loadable_pair(tmp_path):
    torch.manual_seed(1)
    old_net = ScheduleNet(CONFIGS["transfer-v1"])
    torch.manual_seed(2)
    new_net = ScheduleNet(CONFIGS["transfer-v1"])
    full = _save_in_child(tmp_path / "count" / "ck", 0)
    assert full.returncode == 0, full.stderr
    steps = int(full.stdout)
    assert steps >= 4
    seen = []
    for k in range(1, steps + 1):
        base = tmp_path / f"k{k}" / "ck"
        checkpoint.save(old_net, base, meta_training={"command": "old"})
        died = _save_in_child(base, k)
        assert died.returncode == -signal.SIGKILL, died.stderr
        net, config = checkpoint.load(base)
        which = config["meta_training"]["command"]
        expected = old_net if which == "old" else new_net
        for name, value in expected.state_dict().items():
            assert torch.equal(net.state_dict()[name], value), (k, which, name)
        seen.append(which)
        # the next save cleans up what the killed one left
        checkpoint.save(old_net, base, meta_training={"command": "again"})
        assert sorted(p.name for p in base.parent.iterdir()) == ["ck.json", "ck.safetensors"]
        assert checkpoint.load(base)[1]["meta_training"]["command"] == "again"
    # Killed before the JSON commit the old pair loads, after it the new one: both windows,
    # including the one between the two files, were hit.
    assert seen[0] == "old" and seen[-1] == "new" and seen == sorted(seen, key=["old", "new"].index)
    assert any(s == "new" for s in seen[:-1]), "no kill fell between the JSON and the weights rename"
