"""The extractor: losses, P×K sampling, the training loop (tiny scale), resume, and sliding-window inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modelprint.errors import CheckpointError
from modelprint.extractor.data import SpectraSet, render_spectra_set
from modelprint.extractor.losses import batch_hard_triplet
from modelprint.extractor.train import PKSampler, TrainConfig, train_extractor
from modelprint.methods.learned import LearnedMethod
from modelprint.synthesis import Architecture
from modelprint.synthesis.model import SyntheticGenerator

TINY = dict(widths=(8, 16), blocks_per_stage=1, embed_dim=16, head_channels=4, P=4, K=4, warmup=2, eval_every=5,
            checkpoint_every=5, lr=3e-3, region=64)


def test_batch_hard_triplet_by_hand() -> None:
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: pos 1.0, neg 3.0 → 0; anchor 1: pos 1, neg √10 → 0; anchor 2: pos 1, neg 3 → 0; anchor 3: pos 1, neg 4 → 0
    assert batch_hard_triplet(emb, labels, margin=0.3).item() == pytest.approx(0.0)
    # with margin 2.5: anchor 0: 1-3+2.5=0.5; anchor 1: 1-√10+2.5; anchor 2: 1-3+2.5=0.5; anchor 3: 1-4+2.5=0 → 0
    expected = (0.5 + (1 - 10**0.5 + 2.5) + 0.5 + 0.0) / 4
    assert batch_hard_triplet(emb, labels, margin=2.5).item() == pytest.approx(expected, rel=1e-5)


def test_pk_sampler_gives_every_anchor_a_positive() -> None:
    labels = np.repeat(np.arange(10), 6)
    batch = PKSampler(labels, P=4, K=3, seed=0)()
    counts = np.bincount(labels[batch])
    assert len(batch) == 12 and sorted(counts[counts > 0].tolist()) == [3, 3, 3, 3]


@pytest.fixture(scope="module")
def tiny_sets() -> tuple[SpectraSet, SpectraSet]:
    torch.manual_seed(0)
    archs = ["b1-c1-post-up_nearest-act_none-norm_none", "b1-c1-post-up_bilinear-act_none-norm_none",
             "b1-c1-post-up_transposed-act_relu-norm_none", "b1-c2-pre-up_nearest-act_tanh-norm_batch",
             "b1-c1-pre-up_bilinear-act_relu-norm_instance", "b1-c1-post-up_transposed-act_tanh-norm_none"]
    gens = [(a, SyntheticGenerator(Architecture.parse(a)).eval()) for a in archs]
    full = render_spectra_set(gens, per_model=8, tile=32, region=64, region_sizes=((32, 0.3), (64, 0.7)), seed=0,
                              residual="highpass")
    return full.subset_models([0, 1, 2, 3, 4]), full.subset_models([5, 0])


@pytest.mark.parametrize("augment", ["standard", "robust"])
def test_rendering_in_two_processes_equals_one(augment: str) -> None:
    torch.manual_seed(1)
    gens = [(a, SyntheticGenerator(Architecture.parse(a)).eval()) for a in
            ("b1-c1-post-up_nearest-act_none-norm_none", "b1-c1-pre-up_transposed-act_relu-norm_batch")]
    kw = dict(per_model=4, tile=32, region=64, region_sizes=((32, 0.5), (64, 0.5)), seed=3, residual="highpass",
              augment=augment)
    one, two = render_spectra_set(gens, workers=1, **kw), render_spectra_set(gens, workers=2, **kw)
    np.testing.assert_array_equal(one.spectra, two.spectra)
    assert one.labels.tolist() == [0] * 4 + [1] * 4 and one.model_ids == two.model_ids
    with pytest.raises(ValueError, match="region_sizes"):
        render_spectra_set(gens, **{**kw, "region_sizes": ((96, 1.0),)})


def test_rendered_set_shapes(tiny_sets: tuple[SpectraSet, SpectraSet]) -> None:
    train, _ = tiny_sets
    assert train.spectra.shape == (40, 3, 32, 32) and train.spectra.dtype == np.float16
    assert np.isfinite(train.spectra.astype(np.float32)).all() and train.labels.max() == 4


def test_training_changes_weights_lowers_loss_and_resumes_exactly(tiny_sets, tmp_path: Path) -> None:
    train, val = tiny_sets
    hist = train_extractor(train, tmp_path / "a", TrainConfig(steps=30, **TINY), val=val)
    losses = [s["loss"] for s in hist["steps"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    method = LearnedMethod(weights=tmp_path / "a" / "extractor.safetensors", residual="highpass")
    meta = json.loads((tmp_path / "a" / "extractor.json").read_text())
    assert meta["step"] == hist["best"]["step"]

    # Interrupted at step 10 (checkpoint), resumed to 30: same history as the uninterrupted run.
    with pytest.raises(_Interrupt):
        train_extractor(train, tmp_path / "b", TrainConfig(steps=30, **TINY), val=val, progress=_stop_at(10))
    resumed = train_extractor(train, tmp_path / "b", TrainConfig(steps=30, **TINY), val=val)
    assert [s["loss"] for s in resumed["steps"]] == pytest.approx(losses, rel=1e-5)

    # The weights moved away from their initialisation.
    torch.manual_seed(0)  # the seed train_extractor initialised with
    from modelprint.extractor.network import FingerprintNet

    init = FingerprintNet((8, 16), 1, 16, 4, 32, 5, 2).state_dict()
    trained = method._net.state_dict()
    assert any(not torch.allclose(init[k], trained[k]) for k in trained if k.endswith("weight"))


def test_fine_tuning_starts_from_the_extractor_and_keeps_its_normalisation(tiny_sets, tmp_path: Path) -> None:
    from modelprint.extractor.checkpoint import load_extractor

    train, val = tiny_sets
    train_extractor(train, tmp_path / "base", TrainConfig(steps=5, **TINY))
    base_path = tmp_path / "base" / "extractor.safetensors"
    two = train.subset_models([0, 1])
    hist = train_extractor(two, tmp_path / "tuned", TrainConfig(steps=1, lr=1e-12, warmup=1, P=2, K=4), init=base_path)
    base, bmean, bstd, _ = load_extractor(base_path)
    tuned, tmean, tstd, _ = load_extractor(tmp_path / "tuned" / "extractor.safetensors")
    np.testing.assert_array_equal(bmean, tmean)
    np.testing.assert_array_equal(bstd, tstd)
    assert tuned.config == base.config  # the base's shape, not TrainConfig's defaults
    b, t = base.state_dict(), tuned.state_dict()
    assert all(torch.allclose(b[k], t[k], atol=1e-6) for k in b if k.endswith("weight"))  # lr ~0: still the base
    hist = train_extractor(two, tmp_path / "tuned2", TrainConfig(steps=5, lr=3e-3, warmup=1, P=2, K=4), init=base_path)
    t2 = load_extractor(tmp_path / "tuned2" / "extractor.safetensors")[0].state_dict()
    assert any(not torch.allclose(b[k], t2[k]) for k in b if k.endswith("weight"))
    assert len(hist["steps"]) == 5
    # With held-out models, the starting point is scored as step 0 and kept unless a fine-tuned step beats it.
    hist = train_extractor(two, tmp_path / "tuned3", TrainConfig(steps=5, lr=3e-3, warmup=1, P=2, K=4, eval_every=5),
                           val=val, init=base_path)
    assert hist["val"][0]["step"] == 0 and [v["step"] for v in hist["val"]] == [0, 5]
    assert hist["best"]["val_accuracy"] == max(v["val_accuracy"] for v in hist["val"])
    meta = json.loads((tmp_path / "tuned3" / "extractor.json").read_text())
    assert meta["step"] == hist["best"]["step"]


class _Interrupt(Exception):
    pass


def _stop_at(step: int):
    """A progress callback that kills training right after ``step`` (its checkpoint is on disk by then)."""

    def progress(done: int, record: dict) -> None:
        if done == step:
            raise _Interrupt

    return progress


def test_sliding_window_inference_handles_every_size(tiny_sets, tmp_path: Path) -> None:
    train, _ = tiny_sets
    train_extractor(train, tmp_path, TrainConfig(steps=3, **TINY))
    m = LearnedMethod(weights=tmp_path / "extractor.safetensors", residual="highpass", window=None)
    rng = np.random.default_rng(0)
    sizes = [(32, 32), (33, 40), (64, 64), (129, 130), (200, 300)]
    images = [rng.random((h, w, 3), dtype=np.float32) for h, w in sizes]
    for method in (m, LearnedMethod(weights=tmp_path / "extractor.safetensors", residual="highpass", window=0)):
        emb = method.embed(images)
        assert emb.shape == (5, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(method.embed_spectra([method.window_spectra(im) for im in images]), emb, atol=1e-6)
    with pytest.raises(ValueError, match="window"):
        LearnedMethod(weights=tmp_path / "extractor.safetensors", residual="highpass", window=16)


def test_fused_cosine_is_the_weighted_mean_of_view_cosines(tiny_sets, tmp_path: Path) -> None:
    from modelprint.methods import load_method

    train, _ = tiny_sets
    train_extractor(train, tmp_path, TrainConfig(steps=3, **TINY))
    learned = {"weights": tmp_path / "extractor.safetensors", "residual": "highpass"}
    spectral = {"residual": "highpass", "reference": None}
    fused = load_method("fused", views=[("learned", 3.0), ("spectral", 1.0)], params={"learned": learned, "spectral": spectral})
    rng = np.random.default_rng(2)
    images = [rng.random((96, 96, 3), dtype=np.float32), rng.random((70, 120, 3), dtype=np.float32) ** 2]
    e = fused.embed(images)

    def cos(v: np.ndarray) -> float:
        return float(v[0] @ v[1] / np.linalg.norm(v[0]) / np.linalg.norm(v[1]))

    parts = [cos(load_method("learned", **learned).embed(images)), cos(load_method("spectral", **spectral).embed(images))]
    assert cos(e) == pytest.approx(0.75 * parts[0] + 0.25 * parts[1], abs=1e-5)
    assert "learned@" in fused.tag and "spectral@" in fused.tag
    with pytest.raises(ValueError, match="positive"):
        load_method("fused", views=[("learned", 0.0)])


def test_checkpoint_errors(tmp_path: Path, tiny_sets) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        LearnedMethod(weights=tmp_path / "none.safetensors", residual="highpass")
    train, _ = tiny_sets
    train_extractor(train, tmp_path, TrainConfig(steps=2, **TINY))
    weights = tmp_path / "extractor.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match"):
        LearnedMethod(weights=weights, residual="highpass")
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # a training state cut short
    with pytest.raises(CheckpointError, match="checkpoint.pt: cannot resume") as err:
        train_extractor(train, tmp_path, TrainConfig(steps=4, **TINY))
    assert "\n" not in str(err.value)


def test_windowed_residual_equals_whole_image_residual_inside(tiny_sets, tmp_path: Path) -> None:
    from modelprint.extractor.features import window_spectra
    from modelprint.residuals import get_residual

    train, _ = tiny_sets
    train_extractor(train, tmp_path, TrainConfig(steps=1, **TINY))
    m = LearnedMethod(weights=tmp_path / "extractor.safetensors", residual="highpass", window=None)
    image = np.random.default_rng(1).random((200, 200, 3), dtype=np.float32)
    fast = m.window_spectra(image)
    whole = window_spectra(get_residual("highpass")(image), tile=32, per_side=3, region=64)
    assert fast.shape == whole.shape == (9, 3, 32, 32)
    np.testing.assert_allclose(fast[4], whole[4], atol=1e-4)  # the centre window is away from the border
