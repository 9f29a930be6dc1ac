"""Decoding images by content into RGB float32 arrays in [0, 1].

Rules, applied the same way every time:

* the format is detected from the bytes (PNG, JPEG, WebP, TIFF, BMP, GIF; GIF and other animations give their
  first frame), never from the file extension;
* EXIF orientation is applied;
* ``L``/``LA``/``1`` are replicated to three channels; ``P`` is expanded through its palette; ``CMYK`` and
  ``YCbCr`` go through Pillow's conversion; 16-bit (``I;16*``, ``I``) is scaled by 1/65535; ``F`` is clipped;
* alpha is dropped, never composited: a background colour would add pixels the generator did not make;
* a file that is empty, unreadable, truncated, not an image, smaller than ``min_side`` pixels on a side, or
  larger than ``max_pixels`` (decompression bombs are caught from the header, before decoding) raises
  :class:`~modelprint.errors.ImageError` naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from modelprint.errors import ImageError

# We enforce our own limit from the header; Pillow's bomb check would fire with a less useful message.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "MPO")
DEFAULT_MAX_PIXELS = 64_000_000
MIN_SIDE = 32


def default_max_pixels() -> int:
    """The pixel limit: ``MODELPRINT_MAX_PIXELS`` if set, else 64 megapixels."""
    value = os.environ.get("MODELPRINT_MAX_PIXELS")
    return int(value) if value else DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ImageLimits:
    """Size limits checked before an image is decoded."""

    min_side: int = MIN_SIDE
    max_pixels: int | None = None

    @property
    def pixel_limit(self) -> int:
        return self.max_pixels if self.max_pixels is not None else default_max_pixels()


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image with what provenance tools need to know about it."""

    path: str
    pixels: np.ndarray  # (H, W, 3) float32 in [0, 1]
    format: str
    mode: str
    sha256: str  # of the file's bytes


def _to_rgb_float(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(arr / 65535.0, 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=2).astype(np.float32)
    if mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "RGBX"):
        img = img.convert("RGBA") if mode == "RGBa" else img
        arr = np.asarray(img, dtype=np.uint8)[..., :3]
    elif mode in ("LA", "La", "L", "1"):
        arr = np.asarray(img.convert("L"), dtype=np.uint8)
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif mode == "RGB":
        arr = np.asarray(img, dtype=np.uint8)
    else:  # CMYK, YCbCr, LAB, HSV ...
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return arr.astype(np.float32) / 255.0


def decode_image(data: bytes, name: str = "<bytes>", limits: ImageLimits | None = None) -> LoadedImage:
    """Decode image bytes; see the module docstring for the rules."""
    limits = limits or ImageLimits()
    if len(data) == 0:
        raise ImageError(name, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (content is not a known image format)") from None
    except Exception as exc:  # Pillow raises a zoo of types on garbage headers
        raise ImageError(name, f"unreadable image header ({exc})") from None
    fmt = img.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(name, f"unsupported image format {fmt}; supported: PNG, JPEG, WebP, TIFF, BMP, GIF")
    width, height = img.size
    if width * height > limits.pixel_limit:
        raise ImageError(
            name,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {limits.pixel_limit:,} "
            "(possible decompression bomb; raise --max-pixels or MODELPRINT_MAX_PIXELS to allow it)",
        )
    try:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        pixels = _to_rgb_float(img)
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        reason = "truncated or corrupt image data" + (f" ({msg})" if msg else "")
        raise ImageError(name, reason) from None
    h, w = pixels.shape[:2]
    if min(h, w) < limits.min_side:
        raise ImageError(name, f"image is {w}x{h}; at least {limits.min_side} px on each side is needed")
    return LoadedImage(
        path=name,
        pixels=np.ascontiguousarray(pixels),
        format=fmt,
        mode=img.mode,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def load_image_file(path: str | Path, limits: ImageLimits | None = None) -> LoadedImage:
    """Read and decode one file; every failure is an :class:`ImageError` naming ``path``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, str(path), limits)


def load_image(path: str | Path, limits: ImageLimits | None = None) -> np.ndarray:
    """Decode ``path`` into an (H, W, 3) float32 RGB array in [0, 1]."""
    return load_image_file(path, limits).pixels


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Quantise [0, 1] floats to uint8 with rounding (the inverse of decoding an 8-bit image)."""
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def save_png(path: str | Path, pixels: np.ndarray) -> None:
    """Write an RGB float or uint8 array as a lossless PNG, atomically."""
    from modelprint.atomic import atomic_path

    arr = pixels if pixels.dtype == np.uint8 else to_uint8(pixels)
    with atomic_path(path) as tmp:
        Image.fromarray(arr, "RGB").save(tmp, format="PNG")
