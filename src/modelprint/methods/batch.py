"""Embedding a batch of image files one at a time, in this process or on an executor's workers (processes, Ray).

Memory stays bounded by one image per worker: each decodes, embeds and drops one image before the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from modelprint.errors import ImageError
from modelprint.executor import Executor, LocalExecutor
from modelprint.io.images import ImageLimits, load_image_file
from modelprint.methods.base import FingerprintMethod

Progress = Callable[[int], None]


def embed_file(method: FingerprintMethod, path: str | Path, limits: ImageLimits | None) -> tuple[np.ndarray, str]:
    """One image's embedding and sha256; its pixels are freed on return, before the next image is decoded."""
    img = load_image_file(path, limits)
    return method.embed([img.pixels])[0], img.sha256


EMBED_CHUNK = 16
_WORKER: dict[str, FingerprintMethod] = {}


def _init_embed(method: FingerprintMethod) -> None:
    _WORKER["method"] = method


def _embed_chunk(paths: list[str | Path], limits: ImageLimits | None) -> list[tuple[np.ndarray, str] | tuple[str, str]]:
    """In a worker: ``(vector, sha256)`` per image, or ``(path, reason)`` for one that failed (picklable)."""
    out: list = []
    for p in paths:
        try:
            out.append(embed_file(_WORKER["method"], p, limits))
        except ImageError as err:
            out.append((err.path, err.reason))
    return out


def embedded(method: FingerprintMethod, paths: Sequence[str | Path | ImageError], limits: ImageLimits | None,
              progress: Progress | None, executor: Executor | None):  # noqa: ANN202
    """``(path, (vector, sha256) or ImageError)`` for each input, in input order."""
    if executor is None or isinstance(executor, LocalExecutor):
        for p in paths:
            if isinstance(p, ImageError):
                yield p.path, p
            else:
                try:
                    yield p, embed_file(method, p, limits)
                except ImageError as err:
                    yield p, err
            if progress:
                progress(1)
        return
    files = [p for p in paths if not isinstance(p, ImageError)]
    chunks = [files[s : s + EMBED_CHUNK] for s in range(0, len(files), EMBED_CHUNK)]
    done: dict[int, list] = {}
    for i, got in executor.run(_embed_chunk, [(c, limits) for c in chunks], initializer=_init_embed,
                               initargs=(method,)):
        done[i] = got
        if progress:
            progress(len(got))
    results = iter([r for i in range(len(chunks)) for r in done[i]])
    for p in paths:
        if isinstance(p, ImageError):
            if progress:
                progress(1)
            yield p.path, p
            continue
        got = next(results)
        yield p, (ImageError(*got) if isinstance(got[0], str) else got)
