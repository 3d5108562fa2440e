"""Checkpoints: safetensors + JSON only; every kind of bad checkpoint is refused with its reason."""

import json
import pickle

import pytest
import torch

from metalr.learned import checkpoint
from metalr.errors import MetalrError
from metalr.learned.network import CONFIGS, NetConfig, ScheduleNet


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
    config["sha256"] = checkpoint._sha256(weights)
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
    _edit_config(base, sha256=checkpoint._sha256(base.with_name("ck.safetensors")))
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
        assert config["meta_training"]["inner_runs"] >= 2
