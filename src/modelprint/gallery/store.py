"""The gallery: an embedded SQLite file of enrolled fingerprint embeddings, per-model prototypes and calibrations.

Layout (schema version :data:`SCHEMA_VERSION`):

* ``meta(key, value)`` — ``application = "modelprint-gallery"``, ``schema_version``, ``target_tpr``;
* ``models(id, name UNIQUE, notes, created)``;
* ``embeddings(model_id, method, version, image_sha256, source, dim, vector BLOB <f4, created, checksum)``, unique
  on ``(model_id, method, version, image_sha256)``; ``checksum`` (see :mod:`modelprint.gallery.integrity`) is
  nullable, as galleries made before it have none until they are opened writable;
* ``prototypes(model_id, method, version, n, dim, vector)`` — the L2-normalised mean of the model's
  L2-normalised embeddings;
* ``calibrations(method, version, unknown_threshold, verify_threshold, rule, sample sizes, ...)``.

Every write (enrolment, removal, prototype refresh and recalibration) runs in a single ``BEGIN IMMEDIATE``
transaction in WAL mode, so a process killed mid-way leaves the gallery exactly as it was. Embeddings are
compared by cosine similarity, and only with embeddings of the same method name *and* version; a gallery holds
one method (several versions of it may coexist). Opening checks integrity (SQLite's ``quick_check``, the
embeddings' checksums, prototypes and calibrations against the embeddings) and refuses a damaged file. A gallery
whose file or folder is not writable is opened read-only (``immutable`` when no ``-wal`` file exists, so that
nothing is created beside it); writes are then refused naming the reason.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.atomic import atomic_open
from modelprint.errors import GalleryError
from modelprint.gallery.fallback import fallback_threshold
from modelprint.gallery.integrity import add_checksums, checksum_problem, has_checksums, row_checksum, structure_problem

SCHEMA_VERSION = 1
APPLICATION = "modelprint-gallery"
UNKNOWN = "unknown"
DEFAULT_TARGET_TPR = 0.95
MAX_PAIRS = 100_000
"""At most this many same-model (and as many different-model) pairs feed the verification threshold."""

_APPLICATION_ID = 0x4D505247  # "MPRG", stored in the SQLite header too
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_F32 = np.dtype("<f4")
_CHUNK = 8192
_TIMEOUT = 30.0  # seconds to wait for another process's write

_SCHEMA = (
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


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EnrollResult:
    """Outcome of :meth:`Gallery.add_embeddings`: rows inserted, rows skipped as already enrolled, and
    ``(other model, n images)`` for images of the batch that other models already hold (same sha256)."""

    added: int
    skipped: int
    also_enrolled_as: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """One enrolled model; ``methods`` lists the ``"name@version"`` tags it has embeddings for, ``n_images`` counts
    its distinct images (an image embedded by two method versions is one image and two embeddings)."""

    name: str
    notes: str
    created: str
    n_embeddings: int
    methods: list[str]
    n_images: int


@dataclass(frozen=True)
class Calibration:
    """Thresholds of one ``(method, version)``, how they were computed (``rule``) and on how much data.

    ``genuine_accept_rate`` / ``impostor_reject_rate`` are measured at ``unknown_threshold`` on the
    leave-one-out genuine and best-other-model impostor scores; ``eer`` is the equal error rate at
    ``verify_threshold``.
    """

    method: str
    version: str
    unknown_threshold: float
    verify_threshold: float
    target_tpr: float
    rule: str
    n_models: int
    n_embeddings: int
    n_genuine: int
    n_impostor: int
    n_same_pairs: int
    n_diff_pairs: int
    genuine_accept_rate: float
    impostor_reject_rate: float
    eer: float
    created: str


@dataclass(frozen=True)
class Identification:
    """Attribution of one embedding.

    ``model`` is the best-matching model, or :data:`UNKNOWN` if ``similarity`` (the best cosine similarity)
    is below ``threshold``; ``threshold`` is ``None`` when no threshold applied. ``top_k`` lists
    ``(model, similarity)`` pairs, best first.
    """

    model: str
    similarity: float
    top_k: list[tuple[str, float]]
    threshold: float | None

    @property
    def is_unknown(self) -> bool:
        return self.model == UNKNOWN


@dataclass(frozen=True)
class OpenSetThreshold:
    """The similarity below which identification answers "unknown", where it comes from, and that in one line.

    ``source`` is ``"calibrated"`` (on the gallery's own models), ``"fallback"`` (the gallery cannot calibrate;
    measured for the method on held-out classes and shipped with its weights, see
    :mod:`modelprint.gallery.fallback`) or ``"none"`` (neither: ``value`` is ``None``, "unknown" is never answered).
    """

    value: float | None
    source: str
    detail: str

    @property
    def calibrated(self) -> bool:
        return self.source == "calibrated"


@dataclass(frozen=True)
class Verification:
    """Whether two embeddings come from the same model: ``same_model`` is ``None`` if no threshold applied."""

    similarity: float
    same_model: bool | None
    threshold: float | None


# --------------------------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _tag(method: str, version: str) -> str:
    return f"{method}@{version}"


def _as_matrix(vectors: Any, what: str) -> np.ndarray:
    """``vectors`` as a C-contiguous ``(n, d)`` float32 array of finite, non-zero rows (not normalised)."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"{what}: not a numeric array ({exc})") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise GalleryError(f"{what}: expected an (n, d) array of embeddings, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(arr), axis=1))[0])
        raise GalleryError(f"{what}: embedding {bad} contains NaN or infinity")
    norms = np.linalg.norm(arr, axis=1)
    if arr.shape[0] and np.any(norms == 0):
        raise GalleryError(f"{what}: embedding {int(np.flatnonzero(norms == 0)[0])} is all zeros")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _normalise(arr: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return (arr / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32, copy=False)


def _storable(text: str) -> str:
    """``text`` as valid UTF-8 for SQLite: bytes of a non-UTF-8 file name (kept by ``os.fsdecode`` as surrogates)
    are stored as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise GalleryError(f"{what} must be a non-empty string, got {name!r}")
    if name != name.strip() or any(ord(c) < 32 for c in name):
        raise GalleryError(f"{what} {name!r} has leading/trailing spaces or control characters")
    return name


def _check_model_name(name: Any) -> str:
    name = _check_name(name, "model name")
    if name == UNKNOWN:
        raise GalleryError(f"model name {UNKNOWN!r} is reserved for open-set rejections")
    return name


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


def _rowdot(x: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    out = np.empty(len(ii), dtype=np.float64)
    for s in range(0, len(ii), _CHUNK):
        out[s : s + _CHUNK] = np.einsum("ij,ij->i", x[ii[s : s + _CHUNK]], x[jj[s : s + _CHUNK]])
    return out


def _pair_scores(
    x: np.ndarray, starts: np.ndarray, counts: np.ndarray, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Cosine scores of same-model and different-model pairs of the (normalised, grouped) rows of ``x``.

    Exhaustive when a kind has at most ``max_pairs`` pairs, otherwise ``max_pairs`` pairs drawn uniformly
    (with replacement) from that kind with ``rng``. Returns ``(same, diff, sampled)``.
    """
    n = len(x)
    same_total = int(np.sum(counts * (counts - 1) // 2))
    diff_total = n * (n - 1) // 2 - same_total
    sampled = False
    if same_total <= max_pairs:
        parts = []
        for s, c in zip(starts, counts, strict=True):
            if c >= 2:
                g = x[s : s + c]
                parts.append((g @ g.T)[np.triu_indices(c, 1)])
        same = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    else:
        sampled = True
        w = (counts * (counts - 1)).astype(np.float64)
        g = rng.choice(len(counts), size=max_pairs, p=w / w.sum())
        i = rng.integers(0, counts[g])
        j = rng.integers(0, counts[g] - 1)
        j = j + (j >= i)
        same = _rowdot(x, starts[g] + i, starts[g] + j)
    if diff_total <= max_pairs:
        parts = []
        for s, c in zip(starts, counts, strict=True):
            if s + c < n:  # rows are grouped by model, so every later row belongs to another model
                parts.append((x[s : s + c] @ x[s + c :].T).ravel())
        diff = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    else:
        sampled = True
        w = (counts * (n - counts)).astype(np.float64)
        g = rng.choice(len(counts), size=max_pairs, p=w / w.sum())
        i = starts[g] + rng.integers(0, counts[g])
        r = rng.integers(0, n - counts[g])
        j = np.where(r < starts[g], r, r + counts[g])
        diff = _rowdot(x, i, j)
    return same, diff, sampled


def _eer_threshold(same: np.ndarray, diff: np.ndarray) -> tuple[float, float]:
    """Threshold where the false-reject rate of ``same`` equals the false-accept rate of ``diff``, and the EER.

    Candidates are the midpoints between consecutive distinct scores (plus both ends); a pair is accepted
    when its score is ``>= threshold``. Among equally good candidates the middle one is taken.
    """
    scores = np.unique(np.concatenate([same, diff]))
    cands = np.concatenate([[scores[0] - 1e-6], (scores[:-1] + scores[1:]) / 2, [scores[-1] + 1e-6]])
    frr = np.searchsorted(np.sort(same), cands, side="left") / len(same)
    far = 1.0 - np.searchsorted(np.sort(diff), cands, side="left") / len(diff)
    gap = np.abs(far - frr)
    best = np.flatnonzero(gap == gap.min())
    k = int(best[len(best) // 2])
    return float(cands[k]), float((far[k] + frr[k]) / 2)


def _group_stats(x: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-model sums (float64) and prototypes (normalised sums, float32) of normalised grouped rows."""
    sums = np.add.reduceat(x, starts, axis=0, dtype=np.float64)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    protos = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return sums, protos


def accept_threshold(genuine: np.ndarray, target_tpr: float) -> tuple[float, int]:
    """The largest ``t`` with ``mean(genuine >= t) >= target_tpr``, and ``k``: ``t`` is the ``k``-th smallest
    genuine score (0-based), ``k = floor(n * (1 - target_tpr))``."""
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    k = min(int(math.floor(len(g) * (1.0 - target_tpr) + 1e-9)), len(g) - 1)
    return float(g[k]), k


def calibrate(
    x: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    target_tpr: float = DEFAULT_TARGET_TPR,
    max_pairs: int = MAX_PAIRS,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Thresholds for L2-normalised embeddings ``x`` grouped by model (``x[starts[m]:starts[m]+counts[m]]``).

    Needs at least 2 models and at least one model with 2 embeddings; returns ``None`` otherwise.

    * Genuine scores (leave-one-out): each embedding of a model with ≥2 embeddings against its own model's
      prototype recomputed without it. Impostor scores: each embedding against the best prototype of
      another model.
    * ``unknown_threshold`` is the largest ``t`` with ``mean(genuine >= t) >= target_tpr``, i.e. the
      ``k = floor(n_genuine * (1 - target_tpr))``-th smallest genuine score (the (1 - target_tpr) quantile).
    * ``verify_threshold`` is the equal-error-rate threshold between same-model and different-model pairs of
      enrolled embeddings (all pairs, or ``max_pairs`` pairs of each kind drawn with ``default_rng(seed)``).
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    if len(counts) < 2 or counts.max(initial=0) < 2:
        return None
    if not 0.0 < target_tpr <= 1.0:
        raise GalleryError(f"target_tpr must be in (0, 1], got {target_tpr}")
    sums, protos = _group_stats(x, starts, counts)

    genuine_parts = []
    for m, (s, c) in enumerate(zip(starts, counts, strict=True)):
        if c < 2:
            continue
        xg = x[s : s + c].astype(np.float64)
        dots = xg @ sums[m]  # x . S
        xsq = np.sum(xg * xg, axis=1)  # |x|^2 (= 1 up to rounding)
        loo_norm_sq = float(sums[m] @ sums[m]) - 2.0 * dots + xsq  # |S - x|^2
        ok = loo_norm_sq > 1e-12
        genuine_parts.append((dots[ok] - xsq[ok]) / np.sqrt(loo_norm_sq[ok]))  # x . (S - x) / |S - x|
    genuine = np.clip(np.concatenate(genuine_parts), -1.0, 1.0)
    if not len(genuine):
        return None

    labels = np.repeat(np.arange(len(counts)), counts)
    impostor = np.empty(len(x), dtype=np.float64)
    for s in range(0, len(x), _CHUNK):
        sc = x[s : s + _CHUNK] @ protos.T
        sc[np.arange(len(sc)), labels[s : s + _CHUNK]] = -np.inf
        impostor[s : s + _CHUNK] = sc.max(axis=1)
    impostor = np.clip(impostor, -1.0, 1.0)

    g = np.sort(genuine)
    unknown_t, k = accept_threshold(g, target_tpr)

    same, diff, sampled = _pair_scores(x, starts, counts, max_pairs, np.random.default_rng(seed))
    verify_t, eer = _eer_threshold(same, diff)
    how = f"sampled {max_pairs} of each kind with default_rng({seed})" if sampled else "all pairs"
    rule = (
        f"unknown: largest t accepting >= {target_tpr:g} of {len(g)} leave-one-out genuine scores "
        f"(embedding vs own model's prototype without it; {k}-th smallest, 0-based); "
        f"verify: equal-error-rate threshold between {len(same)} same-model and {len(diff)} "
        f"different-model pairs of enrolled embeddings ({how}); cosine similarity, accept if score >= t"
    )
    return {
        "unknown_threshold": unknown_t,
        "verify_threshold": verify_t,
        "target_tpr": float(target_tpr),
        "rule": rule,
        "n_models": int(len(counts)),
        "n_embeddings": int(len(x)),
        "n_genuine": int(len(g)),
        "n_impostor": int(len(impostor)),
        "n_same_pairs": int(len(same)),
        "n_diff_pairs": int(len(diff)),
        "genuine_accept_rate": float(np.mean(genuine >= unknown_t)),
        "impostor_reject_rate": float(np.mean(impostor < unknown_t)),
        "eer": eer,
    }


def _write_json_lines(fh: Any, doc: dict[str, Any]) -> None:
    """Write ``doc`` as JSON with one top-level key per line and one list item (e.g. embedding) per line.

    Readable and diffable, and fast: each line goes through the C encoder (``json.dump(indent=...)`` would
    put every vector component on its own line, slowly).
    """
    fh.write("{\n")
    keys = list(doc)
    for n, key in enumerate(keys):
        value = doc[key]
        fh.write(f" {json.dumps(key)}: ")
        if isinstance(value, list) and value:
            fh.write("[\n")
            for i, item in enumerate(value):
                fh.write("  " + json.dumps(item, allow_nan=False) + (",\n" if i < len(value) - 1 else "\n"))
            fh.write(" ]")
        else:
            fh.write(json.dumps(value, allow_nan=False))
        fh.write(",\n" if n < len(keys) - 1 else "\n")
    fh.write("}\n")


# --------------------------------------------------------------------------------------------- gallery


class Gallery:
    """An attribution gallery stored in one SQLite file.

    >>> with Gallery("g.sqlite") as g:                                  # doctest: +SKIP
    ...     g.add_embeddings("sdxl", vecs, hashes, paths, method="dct", version="1")
    ...     g.identify_embeddings(query, "dct", "1")[0].model

    **Calibration** (per ``(method, version)``, recomputed in the same transaction as every write that changes
    the embeddings; see :func:`calibrate` and :attr:`Calibration.rule`): with at least 2 models and at least
    2 images for some model, leave-one-out genuine scores (each embedding vs its own model's prototype
    recomputed without it) and impostor scores (each embedding vs the best other model's prototype) are
    computed. The *unknown* threshold is the largest value that still accepts ``target_tpr`` (meta
    ``target_tpr``, default 0.95) of the genuine scores, i.e. their (1 - target_tpr) quantile. The
    *verification* threshold is the equal-error-rate threshold between same-model and different-model pairs of
    enrolled embeddings (exhaustive up to :data:`MAX_PAIRS` pairs per kind, else a seeded deterministic
    sample). With less data the calibration is ``None``: :meth:`identify_embeddings` without an explicit
    threshold then uses the method's fallback threshold measured on held-out classes
    (:meth:`open_set_threshold`, :mod:`modelprint.gallery.fallback`), or, if none was measured for it, returns
    the best match with ``threshold=None`` and never ``"unknown"``; :meth:`verify_embeddings` returns
    ``same_model=None``.
    """

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False) -> None:
        """Open (and with ``create``, create if missing) the gallery at ``path``; ``GalleryError`` otherwise.

        With ``read_only``, or when the file or its folder is not writable, the gallery is opened read-only.
        """
        self._path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._target_tpr = DEFAULT_TARGET_TPR
        self._read_only: str | None = None  # why the gallery cannot be written, or None
        self._conn = self._open(create, read_only)

    # ---- opening

    def _fail(self, reason: str) -> GalleryError:
        return GalleryError(f"{self._path}: {reason}")

    def _damaged(self, detail: str) -> GalleryError:
        return self._fail(f"gallery is damaged ({detail}); restore it from a backup or enroll its models anew")

    def _open(self, create: bool, read_only: bool) -> sqlite3.Connection:
        p = self._path
        if p.is_dir():
            raise self._fail("is a directory, not a gallery file")
        exists = p.exists()
        if not exists and (read_only or not create):
            raise self._fail("no such gallery file")
        if exists and p.stat().st_size > 0:
            try:
                with open(p, "rb") as fh:
                    head = fh.read(16)
            except OSError as exc:
                raise self._fail(f"cannot read gallery ({exc.strerror or exc})") from None
            if head != _SQLITE_MAGIC:
                raise self._fail("not a modelprint gallery (not an SQLite database)")
        self._read_only = "opened read-only" if read_only else _write_blocker(p, exists)
        if not exists:
            if self._read_only:
                raise self._fail(f"cannot create the gallery: {self._read_only}")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._fail(f"cannot create the gallery's folder ({exc.strerror or exc})") from None
        try:
            if self._read_only:
                conn = sqlite3.connect(_read_only_uri(p), uri=True, timeout=_TIMEOUT, isolation_level=None,
                                       check_same_thread=False)
            else:
                conn = sqlite3.connect(str(p), timeout=_TIMEOUT, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._sqlite_failure(exc) from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._has_table(conn, "meta"):
                self._initialise(conn, create)
            self._read_meta(conn)
            self._verify(conn)
            if not self._read_only:
                self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._sqlite_failure(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _sqlite_failure(self, exc: sqlite3.Error) -> GalleryError:
        """A one-line error naming the real cause of an SQLite failure while opening."""
        name = str(getattr(exc, "sqlite_errorname", ""))
        if name.startswith("SQLITE_CORRUPT"):
            return self._damaged(str(exc))
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_BUSY",
                            "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_AUTH")):
            why = f"; {self._read_only}" if self._read_only else ""
            if self._read_only and Path(f"{self._path}-wal").exists():
                why += f", and its {self._path.name}-wal file (left by a writer) cannot be read without writing"
            return self._fail(f"cannot open gallery ({exc}{why})")
        return self._fail(f"not a modelprint gallery ({exc})")

    def _verify(self, conn: sqlite3.Connection) -> None:
        """Refuse a damaged gallery: SQLite's quick_check, embedding checksums, prototypes and calibrations."""
        with self._snapshot(conn):
            problem = structure_problem(conn) or checksum_problem(conn) or self._derived_problem(conn)
        if problem:
            raise self._damaged(problem)

    def _derived_problem(self, conn: sqlite3.Connection) -> str | None:
        """Whether stored prototypes and calibrations disagree with the embeddings they were computed from."""
        for method, version in self._held(conn):
            tag = _tag(method, version)
            try:
                _ids, names, x, starts, counts = self._load_group(conn, method, version)
                pnames, stored = self._load_prototypes(conn, method, version)
            except ValueError:
                return f"a stored vector of {tag} has the wrong length"
            _sums, protos = _group_stats(x, starts, counts)
            if pnames != names or stored.shape != protos.shape or not np.allclose(stored, protos, atol=1e-4):
                return f"the stored prototypes of {tag} do not match its embeddings"
            cal = self._load_calibration(conn, method, version)
            thresholds = (cal.unknown_threshold, cal.verify_threshold) if cal else ()
            if cal and (
                not all(isinstance(t, float) and abs(t) <= 1.001 for t in thresholds)
                or (cal.n_models, cal.n_embeddings) != (len(names), len(x))
            ):
                return f"the stored calibration of {tag} does not match its embeddings"
        return None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Give a writable gallery made by an older modelprint what it lacks (embedding checksums), atomically."""
        if has_checksums(conn) and not conn.execute("SELECT 1 FROM embeddings WHERE checksum IS NULL").fetchone():
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            add_checksums(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _has_table(conn: sqlite3.Connection, name: str) -> bool:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def _initialise(self, conn: sqlite3.Connection, create: bool) -> None:
        """Create the schema in a database without a ``meta`` table, if it is empty (checked under the write lock,
        as another process may be creating the same gallery)."""
        if not create or self._read_only:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise self._fail("not a modelprint gallery (SQLite database without a meta table)")
            if not create:
                raise self._fail("not a modelprint gallery (empty database)")
            raise self._fail(f"cannot create the gallery in this empty file: {self._read_only}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._has_table(conn, "meta"):  # another process may have initialised it meanwhile
                if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise self._fail("not a modelprint gallery (SQLite database without a meta table)")
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("application", APPLICATION),
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("target_tpr", repr(DEFAULT_TARGET_TPR)),
                        ("created", _now()),
                    ],
                )
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        # Switching to WAL does not wait for a busy database (another process creating it at the same moment).
        deadline = time.monotonic() + _TIMEOUT
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY")
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _read_meta(self, conn: sqlite3.Connection) -> None:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise self._fail(f"not a modelprint gallery (meta application is {meta.get('application')!r})")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise self._fail("not a modelprint gallery (meta schema_version missing or malformed)") from None
        if version > SCHEMA_VERSION:
            raise self._fail(
                f"gallery schema version {version} is newer than this modelprint supports ({SCHEMA_VERSION}); "
                "upgrade modelprint"
            )
        if version < SCHEMA_VERSION:
            raise self._fail(f"gallery schema version {version} is not supported (expected {SCHEMA_VERSION})")
        try:
            self._target_tpr = float(meta.get("target_tpr", DEFAULT_TARGET_TPR))
        except ValueError:
            raise self._fail("meta target_tpr is malformed") from None

    # ---- transactions

    @staticmethod
    @contextlib.contextmanager
    def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
        """A read transaction on ``conn`` (so several queries see one state), always ended."""
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")

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

    def _held(self, conn: sqlite3.Connection) -> list[tuple[str, str]]:
        rows = conn.execute("SELECT DISTINCT method, version FROM embeddings ORDER BY method, version").fetchall()
        return [(m, v) for m, v in rows]

    def _require(self, conn: sqlite3.Connection, method: str, version: str) -> int:
        """The embedding dimension of ``(method, version)``; ``GalleryError`` if the gallery does not hold it."""
        row = conn.execute(
            "SELECT dim FROM embeddings WHERE method = ? AND version = ? LIMIT 1", (method, version)
        ).fetchone()
        if row is not None:
            return int(row[0])
        held = self._held(conn)
        if not held:
            raise self._fail("gallery is empty; enroll images first")
        tags = ", ".join(_tag(m, v) for m, v in held)
        raise self._fail(f"gallery holds no {_tag(method, version)} embeddings; it holds: {tags}")

    def _resolve_version(self, conn: sqlite3.Connection, method: str, version: str | None) -> str:
        if version is not None:
            return version
        held = self._held(conn)
        versions = [v for m, v in held if m == method]
        if len(versions) == 1:
            return versions[0]
        if not held:
            raise self._fail("gallery is empty; enroll images first")
        if not versions:
            tags = ", ".join(_tag(m, v) for m, v in held)
            raise self._fail(f"gallery holds no {method} embeddings; it holds: {tags}")
        raise self._fail(f"gallery holds several versions of {method} ({', '.join(versions)}); pass a version")

    def _load_group(
        self, conn: sqlite3.Connection, method: str, version: str
    ) -> tuple[list[int], list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Normalised embeddings of ``(method, version)`` grouped by model name: ids, names, x, starts, counts."""
        rows = conn.execute(
            "SELECT e.model_id, m.name, e.dim, e.vector FROM embeddings e JOIN models m ON m.id = e.model_id "
            "WHERE e.method = ? AND e.version = ? ORDER BY m.name, e.id",
            (method, version),
        ).fetchall()
        if not rows:
            return [], [], np.empty((0, 0), np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
        dim = int(rows[0][2])
        x = np.frombuffer(b"".join(r[3] for r in rows), dtype=_F32).reshape(len(rows), dim)
        x = _normalise(x)
        model_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        change = np.flatnonzero(np.diff(model_ids)) + 1
        starts = np.concatenate([[0], change]).astype(np.int64)
        counts = np.diff(np.concatenate([starts, [len(rows)]])).astype(np.int64)
        ids = [int(model_ids[s]) for s in starts]
        names = [rows[s][1] for s in starts]
        return ids, names, x, starts, counts

    def _refresh(self, conn: sqlite3.Connection, method: str, version: str) -> None:
        """Recompute prototypes and calibration of ``(method, version)`` inside the caller's transaction."""
        conn.execute("DELETE FROM prototypes WHERE method = ? AND version = ?", (method, version))
        ids, _names, x, starts, counts = self._load_group(conn, method, version)
        if not ids:
            conn.execute("DELETE FROM calibrations WHERE method = ? AND version = ?", (method, version))
            return
        _sums, protos = _group_stats(x, starts, counts)
        dim = x.shape[1]
        conn.executemany(
            "INSERT INTO prototypes (model_id, method, version, n, dim, vector) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (mid, method, version, int(c), dim, protos[i].astype(_F32).tobytes())
                for i, (mid, c) in enumerate(zip(ids, counts, strict=True))
            ],
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'target_tpr'").fetchone()
        self._target_tpr = float(row[0]) if row else DEFAULT_TARGET_TPR  # another process may have changed it
        cal = calibrate(x, starts, counts, self._target_tpr)
        if cal is None:
            conn.execute("DELETE FROM calibrations WHERE method = ? AND version = ?", (method, version))
            return
        cols = ["method", "version", *cal.keys(), "created"]
        conn.execute(
            f"INSERT OR REPLACE INTO calibrations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            (method, version, *cal.values(), _now()),
        )

    def _load_prototypes(self, conn: sqlite3.Connection, method: str, version: str) -> tuple[list[str], np.ndarray]:
        rows = conn.execute(
            "SELECT m.name, p.dim, p.vector FROM prototypes p JOIN models m ON m.id = p.model_id "
            "WHERE p.method = ? AND p.version = ? ORDER BY m.name",
            (method, version),
        ).fetchall()
        if not rows:
            return [], np.empty((0, 0), np.float32)
        dim = int(rows[0][1])
        protos = np.frombuffer(b"".join(r[2] for r in rows), dtype=_F32).reshape(len(rows), dim)
        return [r[0] for r in rows], protos.astype(np.float32)

    def _load_calibration(self, conn: sqlite3.Connection, method: str, version: str) -> Calibration | None:
        cur = conn.execute("SELECT * FROM calibrations WHERE method = ? AND version = ?", (method, version))
        row = cur.fetchone()
        if row is None:
            return None
        return Calibration(**{d[0]: v for d, v in zip(cur.description, row, strict=True)})

    def _insert_model(self, conn: sqlite3.Connection, name: str, notes: str) -> int:
        cur = conn.execute("INSERT INTO models (name, notes, created) VALUES (?, ?, ?)", (name, notes, _now()))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    # ---- public API

    @property
    def path(self) -> Path:
        return self._path

    @property
    def target_tpr(self) -> float:
        """Fraction of genuine (leave-one-out) scores the unknown threshold accepts (stored in ``meta``)."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'target_tpr'").fetchone()
        return float(row[0]) if row else DEFAULT_TARGET_TPR

    @property
    def read_only(self) -> bool:
        """Whether the gallery was opened read-only (asked for, or its file or folder is not writable)."""
        return self._read_only is not None

    def add_model(self, name: str, notes: str = "") -> None:
        """Register a model with no embeddings; ``GalleryError`` if the name exists or is reserved."""
        name = _check_model_name(name)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone():
                raise self._fail(f"model {name!r} already exists")
            self._insert_model(conn, name, str(notes))

    def check_enroll(self, model: str, method: str, version: str) -> None:
        """Raise the ``GalleryError`` that enrolling ``model`` with ``method@version`` would raise, before any work.

        :meth:`add_embeddings` checks the same again inside its transaction.
        """
        _check_model_name(model)
        _check_name(method, "method name")
        _check_name(version, "method version")
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
        row = conn.execute(
            "SELECT dim FROM embeddings WHERE method = ? AND version = ? LIMIT 1", (method, version)
        ).fetchone()
        if dim is not None and row is not None and int(row[0]) != dim:
            return (
                f"embeddings of {model} have dimension {dim}, but the gallery's {_tag(method, version)} "
                f"embeddings have dimension {row[0]}"
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
    ) -> EnrollResult:
        """Enroll ``(n, d)`` embeddings of ``model`` (created with ``notes`` if new) made by ``method@version``.

        ``image_hashes`` are the images' hex sha256; an image already enrolled for this model and method
        version is skipped and counted in ``skipped``. The dimension must match the gallery's other
        ``method@version`` embeddings, and the gallery must hold no other method. Creating the model, inserting
        the embeddings and refreshing prototypes and calibration are one transaction, so concurrent enrolments
        of one new model both add to it.
        """
        model = _check_model_name(model)
        method = _check_name(method, "method name")
        version = _check_name(version, "method version")
        x = _as_matrix(vectors, f"embeddings of {model}")
        n, dim = x.shape
        hashes = [str(h).lower() for h in image_hashes]
        srcs = [_storable(str(s)) for s in sources]
        if len(hashes) != n or len(srcs) != n:
            raise GalleryError(
                f"embeddings of {model}: {n} vectors but {len(hashes)} image hashes and {len(srcs)} sources"
            )
        for h in hashes:
            if not _SHA256.fullmatch(h):
                raise GalleryError(f"embeddings of {model}: {h!r} is not a hex sha256 digest")
        blobs = [row.tobytes() for row in x.astype(_F32, copy=False)]
        with self._write() as conn:
            refusal = self._enroll_refusal(conn, model, method, version, dim)
            if refusal:
                raise self._fail(refusal)
            found = conn.execute("SELECT id FROM models WHERE name = ?", (model,)).fetchone()
            model_id = int(found[0]) if found else self._insert_model(conn, model, str(notes))
            elsewhere = self._held_elsewhere(conn, model_id, hashes)
            before = conn.total_changes
            created = _now()
            conn.executemany(
                "INSERT OR IGNORE INTO embeddings (model_id, method, version, image_sha256, source, dim, vector, "
                "created, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (model_id, method, version, hashes[i], srcs[i], dim, blobs[i], created,
                     row_checksum(model_id, method, version, hashes[i], dim, blobs[i]))
                    for i in range(n)
                ),
            )
            added = conn.total_changes - before
            if added:
                self._refresh(conn, method, version)
        return EnrollResult(added=added, skipped=n - added, also_enrolled_as=elsewhere)

    @staticmethod
    def _held_elsewhere(conn: sqlite3.Connection, model_id: int, hashes: Sequence[str]) -> tuple[tuple[str, int], ...]:
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

    def recalibrate(self, target_tpr: float | None = None) -> None:
        """Recompute all prototypes and calibrations, optionally with a new stored ``target_tpr``."""
        if target_tpr is not None and not 0.0 < float(target_tpr) <= 1.0:
            raise GalleryError(f"target_tpr must be in (0, 1], got {target_tpr}")
        old = self._target_tpr
        try:
            with self._write() as conn:
                if target_tpr is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('target_tpr', ?)", (repr(float(target_tpr)),)
                    )
                for method, version in self._held(conn):
                    self._refresh(conn, method, version)
                self._target_tpr = float(target_tpr) if target_tpr is not None else self._target_tpr
        except BaseException:
            self._target_tpr = old
            raise

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
                tags.setdefault(name, []).append(_tag(method, version))
        return [
            ModelInfo(name, notes, created, int(n), tags.get(name, []), int(k)) for name, notes, created, n, k in rows
        ]

    def methods(self) -> list[tuple[str, str]]:
        """The ``(method, version)`` pairs the gallery holds embeddings for."""
        with self._read() as conn:
            return self._held(conn)

    def prototypes(self, method: str, version: str) -> tuple[list[str], np.ndarray]:
        """Model names (sorted) and their ``(k, d)`` unit-norm prototypes for ``method@version``."""
        with self._read() as conn:
            self._require(conn, method, version)
            return self._load_prototypes(conn, method, version)

    def calibration(self, method: str, version: str) -> Calibration | None:
        """The stored calibration of ``method@version``, or ``None`` if it has too little data (or none)."""
        with self._read() as conn:
            return self._load_calibration(conn, method, version)

    def open_set_threshold(self, method: str, version: str) -> OpenSetThreshold:
        """The threshold :meth:`identify_embeddings` uses by default for ``method@version``, and its source."""
        with self._read() as conn:
            self._require(conn, method, version)
            return self._open_set(conn, method, version)

    def _open_set(self, conn: sqlite3.Connection, method: str, version: str) -> OpenSetThreshold:
        cal = self._load_calibration(conn, method, version)
        if cal is not None:
            return OpenSetThreshold(
                cal.unknown_threshold, "calibrated",
                f"calibrated on the gallery's {cal.n_models} models ({cal.n_embeddings} images)",
            )
        n_models, fewest = conn.execute(
            "SELECT count(*), min(n) FROM prototypes WHERE method = ? AND version = ?", (method, version)
        ).fetchone()
        why = (
            f"the gallery cannot calibrate 'unknown' ({n_models} model{'s' * (n_models != 1)}, "
            f"{'' if n_models == 1 else 'each with '}{fewest} image{'s' * (fewest != 1)}; "
            "calibrating needs 2 models and one of them with 2 images)"
        )
        fallback = fallback_threshold(_tag(method, version), int(fewest))
        if fallback is None:
            return OpenSetThreshold(
                None, "none", f"{why}, and no threshold was measured for {_tag(method, version)}: "
                "identification never answers 'unknown'",
            )
        value, measured = fallback
        return OpenSetThreshold(value, "fallback", f"{why}, so 'unknown' is below {value:.4f}, {measured}")

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
        q = _normalise(_as_matrix(vectors, "query embeddings"))
        with self._read() as conn:
            dim = self._require(conn, method, version)
            if q.shape[1] != dim:
                raise self._fail(
                    f"query embeddings have dimension {q.shape[1]}, but the gallery's {_tag(method, version)} "
                    f"embeddings have dimension {dim}"
                )
            names, protos = self._load_prototypes(conn, method, version)
            thr = float(threshold) if threshold is not None else self._open_set(conn, method, version).value
        k = min(int(top_k), len(names))
        out: list[Identification] = []
        for s in range(0, len(q), _CHUNK):
            sims = np.clip(q[s : s + _CHUNK] @ protos.T, -1.0, 1.0)
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            for r in range(len(sims)):
                top = [(names[j], float(sims[r, j])) for j in order[r]]
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
        va, vb = _as_matrix(a, "embedding a"), _as_matrix(b, "embedding b")
        if va.shape[0] != 1 or vb.shape[0] != 1:
            raise GalleryError(f"verify compares two single embeddings, got {va.shape[0]} and {vb.shape[0]} rows")
        if threshold is not None and not math.isfinite(float(threshold)):
            raise GalleryError(f"threshold must be a finite number, got {threshold}")
        with self._read() as conn:
            version = self._resolve_version(conn, method, version)
            dim = self._require(conn, method, version)
            for what, v in (("a", va), ("b", vb)):
                if v.shape[1] != dim:
                    raise self._fail(
                        f"embedding {what} has dimension {v.shape[1]}, but the gallery's "
                        f"{_tag(method, version)} embeddings have dimension {dim}"
                    )
            cal = self._load_calibration(conn, method, version) if threshold is None else None
        sim = float(np.clip(_normalise(va)[0] @ _normalise(vb)[0], -1.0, 1.0))
        thr = float(threshold) if threshold is not None else (cal.verify_threshold if cal else None)
        return Verification(similarity=sim, same_model=None if thr is None else sim >= thr, threshold=thr)

    def export(self, path: str | Path) -> None:
        """Write the whole gallery to ``path`` atomically: ``.json`` (vectors as lists) or ``.npz``.

        The ``.npz`` holds ``index_json`` (a JSON string: models, calibrations, and per group ``g`` the
        method, version and per-row metadata) and float32 arrays ``embeddings_<g>`` / ``prototypes_<g>``.
        """
        target = Path(path)
        kind = target.suffix.lower()
        if kind not in (".json", ".npz"):
            raise GalleryError(f"{target}: export format must be .json or .npz, not {kind or 'no suffix'!r}")
        with self._read() as conn:
            models = [
                {"name": n, "notes": notes, "created": c}
                for n, notes, c in conn.execute("SELECT name, notes, created FROM models ORDER BY name")
            ]
            groups = []
            for method, version in self._held(conn):
                rows = conn.execute(
                    "SELECT m.name, e.image_sha256, e.source, e.created, e.dim, e.vector FROM embeddings e "
                    "JOIN models m ON m.id = e.model_id WHERE e.method = ? AND e.version = ? "
                    "ORDER BY m.name, e.id",
                    (method, version),
                ).fetchall()
                dim = int(rows[0][4])
                vecs = np.frombuffer(b"".join(r[5] for r in rows), dtype=_F32).reshape(len(rows), dim)
                pnames, protos = self._load_prototypes(conn, method, version)
                pn = dict(
                    conn.execute(
                        "SELECT m.name, p.n FROM prototypes p JOIN models m ON m.id = p.model_id "
                        "WHERE p.method = ? AND p.version = ?",
                        (method, version),
                    ).fetchall()
                )
                cal = self._load_calibration(conn, method, version)
                groups.append((method, version, rows, vecs, pnames, protos, pn, cal))
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        header = {
            "format": APPLICATION,
            "schema_version": SCHEMA_VERSION,
            "source": str(self._path),
            "exported": _now(),
            "target_tpr": float(meta.get("target_tpr", DEFAULT_TARGET_TPR)),
            "models": models,
        }
        if kind == ".json":
            doc = dict(header)
            doc["embeddings"] = [
                {
                    "model": r[0], "method": m, "version": v, "image_sha256": r[1], "source": r[2],
                    "created": r[3], "vector": vecs[i].tolist(),
                }
                for m, v, rows, vecs, *_ in groups
                for i, r in enumerate(rows)
            ]
            doc["prototypes"] = [
                {"model": name, "method": m, "version": v, "n": pn[name], "vector": protos[i].tolist()}
                for m, v, _rows, _vecs, pnames, protos, pn, _cal in groups
                for i, name in enumerate(pnames)
            ]
            doc["calibrations"] = [asdict(g[7]) for g in groups if g[7] is not None]
            with atomic_open(target, "w") as fh:
                _write_json_lines(fh, doc)
            return
        arrays: dict[str, np.ndarray] = {}
        index = dict(header)
        index["groups"] = []
        for g, (m, v, rows, vecs, pnames, protos, pn, cal) in enumerate(groups):
            arrays[f"embeddings_{g}"] = np.ascontiguousarray(vecs, dtype=np.float32)
            arrays[f"prototypes_{g}"] = np.ascontiguousarray(protos, dtype=np.float32)
            index["groups"].append(
                {
                    "method": m,
                    "version": v,
                    "rows": [{"model": r[0], "image_sha256": r[1], "source": r[2], "created": r[3]} for r in rows],
                    "prototype_models": pnames,
                    "prototype_n": [pn[name] for name in pnames],
                    "calibration": asdict(cal) if cal is not None else None,
                }
            )
        arrays["index_json"] = np.array(json.dumps(index, allow_nan=False))
        with atomic_open(target, "wb") as fh:
            np.savez(fh, **arrays)

    # Path-level conveniences (the same functions the CLI calls).
    def enroll(self, model: str, paths, **kwargs):
        """Embed ``paths`` (files or folders) and enroll them as ``model``; see :func:`modelprint.api.enroll`."""
        from modelprint.api import enroll

        return enroll(self, model, paths, **kwargs)

    def identify(self, paths, **kwargs):
        """Attribute images to enrolled models; see :func:`modelprint.api.identify`."""
        from modelprint.api import identify

        return identify(self, paths, **kwargs)

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
