"""The gallery store: one SQLite file of enrolled fingerprint embeddings, per-model prototypes and calibrations.

The layout is in :mod:`modelprint.gallery.tables`, opening and its checks in :mod:`modelprint.gallery.opening`,
input checks in :mod:`modelprint.gallery.checks`, the calibration maths in :mod:`modelprint.gallery.calibration` and
export in :mod:`modelprint.gallery.export`. Every write
(enrolment, removal, prototype refresh and recalibration) runs in a single ``BEGIN IMMEDIATE`` transaction in WAL
mode, so a process killed mid-way leaves the gallery exactly as it was. Embeddings are compared by cosine
similarity, and only with embeddings of the same method name *and* version; a gallery holds one method (several
versions of it may coexist), with the JSON parameters that recreate it. Opening checks integrity (SQLite's
``quick_check``, the embeddings' checksums, prototypes and calibrations against the embeddings) and refuses a
damaged file. A gallery whose file or folder is not writable is opened read-only; writes are then refused naming the
reason. The store works on embeddings only; path-level enrolment and identification (which embed images) are
:class:`modelprint.api.Gallery`'s.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelprint import config
from modelprint.errors import GalleryError
from modelprint.gallery import spectra, tables
from modelprint.gallery.calibration import CHUNK, calibrate, group_stats
from modelprint.gallery.checks import SHA256, as_matrix, check_model_name, check_name, pair, verify
from modelprint.gallery.export import check_target, read_export, write_export
from modelprint.gallery.fallback import open_set_threshold
from modelprint.gallery.index import Indexes, IndexParams, content_token, nearest
from modelprint.gallery.integrity import row_checksum
from modelprint.gallery.opening import connect, fail
from modelprint.gallery.results import (
    UNKNOWN,
    Calibration,
    EnrollResult,
    Identification,
    ModelInfo,
    OpenSetThreshold,
    Verification,
)
from modelprint.gallery.search import NeighbourSearch
from modelprint.gallery.tables import F32, tag
from modelprint.scores import l2_normalize

__all__ = ["Gallery", "verify"]

# --------------------------------------------------------------------------------------------- gallery


class Gallery(NeighbourSearch):
    """An attribution gallery stored in one SQLite file.

    >>> with Gallery("g.sqlite") as g:                                  # doctest: +SKIP
    ...     g.add_embeddings("sdxl", vecs, hashes, paths, method="dct", version="1")
    ...     g.identify_embeddings(query, "dct", "1")[0].model

    **Calibration** (per ``(method, version)``, recomputed in the transaction of every write that changes the
    embeddings): the *unknown* and *verification* thresholds of :func:`~modelprint.gallery.calibration.calibrate`
    (see :attr:`Calibration.rule`). Without enough data for it (2 models, one of them with 2 images) the calibration
    is ``None``: :meth:`identify_embeddings` without an explicit threshold then uses the method's fallback threshold
    (:meth:`open_set_threshold`), or, if none was measured for it, returns the best match with ``threshold=None``
    and never ``"unknown"``; :meth:`verify_embeddings` returns ``same_model=None``.
    """

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False,
                 index_threshold: int | None = None, index_params: IndexParams | None = None) -> None:
        """Open (and with ``create``, create if missing) the gallery at ``path``; ``GalleryError`` otherwise.

        With ``read_only``, or when the file or its folder is not writable, the gallery is opened read-only.
        ``index_threshold`` (default ``MODELPRINT_INDEX_THRESHOLD``) is the number of rows from which searches use
        an ANN index (:mod:`modelprint.gallery.index`); ``index_params``, the index structure and settings of both
        kinds built here (default: :data:`~modelprint.gallery.index.DEFAULT_PARAMS`).
        """
        self._path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._conn, self._read_only = connect(self._path, create, read_only)  # why it cannot be written, or None
        threshold = config.index_threshold() if index_threshold is None else int(index_threshold)
        self._ann = Indexes(self._path, threshold, index_params)

    def _fail(self, reason: str) -> GalleryError:
        return fail(self._path, reason)

    # ---- transactions

    @contextlib.contextmanager
    def _txn(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._fail("gallery is closed")
            try:
                conn.execute(begin)
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._fail(f"database error ({exc})") from None

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception."""
        self._require_writable()
        return self._txn("BEGIN IMMEDIATE")

    def _require_writable(self) -> None:
        if self._read_only:
            raise self._fail(f"cannot write to the gallery: {self._read_only}")

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A read transaction, so multi-query reads see one consistent snapshot."""
        return self._txn("BEGIN")

    # ---- internal queries (call inside a transaction)

    def _require(self, conn: sqlite3.Connection, method: str, version: str) -> int:
        """The embedding dimension of ``(method, version)``; ``GalleryError`` if the gallery does not hold it."""
        dim = tables.embedding_dim(conn, method, version)
        if dim is not None:
            return dim
        held = tables.held(conn)
        if not held:
            raise self._fail("gallery is empty; enroll images first")
        tags = ", ".join(tag(m, v) for m, v in held)
        raise self._fail(f"gallery holds no {tag(method, version)} embeddings; it holds: {tags}")

    def _resolve_version(self, conn: sqlite3.Connection, method: str, version: str | None) -> str:
        if version is not None:
            return version
        held = tables.held(conn)
        versions = [v for m, v in held if m == method]
        if len(versions) == 1:
            return versions[0]
        if not held:
            raise self._fail("gallery is empty; enroll images first")
        if not versions:
            tags = ", ".join(tag(m, v) for m, v in held)
            raise self._fail(f"gallery holds no {method} embeddings; it holds: {tags}")
        raise self._fail(f"gallery holds several versions of {method} ({', '.join(versions)}); pass a version")

    def _refresh(self, conn: sqlite3.Connection, method: str, version: str) -> None:
        """Recompute prototypes and calibration of ``(method, version)`` inside the caller's transaction."""
        conn.execute("DELETE FROM prototypes WHERE method = ? AND version = ?", (method, version))
        ids, _names, x, starts, counts = tables.load_group(conn, method, version)
        if not ids:
            conn.execute("DELETE FROM calibrations WHERE method = ? AND version = ?", (method, version))
            tables.store_params(conn, method, version, None)
            return
        _sums, protos = group_stats(x, starts, counts)
        dim = x.shape[1]
        conn.executemany(
            "INSERT INTO prototypes (model_id, method, version, n, dim, vector) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (mid, method, version, int(c), dim, protos[i].astype(F32).tobytes())
                for i, (mid, c) in enumerate(zip(ids, counts, strict=True))
            ],
        )
        cal = calibrate(x, starts, counts, tables.target_tpr(conn))  # read now: another process may have changed it
        if cal is None:
            conn.execute("DELETE FROM calibrations WHERE method = ? AND version = ?", (method, version))
            return
        cols = ["method", "version", *cal.keys(), "created"]
        conn.execute(
            f"INSERT OR REPLACE INTO calibrations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            (method, version, *cal.values(), tables.now()),
        )

    # ---- public API

    @property
    def path(self) -> Path:
        return self._path

    @property
    def target_tpr(self) -> float:
        """Fraction of genuine (leave-one-out) scores the unknown threshold accepts (stored in ``meta``)."""
        with self._read() as conn:
            return tables.target_tpr(conn)

    @property
    def read_only(self) -> bool:
        """Whether the gallery was opened read-only (asked for, or its file or folder is not writable)."""
        return self._read_only is not None

    def add_model(self, name: str, notes: str = "") -> None:
        """Register a model with no embeddings; ``GalleryError`` if the name exists or is reserved."""
        name = check_model_name(name)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone():
                raise self._fail(f"model {name!r} already exists")
            tables.insert_model(conn, name, str(notes))

    def check_enroll(self, model: str, method: str, version: str) -> None:
        """Raise the ``GalleryError`` that enrolling ``model`` with ``method@version`` would raise, before any work.

        :meth:`add_embeddings` checks the same again inside its transaction.
        """
        check_model_name(model)
        check_name(method, "method name")
        check_name(version, "method version")
        self._require_writable()
        with self._read() as conn:
            refusal = self._enroll_refusal(conn, model, method, version, None)
        if refusal:
            raise self._fail(refusal)

    def _enroll_refusal(
        self, conn: sqlite3.Connection, model: str, method: str, version: str, dim: int | None
    ) -> str | None:
        """Why ``method@version`` embeddings (of dimension ``dim``, if known) cannot join this gallery, or ``None``."""
        others = [r[0] for r in conn.execute(
            "SELECT DISTINCT method FROM embeddings WHERE method != ? ORDER BY method", (method,)
        )]
        if others:
            return (
                f"gallery holds {', '.join(others)} embeddings; enrolling {model} with {method} would mix methods "
                f"(use {', '.join(others)}, or another gallery file for {method})"
            )
        held_dim = tables.embedding_dim(conn, method, version)
        if dim is not None and held_dim is not None and held_dim != dim:
            return (
                f"embeddings of {model} have dimension {dim}, but the gallery's {tag(method, version)} "
                f"embeddings have dimension {held_dim}"
            )
        return None

    def add_embeddings(
        self,
        model: str,
        vectors: np.ndarray,
        image_hashes: Sequence[str],
        sources: Sequence[str],
        method: str,
        version: str,
        notes: str = "",
        log_spectra: np.ndarray | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> EnrollResult:
        """Enroll ``(n, d)`` embeddings of ``model`` (created with ``notes`` if new) made by ``method@version``.

        ``image_hashes`` are the images' hex sha256; an image already enrolled for this model and method
        version is skipped and counted in ``skipped``. The dimension must match the gallery's other
        ``method@version`` embeddings, and the gallery must hold no other method. Creating the model, inserting
        the embeddings and refreshing prototypes and calibration are one transaction, so concurrent enrolments
        of one new model both add to it. ``log_spectra`` (``(n, side, side)``) join the model's mean spectrum.
``params`` (JSON data: the method's parameters) are stored with
        ``method@version`` in that transaction, so the method can be recreated from the gallery
        (:meth:`method_params`).
        """
        model = check_model_name(model)
        method = check_name(method, "method name")
        version = check_name(version, "method version")
        x = as_matrix(vectors, f"embeddings of {model}")
        n, dim = x.shape
        hashes = [str(h).lower() for h in image_hashes]
        srcs = [tables.storable(str(s)) for s in sources]
        if len(hashes) != n or len(srcs) != n:
            raise GalleryError(
                f"embeddings of {model}: {n} vectors but {len(hashes)} image hashes and {len(srcs)} sources"
            )
        for h in hashes:
            if not SHA256.fullmatch(h):
                raise GalleryError(f"embeddings of {model}: {h!r} is not a hex sha256 digest")
        blobs = [row.tobytes() for row in x.astype(F32, copy=False)]
        try:
            params = None if params is None else json.loads(json.dumps(dict(params)))
        except (TypeError, ValueError) as exc:
            raise GalleryError(f"parameters of {tag(method, version)} are not JSON data ({exc})") from None
        with self._write() as conn:
            refusal = self._enroll_refusal(conn, model, method, version, dim)
            if refusal:
                raise self._fail(refusal)
            found = conn.execute("SELECT id FROM models WHERE name = ?", (model,)).fetchone()
            model_id = int(found[0]) if found else tables.insert_model(conn, model, str(notes))
            elsewhere = tables.held_elsewhere(conn, model_id, hashes)
            if log_spectra is not None:
                spectra.add(conn, model_id, model, method, version, hashes, log_spectra)
            before, last_id = content_token(conn), conn.execute("SELECT max(id) FROM embeddings").fetchone()[0] or 0
            created = tables.now()
            cur = conn.executemany(
                "INSERT OR IGNORE INTO embeddings (model_id, method, version, image_sha256, source, dim, vector, "
                "created, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (model_id, method, version, hashes[i], srcs[i], dim, blobs[i], created,
                     row_checksum(model_id, method, version, hashes[i], dim, blobs[i]))
                    for i in range(n)
                ),
            )
            added = cur.rowcount  # rows this statement inserted (sqlite3_changes: not the triggers')
            if added:
                self._refresh(conn, method, version)
            if params is not None:
                tables.store_params(conn, method, version, params)
            after = content_token(conn)
        if added:
            self._ann.sync(self._read, method, version, (before, after, last_id))
        return EnrollResult(added=added, skipped=n - added, also_enrolled_as=elsewhere)

    def remove_model(self, name: str) -> None:
        """Delete a model with its embeddings and prototypes, and recalibrate the methods it had."""
        with self._write() as conn:
            row = conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._fail(f"no model named {name!r}")
            model_id = int(row[0])
            groups = conn.execute(
                "SELECT DISTINCT method, version FROM embeddings WHERE model_id = ?", (model_id,)
            ).fetchall()
            conn.execute("DELETE FROM embeddings WHERE model_id = ?", (model_id,))
            conn.execute("DELETE FROM prototypes WHERE model_id = ?", (model_id,))
            conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
            for method, version in groups:
                self._refresh(conn, method, version)
        for method, version in groups:
            self._ann.sync(self._read, method, version)

    def recalibrate(self, target_tpr: float | None = None) -> None:
        """Recompute all prototypes and calibrations, optionally with a new stored ``target_tpr``."""
        if target_tpr is not None and not 0.0 < float(target_tpr) <= 1.0:
            raise GalleryError(f"target_tpr must be in (0, 1], got {target_tpr}")
        with self._write() as conn:
            if target_tpr is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('target_tpr', ?)", (repr(float(target_tpr)),)
                )
            for method, version in tables.held(conn):
                self._refresh(conn, method, version)

    def models(self) -> list[ModelInfo]:
        """All models, by name, with their embedding and image counts and ``"method@version"`` tags."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT m.name, m.notes, m.created, count(e.id), count(DISTINCT e.image_sha256) FROM models m "
                "LEFT JOIN embeddings e ON e.model_id = m.id GROUP BY m.id ORDER BY m.name"
            ).fetchall()
            tags: dict[str, list[str]] = {}
            for name, method, version in conn.execute(
                "SELECT DISTINCT m.name, e.method, e.version FROM embeddings e JOIN models m ON m.id = e.model_id "
                "ORDER BY m.name, e.method, e.version"
            ):
                tags.setdefault(name, []).append(tag(method, version))
        return [
            ModelInfo(name, notes, created, int(n), tags.get(name, []), int(k)) for name, notes, created, n, k in rows
        ]

    def methods(self) -> list[tuple[str, str]]:
        """The ``(method, version)`` pairs the gallery holds embeddings for."""
        with self._read() as conn:
            return tables.held(conn)

    def method_params(self, method: str, version: str) -> dict[str, Any] | None:
        """The parameters stored with ``method@version`` at enrolment, or ``None`` (a gallery made before they
        were stored: the method's defaults)."""
        with self._read() as conn:
            return tables.load_params(conn, method, version)

    def prototypes(self, method: str, version: str) -> tuple[list[str], np.ndarray]:
        """Model names (sorted) and their ``(k, d)`` unit-norm prototypes for ``method@version``."""
        with self._read() as conn:
            self._require(conn, method, version)
            return tables.load_prototypes(conn, method, version)

    def calibration(self, method: str, version: str) -> Calibration | None:
        """The stored calibration of ``method@version``, or ``None`` if it has too little data (or none)."""
        with self._read() as conn:
            return tables.load_calibration(conn, method, version)

    def open_set_threshold(self, method: str, version: str) -> OpenSetThreshold:
        """The threshold :meth:`identify_embeddings` uses by default for ``method@version``, and its source."""
        with self._read() as conn:
            self._require(conn, method, version)
            return open_set_threshold(conn, method, version)

    def identify_embeddings(
        self,
        vectors: np.ndarray,
        method: str,
        version: str,
        top_k: int = 3,
        threshold: float | None = None,
    ) -> list[Identification]:
        """Attribute each row of ``vectors`` (``(n, d)`` or ``(d,)``) to the model with the most similar prototype.

        A row whose best similarity is below ``threshold`` (default: :meth:`open_set_threshold`, the calibrated
        unknown threshold or else the method's measured fallback) is attributed to ``"unknown"``. With neither,
        no row is ever unknown and ``threshold`` is ``None`` in the result.
        """
        if int(top_k) < 1:
            raise GalleryError(f"top_k must be at least 1, got {top_k}")
        if threshold is not None and not math.isfinite(float(threshold)):
            raise GalleryError(f"threshold must be a finite number, got {threshold}")
        q = l2_normalize(as_matrix(vectors, "query embeddings"), np.float32)
        with self._read() as conn:
            dim = self._require(conn, method, version)
            if q.shape[1] != dim:
                raise self._fail(
                    f"query embeddings have dimension {q.shape[1]}, but the gallery's {tag(method, version)} "
                    f"embeddings have dimension {dim}"
                )
            ann = self._ann.usable(conn, "prototypes", method, version)
            if ann is None:
                names, protos = tables.load_prototypes(conn, method, version)
            else:
                names, protos = ann.name_rows(conn), None
            thr = float(threshold) if threshold is not None else open_set_threshold(conn, method, version).value
        out: list[Identification] = []
        for s in range(0, len(q), CHUNK):
            with self._ann.lock:
                sims, order = ann.search(q[s : s + CHUNK], int(top_k)) if ann else nearest(q[s : s + CHUNK], protos,
                                                                                           int(top_k))
            for r in range(len(sims)):
                top = [(names[j], float(np.clip(v, -1.0, 1.0))) for v, j in zip(sims[r], order[r]) if j >= 0]
                best_name, best = top[0]
                model = UNKNOWN if thr is not None and best < thr else best_name
                out.append(Identification(model=model, similarity=best, top_k=top, threshold=thr))
        return out

    def verify_embeddings(
        self,
        a: np.ndarray,
        b: np.ndarray,
        method: str,
        version: str | None = None,
        threshold: float | None = None,
    ) -> Verification:
        """Cosine similarity of two single embeddings and whether it reaches ``threshold``.

        ``threshold`` defaults to the calibrated verification threshold of ``method@version``; ``version``
        may be omitted when the gallery holds exactly one version of ``method``. Without calibration and
        without ``threshold``, ``same_model`` is ``None``.
        """
        va, vb = pair(a, b, threshold)
        with self._read() as conn:
            version = self._resolve_version(conn, method, version)
            dim = self._require(conn, method, version)
            for what, v in (("a", va), ("b", vb)):
                if v.shape[1] != dim:
                    raise self._fail(
                        f"embedding {what} has dimension {v.shape[1]}, but the gallery's "
                        f"{tag(method, version)} embeddings have dimension {dim}"
                    )
            cal = tables.load_calibration(conn, method, version) if threshold is None else None
        return verify(va, vb, threshold if threshold is not None else (cal.verify_threshold if cal else None))

    def export(self, path: str | Path) -> None:
        """Write the whole gallery to ``path`` atomically: ``.json`` (vectors as lists) or ``.npz``; see
        :mod:`modelprint.gallery.export`."""
        target = Path(path)
        check_target(target)
        with self._read() as conn:
            content = read_export(conn, self._path)
        write_export(content, target)

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"Gallery({str(self._path)!r}, {state})"
