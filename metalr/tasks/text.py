"""Character-level language modelling on the Python standard library's own source code.

The corpus is a fixed selection of long-standing pure-Python modules of CPython's standard
library (``sysconfig.get_paths()['stdlib']``; a missing one is an error that names it), split
**by file** into train, validation and test, so no file contributes to two splits and the corpus
is the same on every machine with the same Python version. The rules, all fixed here:

- the files are named in :data:`TRAIN_FILES`, :data:`VAL_FILES` and :data:`TEST_FILES` (each
  list sorted); a split's text is its files in that order, each followed by a newline;
- each file is read as UTF-8 with universal newlines and cut to its whole lines within the first
  :data:`MAX_CHARS` characters;
- the vocabulary is ``string.printable`` (100 characters) plus one unknown token for anything
  else (ids 0-99 in ``string.printable`` order, 100 = unknown);
- a split's character stream is cut into non-overlapping windows of :data:`SEQ_LEN` inputs whose
  targets are the same window shifted by one character; a trailing remainder is dropped.

A patch release may edit a selected file; :func:`corpus_info` reports each split's character
count and SHA-256 so two machines can compare corpora. Instead of the standard library, a task
can read one text file the user names (``charlm-lstm:file=/path/to/text.txt``); its characters
are then split by position: the first 90% train, the next 5% validation, the last 5% test.

The metric is bits per character on the validation and test splits (lower is better).
"""

from __future__ import annotations

import functools
import hashlib
import os
import string
import sysconfig

import numpy as np
import torch
from torch import nn

from metalr.errors import MetalrError
from metalr.tasks.base import Split, Task, bits_per_token

CHARS = string.printable
UNK = len(CHARS)
VOCAB_SIZE = len(CHARS) + 1
SEQ_LEN = 64
MAX_CHARS = 20_000
FILE_FRACTIONS = (0.90, 0.05, 0.05)

TRAIN_FILES = (
    "argparse.py", "ast.py", "base64.py", "calendar.py", "cmd.py", "code.py",
    "configparser.py", "contextlib.py", "copy.py", "csv.py", "dataclasses.py", "enum.py",
    "fnmatch.py", "functools.py", "gettext.py", "glob.py", "graphlib.py", "heapq.py",
    "inspect.py", "ipaddress.py", "json/decoder.py", "json/encoder.py", "logging/__init__.py",
    "numbers.py", "operator.py", "optparse.py", "pickle.py", "platform.py", "queue.py",
    "random.py", "sched.py", "selectors.py", "shutil.py", "smtplib.py", "socketserver.py",
    "statistics.py", "tempfile.py", "threading.py", "timeit.py", "tokenize.py", "traceback.py",
    "typing.py", "uuid.py", "weakref.py",
)
VAL_FILES = ("bisect.py", "difflib.py", "textwrap.py")
TEST_FILES = ("colorsys.py", "fractions.py", "pprint.py")

_LOOKUP = np.full(128, UNK, dtype=np.int64)
_LOOKUP[[ord(c) for c in CHARS]] = np.arange(len(CHARS))


def encode(text: str) -> torch.Tensor:
    """Character ids of ``text``: ``string.printable`` positions, :data:`UNK` for the rest."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = np.full(len(codes), UNK, dtype=np.int64)
    ascii_ = codes < 128
    ids[ascii_] = _LOOKUP[codes[ascii_]]
    return torch.from_numpy(ids)


def decode(ids: torch.Tensor) -> str:
    return "".join(CHARS[i] if i < UNK else "\ufffd" for i in ids.tolist())


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def _read_capped(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if len(text) > MAX_CHARS:
        text = text[:text.rfind("\n", 0, MAX_CHARS) + 1]
    return text


@functools.lru_cache(maxsize=1)
def corpus_texts() -> dict[str, list[tuple[str, str]]]:
    """``{"train" | "val" | "test": [(file name, capped text), ...]}`` of the stdlib corpus."""
    root = stdlib_dir()
    out = {}
    for split, names in (("train", TRAIN_FILES), ("val", VAL_FILES), ("test", TEST_FILES)):
        missing = [n for n in names if not os.path.isfile(os.path.join(root, n))]
        if missing:
            raise MetalrError(
                f"the character-LM corpus needs these standard-library files, missing under "
                f"{root}: {', '.join(missing)}; name a text file instead (charlm-lstm:file=PATH)"
            )
        out[split] = [(n, _read_capped(os.path.join(root, n))) for n in names]
    return out


def corpus_info() -> dict[str, dict]:
    """Per split: its files, character count and SHA-256 of its text (to compare machines)."""
    info = {}
    for split, files in corpus_texts().items():
        text = "".join(t + "\n" for _, t in files)
        info[split] = {
            "files": [n for n, _ in files],
            "chars": len(text),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        }
    return info


def windows(ids: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping (inputs, next-character targets) windows of ``seq_len``, each (N, L)."""
    n = (len(ids) - 1) // seq_len
    x = ids[:n * seq_len].view(n, seq_len)
    y = ids[1:n * seq_len + 1].view(n, seq_len)
    return x, y


def _splits_from_streams(streams: list[torch.Tensor], seq_len: int) -> tuple[Split, Split, Split]:
    out, offset = [], 0
    for ids in streams:
        x, y = windows(ids, seq_len)
        out.append(Split(x, y, torch.arange(offset, offset + len(x))))
        offset += len(x)
    return tuple(out)


@functools.lru_cache(maxsize=4)
def stdlib_splits(seq_len: int = SEQ_LEN) -> tuple[Split, Split, Split]:
    """(train, val, test) windows of the standard-library corpus; ``index`` numbers windows."""
    texts = corpus_texts()
    streams = [encode("".join(t + "\n" for _, t in texts[s])) for s in ("train", "val", "test")]
    return _splits_from_streams(streams, seq_len)


def file_splits(path: str, seq_len: int = SEQ_LEN) -> tuple[Split, Split, Split]:
    """(train, val, test) windows of one user text file, split 90 / 5 / 5 % by position."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise MetalrError(f"text file {path!r} does not exist or is not a regular file")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            ids = encode(f.read())
    except OSError as err:
        raise MetalrError(f"cannot read text file {path!r}: {err}") from None
    need = int(np.ceil(2 * (seq_len + 1) / FILE_FRACTIONS[1]))
    if len(ids) < need:
        raise MetalrError(
            f"text file {path!r} has {len(ids)} characters; at least {need} are needed so the "
            f"validation and test parts ({FILE_FRACTIONS[1]:.0%} each) hold two windows of {seq_len}"
        )
    cut1 = int(len(ids) * FILE_FRACTIONS[0])
    cut2 = int(len(ids) * (FILE_FRACTIONS[0] + FILE_FRACTIONS[1]))
    return _splits_from_streams([ids[:cut1], ids[cut1:cut2], ids[cut2:]], seq_len)


class CharLSTM(nn.Module):
    """Embedding -> one-layer LSTM -> linear read-out over the vocabulary at every position."""

    def __init__(self, embed: int = 32, hidden: int = 256):
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, embed)
        self.rnn = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB_SIZE)

    def forward(self, x):
        h, _ = self.rnn(self.embed(x))
        return self.head(h)


class Block(nn.Module):
    """Pre-norm transformer block: causal multi-head self-attention, then a 4x GELU MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        b, length, width = x.shape
        q, k, v = (self.qkv(self.norm1(x)).view(b, length, 3, self.heads, width // self.heads)
                   .permute(2, 0, 3, 1, 4))
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, length, width))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """A small causal (decoder-only) pre-norm transformer with learned position embeddings."""

    def __init__(self, width: int = 64, layers: int = 2, heads: int = 4, max_len: int = SEQ_LEN):
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB_SIZE)

    def forward(self, x):
        h = self.blocks(self.embed(x) + self.pos[:x.shape[1]])
        return self.head(self.norm(h))


def _charlm_task(name: str, model, description: str, file: str | None, **recipe) -> Task:
    if file is None:
        train, val, test = stdlib_splits()
        source = "Python stdlib source"
    else:
        train, val, test = file_splits(file)
        source = f"text file {file}"
    return Task(
        name=name, train=train, val=val, test=test, make_model=model, num_classes=VOCAB_SIZE,
        metric=bits_per_token, metric_name="bits/char", higher_is_better=False,
        classification=False, description=f"{description} on {source}", **recipe,
    )


def lstm_task(file: str | None = None) -> Task:
    return _charlm_task(
        "charlm-lstm", CharLSTM, "character LM, 1-layer LSTM (256 units)", file,
        optimizer="adam", base_lr=1e-2, weight_decay=0.0, batch_size=32, epochs=2,
    )


def transformer_task(file: str | None = None) -> Task:
    return _charlm_task(
        "charlm-transformer", CharTransformer, "character LM, 2-layer causal transformer (width 64)",
        file, optimizer="adamw", base_lr=1e-2, weight_decay=0.01, batch_size=32, epochs=3,
    )
