"""The gallery's SQLite layout (schema version :data:`SCHEMA_VERSION`) and the queries that read it.

* ``meta(key, value)`` — ``application = "modelprint-gallery"``, ``schema_version``, ``target_tpr``, and
  ``params:<method>@<version>``: the JSON parameters that recreate the method (galleries made before they were
  stored have none: their methods reopen with default parameters);
* ``models(id, name UNIQUE, notes, created)``;
* ``embeddings(model_id, method, version, image_sha256, source, dim, vector BLOB <f4, created, checksum)``, unique
  on ``(model_id, method, version, image_sha256)``; ``checksum`` (see :mod:`modelprint.gallery.integrity`) is
  nullable, as galleries made before it have none until they are opened writable;
* ``prototypes(model_id, method, version, n, dim, vector)`` — the L2-normalised mean of the model's
  L2-normalised embeddings;
* ``calibrations(method, version, unknown_threshold, verify_threshold, rule, sample sizes, ...)``.

The functions below run inside the caller's transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from modelprint.gallery.calibration import DEFAULT_TARGET_TPR
from modelprint.gallery.results import Calibration
from modelprint.scores import l2_normalize

SCHEMA_VERSION = 1
APPLICATION = "modelprint-gallery"
APPLICATION_ID = 0x4D505247  # "MPRG", stored in the SQLite header too
F32 = np.dtype("<f4")

SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        notes TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL)""",
    """CREATE TABLE embeddings (
        id INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        method TEXT NOT NULL,
        version TEXT NOT NULL,
        image_sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        created TEXT NOT NULL,
        checksum INTEGER,
        UNIQUE (model_id, method, version, image_sha256))""",
    "CREATE INDEX embeddings_by_method ON embeddings (method, version, model_id)",
    """CREATE TABLE prototypes (
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        method TEXT NOT NULL,
        version TEXT NOT NULL,
        n INTEGER NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (model_id, method, version))""",
    """CREATE TABLE calibrations (
        method TEXT NOT NULL,
        version TEXT NOT NULL,
        unknown_threshold REAL NOT NULL,
        verify_threshold REAL NOT NULL,
        target_tpr REAL NOT NULL,
        rule TEXT NOT NULL,
        n_models INTEGER NOT NULL,
        n_embeddings INTEGER NOT NULL,
        n_genuine INTEGER NOT NULL,
        n_impostor INTEGER NOT NULL,
        n_same_pairs INTEGER NOT NULL,
        n_diff_pairs INTEGER NOT NULL,
        genuine_accept_rate REAL NOT NULL,
        impostor_reject_rate REAL NOT NULL,
        eer REAL NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY (method, version))""",
)


def storable(text: str) -> str:
    """``text`` as valid UTF-8 for SQLite: bytes of a non-UTF-8 file name (kept by ``os.fsdecode`` as surrogates)
    are stored as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def now() -> str:
    """The current UTC time as stored in ``created`` columns."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def tag(method: str, version: str) -> str:
    """``"method@version"``, the name of one method version."""
    return f"{method}@{version}"


@contextlib.contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A ``BEGIN IMMEDIATE`` transaction on ``conn``: committed when the block ends, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None


def target_tpr(conn: sqlite3.Connection) -> float:
    """The stored share of genuine scores the unknown threshold accepts (meta ``target_tpr``)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'target_tpr'").fetchone()
    return float(row[0]) if row else DEFAULT_TARGET_TPR


def held(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """The ``(method, version)`` pairs with embeddings, sorted."""
    rows = conn.execute("SELECT DISTINCT method, version FROM embeddings ORDER BY method, version").fetchall()
    return [(m, v) for m, v in rows]


def params_key(method: str, version: str) -> str:
    """The ``meta`` key of the parameters of ``method@version``."""
    return f"params:{tag(method, version)}"


def load_params(conn: sqlite3.Connection, method: str, version: str) -> dict[str, Any] | None:
    """The stored parameters of ``method@version``, or ``None`` (none stored, or not a JSON object)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (params_key(method, version),)).fetchone()
    if row is None:
        return None
    try:
        params = json.loads(row[0])
    except ValueError:
        return None
    return params if isinstance(params, dict) else None


def store_params(conn: sqlite3.Connection, method: str, version: str, params: Mapping[str, Any] | None) -> None:
    """Store (or, with ``None``, delete) the parameters of ``method@version``."""
    key = params_key(method, version)
    if params is None:
        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(dict(params))))


def embedding_dim(conn: sqlite3.Connection, method: str, version: str) -> int | None:
    """The dimension of the ``method@version`` embeddings, or ``None`` if there are none."""
    row = conn.execute(
        "SELECT dim FROM embeddings WHERE method = ? AND version = ? LIMIT 1", (method, version)
    ).fetchone()
    return None if row is None else int(row[0])


def load_group(
    conn: sqlite3.Connection, method: str, version: str
) -> tuple[list[int], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Normalised embeddings of ``(method, version)`` grouped by model name: ids, names, x, starts, counts.

    ``ValueError`` if a stored vector has the wrong length.
    """
    rows = conn.execute(
        "SELECT e.model_id, m.name, e.dim, e.vector FROM embeddings e JOIN models m ON m.id = e.model_id "
        "WHERE e.method = ? AND e.version = ? ORDER BY m.name, e.id",
        (method, version),
    ).fetchall()
    if not rows:
        return [], [], np.empty((0, 0), np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
    dim = int(rows[0][2])
    x = np.frombuffer(b"".join(r[3] for r in rows), dtype=F32).reshape(len(rows), dim)
    x = l2_normalize(x, np.float32)
    model_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    change = np.flatnonzero(np.diff(model_ids)) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    counts = np.diff(np.concatenate([starts, [len(rows)]])).astype(np.int64)
    ids = [int(model_ids[s]) for s in starts]
    names = [rows[s][1] for s in starts]
    return ids, names, x, starts, counts


def load_prototypes(conn: sqlite3.Connection, method: str, version: str) -> tuple[list[str], np.ndarray]:
    """Model names (sorted) and their stored ``(k, d)`` prototypes of ``method@version``."""
    rows = conn.execute(
        "SELECT m.name, p.dim, p.vector FROM prototypes p JOIN models m ON m.id = p.model_id "
        "WHERE p.method = ? AND p.version = ? ORDER BY m.name",
        (method, version),
    ).fetchall()
    if not rows:
        return [], np.empty((0, 0), np.float32)
    dim = int(rows[0][1])
    protos = np.frombuffer(b"".join(r[2] for r in rows), dtype=F32).reshape(len(rows), dim)
    return [r[0] for r in rows], protos.astype(np.float32)


def prototype_sizes(conn: sqlite3.Connection, method: str, version: str) -> dict[str, int]:
    """How many embeddings each model's ``method@version`` prototype averages."""
    return dict(
        conn.execute(
            "SELECT m.name, p.n FROM prototypes p JOIN models m ON m.id = p.model_id "
            "WHERE p.method = ? AND p.version = ?",
            (method, version),
        ).fetchall()
    )


def load_calibration(conn: sqlite3.Connection, method: str, version: str) -> Calibration | None:
    """The stored calibration of ``method@version``, or ``None``."""
    cur = conn.execute("SELECT * FROM calibrations WHERE method = ? AND version = ?", (method, version))
    row = cur.fetchone()
    if row is None:
        return None
    return Calibration(**{d[0]: v for d, v in zip(cur.description, row, strict=True)})


def insert_model(conn: sqlite3.Connection, name: str, notes: str) -> int:
    """Add a model row; its id."""
    cur = conn.execute("INSERT INTO models (name, notes, created) VALUES (?, ?, ?)", (name, notes, now()))
    return int(cur.lastrowid)  # type: ignore[arg-type]


def held_elsewhere(conn: sqlite3.Connection, model_id: int, hashes: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """``(model, n)`` for the other models that already hold ``n`` of these images (by sha256, any method)."""
    counts: dict[str, int] = {}
    unique = sorted(set(hashes))
    for s in range(0, len(unique), 500):
        chunk = unique[s : s + 500]
        for name, k in conn.execute(
            "SELECT m.name, count(DISTINCT e.image_sha256) FROM embeddings e JOIN models m ON m.id = e.model_id "
            f"WHERE e.model_id != ? AND e.image_sha256 IN ({', '.join('?' * len(chunk))}) GROUP BY m.name",
            (model_id, *chunk),
        ):
            counts[name] = counts.get(name, 0) + int(k)
    return tuple(sorted(counts.items()))
