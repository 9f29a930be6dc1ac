"""The manifest and settings of a resumable model store (the zoo, synthetic pools).

A store folder holds a settings file (what every model of the store was made with; a resumed run must match it)
and ``manifest.jsonl``: one JSON object per finished model, keyed by a field naming the model, each listing the
sha256 of the model's files (checked with :func:`modelprint.artefacts.verify_files`). A model's files are written
before its line, and the manifest is replaced atomically as a whole (so lines keep the store's order), so a killed
run leaves only complete models; a reader still ignores a last line cut short (no newline, not JSON), which is all
an interrupted copy or append can leave.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from modelprint.atomic import write_text
from modelprint.errors import ModelprintError

MANIFEST = "manifest.jsonl"


def read_manifest(folder: str | Path, key: str) -> dict[str, dict[str, Any]]:
    """The records of ``folder``'s manifest by their ``key`` field, in file order (``{}`` without a manifest).

    A later line for the same model replaces an earlier one. A line that is not a JSON object with ``key``
    raises :class:`~modelprint.errors.ModelprintError` naming the file and line, except a last line cut short.
    """
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelprintError(f"{path}: unreadable manifest ({exc})") from None
    lines = text.split("\n")
    records: dict[str, dict[str, Any]] = {}
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            records[str(record[key])] = record
        except (ValueError, KeyError, TypeError):
            if i == len(lines):  # no newline after it: cut short while being written or copied
                continue
            raise ModelprintError(f"{path}:{i}: not a manifest line (a JSON object with {key!r})") from None
    return records


def write_manifest(folder: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``folder``'s manifest with ``records`` in the given order, one sorted-keys JSON line each."""
    write_text(Path(folder) / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def _differences(have: Any, want: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for k, v in want.items():
        h = have.get(k) if isinstance(have, dict) else None
        if isinstance(v, dict) and isinstance(h, dict):
            yield from _differences(h, v, f"{prefix}{k}.")
        elif h != v:
            yield f"{prefix}{k}: {h!r} → {v!r}"


def check_settings(path: str | Path, wanted: dict[str, Any], what: str) -> None:
    """Write the settings file ``path`` of a new store, or check that an existing one has ``wanted``'s values.

    :class:`~modelprint.errors.ModelprintError` naming the file and the differing settings otherwise.
    """
    path = Path(path)
    if not path.exists():
        write_text(path, json.dumps(wanted, indent=2) + "\n")
        return
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelprintError(f"{path}: unreadable {what} settings ({' '.join(str(exc).split())})") from None
    differences = list(_differences(have, wanted))
    if differences:
        raise ModelprintError(f"{path}: this {what} was built with other settings (existing → requested: "
                              f"{'; '.join(differences)}); use another folder or the same settings")
