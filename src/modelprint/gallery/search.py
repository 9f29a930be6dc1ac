"""The gallery's nearest-image search and index upkeep, a part of :class:`~modelprint.gallery.store.Gallery`.

Search goes through the FAISS index of :mod:`modelprint.gallery.index` when it is fresh and the gallery is at or
above the index threshold, else it is exact.
"""

from __future__ import annotations

import numpy as np

from modelprint.errors import GalleryError
from modelprint.gallery import tables
from modelprint.gallery.checks import as_matrix
from modelprint.gallery.index import KINDS, IndexStatus, load_rows, nearest
from modelprint.gallery.results import Neighbour
from modelprint.gallery.tables import tag
from modelprint.scores import l2_normalize


class NeighbourSearch:
    """Per-image nearest neighbours and the indexes' status and rebuild (mixed into the gallery store, whose
    connection, checks and index holder they use)."""

    def nearest_images(
        self, vectors: np.ndarray, method: str, version: str | None = None, k: int = 5
    ) -> list[list[Neighbour]]:
        """The ``k`` enrolled images most similar to each row of ``vectors`` (``method@version`` embeddings), best
        first; from the images index when it is fresh and the gallery is at or above the index threshold."""
        if int(k) < 1:
            raise GalleryError(f"k must be at least 1, got {k}")
        q = l2_normalize(as_matrix(vectors, "query embeddings"), np.float32)
        with self._read() as conn:
            version = self._resolve_version(conn, method, version)
            dim = self._require(conn, method, version)
            if q.shape[1] != dim:
                raise self._fail(f"query embeddings have dimension {q.shape[1]}, but the gallery's "
                                 f"{tag(method, version)} embeddings have dimension {dim}")
            ann = self._ann.usable(conn, "images", method, version)
            if ann is None:
                ids, x = load_rows(conn, "images", method, version)
                sims, pos = nearest(q, x, int(k))
            else:
                ids = ann.ids
                with self._ann.lock:
                    sims, pos = ann.search(q, int(k))
            found = {int(i) for i in ids[pos[pos >= 0]]}
            rows = {r[0]: r[1:] for r in conn.execute(
                "SELECT e.id, m.name, e.image_sha256, e.source FROM embeddings e JOIN models m ON m.id = e.model_id "
                f"WHERE e.id IN ({', '.join(map(str, sorted(found)))})")}
        return [[Neighbour(*rows[int(ids[j])], float(np.clip(v, -1.0, 1.0))) for v, j in zip(sr, pr) if j >= 0]
                for sr, pr in zip(sims, pos)]

    def index_status(self) -> list[IndexStatus]:
        """State of every index (prototypes and images of each method version): rows, threshold, used or why not."""
        with self._read() as conn:
            return [self._ann.status(conn, kind, m, v) for m, v in tables.held(conn) for kind in KINDS]

    def reindex(self, force: bool = False) -> list[dict]:
        """Rebuild every index at or above the threshold (every one with ``force``) from the gallery as it is now,
        removing those below; one dict per index (kind, method, rows, file, built, seconds)."""
        self._require_writable()
        return [self._ann.rebuild(self._read, kind, m, v, force) for m, v in self.methods() for kind in KINDS]
