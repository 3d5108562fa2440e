"""The results store of ``metalr bench``: one SQLite file, one row per finished cell.

Why SQLite (in WAL mode) rather than an append-only JSONL file: every cell is written in one
transaction, and SQLite's journal makes that transaction atomic, so a process killed at any
moment (SIGKILL, power loss with ``synchronous=FULL``) leaves either the whole row or nothing,
never a torn record that a reader has to guess around. The cell's identity
``(task, policy, scale, seed)`` is the table's primary key, so a cell can be stored at most
once, whatever happens, and "which cells are finished?" is one indexed query. WAL lets
``metalr report`` read the file while a bench is still writing it. It is in the standard
library and the file is self-describing (``sqlite3 results.sqlite .schema``).

Only the parent process of a bench writes (workers return their records to it), so there is
never write contention. A cell whose run raised an exception is stored with status ``error``
so the report can show it, and is the one kind of row a later bench replaces: re-running the
same command retries failed cells and skips every other stored cell.

Each row holds the cell's whole record as JSON (see :mod:`metalr.bench.worker`): final
figures, the downsampled per-step LR and training loss, and the evaluation curves, so every
report can be rebuilt from the store alone.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from metalr.errors import MetalrError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    task TEXT NOT NULL,
    policy TEXT NOT NULL,
    scale REAL NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'diverged', 'error')),
    record TEXT NOT NULL,
    finished_at REAL NOT NULL,
    PRIMARY KEY (task, policy, scale, seed)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def cell_key(task: str, policy: str, scale: float, seed: int) -> tuple[str, str, float, int]:
    """The identity of a cell, as stored: (task spec, policy spec, base-LR scale, seed)."""
    return (task, policy, float(scale), int(seed))


_SQLITE_MAGIC = b"SQLite format 3\0"


class Store:
    """A results store at ``path`` (with ``create``, made if missing, with its parent directory).

    An existing file must be a metalr store: a file that is not SQLite (a 0-byte file included:
    SQLite would silently turn it into a database) is refused unread beyond its first 16 bytes,
    and one that is SQLite but lacks the store's tables is refused before anything is written.
    Without ``create`` nothing is ever written by opening (``metalr report`` only reads).
    """

    def __init__(self, path: str | Path, create: bool = True):
        from metalr.specs import read_regular

        self.path = Path(path)
        exists = self.path.exists()
        if not exists and not create:
            raise MetalrError(f"no results store at {self.path}")
        if exists and read_regular(self.path, "results store", 16, prefix=True) != _SQLITE_MAGIC:
            raise MetalrError(f"{self.path} is not a metalr results store (not an SQLite file); "
                              "name a store written by metalr bench, or a new path")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            tables = {name for (name,) in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if exists and not {"cells", "meta"} <= tables:
                self._db.close()
                raise MetalrError(f"{self.path} is an SQLite file but not a metalr results store "
                                  "(it has no cells and meta tables)")
            if create:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
            version = self.get_meta("schema_version")
        except sqlite3.DatabaseError as err:
            raise MetalrError(f"{self.path} is not a metalr results store ({err})") from None
        if version is None and create:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise MetalrError(f"{self.path} has store schema version {version}; this metalr "
                              f"reads version {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def put(self, record: dict) -> bool:
        """Store one cell's record in one transaction; True if it was written.

        A cell already stored as ``ok`` or ``diverged`` is kept as it is (False); an ``error``
        row is replaced.
        """
        key = cell_key(record["task"], record["policy"], record["scale"], record["seed"])
        text = json.dumps(record, separators=(",", ":"))
        cur = self._db.execute(
            "INSERT INTO cells (task, policy, scale, seed, status, record, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (task, policy, scale, seed) DO UPDATE SET "
            "status = excluded.status, record = excluded.record, "
            "finished_at = excluded.finished_at WHERE cells.status = 'error'",
            (*key, record["status"], text, time.time()))
        return cur.rowcount == 1

    def finished(self) -> set[tuple[str, str, float, int]]:
        """Keys of the cells that need no rerun (status ``ok`` or ``diverged``)."""
        rows = self._db.execute(
            "SELECT task, policy, scale, seed FROM cells WHERE status != 'error'")
        return {cell_key(*row) for row in rows}

    def records(self) -> list[dict]:
        """Every stored record, in a stable order (task, policy, scale, seed)."""
        rows = self._db.execute("SELECT record FROM cells ORDER BY task, policy, scale, seed")
        return [json.loads(text) for (text,) in rows]

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]

    def fingerprints(self) -> dict[str, set[str]]:
        """For each stored policy spec, the fingerprints (checkpoint hashes) its cells ran with."""
        out: dict[str, set[str]] = {}
        # Parsed here, not by SQLite's json_extract: a diverged cell's record holds NaN, which
        # Python's json writes and reads but SQLite calls malformed (it broke every later bench
        # on such a store).
        for policy, text in self._db.execute("SELECT policy, record FROM cells"):
            out.setdefault(policy, set()).add(json.loads(text).get("fingerprint") or "")
        return out

    def get_meta(self, name: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, name: str, value) -> None:
        self._db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) "
                         "DO UPDATE SET value = excluded.value", (name, json.dumps(value)))

    def integrity(self) -> str:
        """SQLite's own consistency check: ``"ok"`` for a sound file."""
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]
