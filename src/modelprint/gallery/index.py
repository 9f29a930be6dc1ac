"""Approximate nearest-neighbour indexes beside a gallery: FAISS HNSW or IVF over prototypes and over per-image
embeddings.

**Content token.** Every change to the ``embeddings`` table sets ``meta.content_token`` to a fresh random value,
by SQLite triggers stored in the gallery itself (installed when a gallery is opened writable), so the token moves
in the same transaction as the change, whichever program makes it. Prototypes are derived from the embeddings in
that transaction, so the token names one state of both.

**Index files** (``<gallery>.ann/<kind>-<hash of method@version>.npz``, written atomically) hold the serialised
FAISS index, the row ids it answers with (model ids for ``prototypes``, embedding ids for ``images``), the token of
the snapshot they were built from, and the sha256 of the index bytes. A file is used only when its token is the
gallery's current one and its bytes match their sha256: a stale, damaged, foreign or half-written file is
ignored (search is then exact), never used. Indexes are built and used from
:data:`~modelprint.config.DEFAULT_INDEX_THRESHOLD` rows on (``MODELPRINT_INDEX_THRESHOLD``); below, search is exact.

**Search.** Inner product on unit vectors (cosine similarity), with one of two FAISS structures
(:class:`IndexParams`, recorded in the index file): ``hnsw``, a graph with ``M`` links per node of which
``ef_search`` candidates are explored per query, or ``ivf``, k-means cells (``nlist``, trained on a seeded sample)
of which the ``nprobe`` nearest are scanned exactly; :data:`DEFAULT_PARAMS` per kind, from
``benchmarks/bench_index.py`` (IVF's cell count follows the size). The best candidates are re-ranked by
similarity, ties by row order as exact search breaks them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.atomic import atomic_path
from modelprint.config import torch_threads
from modelprint.errors import GalleryError
from modelprint.gallery.tables import F32, immediate_transaction, tag
from modelprint.scores import l2_normalize

KINDS = ("prototypes", "images")
FORMAT = "modelprint-gallery-index/1"
TOKEN_KEY = "content_token"

_NEW_TOKEN = f"UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = '{TOKEN_KEY}'"
_TRIGGERS = {
    "embeddings_token_insert": "AFTER INSERT ON embeddings",
    "embeddings_token_delete": "AFTER DELETE ON embeddings",
    "embeddings_token_update": "AFTER UPDATE OF model_id, method, version, dim, vector ON embeddings",
}


STRUCTURES = ("hnsw", "ivf")
#: IVF cells: at least this many training rows per cell (FAISS's own minimum), at most this many drawn per cell;
#: from ``TWO_LEVEL`` cells on, k-means is FAISS's two-level clustering (√nlist coarse cells, then each split).
MIN_PER_CELL, TRAIN_PER_CELL, TWO_LEVEL = 39, 64, 4096


@dataclass(frozen=True)
class IndexParams:
    """Which FAISS structure and its settings.

    ``hnsw``: ``m`` links per node, ``ef_construction`` candidates explored while building, ``ef_search`` per query.
    ``ivf``: ``nlist`` k-means cells (``0``: 16·sqrt(rows); at most rows / 39) trained on up to 64 rows per cell
    drawn with ``seed``, ``nprobe`` cells scanned per query. The fields of the other structure are unused.
    """

    structure: str = "hnsw"
    m: int = 16
    ef_construction: int = 40
    ef_search: int = 128
    nlist: int = 0
    nprobe: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise GalleryError(f"index structure must be one of {', '.join(STRUCTURES)}, got {self.structure!r}")
        if min(self.m, self.ef_construction, self.ef_search, self.nprobe) < 1 or self.nlist < 0:
            raise GalleryError(f"index parameters must be positive (nlist non-negative): {self}")


#: Measured in ``benchmarks/bench_index.py``: IVF reaches recall@1 >= 0.99 on gallery-like image embeddings up to
#: 1e6 rows once there are at least as many cells as models (16·sqrt(rows); with 4·sqrt(rows), 4,000 cells for
#: 10,000 models, it stalled at 0.98), in a fraction of HNSW's build time. Prototypes (one per model) are
#: near-random directions, which cells separate badly: they need many more cells scanned (0.995 at 1e5 rows with
#: 256 of 2,564), which still beats the dense HNSW graph they used before (same recall; built in 16 s, not 673 s).
DEFAULT_PARAMS = {"prototypes": IndexParams("ivf", nprobe=256), "images": IndexParams("ivf", nprobe=32)}


def cells(rows: int, params: IndexParams) -> int:
    """The IVF cell count for ``rows`` rows: ``params.nlist`` or 16·sqrt(rows), at most rows / 39, at least 1."""
    wanted = params.nlist or round(16 * rows**0.5)
    return max(1, min(wanted, rows // MIN_PER_CELL))


@dataclass(frozen=True)
class IndexStatus:
    """One index of a gallery: its rows, whether it is ``used`` (fresh and at or above ``threshold``) and why, and
    the settings of the index used (``None`` when none is)."""

    kind: str
    method: str
    version: str
    rows: int
    threshold: int
    used: bool
    state: str  # "fresh", "stale", "missing", "damaged", "below threshold"
    file: str
    params: dict | None = None


# ------------------------------------------------------------------------------------------ token in the gallery
def install_token(conn: sqlite3.Connection) -> None:
    """Give a writable gallery its content token and triggers (no-op when it has them), in one transaction."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    if set(_TRIGGERS) <= names and content_token(conn) is not None:
        return
    with immediate_transaction(conn):
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, lower(hex(randomblob(16))))", (TOKEN_KEY,))
        for name, when in _TRIGGERS.items():
            conn.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {when} BEGIN {_NEW_TOKEN}; END")


def content_token(conn: sqlite3.Connection) -> str | None:
    """The gallery's current content token (``None``: a gallery never opened writable by this modelprint)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (TOKEN_KEY,)).fetchone()
    return None if row is None else str(row[0])


def row_count(conn: sqlite3.Connection, kind: str, method: str, version: str) -> int:
    table = "prototypes" if kind == "prototypes" else "embeddings"
    sql = f"SELECT count(*) FROM {table} WHERE method = ? AND version = ?"
    return int(conn.execute(sql, (method, version)).fetchone()[0])


def load_rows(conn: sqlite3.Connection, kind: str, method: str, version: str) -> tuple[np.ndarray, np.ndarray]:
    """Row ids and unit vectors of one kind: prototypes by model name (model ids), images by embedding id."""
    if kind == "prototypes":
        sql = ("SELECT p.model_id, p.vector FROM prototypes p JOIN models m ON m.id = p.model_id "
               "WHERE p.method = ? AND p.version = ? ORDER BY m.name")
    else:
        sql = "SELECT id, vector FROM embeddings WHERE method = ? AND version = ? ORDER BY id"
    rows = conn.execute(sql, (method, version)).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return ids, np.empty((0, 0), np.float32)
    x = np.frombuffer(b"".join(r[1] for r in rows), dtype=F32).reshape(len(rows), -1)
    return ids, l2_normalize(x, np.float32)


# ------------------------------------------------------------------------------------------------- index files
def index_file(gallery: Path, kind: str, method: str, version: str) -> Path:
    digest = hashlib.sha256(tag(method, version).encode()).hexdigest()[:16]
    return gallery.with_name(gallery.name + ".ann") / f"{kind}-{digest}.npz"


@dataclass
class AnnIndex:
    """A loaded FAISS index of one kind of one method version, valid for the gallery state ``token``."""

    kind: str
    method: str
    version: str
    token: str
    ids: np.ndarray
    index: Any  # faiss.IndexHNSWFlat or faiss.IndexIVFFlat, as params.structure says
    params: IndexParams
    names: list[str] | None = None  # prototypes: the model name of each row

    @property
    def rows(self) -> int:
        return len(self.ids)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Similarities and positions (``-1``: none) of the ``k`` best rows for each unit query, best first, ties
        by position."""
        import faiss

        k = min(k, self.rows)
        if self.params.structure == "ivf":
            params = faiss.SearchParametersIVF(nprobe=min(self.params.nprobe, self.index.nlist))
        else:
            params = faiss.SearchParametersHNSW(efSearch=max(self.params.ef_search, k))
        sims, pos = self.index.search(np.ascontiguousarray(q, np.float32), k, params=params)
        order = np.lexsort((np.where(pos < 0, np.iinfo(np.int64).max, pos), -sims), axis=1)
        return np.take_along_axis(sims, order, 1), np.take_along_axis(pos, order, 1)

    def add(self, ids: np.ndarray, x: np.ndarray, token: str) -> None:
        """Append rows (new embeddings) and move to the gallery state ``token``."""
        self.index.add(np.ascontiguousarray(x, np.float32))
        self.ids = np.concatenate([self.ids, ids.astype(np.int64)])
        self.token = token

    def name_rows(self, conn: sqlite3.Connection) -> list[str]:
        """The model name of each row (prototypes), read once per gallery state."""
        if self.names is None:
            by_id = dict(conn.execute("SELECT id, name FROM models").fetchall())
            self.names = [by_id[int(i)] for i in self.ids]
        return self.names


def build(kind: str, method: str, version: str, token: str, ids: np.ndarray, x: np.ndarray,
          params: IndexParams) -> AnnIndex:
    """An index (inner product) of the unit rows ``x``: HNSW, or IVF trained on a sample drawn with ``params.seed``
    (the IVF cell count used is recorded in the returned index's params)."""
    import faiss

    if torch_threads():
        faiss.omp_set_num_threads(torch_threads())
    x = np.ascontiguousarray(x, np.float32)
    if params.structure == "ivf":
        nlist = cells(len(x), params)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = params.seed
        index.cp.min_points_per_centroid = 1  # cells() keeps 39 rows a cell; a forced index of fewer has one cell
        take = min(len(x), TRAIN_PER_CELL * nlist)
        rng = np.random.default_rng(params.seed)
        sample = x if take == len(x) else x[np.sort(rng.choice(len(x), take, replace=False))]
        if nlist >= TWO_LEVEL:
            _two_level(index, sample, params.seed)
        index.train(sample)  # k-means, unless the quantizer already holds the two-level centroids
        params = replace(params, nlist=nlist)
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    index.add(x)
    return AnnIndex(kind, method, version, token, ids.astype(np.int64), index, params)


def _two_level(index: Any, sample: np.ndarray, seed: int) -> None:
    """Put the cells of FAISS's two-level spherical k-means into ``index``'s quantizer (a coarse cell too small for
    its share of cells makes it fail: the quantizer stays empty and ``index.train`` runs plain k-means)."""
    from faiss.contrib.clustering import two_level_clustering

    try:
        centroids, _ = two_level_clustering(sample, round(index.nlist**0.5), index.nlist, clustering_niter=10,
                                            spherical=True, seed=seed)
    except RuntimeError:
        return
    index.quantizer.add(np.ascontiguousarray(centroids, np.float32))


def save(path: Path, ann: AnnIndex) -> None:
    """Write ``ann`` to ``path`` atomically (a killed write leaves the previous file, or none)."""
    import faiss

    data = faiss.serialize_index(ann.index)
    meta = {"format": FORMAT, "kind": ann.kind, "method": ann.method, "version": ann.version, "token": ann.token,
            "rows": ann.rows, "params": asdict(ann.params), "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
            "faiss": faiss.__version__}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, index=data, ids=ann.ids, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def read_meta(path: Path) -> dict | None:
    """The JSON header of an index file, or ``None`` if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def load(path: Path, kind: str, method: str, version: str, token: str) -> AnnIndex | str:
    """The index in ``path`` if it is for this kind, method version and gallery state, else why not."""
    import faiss

    meta = read_meta(path)
    if meta is None:
        return "missing" if not path.exists() else "damaged"
    if (meta.get("kind"), meta.get("method"), meta.get("version")) != (kind, method, version):
        return "damaged"
    if meta.get("token") != token:
        return "stale"
    try:
        with np.load(path, allow_pickle=False) as z:
            data, ids = z["index"], z["ids"]
        if hashlib.sha256(data.tobytes()).hexdigest() != meta.get("sha256") or len(ids) != meta.get("rows"):
            return "damaged"
        index = faiss.deserialize_index(data)
        params = IndexParams(**meta["params"])  # files before IVF have HNSW settings only: structure "hnsw"
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, GalleryError, zipfile.BadZipFile, EOFError):
        return "damaged"
    structure = {"ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat}[params.structure]
    if index.ntotal != len(ids) or not isinstance(index, structure):
        return "damaged"
    return AnnIndex(kind, method, version, token, ids.astype(np.int64), index, params)


# ---------------------------------------------------------------------------------------- the gallery's indexes
class Indexes:
    """The indexes of one gallery file: which to use for a query, kept in memory while fresh, and their upkeep."""

    def __init__(self, gallery: Path, threshold: int, params: IndexParams | None = None) -> None:
        self.gallery = gallery
        self.threshold = int(threshold)
        self.params = params  # None: DEFAULT_PARAMS of each kind
        self.lock = threading.RLock()
        self._cache: dict[tuple[str, str, str], AnnIndex] = {}
        self._seen: dict[tuple[str, str, str], tuple[int, int, str]] = {}  # file (mtime, size) unusable at token

    def usable(self, conn: sqlite3.Connection, kind: str, method: str, version: str) -> AnnIndex | None:
        """The fresh index of this kind to search (inside the caller's read transaction), or ``None``: exact."""
        token = content_token(conn)
        if token is None:
            return None
        key = (kind, method, version)
        with self.lock:
            ann = self._cache.get(key)
            if ann is None or ann.token != token:
                ann = self._from_file(key, token)
            return ann if ann is not None and ann.rows >= self.threshold else None

    def _from_file(self, key: tuple[str, str, str], token: str) -> AnnIndex | None:
        path = index_file(self.gallery, *key)
        try:
            st = path.stat()
        except OSError:
            return None
        if self._seen.get(key) == (st.st_mtime_ns, st.st_size, token):
            return None
        found = load(path, *key, token)
        if isinstance(found, str):
            self._seen[key] = (st.st_mtime_ns, st.st_size, token)
            return None
        self._cache[key] = found
        return found

    def status(self, conn: sqlite3.Connection, kind: str, method: str, version: str) -> IndexStatus:
        rows, path = row_count(conn, kind, method, version), index_file(self.gallery, kind, method, version)
        if rows < self.threshold:
            state = "below threshold"
        elif self.usable(conn, kind, method, version) is not None:
            state = "fresh"
        else:
            token = content_token(conn)
            state = "stale" if token is None else load_state(path, kind, method, version, token)
        ann = self._cache.get((kind, method, version)) if state == "fresh" else None
        return IndexStatus(kind, method, version, rows, self.threshold, state == "fresh", state, str(path),
                           None if ann is None else asdict(ann.params))

    def rebuild(self, snapshot: Any, kind: str, method: str, version: str, force: bool = False) -> dict:
        """Build and save the index of one kind from one consistent read of the gallery (``snapshot()``: a read
        transaction); below the threshold (unless ``force``) remove its file instead. What was done, as a dict."""
        path = index_file(self.gallery, kind, method, version)
        start = time.perf_counter()
        with snapshot() as conn:
            token = content_token(conn)
            rows = row_count(conn, kind, method, version)
            if token is None or (rows < self.threshold and not force) or rows == 0:
                ids = x = None
            else:
                ids, x = load_rows(conn, kind, method, version)
        done = {"kind": kind, "method": tag(method, version), "rows": rows, "file": str(path)}
        with self.lock:
            self._cache.pop((kind, method, version), None)
            if ids is None or x is None:
                path.unlink(missing_ok=True)
                return {**done, "built": False}
            ann = build(kind, method, version, str(token), ids, x, self.params or DEFAULT_PARAMS[kind])
            save(path, ann)
            self._cache[(kind, method, version)] = ann
        return {**done, "built": True, "params": asdict(ann.params), "seconds": round(time.perf_counter() - start, 3)}

    def sync(self, snapshot: Any, method: str, version: str,
             insert: tuple[str | None, str | None, int] | None = None) -> None:
        """After a committed write: for an ``insert`` (tokens before and after it, and the largest embedding id
        before it), extend the images index when it was fresh before; else rebuild (or remove, below the
        threshold). An index that cannot be written stays stale, so unused."""
        for kind in KINDS:
            try:
                if not (kind == "images" and insert is not None and self.extend(snapshot, method, version, *insert)):
                    self.rebuild(snapshot, kind, method, version)
            except OSError:
                pass

    def extend(self, snapshot: Any, method: str, version: str, before: str | None, after: str | None,
               last_id: int) -> bool:
        """Add the embeddings with id above ``last_id`` to the images index of gallery state ``before``, if it is
        fresh there and the gallery is still in state ``after``; whether it was done (else rebuild)."""
        key = ("images", method, version)
        if before is None or after is None:
            return False
        with self.lock:
            ann = self._cache.get(key)
            if ann is None or ann.token != before:
                ann = self._from_file(key, before)
            if ann is None:
                return False
            with snapshot() as conn:
                if content_token(conn) != after:
                    return False
                rows = conn.execute(
                    "SELECT id, vector FROM embeddings WHERE method = ? AND version = ? AND id > ? ORDER BY id",
                    (method, version, last_id)).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            x = np.frombuffer(b"".join(r[1] for r in rows), dtype=F32).reshape(len(rows), -1)
            ann.add(ids, l2_normalize(x, np.float32), after)
            save(index_file(self.gallery, *key), ann)
        return True


def load_state(path: Path, kind: str, method: str, version: str, token: str) -> str:
    """Why the index file ``path`` is not used: ``missing``, ``stale`` or ``damaged`` (``fresh`` if it is fine)."""
    found = load(path, kind, method, version, token)
    return found if isinstance(found, str) else "fresh"


def nearest(q: np.ndarray, x: np.ndarray, k: int, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exact search: similarities and positions of the ``k`` rows of ``x`` most similar to each row of ``q``, best
    first, ties by position."""
    k = min(k, len(x))
    sims = np.empty((len(q), k), np.float32)
    pos = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), chunk):
        full = q[s : s + chunk] @ x.T
        top = np.argpartition(-full, k - 1, axis=1)[:, :k] if k < len(x) else np.tile(np.arange(len(x)), (len(full), 1))
        part = np.take_along_axis(full, top, 1)
        order = np.lexsort((top, -part), axis=1)
        sims[s : s + chunk], pos[s : s + chunk] = np.take_along_axis(part, order, 1), np.take_along_axis(top, order, 1)
    return sims, pos


def describe(statuses: list[IndexStatus]) -> str:
    """One line on the indexes that should be used but are not (empty if none)."""
    bad = [s for s in statuses if not s.used and s.state != "below threshold"]
    if not bad:
        return ""
    what = ", ".join(f"{s.kind} of {tag(s.method, s.version)} ({s.rows} rows) {s.state}" for s in bad)
    return f"gallery index {what}: searching exactly; run 'modelprint gallery reindex' to rebuild it"

