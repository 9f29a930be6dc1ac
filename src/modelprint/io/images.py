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
  :class:`~modelprint.errors.ImageError` naming the file and the reason;
* only regular files are read (a FIFO, device or socket is refused without being read, so none can block or
  stream forever), the header is checked before the body is read, and no file larger than an image within the
  pixel limit can be (:attr:`ImageLimits.byte_limit`) is read at all;
* Pillow's warnings (corrupt EXIF, malformed MPO …) are silenced: the image decodes, or the error says why not.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

from modelprint.config import max_pixels
from modelprint.errors import ImageError, ImageTooLargeError

# We enforce our own limit from the header; Pillow's bomb check would fire with a less useful message.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False
# A PNG's ICC profile (iCCP) shares the 1 MB text-chunk limit; real profiles reach several MB.
PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, 32 << 20)

SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "MPO")
_OPENERS = SUPPORTED_FORMATS[:-1]  # Pillow opens MPO through its JPEG plugin
MIN_SIDE = 32
#: The most bytes a supported file spends per pixel (uncompressed four-channel float32 TIFF) …
MAX_BYTES_PER_PIXEL = 16
#: … plus room for metadata (EXIF, ICC profiles, text chunks, thumbnails).
METADATA_BYTES = 64 << 20
#: Bytes of a file's start inspected to name an unsupported format.
_HEAD_BYTES = 1 << 16
_NOT_REGULAR = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


@dataclass(frozen=True)
class ImageLimits:
    """Size limits checked before an image is decoded."""

    min_side: int = MIN_SIDE
    max_pixels: int | None = None

    @property
    def pixel_limit(self) -> int:
        return self.max_pixels if self.max_pixels is not None else max_pixels()

    @property
    def byte_limit(self) -> int:
        """The largest file an image within :attr:`pixel_limit` can be; larger files are refused unread."""
        return self.pixel_limit * MAX_BYTES_PER_PIXEL + METADATA_BYTES


@dataclass(frozen=True)
class ImageBytes:
    """An image file held in memory (an upload) under ``name``, which stands for its path in results and errors;
    :func:`load_image_file` decodes it with the same rules and limits as a file on disk."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


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
    out = arr.astype(np.float32)
    out /= 255.0  # in place: a large image never holds two float copies
    return out


def _size_text(n: int) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MB"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _format_name(head: bytes) -> str | None:
    """The Pillow format of a file's first bytes, among all Pillow knows (to name unsupported ones)."""
    try:
        with Image.open(io.BytesIO(head)) as img:
            return img.format
    except Exception:  # noqa: BLE001  (any failure means: not a format Pillow knows)
        return None


def _open_header(fh: BinaryIO, name: str, limits: ImageLimits) -> Image.Image:
    """Read only the header (supported formats only); refuse bombs before a pixel is decoded."""
    try:
        img = Image.open(fh, formats=_OPENERS)
    except UnidentifiedImageError:
        fh.seek(0)
        fmt = _format_name(fh.read(_HEAD_BYTES))
        if fmt is None:
            raise ImageError(name, "not an image (content is not a known image format)") from None
        raise ImageError(name, f"unsupported image format {fmt}; supported: PNG, JPEG, WebP, TIFF, BMP, GIF") from None
    except Exception as exc:  # noqa: BLE001  (Pillow raises a zoo of types on garbage headers)
        raise ImageError(name, f"unreadable image header ({_one_line(exc)})") from None
    width, height = img.size
    if width * height > limits.pixel_limit:
        raise ImageTooLargeError(
            name,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {limits.pixel_limit:,} "
            "(possible decompression bomb; raise --max-pixels or MODELPRINT_MAX_PIXELS to allow it)",
        )
    return img


def _decode(fh: BinaryIO, name: str, limits: ImageLimits) -> tuple[np.ndarray, str, str]:
    """Pixels, format and mode of the image in ``fh``; Pillow's warnings are silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = _open_header(fh, name, limits)
        fmt = img.format or "unknown"
        try:
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            pixels = _to_rgb_float(img)
        except MemoryError:
            raise ImageError(name, "not enough memory to decode this image") from None
        except Exception as exc:  # noqa: BLE001  (damaged data surfaces as OSError, SyntaxError, struct.error …)
            msg = _one_line(exc)
            raise ImageError(name, "truncated or corrupt image data" + (f" ({msg})" if msg else "")) from None
    h, w = pixels.shape[:2]
    if min(h, w) < limits.min_side:
        raise ImageError(name, f"image is {w}x{h}; at least {limits.min_side} px on each side is needed")
    return np.ascontiguousarray(pixels), fmt, img.mode


def decode_image(data: bytes, name: str = "<bytes>", limits: ImageLimits | None = None) -> LoadedImage:
    """Decode image bytes; see the module docstring for the rules."""
    limits = limits or ImageLimits()
    if len(data) == 0:
        raise ImageError(name, "file is empty (0 bytes)")
    pixels, fmt, mode = _decode(io.BytesIO(data), name, limits)
    return LoadedImage(name, pixels, fmt, mode, hashlib.sha256(data).hexdigest())


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points, directly or not, back to itself)"
    if exc.errno == errno.ENOTDIR:
        return "no such file (a folder in its path is a file)"
    return f"cannot read file ({exc.strerror or exc})"


@contextmanager
def _open_regular_file(path: str | Path) -> Iterator[BinaryIO]:
    """Open ``path`` (links followed) for reading if it is a regular file; anything else is an :class:`ImageError`.

    The type is checked before opening and again on the open descriptor, and the open never waits, so a FIFO,
    terminal or device named as input is refused at once instead of blocking or streaming without end.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "broken symbolic link (its target does not exist)" if os.path.islink(path) else "no such file"
        raise ImageError(path, reason) from None
    except OSError as exc:
        raise ImageError(path, _os_reason(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(st.st_mode), "a special file")
        raise ImageError(path, f"is {kind}, not a regular file; not read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ImageError(path, _os_reason(exc)) from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the two checks
            raise ImageError(path, "is no longer a regular file; not read")
        yield fh


def _sha256(fh: BinaryIO, size: int) -> str:
    """sha256 of the first ``size`` bytes (the size checked before reading; a growing file is not followed)."""
    digest = hashlib.sha256()
    fh.seek(0)
    while size > 0 and (block := fh.read(min(size, 1 << 20))):
        digest.update(block)
        size -= len(block)
    return digest.hexdigest()


def load_image_file(path: str | Path | ImageBytes, limits: ImageLimits | None = None) -> LoadedImage:
    """Read and decode one file (or :class:`ImageBytes`); every failure is an :class:`ImageError` naming ``path``.

    Memory and reading are bounded by the limits whatever the file holds: see the module docstring.
    """
    limits = limits or ImageLimits()
    name = str(path)
    if isinstance(path, ImageBytes):
        if len(path.data) > limits.byte_limit:
            raise ImageTooLargeError(name, f"file is {_size_text(len(path.data))}, larger than any image within the "
                                           f"pixel limit of {limits.pixel_limit:,} can be")
        return decode_image(path.data, name, limits)
    with _open_regular_file(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise ImageError(name, "file is empty (0 bytes)")
        if size > limits.byte_limit:
            raise ImageTooLargeError(
                name, f"file is {_size_text(size)}, larger than any image within the pixel limit of "
                      f"{limits.pixel_limit:,} can be ({_size_text(limits.byte_limit)}); not read")
        pixels, fmt, mode = _decode(fh, name, limits)
        return LoadedImage(name, pixels, fmt, mode, _sha256(fh, size))


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
