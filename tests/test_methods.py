"""The `spectral` fingerprint method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import natural_like
from modelprint.errors import CheckpointError, RegistryError
from modelprint.methods import METHODS, load_method
from modelprint.methods.spectral import SpectralMethod


def _upsampled(seed: int, resample: Image.Resampling, size: int = 96) -> np.ndarray:
    small = Image.fromarray(natural_like(size // 2, size // 2, seed))
    return np.asarray(small.resize((size, size), resample), dtype=np.float32) / 255.0


def _real(seed: int, size: int = 96) -> np.ndarray:
    return natural_like(size, size, seed).astype(np.float32) / 255.0


def test_registry_and_unknown_method() -> None:
    assert "spectral" in METHODS
    with pytest.raises(RegistryError, match="unknown fingerprint method 'nope'.*spectral"):
        load_method("nope")


def test_embeddings_have_one_shape_for_every_size() -> None:
    m = SpectralMethod(residual="highpass", reference=None)
    emb = m.embed([_real(0, 32), _real(1, 37)[:, :33], _real(2, 200)])
    assert emb.shape == (3, 33 * 64) and emb.dtype == np.float32 and np.isfinite(emb).all()


def test_separates_upsampling_fingerprints_after_fitting_on_real_images() -> None:
    m = SpectralMethod(residual="highpass", reference=None).fit([_real(s) for s in range(20)])
    near = m.embed([_upsampled(100 + s, Image.Resampling.NEAREST) for s in range(6)])
    bil = m.embed([_upsampled(200 + s, Image.Resampling.BILINEAR) for s in range(6)])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    near, bil = unit(near), unit(bil)
    within = (near @ near.T)[np.triu_indices(6, 1)].mean()
    across = (near @ bil.T).mean()
    assert within > across + 0.1
    protos = unit(np.stack([near[:3].mean(0), bil[:3].mean(0)]))  # nearest prototype on held-out images
    assert (np.argmax(near[3:] @ protos.T, axis=1) == 0).all() and (np.argmax(bil[3:] @ protos.T, axis=1) == 1).all()


def test_reference_round_trip_changes_version_and_checks_compatibility(tmp_path: Path) -> None:
    raw = SpectralMethod(residual="highpass", reference=None)
    v0 = raw.version
    raw.fit([_real(s) for s in range(5)])
    assert raw.version != v0
    path = tmp_path / "ref.npz"
    raw.save_reference(path, seed=0)
    loaded = SpectralMethod(residual="highpass", reference=path)
    assert loaded.version == raw.version
    img = [_real(9)]
    np.testing.assert_array_equal(loaded.embed(img), raw.embed(img))
    with pytest.raises(CheckpointError, match="made with residual"):
        SpectralMethod(residual="wavelet", reference=path)
    with pytest.raises(CheckpointError, match="needs"):
        SpectralMethod(residual="highpass", tile=32, reference=path)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.npz"):
        SpectralMethod(residual="highpass", reference=tmp_path / "junk.npz")
    with pytest.raises(CheckpointError, match="not found"):
        SpectralMethod(residual="highpass", reference=tmp_path / "missing.npz")


def test_default_method_uses_shipped_weights_and_reference() -> None:
    m = load_method("spectral")
    assert m.residual == "dncnn" and "ref:none" not in m.version
    emb = m.embed([_real(3, 64)])
    assert emb.shape == (1, 33 * 64) and np.isfinite(emb).all()


def test_shipped_extractor_is_the_default_and_separates_unseen_upsamplers() -> None:
    """The shipped weights load (sha256 checked), and tell apart two upsamplers the extractor never saw as such."""
    from modelprint.methods import DEFAULT_METHOD

    assert DEFAULT_METHOD == "learned"
    m = load_method()
    assert m.tag.startswith("learned@") and m.meta["sha256"].startswith(m.version.split("-")[1])
    kinds = {"nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC}
    emb = {k: m.embed([_upsampled(200 + 10 * i + s, r, 128) for s in range(6)]) for i, (k, r) in enumerate(kinds.items())}
    protos = {k: e[:3].mean(0) / np.linalg.norm(e[:3].mean(0)) for k, e in emb.items()}
    correct = sum(max(protos, key=lambda p: float(q @ protos[p])) == k for k, e in emb.items() for q in e[3:])
    assert correct >= 5  # of 6 queries
