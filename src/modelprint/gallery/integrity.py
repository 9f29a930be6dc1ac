"""Integrity of a gallery file: SQLite's own structural check and per-embedding checksums.

Each embedding row stores ``checksum``, a CRC-32 of the fields that decide what it answers (model id, method,
version, image sha256, dimension and vector bytes). The column was added after schema version 1 shipped, so it is
nullable: galleries made before it (and rows written by an older modelprint) have ``NULL`` there, and
:func:`add_checksums` fills them in whenever such a gallery is opened writable.
"""

from __future__ import annotations

import sqlite3
import zlib

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
