"""Integrity of a gallery file: SQLite's own structural check, per-embedding checksums, and stored prototypes and
calibrations checked against the embeddings they were computed from.

Each embedding row stores ``checksum``, a CRC-32 of the fields that decide what it answers (model id, method,
version, image sha256, dimension and vector bytes). The column was added after schema version 1 shipped, so it is
nullable: galleries made before it (and rows written by an older modelprint) have ``NULL`` there, and
:func:`add_checksums` fills them in whenever such a gallery is opened writable.
"""

from __future__ import annotations

import sqlite3
import zlib

import numpy as np

from modelprint.gallery.calibration import group_stats
from modelprint.gallery.tables import (
    held,
    immediate_transaction,
    load_calibration,
    load_group,
    load_prototypes,
    tag,
)

_BATCH = 4096


def row_checksum(model_id: int, method: str, version: str, image_sha256: str, dim: int, vector: bytes) -> int:
    """CRC-32 of one embedding row's identifying fields and vector bytes."""
    head = f"{int(model_id)}\0{method}\0{version}\0{image_sha256}\0{int(dim)}\0".encode()
    return zlib.crc32(vector, zlib.crc32(head))


def has_checksums(conn: sqlite3.Connection) -> bool:
    """Whether the ``embeddings`` table has the ``checksum`` column."""
    return any(row[1] == "checksum" for row in conn.execute("PRAGMA table_info(embeddings)"))


def add_checksums(conn: sqlite3.Connection) -> None:
    """Add the ``checksum`` column if missing and fill every ``NULL`` checksum (inside the caller's transaction)."""
    if not has_checksums(conn):
        conn.execute("ALTER TABLE embeddings ADD COLUMN checksum INTEGER")
    cur = conn.execute(
        "SELECT id, model_id, method, version, image_sha256, dim, vector FROM embeddings WHERE checksum IS NULL"
    )
    while rows := cur.fetchmany(_BATCH):
        conn.executemany(
            "UPDATE embeddings SET checksum = ? WHERE id = ?", [(row_checksum(*r[1:]), r[0]) for r in rows]
        )


def structure_problem(conn: sqlite3.Connection) -> str | None:
    """SQLite's ``quick_check`` findings on one line (the first 2), or ``None`` if it reports ``ok``."""
    rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
    if rows == ["ok"]:
        return None
    found = [" ".join(line.split()) for r in rows for line in r.splitlines() if line.strip() and "***" not in line]
    more = f" and {len(found) - 2} more" if len(found) > 2 else ""
    return "SQLite's quick_check finds: " + "; ".join(found[:2]) + more


def checksum_problem(conn: sqlite3.Connection) -> str | None:
    """How many embedding rows fail their checksum or have a vector of the wrong length, or ``None``."""
    if not has_checksums(conn):
        return None
    bad, total, first = 0, 0, ""
    cur = conn.execute("SELECT model_id, method, version, image_sha256, dim, vector, checksum FROM embeddings")
    while rows := cur.fetchmany(_BATCH):
        for model_id, method, version, sha, dim, vector, checksum in rows:
            total += 1
            if not isinstance(vector, bytes) or len(vector) != 4 * int(dim):
                ok = False
            else:
                ok = checksum is None or row_checksum(model_id, method, version, sha, dim, vector) == checksum
            if not ok:
                bad += 1
                first = first or f"image {str(sha)[:12]}… of {method}"
    if not bad:
        return None
    return f"{bad} of {total} stored embeddings fail their checksum (first: {first})"


def derived_problem(conn: sqlite3.Connection) -> str | None:
    """Whether stored prototypes and calibrations disagree with the embeddings they were computed from."""
    for method, version in held(conn):
        name = tag(method, version)
        try:
            _ids, names, x, starts, counts = load_group(conn, method, version)
            pnames, stored = load_prototypes(conn, method, version)
        except ValueError:
            return f"a stored vector of {name} has the wrong length"
        _sums, protos = group_stats(x, starts, counts)
        if pnames != names or stored.shape != protos.shape or not np.allclose(stored, protos, atol=1e-4):
            return f"the stored prototypes of {name} do not match its embeddings"
        cal = load_calibration(conn, method, version)
        thresholds = (cal.unknown_threshold, cal.verify_threshold) if cal else ()
        if cal and (
            not all(isinstance(t, float) and abs(t) <= 1.001 for t in thresholds)
            or (cal.n_models, cal.n_embeddings) != (len(names), len(x))
        ):
            return f"the stored calibration of {name} does not match its embeddings"
    return None


def problem(conn: sqlite3.Connection) -> str | None:
    """The first integrity problem of the gallery (structure, checksums, derived tables), or ``None``."""
    return structure_problem(conn) or checksum_problem(conn) or derived_problem(conn)


def add_missing_checksums(conn: sqlite3.Connection) -> None:
    """Give a gallery made by an older modelprint its embedding checksums, in one transaction of its own."""
    if has_checksums(conn) and not conn.execute("SELECT 1 FROM embeddings WHERE checksum IS NULL").fetchone():
        return
    with immediate_transaction(conn):
        add_checksums(conn)
