"""Post-processing that real images suffer: JPEG re-encoding and resizing (for augmentation and robustness tests)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode a uint8 RGB image as JPEG at ``quality`` (4:2:0, as most encoders do) and decode it."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(buf).convert("RGB"))


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize a uint8 RGB image by ``scale`` with antialiased bicubic resampling (at least 1 px per side)."""
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC, reducing_gap=None))


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[y : y + size, x : x + size]


def random_degrade(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    out_size: int,
    p_jpeg: float = 0.3,
    quality: tuple[int, int] = (60, 100),
    p_resize: float = 0.3,
    scale: tuple[float, float] = (0.8, 1.25),
) -> np.ndarray:
    """Randomly resize then JPEG-compress, then centre-crop to ``out_size`` (the input must be large enough)."""
    if rng.random() < p_resize:
        image = resize(image, float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1])))))
    if rng.random() < p_jpeg:
        image = jpeg(image, int(rng.integers(quality[0], quality[1] + 1)))
    if min(image.shape[:2]) < out_size:  # upscaled back only when a downscale left too few pixels
        image = resize(image, out_size / min(image.shape[:2]))
    return centre_crop(image, out_size)
