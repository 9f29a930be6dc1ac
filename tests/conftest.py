"""Shared fixtures: small, real images written to disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("MODELPRINT_THREADS", "2")


def natural_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random image with 1/f-like content (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(h, w, 3))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    img = np.real(np.fft.ifft2(np.fft.fft2(noise, axes=(0, 1)) * amp[..., None], axes=(0, 1)))
    img = (img - img.min()) / (img.max() - img.min() + 1e-9)
    return (img * 255).astype(np.uint8)


@pytest.fixture
def rgb_png(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(natural_like(64, 80)).save(path)
    return path


@pytest.fixture(scope="session")
def small_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gallery of two models, four 48² images each, enrolled with the default method (read it, do not write)."""
    from modelprint.api import enroll
    from modelprint.gallery import Gallery

    root = tmp_path_factory.mktemp("small-gallery")
    for model, seed in (("a", 0), ("b", 50)):
        for i in range(4):
            Image.fromarray(natural_like(48, 48, seed + i)).save(root / f"{model}{i}.png")
    with Gallery(root / "g.sqlite") as g:
        for model in ("a", "b"):
            enroll(g, model, sorted(root.glob(f"{model}*.png")))
    return root / "g.sqlite"
