"""Image decoding rules, bad-input errors, datasets and the real-image pool."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import natural_like
from modelprint.errors import DatasetError, ImageError
from modelprint.io import Dataset, ImageLimits, RealPool, decode_image, expand_paths, load_image, load_image_file
from unprivileged import unprivileged_prefix


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


@pytest.mark.timeout(30)  # reading a FIFO used to block for ever
def test_fifos_devices_and_sockets_are_refused_without_being_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.png"))
    try:
        for path, kind in ((fifo, "FIFO"), (tmp_path / "sock.png", "socket"), (Path("/dev/zero"), "character device")):
            with pytest.raises(ImageError, match=f"{path}: is a {kind}.*not a regular file") as info:
                load_image_file(path)
            assert "\n" not in str(info.value)
    finally:
        sock.close()


def test_files_larger_than_any_allowed_image_are_not_read(tmp_path: Path) -> None:
    limits = ImageLimits(max_pixels=1000)
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(limits.byte_limit + 1)  # sparse: costs no disk
    with pytest.raises(ImageError, match="larger than any image within the pixel limit of 1,000.*not read"):
        load_image_file(big, limits)


def test_links_name_their_problem(tmp_path: Path) -> None:
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "a.png").symlink_to("b.png")
    (tmp_path / "b.png").symlink_to("a.png")
    with pytest.raises(ImageError, match="dangling.png: broken symbolic link"):
        load_image_file(tmp_path / "dangling.png")
    with pytest.raises(ImageError, match="a.png: symbolic link loop"):
        load_image_file(tmp_path / "a.png")


def test_png_with_a_2mb_icc_profile_decodes(tmp_path: Path) -> None:
    path = tmp_path / "icc.png"
    icc = np.random.default_rng(0).bytes(2_000_000)
    Image.fromarray(natural_like(40, 48)).save(path, icc_profile=icc)
    assert load_image(path).shape == (40, 48, 3)


def _corrupt_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 100  # stored outside the entry …
    exif[0x0112] = 1
    raw = bytearray(exif.tobytes())
    entry = raw.index(struct.pack(">HH", 0x010E, 2))
    raw[entry + 8 : entry + 12] = struct.pack(">I", 0x7FFFFF00)  # … at an offset far past the block's end
    return bytes(raw)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])  # formats whose EXIF Pillow parses only when asked
def test_corrupt_exif_decodes_without_pillow_warnings(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"exif.{fmt.lower()}"
    Image.fromarray(natural_like(40, 48)).save(path, format=fmt, exif=_corrupt_exif())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = load_image(path)
    assert pixels.shape == (40, 48, 3) and [str(w.message) for w in caught] == []


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


def test_a_collected_batch_is_not_scanned_again(tmp_path: Path) -> None:
    """The CLI counts a batch for its progress bar, then the API reads it: one scan, so the count is what is read."""
    Image.fromarray(natural_like(40, 40)).save(tmp_path / "a.png")
    found = expand_paths([tmp_path])
    (tmp_path / "a.png").unlink()
    (tmp_path / "a.png").mkdir()  # a second scan would find the folder's images instead of the file counted
    Image.fromarray(natural_like(40, 40)).save(tmp_path / "a.png" / "b.png")
    assert expand_paths(found) == [tmp_path / "a.png"]


def _reason(item: Path | ImageError) -> str:
    if isinstance(item, ImageError):
        return item.reason
    try:
        load_image_file(item)
    except ImageError as err:
        return err.reason
    return "ok"


@pytest.mark.timeout(30)
def test_folder_scans_name_every_skip_and_never_loop(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "empty-sub").mkdir()
    Image.fromarray(natural_like(40, 40)).save(root / "a.png")
    Image.fromarray(natural_like(40, 40, 1)).save(root / "sub" / "b.png")
    (root / "notes.md").write_text("not an image, not named like one: skipped on purpose")
    (root / ".hidden.png").write_text("hidden: skipped on purpose")
    (root / "dangling.png").symlink_to(tmp_path / "missing.png")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "up").symlink_to(root)  # followed, it would loop for ever
    os.mkfifo(root / "sub" / "pipe")
    (tmp_path / "empty").mkdir()
    found = expand_paths([root, tmp_path / "empty"])
    named = {os.path.relpath(item if isinstance(item, Path) else item.path, tmp_path): _reason(item) for item in found}
    assert list(named) == ["in/a.png", "in/dangling.png", "in/loop1", "in/loop2", "in/sub/b.png", "in/sub/pipe",
                           "in/up", "empty"]
    assert named["in/a.png"] == named["in/sub/b.png"] == "ok"
    assert named["in/dangling.png"].startswith("broken symbolic link")
    assert named["in/loop1"].startswith("symbolic link loop") and named["in/loop2"].startswith("symbolic link loop")
    assert named["in/sub/pipe"].startswith("is a FIFO")
    assert named["in/up"].startswith("link to a folder, not followed")
    assert named["empty"] == "no images found in this folder"
    assert expand_paths(found) == found  # collecting a collected list changes nothing


def test_dataset_folder_scan_keeps_what_it_skipped(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make_folder_dataset(root)
    (root / "a" / "dangling.png").symlink_to(tmp_path / "missing.png")
    (root / "c").mkdir()
    (root / "d").symlink_to(tmp_path / "missing")
    ds = Dataset.from_path(root)
    assert ds.classes == ["a", "b"] and len(ds) == 7  # the dangling link is a sample: reading it names it
    assert [(Path(e.path).name, e.reason) for e in ds.skipped] == [
        ("c", "no images found in this folder"), ("d", "broken or looping link where a model folder was expected")]
    assert ds.with_min_count(3).skipped == ds.skipped


def _identify(gallery: Path, *paths: Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(prefix or []), sys.executable, "-m", "modelprint.cli.main", "identify", "--gallery", str(gallery)]
    return subprocess.run([*cmd, *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_unreadable_files_and_folders_one_line_each_and_the_batch_goes_on(tmp_path: Path, small_gallery: Path) -> None:
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("cannot make a file unreadable here (root without setpriv)")
    good = tmp_path / "good.png"
    Image.fromarray(natural_like(48, 48, 7)).save(good)
    (tmp_path / "locked").mkdir()
    (tmp_path / "scan" / "locked-sub").mkdir(parents=True)
    for copy in (tmp_path / "secret.png", tmp_path / "locked" / "x.png", tmp_path / "scan" / "y.png",
                 tmp_path / "scan" / "locked-sub" / "z.png"):
        copy.write_bytes(good.read_bytes())
    for path in (tmp_path / "secret.png", tmp_path / "locked", tmp_path / "scan" / "locked-sub"):
        path.chmod(0)
    try:
        res = _identify(small_gallery, tmp_path / "secret.png", tmp_path / "locked" / "x.png", tmp_path / "scan", good,
                        prefix=prefix)
    finally:
        for path in (tmp_path / "locked", tmp_path / "scan" / "locked-sub"):
            path.chmod(0o755)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "identify" in res.stdout and "y.png" in res.stdout and "good.png" in res.stdout  # the rest was processed
    lines = res.stderr.splitlines()
    assert len(lines) == 3, lines
    assert "secret.png: cannot read file (Permission denied)" in lines[0]
    assert "x.png: cannot read file (Permission denied)" in lines[1]
    assert "locked-sub: cannot read folder (Permission denied)" in lines[2]


def test_no_usable_image_at_all_is_exit_1_with_one_line(tmp_path: Path, small_gallery: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = _identify(small_gallery, tmp_path / "empty")
    assert res.returncode == 1 and res.stdout == "", res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and f"{tmp_path / 'empty'}: no images found in this folder" in lines[0], lines
    res = subprocess.run([sys.executable, "-m", "modelprint.cli.main", "identify", "--gallery", str(small_gallery),
                          "--json", str(tmp_path / "empty")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and json.loads(res.stdout)["results"] == []


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
