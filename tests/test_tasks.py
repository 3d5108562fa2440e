"""The task suite: splits, recipes, variants (noise, fraction), spec parsing, the text corpus and
the torchvision tasks (which skip, or fail with a clear message, without torchvision)."""

from __future__ import annotations

import math
import re
import sys
import types

import numpy as np

import pytest
import torch

import metalr
from metalr.errors import MetalrError
from metalr.tasks import get_task, list_tasks, parse_spec, task_names, text, vision
from metalr.tasks.base import Split, Task, split_rows
from metalr.tasks.variants import corrupt_labels

torch.set_num_threads(1)

EMBEDDED = task_names(embedded_only=True)
VISION = sorted(vision.RECIPES)

# Expected (train, val, test) sizes of the classification tasks.
SIZES = {
    "mnist1d-mlp": (3500, 500, 1000), "mnist1d-cnn": (3500, 500, 1000),
    "mnist1d-gru": (3500, 500, 1000), "digits-cnn": (1257, 180, 360),
    "digits-mlp": (1257, 180, 360), "digits-logreg": (1257, 180, 360),
    "cancer-mlp": (370, 85, 114),
}
# Spec suffix that makes one training epoch a handful of steps.
TINY = {"charlm-lstm": "fraction=0.01", "charlm-transformer": "fraction=0.01",
        "mnist1d-gru": "fraction=0.1", "mnist1d-cnn": "fraction=0.2"}


def test_registry_lists_every_kind_of_task():
    assert set(SIZES) | {"charlm-lstm", "charlm-transformer"} == set(EMBEDDED)
    assert set(VISION) == {"cifar10-resnet18", "cifar10-wrn28-10", "cifar100-resnet18",
                           "cifar100-wrn28-10", "svhn-resnet18"}
    assert task_names() == sorted(EMBEDDED + VISION)


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_task_builds_with_disjoint_splits(name):
    task = get_task(name)
    ids = [set(s.index.tolist()) for s in (task.train, task.val, task.test)]
    assert all(len(i) == len(s) for i, s in zip(ids, (task.train, task.val, task.test)))
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    if name in SIZES:
        assert (len(task.train), len(task.val), len(task.test)) == SIZES[name]
        assert task.classification and task.higher_is_better
        for split in (task.train, task.val, task.test):
            assert split.y.min() >= 0 and split.y.max() < task.num_classes
    else:
        assert not task.classification and not task.higher_is_better
        assert task.metric_name == "bits/char" and task.num_classes == text.VOCAB_SIZE
    out = task.make_model()(task.val.x[:3])
    assert out.shape[0] == 3 and out.shape[-1] == task.num_classes
    assert task.optimizer in ("sgd", "adam", "adamw") and task.base_lr > 0


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_task_trains_a_few_steps(name):
    spec = f"{name}:{TINY[name]}" if name in TINY else name
    task = get_task(spec)
    assert task.steps_per_epoch <= 40
    result = metalr.train(task, "cosine", seed=0, epochs=1, eval_points=1)
    assert not result.diverged and len(result.train_loss) == task.steps_per_epoch
    assert all(math.isfinite(v) for v in result.train_loss)
    final = result.final["test_metric"]
    if task.classification:
        assert 0 <= final <= 1
    else:
        # A few steps of a language model already beat the uniform guess, log2(101) bits.
        assert 0 < final < math.log2(text.VOCAB_SIZE)


@pytest.mark.parametrize("name", ["digits-logreg", "digits-mlp", "digits-cnn", "cancer-mlp"])
def test_cheap_tasks_learn_in_five_epochs(name):
    # Full budgets reach 96-99%; five epochs already reach about 93-95%, chance is 10% / 63%.
    result = metalr.train(name, "cosine", seed=0, epochs=5, eval_points=1)
    assert result.final["test_metric"] > 0.88


def test_mnist1d_mlp_and_cnn_recipes_unchanged():
    for name in ("mnist1d-mlp", "mnist1d-cnn"):
        t = get_task(name)
        assert (t.optimizer, t.base_lr, t.momentum, t.weight_decay, t.batch_size, t.epochs) == (
            "sgd", 0.1, 0.9, 5e-4, 100, 60)


def test_splits_are_stratified():
    task = get_task("digits-cnn")
    for split, size in ((task.val, 180), (task.test, 360)):
        counts = torch.bincount(split.y, minlength=10)
        share = torch.bincount(torch.cat([task.train.y, task.val.y, task.test.y]), minlength=10)
        expected = share.float() * size / share.sum()
        assert (counts.float() - expected).abs().max() <= 1.0


def test_split_rows_is_deterministic_and_disjoint():
    a = split_rows(100, (10, 20, 30), seed=3)
    b = split_rows(100, (10, 20, 30), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [len(r) for r in a] == [10, 20, 30] and len(set(torch.cat(a).tolist())) == 60
    with pytest.raises(ValueError):
        split_rows(10, (6, 6), seed=0)


def test_cancer_features_standardised_by_training_split_only():
    task = get_task("cancer-mlp")
    assert torch.allclose(task.train.x.mean(0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(task.train.x.std(0), torch.ones(30), atol=1e-4)
    # The held-out rows are standardised with the training statistics, so theirs are not 0 / 1.
    assert task.test.x.mean(0).abs().max() > 0.05


def test_task_rejects_overlapping_splits():
    s = Split(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.arange(4))
    t = Split(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.tensor([3, 7]))
    with pytest.raises(ValueError, match="disjoint"):
        Task(name="x", train=s, val=s.subset(torch.tensor([], dtype=torch.long)), test=t,
             make_model=lambda: None, num_classes=2)


# ---- label noise and training fraction -------------------------------------------------------

@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_noise_touches_only_training_labels_at_the_rate(kind, rate):
    clean = get_task("mnist1d-cnn")
    noisy = get_task(f"mnist1d-cnn:noise={rate},noise_type={kind}")
    n = len(clean.train)
    changed = noisy.train.y != clean.train.y
    assert changed.sum().item() == round(rate * n)
    assert torch.equal(noisy.train.noisy, changed)
    assert torch.equal(noisy.train.clean_y, clean.train.y)
    assert torch.equal(noisy.train.x, clean.train.x)
    assert torch.equal(noisy.train.index, clean.train.index)
    for split in ("val", "test"):
        assert torch.equal(getattr(noisy, split).y, getattr(clean, split).y)
        assert getattr(noisy, split).clean_y is None
    shift = (noisy.train.y - clean.train.y)[changed] % 10
    if kind == "pairflip":
        assert (shift == 1).all()
    else:
        # Uniform over the 9 other classes: each shift ~ 1/9 of the flips.
        counts = torch.bincount(shift, minlength=10)
        assert counts[0] == 0
        expected = changed.sum().item() / 9
        assert ((counts[1:] - expected).abs() < 0.3 * expected).all()
    again = get_task(f"mnist1d-cnn:noise={rate},noise_type={kind}")
    assert torch.equal(again.train.y, noisy.train.y)


def test_noise_defaults_to_symmetric_and_zero_is_clean():
    sym = get_task("digits-mlp:noise=0.3")
    explicit = get_task("digits-mlp:noise=0.3,noise_type=symmetric")
    assert torch.equal(sym.train.y, explicit.train.y)
    assert get_task("digits-mlp:noise=0").train.clean_y is None


def test_corrupt_labels_exact_count_and_pairflip_wraps():
    y = torch.arange(10).repeat(7)
    out = corrupt_labels(y, 10, 0.5, "pairflip")
    changed = out != y
    assert changed.sum() == 35
    assert torch.equal(out[changed], (y[changed] + 1) % 10)
    assert (out[y == 9][changed[y == 9]] == 0).all()
    with pytest.raises(ValueError):
        corrupt_labels(y, 10, 1.0)


def test_fraction_subsets_training_split_only():
    full = get_task("digits-cnn")
    half = get_task("digits-cnn:fraction=0.25")
    assert len(half.train) == round(0.25 * len(full.train))
    assert set(half.train.index.tolist()) <= set(full.train.index.tolist())
    assert torch.equal(half.val.index, full.val.index) and torch.equal(half.test.index, full.test.index)
    counts = torch.bincount(half.train.y, minlength=10).float()
    expected = torch.bincount(full.train.y, minlength=10).float() * 0.25
    assert (counts - expected).abs().max() <= 1.0


def test_fraction_then_noise_rate_is_on_the_subset():
    task = get_task("mnist1d-mlp:fraction=0.5,noise=0.3,noise_type=pairflip")
    assert len(task.train) == 1750
    assert task.train.noisy.sum().item() == round(0.3 * 1750)


def test_noise_is_rejected_for_language_models():
    with pytest.raises(MetalrError, match="classification"):
        get_task("charlm-lstm:noise=0.1")


# ---- spec parsing ------------------------------------------------------------------------------

def test_spec_overrides_and_record():
    task = get_task("mnist1d-cnn:noise=0.4,epochs=40,batch=64,lr=0.05,wd=0,optimizer=adam")
    assert (task.epochs, task.batch_size, task.base_lr, task.weight_decay, task.optimizer) == (
        40, 64, 0.05, 0.0, "adam")
    assert task.spec == {"name": "mnist1d-cnn", "noise": "0.4", "epochs": "40", "batch": "64",
                         "lr": "0.05", "wd": "0", "optimizer": "adam"}
    assert task.train.noisy.sum().item() == 1400
    assert parse_spec(" digits-mlp : epochs = 3 , batch=8 ") == ("digits-mlp", {"epochs": "3", "batch": "8"})
    assert get_task(task) is task


def test_unknown_task_lists_accepted_names():
    with pytest.raises(MetalrError) as err:
        get_task("mnist2d-cnn")
    for name in ("mnist1d-cnn", "charlm-lstm", "digits-logreg", "cifar10-resnet18"):
        assert name in str(err.value)


def test_unknown_key_lists_accepted_keys():
    with pytest.raises(MetalrError) as err:
        get_task("mnist1d-mlp:nosie=0.2")
    msg = str(err.value)
    assert "nosie" in msg
    for key in ("epochs", "batch", "noise", "noise_type", "fraction", "lr"):
        assert key in msg
    with pytest.raises(MetalrError, match="file"):
        get_task("digits-mlp:file=/tmp/x.txt")


@pytest.mark.parametrize("bad,fragment", [
    ("noise=1", r"\[0, 1\)"), ("noise=-0.1", r"\[0, 1\)"), ("noise=abc", "number"),
    ("fraction=0", r"\(0, 1\]"), ("fraction=1.5", r"\(0, 1\]"), ("epochs=0", "positive"),
    ("batch=x", "integer"), ("noise_type=random,noise=0.1", "symmetric, pairflip"),
    ("optimizer=rmsprop", "sgd, adam, adamw"), ("lr=0", "> 0"), ("wd=nan", ">= 0"),
    ("noise_type=pairflip", "noise rate"), ("epochs=3,epochs=4", "twice"), ("epochs", "key=value"),
])
def test_bad_spec_values(bad, fragment):
    with pytest.raises(MetalrError, match=fragment):
        get_task(f"digits-mlp:{bad}")


def test_list_tasks_rows():
    rows = {r["name"]: r for r in list_tasks()}
    assert set(rows) == set(task_names())
    assert rows["mnist1d-gru"]["train/val/test"] == "3500/500/1000"
    assert rows["cifar10-resnet18"]["train/val/test"] == "45000/5000/10000"
    assert rows["charlm-lstm"]["metric"] == "bits/char"
    assert all({"optimizer", "lr", "batch", "epochs", "description"} <= set(r) for r in rows.values())


# ---- text corpus -------------------------------------------------------------------------------

def test_corpus_selection_is_fixed_and_split_by_file():
    lists = (text.TRAIN_FILES, text.VAL_FILES, text.TEST_FILES)
    assert [len(x) for x in lists] == [44, 3, 3]
    assert all(list(x) == sorted(x) for x in lists)
    assert len(set().union(*lists)) == 50
    info = text.corpus_info()
    assert [info[s]["files"] for s in ("train", "val", "test")] == [list(x) for x in lists]
    texts = text.corpus_texts()
    for split in ("train", "val", "test"):
        assert info[split]["chars"] == sum(len(t) + 1 for _, t in texts[split])
        assert all(0 < len(t) <= text.MAX_CHARS and t.endswith("\n") for _, t in texts[split])
    assert info["train"]["chars"] > 500_000 and min(info["val"]["chars"], info["test"]["chars"]) > 30_000


def test_corpus_is_identical_across_builds():
    first = text.corpus_info()
    splits = text.stdlib_splits()
    text.corpus_texts.cache_clear()
    text.stdlib_splits.cache_clear()
    assert text.corpus_info() == first
    again = text.stdlib_splits()
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(splits, again))


def test_corpus_windows_are_next_character_targets():
    train, val, test = text.stdlib_splits()
    info = text.corpus_info()
    for split, name in ((train, "train"), (val, "val"), (test, "test")):
        assert split.x.shape == (((info[name]["chars"] - 1) // text.SEQ_LEN), text.SEQ_LEN)
        assert torch.equal(split.y[:, :-1], split.x[:, 1:])
        assert torch.equal(split.y[:-1, -1], split.x[1:, 0])
    first_name, first_text = text.corpus_texts()["train"][0]
    assert text.decode(train.x[0]) == first_text[:text.SEQ_LEN]
    assert (train.x == text.UNK).float().mean() < 1e-3


def test_encode_maps_non_printable_to_unknown():
    ids = text.encode("a\tZ\n\u00e9\u4e2d~")
    assert ids.tolist()[:4] == [text.CHARS.index(c) for c in "a\tZ\n"]
    assert ids[4] == ids[5] == text.UNK and ids[6] == text.CHARS.index("~")
    assert text.decode(text.encode("def f(x):\n    return x\n")) == "def f(x):\n    return x\n"


def test_user_text_file(tmp_path):
    body = "".join(f"line {i}: the quick brown fox\n" for i in range(400))
    path = tmp_path / "corpus.txt"
    path.write_text(body)
    task = get_task(f"charlm-transformer:file={path},epochs=1")
    n = len(body)
    cuts = (int(n * 0.9), int(n * 0.95))
    pieces = (body[:cuts[0]], body[cuts[0]:cuts[1]], body[cuts[1]:])
    for split, piece in zip((task.train, task.val, task.test), pieces):
        assert len(split) == (len(piece) - 1) // text.SEQ_LEN
    assert text.decode(task.train.x[0]) == body[:text.SEQ_LEN]
    assert text.decode(task.val.x[0]) == pieces[1][:text.SEQ_LEN]
    assert str(path) in task.description


def test_user_text_file_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(MetalrError, match="nope.txt"):
        get_task(f"charlm-lstm:file={missing}")
    short = tmp_path / "short.txt"
    short.write_text("too short\n")
    with pytest.raises(MetalrError, match="short.txt"):
        get_task(f"charlm-lstm:file={short}")


# ---- torchvision tasks -------------------------------------------------------------------------

def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_has_torchvision(), reason="torchvision is installed")
@pytest.mark.parametrize("name", VISION)
def test_vision_tasks_say_how_to_install(name):
    with pytest.raises(MetalrError, match=r"pip install 'metalr\[vision\]'"):
        get_task(name)


def test_vision_missing_data_names_directory(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(MetalrError, match=re.escape(str(tmp_path))):
        get_task(f"cifar10-resnet18:data={tmp_path},download=false")


class _FakeCifar:
    def __init__(self, root, train=True, download=False):
        n = 5100 if train else 300
        rng = np.random.default_rng(0 if train else 1)
        self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]


class _FakeSvhn:
    def __init__(self, root, split="train", download=False):
        n = 5100 if split == "train" else 300
        self.data = np.random.default_rng(2).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        self.labels = np.arange(n) % 10


class _Missing:
    def __init__(self, root, **kwargs):
        raise RuntimeError("Dataset not found or corrupted.")


def test_vision_loading_with_a_stand_in_torchvision(monkeypatch, tmp_path):
    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(
        CIFAR10=_FakeCifar, CIFAR100=_Missing, SVHN=_FakeSvhn))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    try:
        task = get_task(f"cifar10-resnet18:data={tmp_path},download=false,noise=0.5")
        assert (len(task.train), len(task.val), len(task.test)) == (100, 5000, 300)
        assert torch.equal(torch.bincount(task.val.y), torch.full((10,), 500))
        assert task.test.index.min() == 5100 and task.train.x.dtype == torch.uint8
        raw = _FakeCifar(None).data
        row = task.train.index[0].item()
        assert torch.equal(task.train.x[0], torch.from_numpy(raw[row]).permute(2, 0, 1))
        assert task.train.noisy.sum() == 50 and task.val.clean_y is None
        x, y = next(task.batches(torch.Generator().manual_seed(0)))
        assert x.shape == (100, 3, 32, 32) and x.dtype == torch.uint8 and not torch.equal(x, task.train.x)
        assert task.augment.keywords == {"pad": 4, "flip": True}
        assert (task.optimizer, task.base_lr, task.batch_size, task.epochs) == ("sgd", 0.1, 128, 200)
        svhn = get_task(f"svhn-resnet18:data={tmp_path},download=0")
        assert len(svhn.train) == 100 and svhn.augment.keywords["flip"] is False
        with pytest.raises(MetalrError, match=re.escape(str(tmp_path))):
            get_task(f"cifar100-wrn28-10:data={tmp_path},download=false")
    finally:
        vision.splits.cache_clear()


def test_vision_models_match_published_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(vision.ResNet18(10)) == 11_173_962
    assert count(vision.WideResNet(28, 10, 10)) == 36_479_194
    assert count(vision.WideResNet(28, 10, 100)) == 36_536_884
    model = vision.make_model("cifar100", "resnet18").eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert model(x).shape == (2, 100)


def test_random_crop_flip():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(vision.random_crop_flip(x, gen, pad=0, flip=False), x)
    flipped = vision.random_crop_flip(x, gen, pad=0, flip=True)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    crop = vision.random_crop_flip(x, gen, pad=4, flip=False)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        windows = padded[i].unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 9, 9, 32, 32)
        hits = (windows == crop[i][:, None, None]).flatten(3).all(-1).all(0)
        assert hits.any()


def test_augment_applies_to_training_batches_only():
    base = get_task("digits-mlp")
    task = Task(name="aug", train=base.train, val=base.val, test=base.test,
                make_model=base.make_model, num_classes=10, batch_size=50,
                augment=lambda x, gen: x + 1.0)
    x, _ = next(task.batches(torch.Generator().manual_seed(0)))
    assert x.min() >= 1.0 and base.train.x.min() == 0.0
    xv, _ = next(task.val_batches(torch.Generator().manual_seed(0)))
    assert xv.min() == 0.0
