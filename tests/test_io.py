"""Image decoding rules, bad-input errors, datasets and the real-image pool."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import natural_like
from modelprint.errors import DatasetError, ImageError
from modelprint.io import Dataset, ImageLimits, RealPool, decode_image, expand_paths, load_image, load_image_file


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    img.save(path, format=fmt, **kw)
    return path


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"])
def test_formats_decode_by_content_not_extension(tmp_path: Path, fmt: str) -> None:
    arr = natural_like(40, 48)
    path = _save(Image.fromarray(arr), tmp_path / "misnamed.txt", fmt)  # wrong extension on purpose
    loaded = load_image_file(path)
    assert loaded.format == fmt
    assert loaded.pixels.shape == (40, 48, 3) and loaded.pixels.dtype == np.float32
    assert 0.0 <= loaded.pixels.min() and loaded.pixels.max() <= 1.0
    if fmt in ("PNG", "TIFF", "BMP"):  # lossless: exact round trip
        np.testing.assert_array_equal(np.rint(loaded.pixels * 255).astype(np.uint8), arr)


def test_gif_first_frame(tmp_path: Path) -> None:
    red = Image.new("RGB", (40, 40), (255, 0, 0))
    blue = Image.new("RGB", (40, 40), (0, 0, 255))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)
    px = load_image(path)
    assert px[..., 0].mean() > 0.9 and px[..., 2].mean() < 0.1


def test_modes_become_rgb_the_same_way(tmp_path: Path) -> None:
    grey = np.full((40, 40), 128, np.uint8)
    expected_grey = np.full((40, 40, 3), 128 / 255, np.float32)
    np.testing.assert_allclose(load_image(_save(Image.fromarray(grey, "L"), tmp_path / "l.png", "PNG")), expected_grey)
    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(np.zeros_like(grey))])
    np.testing.assert_allclose(load_image(_save(la, tmp_path / "la.png", "PNG")), expected_grey)  # alpha dropped
    rgba = np.dstack([natural_like(40, 40), np.zeros((40, 40), np.uint8)])
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png", "PNG"))
    np.testing.assert_allclose(out, rgba[..., :3] / 255.0, atol=1e-6)  # colour kept as stored, not composited
    pal = Image.fromarray(natural_like(40, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = load_image(_save(pal, tmp_path / "p.png", "PNG"))
    np.testing.assert_allclose(out, np.asarray(pal.convert("RGB")) / 255.0, atol=1e-6)
    i16 = Image.fromarray(np.full((40, 40), 65535, np.uint16)).convert("I;16")
    np.testing.assert_allclose(load_image(_save(i16, tmp_path / "i16.png", "PNG")), np.ones((40, 40, 3)))
    cmyk = Image.fromarray(natural_like(40, 40)).convert("CMYK")
    out = load_image(_save(cmyk, tmp_path / "cmyk.tiff", "TIFF"))
    np.testing.assert_allclose(out, np.asarray(cmyk.convert("RGB")) / 255.0, atol=1e-6)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = Image.fromarray(natural_like(40, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, format="JPEG", exif=exif.tobytes())
    assert load_image(path).shape == (64, 40, 3)


def _huge_png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_bad_inputs_give_one_line_errors_naming_the_file(tmp_path: Path, rgb_png: Path) -> None:
    good = rgb_png.read_bytes()
    cases = {
        "empty.png": (b"", "empty"),
        "text.png": (b"hello, I am not an image at all", "not an image"),
        "truncated.png": (good[: len(good) // 2], "truncated"),
        "bomb.png": (_huge_png_header(100_000, 100_000), "over the limit"),
    }
    tiny = io.BytesIO()
    Image.fromarray(natural_like(16, 64)).save(tiny, format="PNG")
    cases["tiny.png"] = (tiny.getvalue(), "at least 32 px")
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError) as info:
            load_image_file(path)
        msg = str(info.value)
        assert str(path) in msg and reason in msg and "\n" not in msg, msg
    with pytest.raises(ImageError, match="no such file"):
        load_image_file(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image_file(tmp_path)


def test_pixel_limit_is_configurable(rgb_png: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageError, match="over the limit of 1,000"):
        load_image_file(rgb_png, ImageLimits(max_pixels=1000))
    monkeypatch.setenv("MODELPRINT_MAX_PIXELS", "100")
    with pytest.raises(ImageError, match="over the limit of 100"):
        load_image_file(rgb_png)
    assert load_image_file(rgb_png, ImageLimits(max_pixels=10_000)).pixels.shape == (64, 80, 3)


def test_decode_is_deterministic(rgb_png: Path) -> None:
    a = decode_image(rgb_png.read_bytes(), "x")
    b = decode_image(rgb_png.read_bytes(), "x")
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64


def _make_folder_dataset(root: Path) -> None:
    for label, seed in (("a", 0), ("b", 10)):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(natural_like(40, 40, seed + i)).save(root / label / f"{i}.png")
    (root / "a" / "notes.md").write_text("not an image")
    (root / ".hidden").mkdir()


def test_dataset_from_folder_csv_and_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make_folder_dataset(root)
    ds = Dataset.from_path(root)
    assert ds.classes == ["a", "b"] and len(ds) == 6
    (tmp_path / "index.csv").write_text("path,label,split\nds/a/0.png,a,train\nds/b/1.png,b,test\n")
    csv_ds = Dataset.from_path(tmp_path / "index.csv")
    assert csv_ds.paths[0] == tmp_path / "ds/a/0.png" and csv_ds.samples[1].split == "test"
    (tmp_path / "index.jsonl").write_text('{"path": "ds/a/0.png", "label": "a"}\n\n{"path": "ds/b/2.png", "label": "b"}\n')
    assert Dataset.from_path(tmp_path / "index.jsonl").labels == ["a", "b"]
    assert len(ds.with_min_count(4)) == 0


def test_dataset_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("file,model\nx.png,a\n")
    with pytest.raises(DatasetError, match="bad.csv"):
        Dataset.from_path(tmp_path / "bad.csv")
    (tmp_path / "bad.jsonl").write_text("{not json}\n")
    with pytest.raises(DatasetError, match="line 1"):
        Dataset.from_path(tmp_path / "bad.jsonl")
    with pytest.raises(DatasetError, match="no such"):
        Dataset.from_path(tmp_path / "nope")


def test_expand_paths_keeps_named_files_and_finds_images_in_folders(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make_folder_dataset(root)
    found = expand_paths([root / "a", tmp_path / "explicit.txt"])
    assert [p.name for p in found] == ["0.png", "1.png", "2.png", "explicit.txt"]


def test_pool_crops_are_deterministic_and_split_by_photo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(natural_like(120 + 10 * i, 150, seed=i)).save(folder / f"p{i}.png")
    pool = RealPool(folders=[folder], include_packages=False)
    train, holdout = pool.sources("train"), pool.sources("holdout")
    assert set(train).isdisjoint(holdout) and len(train) + len(holdout) == 10
    a = pool.crops(20, size=32, seed=3, split="all")
    b = RealPool(folders=[folder], include_packages=False).crops(20, size=32, seed=3, split="all", cache=False)
    assert a.shape == (20, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert list((tmp_path / "cache" / "pool").glob("*.npy"))  # cached on disk
    c = pool.crops(20, size=32, seed=4, split="all")
    assert not np.array_equal(a, c)


def test_package_pool_has_photos() -> None:
    sources = RealPool().sources("all")
    assert len(sources) >= 10  # scikit-image, scikit-learn and matplotlib ship at least 10 colour photos


def test_atomic_writes_leave_no_temp_file_and_normal_permissions(tmp_path: Path) -> None:
    import os

    from modelprint.atomic import atomic_open, write_text

    target = tmp_path / "out.json"
    write_text(target, "first")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would create it, not mkstemp's 0600
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
