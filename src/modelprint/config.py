"""Every ``MODELPRINT_*`` environment variable modelprint reads, in one place, with its default.

Each is read when it is needed (not at import), so a caller or a test can set it late; unset or empty means the
default. A value a variable cannot take is a :class:`~modelprint.errors.ModelprintError` naming the variable (one
line from the CLI), never a traceback. :data:`VARIABLES` lists them all; the README's table is checked against it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelprint.errors import ModelprintError

#: Images with more pixels are refused from their header (decompression bombs), unless ``--max-pixels`` says more.
DEFAULT_MAX_PIXELS = 64_000_000
#: Rows (prototypes, or images, of one method version) from which a gallery searches an ANN index (benchmarked).
DEFAULT_INDEX_THRESHOLD = 20_000


@dataclass(frozen=True)
class Variable:
    """An environment variable: its name, its default (as the README shows it) and what it sets."""

    name: str
    default: str
    doc: str


VARIABLES = (
    Variable("MODELPRINT_CACHE", "`~/.cache/modelprint`",
             "cache of the real-image pool's crops, and of the benchmarks' stages"),
    Variable("MODELPRINT_MAX_PIXELS", f"`{DEFAULT_MAX_PIXELS}`",
             "pixel limit of an input image (`--max-pixels` overrides it); a positive integer"),
    Variable("MODELPRINT_THREADS", "`0` (all cores)",
             "torch threads of one process (training workers always use 1); a non-negative integer"),
    Variable("MODELPRINT_REALWORLD", "`../shared/realworld` if present",
             "folder of real-world generated images that `modelprint demo` adds"),
    Variable("MODELPRINT_SHARED", "`../shared` beside the repository", "shared data folder the benchmarks read"),
    Variable("MODELPRINT_INDEX_THRESHOLD", f"`{DEFAULT_INDEX_THRESHOLD}`",
             "rows from which a gallery builds and searches its ANN index (exact below); a non-negative integer"),
    Variable("MODELPRINT_TOKENS", "none",
             "bearer tokens `modelprint serve` accepts, comma-separated (beside those of `--token-file`)"),
)


def _raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def _integer(name: str, minimum: int) -> int | None:
    raw = _raw(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ModelprintError(f"{name}={raw!r}: not an integer of at least {minimum}")
    return value


def cache_dir() -> Path:
    """``MODELPRINT_CACHE``, else ``~/.cache/modelprint``."""
    raw = _raw("MODELPRINT_CACHE")
    return Path(raw) if raw else Path.home() / ".cache" / "modelprint"


def max_pixels() -> int:
    """``MODELPRINT_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    value = _integer("MODELPRINT_MAX_PIXELS", 1)
    return DEFAULT_MAX_PIXELS if value is None else value


def torch_threads() -> int:
    """``MODELPRINT_THREADS``, else 0: all cores."""
    return _integer("MODELPRINT_THREADS", 0) or 0


def index_threshold() -> int:
    """``MODELPRINT_INDEX_THRESHOLD``, else :data:`DEFAULT_INDEX_THRESHOLD`."""
    value = _integer("MODELPRINT_INDEX_THRESHOLD", 0)
    return DEFAULT_INDEX_THRESHOLD if value is None else value


def service_tokens(environ: Mapping[str, str] | None = None) -> list[str]:
    """``MODELPRINT_TOKENS`` (of ``environ``, else the process's) split at commas, blank parts dropped."""
    return [s for part in (_raw("MODELPRINT_TOKENS", environ) or "").split(",") if (s := part.strip())]


def realworld_dir() -> Path | None:
    """``MODELPRINT_REALWORLD``, else None (the demo then looks for ``../shared/realworld``)."""
    raw = _raw("MODELPRINT_REALWORLD")
    return Path(raw) if raw else None


def shared_dir() -> Path | None:
    """``MODELPRINT_SHARED``, else None (the benchmarks then use ``../shared`` beside the repository)."""
    raw = _raw("MODELPRINT_SHARED")
    return Path(raw) if raw else None
