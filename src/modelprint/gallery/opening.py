"""Opening a gallery file: file checks, read-only mode, schema creation, version and integrity checks.

A gallery whose file or folder is not writable is opened read-only (``immutable`` when no ``-wal`` file exists, so
that nothing is created beside it). Creating the schema is checked under the write lock, as another process may be
creating the same gallery; a gallery made by an older modelprint gains its embedding checksums when opened
writable. Every failure is one :class:`~modelprint.errors.GalleryError` line naming the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from modelprint.errors import GalleryError
from modelprint.gallery.calibration import DEFAULT_TARGET_TPR
from modelprint.gallery.index import install_token
from modelprint.gallery.integrity import add_missing_checksums, problem
from modelprint.gallery.tables import (
    APPLICATION,
    APPLICATION_ID,
    SCHEMA,
    SCHEMA_VERSION,
    has_table,
    immediate_transaction,
    now,
)

TIMEOUT = 30.0
"""Seconds to wait for another process's write."""
_SQLITE_MAGIC = b"SQLite format 3\x00"


def fail(path: Path, reason: str) -> GalleryError:
    """The one-line error ``"<path>: <reason>"``."""
    return GalleryError(f"{path}: {reason}")


def damaged(path: Path, detail: str) -> GalleryError:
    return fail(path, f"gallery is damaged ({detail}); restore it from a backup or enroll its models anew")


def connect(path: Path, create: bool, read_only: bool) -> tuple[sqlite3.Connection, str | None]:
    """An open, checked connection to the gallery at ``path`` and why it cannot be written (``None``: writable).

    With ``create``, a missing gallery is created (and its folder); with ``read_only``, it is opened read-only.
    """
    if path.is_dir():
        raise fail(path, "is a directory, not a gallery file")
    exists = path.exists()
    if not exists and (read_only or not create):
        raise fail(path, "no such gallery file")
    if exists and path.stat().st_size > 0:
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise fail(path, f"cannot read gallery ({exc.strerror or exc})") from None
        if head != _SQLITE_MAGIC:
            raise fail(path, "not a modelprint gallery (not an SQLite database)")
    blocker = "opened read-only" if read_only else _write_blocker(path, exists)
    if not exists:
        if blocker:
            raise fail(path, f"cannot create the gallery: {blocker}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(path, f"cannot create the gallery's folder ({exc.strerror or exc})") from None
    try:
        if blocker:
            conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(str(path), timeout=TIMEOUT, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _sqlite_failure(path, blocker, exc) from None
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        if not has_table(conn, "meta"):
            _initialise(path, conn, create, blocker)
        _check_meta(path, conn)
        with snapshot(conn):
            found = problem(conn)
        if found:
            raise damaged(path, found)
        if not blocker:
            add_missing_checksums(conn)
            install_token(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise _sqlite_failure(path, blocker, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn, blocker


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction on ``conn`` (so several queries see one state), always ended."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


def _check_meta(path: Path, conn: sqlite3.Connection) -> None:
    """That ``meta`` names a modelprint gallery of this schema version with a readable ``target_tpr``."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("application") != APPLICATION:
        raise fail(path, f"not a modelprint gallery (meta application is {meta.get('application')!r})")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise fail(path, "not a modelprint gallery (meta schema_version missing or malformed)") from None
    if version > SCHEMA_VERSION:
        raise fail(
            path,
            f"gallery schema version {version} is newer than this modelprint supports ({SCHEMA_VERSION}); "
            "upgrade modelprint",
        )
    if version < SCHEMA_VERSION:
        raise fail(path, f"gallery schema version {version} is not supported (expected {SCHEMA_VERSION})")
    try:
        float(meta.get("target_tpr", DEFAULT_TARGET_TPR))
    except ValueError:
        raise fail(path, "meta target_tpr is malformed") from None


def _unwritable(path: Path, what: str) -> str:
    try:
        read_only_fs = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only_fs = False
    return f"{what} {path} is " + ("on a read-only file system" if read_only_fs else "not writable (permission denied)")


def _write_blocker(path: Path, exists: bool) -> str | None:
    """Why the gallery file ``path`` (existing, or to be created) cannot be written, or ``None``.

    SQLite in WAL mode writes ``-wal`` and ``-shm`` files beside the gallery, so its folder must be writable too.
    """
    if exists and not os.access(path, os.W_OK):
        return _unwritable(path, "the gallery file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # a gallery in a new folder: its nearest ancestor
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return _unwritable(folder, "its folder")
    return None


def _read_only_uri(path: Path) -> str:
    """SQLite URI opening ``path`` read-only; ``immutable`` (nothing created beside it) unless a ``-wal`` exists."""
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
    return uri if Path(f"{path}-wal").exists() else uri + "&immutable=1"


def _sqlite_failure(path: Path, blocker: str | None, exc: sqlite3.Error) -> GalleryError:
    """A one-line error naming the real cause of an SQLite failure while opening."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name.startswith("SQLITE_CORRUPT"):
        return damaged(path, str(exc))
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_BUSY",
                        "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_AUTH")):
        why = f"; {blocker}" if blocker else ""
        if blocker and Path(f"{path}-wal").exists():
            why += f", and its {path.name}-wal file (left by a writer) cannot be read without writing"
        return fail(path, f"cannot open gallery ({exc}{why})")
    return fail(path, f"not a modelprint gallery ({exc})")


def _initialise(path: Path, conn: sqlite3.Connection, create: bool, blocker: str | None) -> None:
    """Create the schema in a database without a ``meta`` table, if it is empty (checked under the write lock,
    as another process may be creating the same gallery)."""
    if not create or blocker:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise fail(path, "not a modelprint gallery (SQLite database without a meta table)")
        if not create:
            raise fail(path, "not a modelprint gallery (empty database)")
        raise fail(path, f"cannot create the gallery in this empty file: {blocker}")
    with immediate_transaction(conn):
        if not has_table(conn, "meta"):  # another process may have initialised it meanwhile
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise fail(path, "not a modelprint gallery (SQLite database without a meta table)")
            for stmt in SCHEMA:
                conn.execute(stmt)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("application", APPLICATION),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("target_tpr", repr(DEFAULT_TARGET_TPR)),
                    ("created", now()),
                ],
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    # Switching to WAL does not wait for a busy database (another process creating it at the same moment).
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY")
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
