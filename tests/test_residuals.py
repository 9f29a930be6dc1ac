"""Residual extractors: registry, shapes, determinism, the shipped DnCNN, tiling, checkpoints, training."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelprint.errors import CheckpointError, RegistryError
from modelprint.residuals import RESIDUALS, DnCNNResidual, Residual, default_weights_path, get_residual

NAMES = ("highpass", "wavelet", "dncnn")
SIZES = ((37, 53), (32, 32), (300, 200))


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, 8-bit-quantised RGB image (gradients and slow sinusoids)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for _ in range(3):
        fy, fx, ph = rng.uniform(0.005, 0.02, 2).tolist() + [rng.uniform(0, 6.28)]
        chans.append(0.5 + 0.25 * np.sin(2 * np.pi * (fy * yy + fx * xx) + ph) + 0.1 * (yy / h - xx / w))
    img = np.stack(chans, axis=2)
    return (np.rint(np.clip(img, 0, 1) * 255) / 255).astype(np.float32)


def textured_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((h, w, 3)), sigma=(1.5, 1.5, 0)) * 2.5 - 0.75
    img = img + smooth_image(h, w, seed + 1) - 0.5
    return (np.rint(np.clip(img, 0, 1) * 255) / 255).astype(np.float32)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def dncnn() -> DnCNNResidual:
    return get_residual("dncnn")


@pytest.fixture(scope="module")
def residuals(dncnn: DnCNNResidual) -> dict[str, Residual]:
    return {"highpass": get_residual("highpass"), "wavelet": get_residual("wavelet"), "dncnn": dncnn}


# ---------------------------------------------------------------------------------------------------- registry
def test_registry_names_and_lookup(dncnn: DnCNNResidual) -> None:
    assert set(NAMES) <= set(RESIDUALS.names())
    assert isinstance(dncnn, DnCNNResidual) and dncnn.name == "dncnn"
    hp = get_residual("highpass", sigma=2.0)
    assert hp.name == "highpass" and hp.sigma == 2.0
    assert hp.version != get_residual("highpass", sigma=1.0).version
    assert get_residual("wavelet", wavelet="db2").version != get_residual("wavelet").version
    assert dncnn.sha256[:12] in dncnn.version


def test_unknown_residual_names_the_known_ones() -> None:
    with pytest.raises(RegistryError, match=r"unknown residual 'nope'.*dncnn.*highpass.*wavelet"):
        get_residual("nope")


def test_import_does_not_load_torch() -> None:
    code = "import sys, modelprint.residuals; assert 'torch' not in sys.modules, 'torch imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_same_shape_float32_deterministic(residuals: dict[str, Residual], name: str, size: tuple[int, int]) -> None:
    img = textured_image(*size, seed=3)
    res = residuals[name]
    a = res(img)
    b = res(img.copy())
    assert a.shape == img.shape and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert float(np.abs(a).max()) > 0  # a textured image has a residual


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single(residuals: dict[str, Residual], name: str) -> None:
    imgs = [textured_image(40, 64, 1), textured_image(37, 53, 2), textured_image(40, 64, 4)]
    res = residuals[name]
    got = res.batch(imgs)
    assert len(got) == 3
    for im, r in zip(imgs, got, strict=True):
        np.testing.assert_allclose(r, res(im), rtol=0, atol=1e-6)


def test_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="H, W, 3"):
        get_residual("highpass")(np.zeros((32, 32), np.float32))


# ---------------------------------------------------------------------------------------------------- classical
def test_highpass_of_constant_is_zero() -> None:
    img = np.full((45, 61, 3), 0.37, np.float32)
    assert np.abs(get_residual("highpass", sigma=1.5)(img)).max() < 1e-6
    assert np.abs(get_residual("wavelet")(img)).max() < 1e-6


def test_highpass_and_wavelet_capture_added_noise() -> None:
    img = smooth_image(128, 96, seed=5)
    noise = np.random.default_rng(0).normal(0, 3 / 255, img.shape).astype(np.float32)
    for name in ("highpass", "wavelet"):
        assert corr(get_residual(name)(img + noise), noise) > 0.5, name


# ---------------------------------------------------------------------------------------------------- dncnn
def test_dncnn_small_on_smooth_and_finds_noise(dncnn: DnCNNResidual) -> None:
    img = smooth_image(160, 192, seed=7)
    clean = dncnn(img)
    assert float(np.sqrt(np.mean(clean**2))) * 255 < 0.5  # well under one grey level
    rng = np.random.default_rng(1)
    for sigma, floor in ((1.0, 0.75), (3.0, 0.55)):  # measured with the shipped weights: 0.87 and 0.70
        noise = rng.normal(0, sigma / 255, img.shape).astype(np.float32)
        r = dncnn(img + noise)
        assert corr(r, noise) > floor, sigma
        assert abs(corr(clean, noise)) < 0.05  # the clean image's residual is unrelated to that noise


def test_tiling_equals_whole_image(dncnn: DnCNNResidual) -> None:
    img = textured_image(300, 230, seed=11)
    whole = DnCNNResidual(tile=1024)(img)
    assert dncnn.overlap >= dncnn.depth  # the documented exactness condition holds for the defaults
    tiled_res = DnCNNResidual(tile=96, overlap=16, batch_pixels=3 * 96 * 96)
    tiled = tiled_res(img)
    scale = float(np.abs(whole).max())
    assert np.abs(tiled - whole).max() <= 1e-4 * scale
    # a too-small overlap is only approximately equal, and only near seams
    rough = DnCNNResidual(tile=96, overlap=4)(img)
    assert np.abs(rough - whole).max() > np.abs(tiled - whole).max()


def test_shipped_sidecar_is_consistent() -> None:
    path = default_weights_path()
    meta = json.loads(path.with_suffix(".json").read_text())
    from modelprint.atomic import sha256_file

    assert meta["sha256"] == sha256_file(path)
    assert path.stat().st_size <= 5 * 1024 * 1024
    assert meta["config"]["sigma"] == 1.0
    assert "train_denoiser" in meta["command"]
    assert meta["metrics"]["psnr_gain_db"] > 0


# ---------------------------------------------------------------------------------------------------- checkpoints
def _copy_shipped(tmp_path: Path) -> Path:
    src = default_weights_path()
    dst = tmp_path / "w.safetensors"
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert str(path) in msg
    assert "\n" not in msg
    return msg


def test_missing_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError) as err:
        DnCNNResidual(weights=path)
    assert "not found" in _one_line(err, path)


def test_sha_mismatch(tmp_path: Path) -> None:
    path = _copy_shipped(tmp_path)
    assert DnCNNResidual(weights=path).sha256 == get_residual("dncnn").sha256  # an intact copy loads
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # flip one bit in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        DnCNNResidual(weights=path)
    assert "sha256 mismatch" in _one_line(err, path)


def test_wrong_shapes(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from modelprint.atomic import sha256_file
    from modelprint.residuals.dncnn import build_dncnn, default_config, saved_state_dict

    path = _copy_shipped(tmp_path)  # the sidecar says depth 10 / width 32 ...
    torch.manual_seed(0)
    save_file(saved_state_dict(build_dncnn(default_config(depth=10, width=16))), str(path))  # ... tensors say 16
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["sha256"] = sha256_file(path)
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        DnCNNResidual(weights=path)
    assert "shape mismatch" in _one_line(err, path)

    pth = tmp_path / "foreign.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, pth)
    with pytest.raises(CheckpointError) as err:
        DnCNNResidual(weights=pth)
    assert "not a modelprint DnCNN" in _one_line(err, pth)

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError) as err:
        DnCNNResidual(weights=junk)
    _one_line(err, junk)


def test_user_state_dict_pth(tmp_path: Path) -> None:
    import torch

    from modelprint.residuals.dncnn import build_dncnn, default_config

    torch.manual_seed(0)
    model = build_dncnn(default_config(depth=4, width=8))
    pth = tmp_path / "user.pth"
    torch.save(model.state_dict(), pth)
    res = DnCNNResidual(weights=pth)
    assert res.config["depth"] == 4 and res.config["width"] == 8 and "d4w8" in res.version
    img = textured_image(33, 47)
    with torch.inference_mode():
        want = model.eval()(torch.from_numpy(img).permute(2, 0, 1)[None]).permute(0, 2, 3, 1)[0].numpy()
    np.testing.assert_allclose(res(img), want, rtol=0, atol=1e-6)  # folded BatchNorm == eval-mode model


# ---------------------------------------------------------------------------------------------------- training
@pytest.fixture()
def tiny_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from modelprint.io import RealPool, save_png

    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    for i in range(10):  # names chosen so both the train and the holdout split are non-empty
        save_png(folder / f"photo{i}.png", textured_image(96, 112, seed=100 + i))
    pool = RealPool(folders=[folder], include_packages=False)
    assert pool.sources("train") and pool.sources("holdout")
    return pool


def test_train_denoiser_tiny(tmp_path: Path, tiny_pool) -> None:
    from modelprint.residuals.training import train_denoiser

    out = tmp_path / "w" / "tiny.safetensors"
    seen: list[tuple[int, int, float]] = []
    kw = dict(batch_size=8, crop=24, sigma=10.0, lr=3e-3, seed=3, pool=tiny_pool, depth=6, width=16,
              val_crops=8, val_crop=48)
    m = train_denoiser(out, steps=40, progress=lambda s, n, loss: seen.append((s, n, loss)), **kw)
    assert [s for s, _, _ in seen] == list(range(1, 41)) and seen[0][1] == 40
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["sha256"] == m["sha256"] and meta["steps"] == 40 and meta["config"]["depth"] == 6
    assert meta["config"]["sigma"] == 10.0 and out.stat().st_size == meta["bytes"]
    assert "train_denoiser(" in meta["command"] and "steps=40" in meta["command"]
    assert m["val_mse"] < m["init_val_mse"]  # it learned something on held-out crops
    assert m["train_loss_end"] < m["train_loss_start"]

    res = DnCNNResidual(weights=out)
    assert res(textured_image(50, 41)).shape == (50, 41, 3)
    # deterministic by seed; fewer steps give different weights
    again = train_denoiser(tmp_path / "again.safetensors", steps=40, **kw)
    assert again["sha256"] == m["sha256"]
    short = train_denoiser(tmp_path / "short.safetensors", steps=2, **kw)
    assert short["sha256"] != m["sha256"]
