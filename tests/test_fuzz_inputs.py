"""Hundreds of odd inputs through ``modelprint identify`` and ``enroll`` in subprocesses (issue 11).

Byte flips and truncations of every supported format, decompression bombs, strips, 16-bit, CMYK, palette,
animated, corrupt EXIF, a huge ICC profile, FIFOs, devices, unreadable files and folders, broken and looping
links, a 2 GB sparse file, and good images. Whatever the input: no traceback, no hang, every input either
processed or named in exactly one line, exit code 1.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import natural_like
from unprivileged import unprivileged_prefix

FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tif": "TIFF", "bmp": "BMP", "gif": "GIF"}
FLIPS, CUTS = 30, 15  # per format: 6 × 45 = 270 damaged files
MAX_PIXELS = "1000000"  # bounds the work any accidentally valid damaged header could ask for
TIMEOUT = 120


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bombs(base: Image.Image) -> dict[str, bytes]:
    """Valid small files whose headers claim far more pixels than any limit allows."""
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    png += _png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + _png_chunk(b"IEND", b"")
    gif = bytearray(_encode(base, "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # the logical screen, which Pillow reports as the size
    bmp = bytearray(_encode(base, "BMP"))
    bmp[18:26] = struct.pack("<ii", 60_000, 60_000)
    jpg = bytearray(_encode(base, "JPEG"))
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5 : sof + 9] = struct.pack(">HH", 65_000, 65_000)
    webp = bytearray(_encode(base, "WEBP", lossless=False))
    webp[26:30] = struct.pack("<HH", 0x3FFF, 0x3FFF)
    tif = bytearray(_encode(base, "TIFF"))
    ifd = struct.unpack("<I", tif[4:8])[0]
    for i in range(struct.unpack("<H", tif[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", tif[entry : entry + 2])[0] in (256, 257):  # ImageWidth, ImageLength (LONG)
            tif[entry + 8 : entry + 12] = struct.pack("<I", 60_000)
    return {"bomb.png": png, "bomb.gif": bytes(gif), "bomb.bmp": bytes(bmp), "bomb.jpg": bytes(jpg),
            "bomb.webp": bytes(webp), "bomb.tif": bytes(tif)}


def _corrupt_exif() -> bytes:
    """An EXIF block whose description tag points far outside the block (Pillow warns about it)."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 100
    exif[0x0112] = 6
    raw = bytearray(exif.tobytes())
    entry = raw.index(struct.pack(">HH", 0x010E, 2))
    raw[entry + 8 : entry + 12] = struct.pack(">I", 0x7FFFFF00)
    return bytes(raw)


def _odd_but_valid(rng: np.random.Generator) -> dict[str, bytes]:
    """Unusual encodings of good images: each must be processed."""
    rgb = Image.fromarray(natural_like(48, 56, seed=7))
    grey16 = Image.fromarray((natural_like(48, 48, seed=8)[..., 0].astype(np.uint16) * 257)).convert("I;16")
    frames = [Image.fromarray(natural_like(48, 48, seed=s)) for s in (9, 10, 11)]
    out = {
        "grey16.png": _encode(grey16, "PNG"),
        "grey16.tif": _encode(grey16, "TIFF"),
        "float.tif": _encode(Image.fromarray(natural_like(48, 48, 12)[..., 0].astype(np.float32) / 255), "TIFF"),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "cmyk.tif": _encode(rgb.convert("CMYK"), "TIFF"),
        "palette.png": _encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32), "PNG"),
        "palette-transparent.gif": _encode(rgb.convert("P"), "GIF", transparency=0),
        "bilevel.png": _encode(rgb.convert("1"), "PNG"),
        "la.png": _encode(rgb.convert("LA"), "PNG"),
        "rgba.webp": _encode(rgb.convert("RGBA"), "WEBP", lossless=True),
        "animated.gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
        "animated.png": _encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
        "animated.webp": _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50),
        "huge-icc.png": _encode(rgb, "PNG", icc_profile=rng.bytes(2_000_000)),
    }
    for ext in ("png", "webp", "jpg"):
        out[f"corrupt-exif.{ext}"] = _encode(rgb, FORMATS[ext], exif=_corrupt_exif())
    return out


def _always_bad(base: Image.Image) -> dict[str, bytes]:
    strip = Image.fromarray(natural_like(1, 2000, seed=13))
    return {
        "empty.png": b"",
        "text.png": b"hello, I am not an image at all\n",
        "html.jpg": b"<!doctype html><html><body>404</body></html>",
        "strip-row.png": _encode(strip, "PNG"),
        "strip-column.png": _encode(strip.transpose(Image.Transpose.TRANSPOSE), "PNG"),
        "narrow.png": _encode(Image.fromarray(natural_like(2000, 31, seed=14)), "PNG"),
        "icon.png": _encode(base, "ICO"),  # a real image format, not a supported one
        "portable.bmp": _encode(base, "PPM"),
        "png-header-only.png": b"\x89PNG\r\n\x1a\n",
        **_bombs(base),
    }


def _damaged(data: bytes, rng: np.random.Generator) -> list[bytes]:
    """``FLIPS`` copies with 1-4 bytes flipped (half of them in the header) and ``CUTS`` truncations."""
    out = []
    for i in range(FLIPS):
        buf = bytearray(data)
        span = min(len(buf), 64) if i % 2 == 0 else len(buf)
        for pos in rng.integers(0, span, size=int(rng.integers(1, 5))):
            buf[pos] ^= int(rng.integers(1, 256))
        out.append(bytes(buf))
    cuts = np.unique(np.linspace(1, len(data) - 1, CUTS).astype(int))
    return out + [data[:c] for c in cuts]


def _make_inputs(root: Path) -> tuple[list[str], list[str], list[str]]:
    """Writes the inputs; returns (command-line arguments, paths that must be processed, every input path)."""
    rng = np.random.default_rng(0)
    fuzz = root / "fuzz"
    fuzz.mkdir()
    base = Image.fromarray(natural_like(48, 48, seed=1))
    good: list[str] = []
    for ext, fmt in FORMATS.items():
        data = _encode(base, fmt)
        (fuzz / f"good.{ext}").write_bytes(data)
        good.append(str(fuzz / f"good.{ext}"))
        for i, damaged in enumerate(_damaged(data, rng)):
            (fuzz / f"damaged-{i:02d}.{ext}").write_bytes(damaged)
    for name, data in _odd_but_valid(rng).items():
        (fuzz / name).write_bytes(data)
        good.append(str(fuzz / name))
    for name, data in _always_bad(base).items():
        (fuzz / name).write_bytes(data)
    with open(fuzz / "sparse-2gb.png", "wb") as fh:
        fh.truncate(2 << 30)  # costs no disk
    os.mkfifo(fuzz / "fifo.png")
    os.mkfifo(root / "fifo-named.jpg")
    (fuzz / "dangling.png").symlink_to(root / "missing.png")
    (fuzz / "loop-a.png").symlink_to("loop-b.png")
    (fuzz / "loop-b.png").symlink_to("loop-a.png")
    (fuzz / "back-up").symlink_to(fuzz)  # a link to its own folder: would loop if scans followed links
    (fuzz / "locked").mkdir()
    shutil.copy(good[0], fuzz / "locked" / "hidden-by-permissions.png")
    shutil.copy(good[0], fuzz / "secret.png")
    for path in (fuzz / "locked", fuzz / "secret.png"):
        path.chmod(0)
    (root / "empty-folder").mkdir()
    args = [str(fuzz), str(root / "fifo-named.jpg"), "/dev/zero", str(root / "missing.png"), str(root / "empty-folder"),
            str(fuzz / "secret.png"), good[0]]  # a file named twice is processed twice
    locked = [str(fuzz / "locked")] if unprivileged_prefix() is not None else [str(next((fuzz / "locked").iterdir()))]
    inputs = [str(p) for p in sorted(fuzz.iterdir()) if p.name != "locked"] + locked + args[1:]
    return args, good, inputs


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    prefix = unprivileged_prefix() or []
    cmd = [*prefix, sys.executable, "-m", "modelprint.cli.main", *args, "--max-pixels", MAX_PIXELS, "--json"]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, small_gallery: Path) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("fuzz")
    for name in ("g.sqlite", "enroll.sqlite"):
        shutil.copy(small_gallery, root / name)
    args, good, inputs = _make_inputs(root)
    identify = _run(root, "identify", "--gallery", str(root / "g.sqlite"), *args)
    enrolled = _run(root, "enroll", "--gallery", str(root / "enroll.sqlite"), "--model", "fuzzed", *args)
    yield {"root": root, "good": good, "inputs": inputs, "identify": identify, "enroll": enrolled}
    (root / "fuzz" / "locked").chmod(0o755)


def test_at_least_300_odd_inputs(fuzzed: dict) -> None:
    assert len(fuzzed["inputs"]) >= 300


@pytest.mark.parametrize("command", ["identify", "enroll"])
def test_no_traceback_every_input_answered_once_exit_code_1(fuzzed: dict, command: str) -> None:
    res = fuzzed[command]
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    assert res.returncode == 1, res.stderr[-3000:]
    payload = json.loads(res.stdout)
    failed = payload["failed"]
    lines = res.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("warning: ")]  # e.g. images already enrolled elsewhere
    assert len(warnings) == len(payload.get("warnings", [])), "\n".join(warnings)
    lines = [line for line in lines if not line.startswith("warning: ")]
    assert len(lines) == len(failed), "\n".join(lines)  # one line per bad input, nothing else
    for failure, line in zip(failed, lines):
        assert failure in line, (failure, line)
    if command == "identify":
        answered = [r["path"] for r in payload["results"]] + failed
        for path in fuzzed["inputs"]:
            assert any(a == path or a.startswith(path + ": ") for a in answered), f"{path}: neither processed nor named"


def test_good_inputs_are_processed(fuzzed: dict) -> None:
    results = json.loads(fuzzed["identify"].stdout)["results"]
    processed = [r["path"] for r in results]
    missing = [p for p in fuzzed["good"] if p not in processed]
    assert not missing, missing
    assert processed.count(fuzzed["good"][0]) == 2  # named twice, answered twice
    enrolled = json.loads(fuzzed["enroll"].stdout)
    assert enrolled["added"] + enrolled["skipped_duplicates"] == len(results)
    assert len(enrolled["failed"]) == len(json.loads(fuzzed["identify"].stdout)["failed"])


def test_special_files_are_named_for_what_they_are(fuzzed: dict) -> None:
    failed = json.loads(fuzzed["identify"].stdout)["failed"]
    reasons = {f.split(": ", 1)[0]: f.split(": ", 1)[1] for f in failed}
    root = fuzzed["root"]
    expected = {
        root / "fuzz" / "fifo.png": "FIFO",
        root / "fifo-named.jpg": "FIFO",
        Path("/dev/zero"): "character device",
        root / "fuzz" / "dangling.png": "broken symbolic link",
        root / "fuzz" / "loop-a.png": "symbolic link loop",
        root / "fuzz" / "back-up": "link to a folder",
        root / "fuzz" / "sparse-2gb.png": "not read",
        root / "empty-folder": "no images found",
        root / "fuzz" / "bomb.png": "over the limit",
        root / "fuzz" / "icon.png": "unsupported image format ICO",
    }
    if unprivileged_prefix() is not None:
        expected[root / "fuzz" / "secret.png"] = "Permission denied"
        expected[root / "fuzz" / "locked"] = "cannot read folder (Permission denied)"
    for path, reason in expected.items():
        assert reason in reasons[str(path)], (path, reasons[str(path)])


NAMES = {  # file name (bytes, so that non-UTF-8 names can be made) → good image?
    b"photo[v2].png": True,
    b"[red]bad[v1].png": False,
    b"[bold]x.png": True,
    b"new\nline.png": True,
    b"tab\tand\rcarriage.png": False,
    b"\x1b[31mred\x1b[0m.png": True,
    b"bell\x07.png": False,
    b"caf\xe9-latin1.png": True,
    b"\xff\xfe-invalid.png": False,
}


@pytest.mark.parametrize("command", ["identify", "enroll"])
def test_odd_names_one_line_each_and_nothing_raw_reaches_the_terminal(fuzzed: dict, command: str) -> None:
    root = fuzzed["root"]
    folder = root / "names"
    folder.mkdir(exist_ok=True)
    bracket = root / "a[/b]"  # the folder "b]" in the folder "a["
    bracket.mkdir(parents=True, exist_ok=True)
    good_png = Path(fuzzed["good"][0]).read_bytes()
    for name, good in NAMES.items():
        with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
            fh.write(good_png if good else b"not an image")
    (bracket / "bad.png").write_bytes(b"not an image")
    if command == "identify":
        res = _run(root, "identify", "--gallery", str(root / "g.sqlite"), str(folder), str(bracket / "bad.png"))
    else:
        res = _run(root, "enroll", "--gallery", str(root / "enroll.sqlite"), "--model", "sd[/x]", str(folder),
                   str(bracket / "bad.png"))
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    assert res.returncode == 1
    payload = json.loads(res.stdout)
    n_bad = sum(not good for good in NAMES.values()) + 1
    assert len(payload["failed"]) == n_bad
    lines = [line for line in res.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == n_bad, lines  # a newline in a name does not split its line
    raw = [line for line in res.stderr.splitlines() if any(ord(c) < 32 or ord(c) == 127 for c in line)]
    assert not raw, raw  # no escape sequence, tab, carriage return or bell reaches the terminal
    if command == "identify":
        processed = {r["path"] for r in payload["results"]}
        for name, good in NAMES.items():
            assert (os.fsdecode(os.path.join(os.fsencode(folder), name)) in processed) == good, name
