"""Export of a whole gallery to ``.json`` (vectors as lists, one item per line) or ``.npz``, written atomically.

The ``.npz`` holds ``index_json`` (a JSON string: models, calibrations, and per group ``g`` the method, version and
per-row metadata) and float32 arrays ``embeddings_<g>`` / ``prototypes_<g>``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.atomic import atomic_open
from modelprint.errors import GalleryError
from modelprint.gallery.calibration import DEFAULT_TARGET_TPR
from modelprint.gallery.results import Calibration
from modelprint.gallery.tables import (
    APPLICATION,
    F32,
    SCHEMA_VERSION,
    held,
    load_calibration,
    load_prototypes,
    now,
    prototype_sizes,
)

FORMATS = (".json", ".npz")


@dataclass(frozen=True)
class _Group:
    """The embeddings, prototypes and calibration of one ``method@version``."""

    method: str
    version: str
    rows: list[tuple[str, str, str, str]]  # (model, image_sha256, source, created), as ``vectors``
    vectors: np.ndarray
    prototype_models: list[str]
    prototypes: np.ndarray
    prototype_n: dict[str, int]
    calibration: Calibration | None


@dataclass(frozen=True)
class GalleryExport:
    """Everything an export file holds, read in one transaction."""

    header: dict[str, Any]
    groups: list[_Group]


def check_target(target: Path) -> None:
    """``GalleryError`` unless ``target`` names a format the export writes."""
    kind = target.suffix.lower()
    if kind not in FORMATS:
        raise GalleryError(f"{target}: export format must be .json or .npz, not {kind or 'no suffix'!r}")


def read_export(conn: sqlite3.Connection, source: Path) -> GalleryExport:
    """The gallery's content for export (inside the caller's read transaction)."""
    models = [
        {"name": n, "notes": notes, "created": c}
        for n, notes, c in conn.execute("SELECT name, notes, created FROM models ORDER BY name")
    ]
    groups = []
    for method, version in held(conn):
        rows = conn.execute(
            "SELECT m.name, e.image_sha256, e.source, e.created, e.dim, e.vector FROM embeddings e "
            "JOIN models m ON m.id = e.model_id WHERE e.method = ? AND e.version = ? ORDER BY m.name, e.id",
            (method, version),
        ).fetchall()
        dim = int(rows[0][4])
        vecs = np.frombuffer(b"".join(r[5] for r in rows), dtype=F32).reshape(len(rows), dim)
        pnames, protos = load_prototypes(conn, method, version)
        groups.append(_Group(method, version, [r[:4] for r in rows], vecs, pnames, protos,
                             prototype_sizes(conn, method, version), load_calibration(conn, method, version)))
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    header = {
        "format": APPLICATION,
        "schema_version": SCHEMA_VERSION,
        "source": str(source),
        "exported": now(),
        "target_tpr": float(meta.get("target_tpr", DEFAULT_TARGET_TPR)),
        "models": models,
    }
    return GalleryExport(header, groups)


def write_export(export: GalleryExport, target: Path) -> None:
    """Write ``export`` to ``target`` (``.json`` or ``.npz``) atomically."""
    check_target(target)
    if target.suffix.lower() == ".json":
        doc = dict(export.header)
        doc["embeddings"] = [
            {
                "model": r[0], "method": g.method, "version": g.version, "image_sha256": r[1], "source": r[2],
                "created": r[3], "vector": g.vectors[i].tolist(),
            }
            for g in export.groups
            for i, r in enumerate(g.rows)
        ]
        doc["prototypes"] = [
            {"model": name, "method": g.method, "version": g.version, "n": g.prototype_n[name],
             "vector": g.prototypes[i].tolist()}
            for g in export.groups
            for i, name in enumerate(g.prototype_models)
        ]
        doc["calibrations"] = [asdict(g.calibration) for g in export.groups if g.calibration is not None]
        with atomic_open(target, "w") as fh:
            _write_json_lines(fh, doc)
        return
    arrays: dict[str, np.ndarray] = {}
    index = dict(export.header)
    index["groups"] = []
    for k, g in enumerate(export.groups):
        arrays[f"embeddings_{k}"] = np.ascontiguousarray(g.vectors, dtype=np.float32)
        arrays[f"prototypes_{k}"] = np.ascontiguousarray(g.prototypes, dtype=np.float32)
        index["groups"].append(
            {
                "method": g.method,
                "version": g.version,
                "rows": [{"model": r[0], "image_sha256": r[1], "source": r[2], "created": r[3]} for r in g.rows],
                "prototype_models": g.prototype_models,
                "prototype_n": [g.prototype_n[name] for name in g.prototype_models],
                "calibration": asdict(g.calibration) if g.calibration is not None else None,
            }
        )
    arrays["index_json"] = np.array(json.dumps(index, allow_nan=False))
    with atomic_open(target, "wb") as fh:
        np.savez(fh, **arrays)


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
