"""Each model's mean residual log-spectrum, kept beside its embeddings (what a query's spectrum is shown against).

``spectra(model_id, method, version, n, side, total BLOB <f8)`` holds the sum of the ``side × side`` log-spectra of
the model's enrolled images and their count, for methods that compute spectra while embedding. It is added to inside
the enrolment's transaction (an image the model already holds is not counted again) and deleted with the model. The
table is created on first use, so a gallery made before it has none until an enrolment that brings spectra.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np

from modelprint.errors import GalleryError
from modelprint.gallery.tables import has_table

F64 = np.dtype("<f8")
TABLE = """CREATE TABLE IF NOT EXISTS spectra (
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    method TEXT NOT NULL,
    version TEXT NOT NULL,
    n INTEGER NOT NULL,
    side INTEGER NOT NULL,
    total BLOB NOT NULL,
    PRIMARY KEY (model_id, method, version))"""


def _checked(spectra: object, n: int, model: str) -> np.ndarray:
    arr = np.asarray(spectra, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] != n or arr.shape[1] != arr.shape[2] or arr.shape[1] == 0:
        raise GalleryError(f"spectra of {model}: expected ({n}, side, side), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise GalleryError(f"spectra of {model}: contain NaN or infinity")
    return arr


def add(
    conn: sqlite3.Connection, model_id: int, model: str, method: str, version: str, hashes: Sequence[str],
    spectra: object,
) -> None:
    """Add the spectra of the images in ``hashes`` that ``model`` does not hold yet under ``method@version``
    (call before inserting their embeddings, inside the enrolment's transaction)."""
    arr = _checked(spectra, len(hashes), model)
    held = {h for (h,) in conn.execute(
        "SELECT image_sha256 FROM embeddings WHERE model_id = ? AND method = ? AND version = ?",
        (model_id, method, version))}
    new: list[int] = []
    for i, h in enumerate(hashes):
        if h not in held:
            held.add(h)
            new.append(i)
    if not new:
        return
    conn.execute(TABLE)
    side = arr.shape[1]
    row = conn.execute("SELECT n, side, total FROM spectra WHERE model_id = ? AND method = ? AND version = ?",
                       (model_id, method, version)).fetchone()
    total, n = arr[new].sum(axis=0), len(new)
    if row is not None and int(row[1]) == side:
        total, n = total + np.frombuffer(row[2], dtype=F64).reshape(side, side), n + int(row[0])
    conn.execute("INSERT OR REPLACE INTO spectra (model_id, method, version, n, side, total) VALUES (?, ?, ?, ?, ?, ?)",
                 (model_id, method, version, n, side, total.astype(F64).tobytes()))


def means(conn: sqlite3.Connection, method: str, version: str) -> dict[str, np.ndarray]:
    """Model name → mean ``(side, side)`` float32 log-spectrum of its ``method@version`` images, for the models
    that have one."""
    if not has_table(conn, "spectra"):
        return {}
    rows = conn.execute(
        "SELECT m.name, s.n, s.side, s.total FROM spectra s JOIN models m ON m.id = s.model_id "
        "WHERE s.method = ? AND s.version = ? ORDER BY m.name", (method, version)).fetchall()
    return {name: (np.frombuffer(total, dtype=F64).reshape(side, side) / n).astype(np.float32)
            for name, n, side, total in rows if n > 0 and len(total) == 8 * side * side}
