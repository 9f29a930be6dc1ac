"""DIRE feature views (dire-stats, dire-fourier, dire-cnn) through the shipped reconstruction model, learned fusion
weights fit on validation only, and method parameters that persist in a gallery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import modelprint.causal.reference as reference
from conftest import natural_like
from modelprint import api
from modelprint.artefacts import open_artefact, sha256_file
from modelprint.causal.views import tile_corners
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.gallery import Gallery
from modelprint.methods import load_method
from modelprint.methods.fusion import fit_fusion_dataset, fit_weights, load_fusion, save_fusion

torch.set_num_threads(1)

VIEWS = ("dire-stats", "dire-fourier", "dire-cnn")
IMAGES = [natural_like(s, s + 7, seed=s).astype(np.float32) / 255 for s in (32, 48, 300)]
DEMO = Path(api.__file__).parent / "demo" / "images"


@pytest.fixture(scope="module", params=VIEWS)
def view(request: pytest.FixtureRequest):  # noqa: ANN201
    return load_method(request.param, max_tiles=4)


def test_each_view_embeds_any_image_of_32_px_or_more_deterministically(view) -> None:  # noqa: ANN001
    e = view.embed(IMAGES)
    assert e.shape[0] == 3 and e.dtype == np.float32 and np.isfinite(e).all()
    assert view.embed([]).shape == (0, e.shape[1])
    rebuilt = load_method(view.name, **view.get_params())
    assert rebuilt.tag == view.tag
    np.testing.assert_array_equal(rebuilt.embed(IMAGES[::-1]), e[::-1])  # no state carried from image to image
    changed = load_method(view.name, **{**view.get_params(), "steps": 3})
    assert changed.version != view.version and not np.allclose(changed.embed(IMAGES[:1]), e[:1], atol=1e-5)
    with pytest.raises(ModelprintError, match="31x39 is smaller than the 32x32") as info:
        view.embed([IMAGES[0][:31, :40]])
    assert "\n" not in str(info.value)


def test_a_diffusers_folder_is_a_model_too(tmp_path) -> None:
    reference.load_reconstructor().model.save(tmp_path / "dire")  # the shipped weights as a diffusers folder
    shipped = load_method("dire-fourier", max_tiles=2)
    folder = load_method("dire-fourier", model=str(tmp_path / "dire"), max_tiles=2)
    assert folder.version != shipped.version and folder.get_params()["model"] == str(tmp_path / "dire")
    a, b = folder.embed(IMAGES[:1])[0], shipped.embed(IMAGES[:1])[0]  # equal up to float noise through DDIM
    assert np.corrcoef(a, b)[0, 1] > 0.99


def test_large_images_cost_at_most_max_tiles() -> None:
    assert len(tile_corners(4096, 4096, 32, 16)) == 16 and len(tile_corners(32, 300, 32, 16)) == 9
    assert tile_corners(32, 32, 32, 16) == [(0, 0)] and tile_corners(40, 40, 32, 1) == [(0, 0)]
    assert len(tile_corners(100, 100, 32, 16)) == 9  # 3 × 3: no more tiles than fit side by side


def test_shipped_weights_are_checked_and_a_bad_model_is_one_line(tmp_path, monkeypatch) -> None:
    for name in ("dire_ddpm.safetensors", "dire_cnn.safetensors"):
        art = open_artefact(reference.shipped_path(name), name, shipped=True)
        assert art.sha256 == sha256_file(art.path) == art.sidecar["sha256"]
    tampered = tmp_path / "dire_ddpm.safetensors"
    shutil.copyfile(reference.DEFAULT_RECONSTRUCTOR, tampered)
    shutil.copyfile(reference.DEFAULT_RECONSTRUCTOR.with_suffix(".json"), tampered.with_suffix(".json"))
    with open(tampered, "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\0\0\0\1")
    monkeypatch.setattr(reference, "DEFAULT_RECONSTRUCTOR", tampered)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        reference.load_reconstructor()
    for bad in (tmp_path / "no-such-model", str(tmp_path / "x.safetensors")):
        with pytest.raises(ModelprintError) as info:
            load_method("dire-stats", model=str(bad))
        assert "\n" not in str(info.value) and str(bad) in str(info.value)


def test_fusion_weights_favour_the_informative_view() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c", "d"], 6)
    centres = rng.normal(size=(4, 16))
    good = centres[np.searchsorted(["a", "b", "c", "d"], labels)] + 0.8 * rng.normal(size=(24, 16))
    noise = rng.normal(size=(24, 16))
    fit = fit_weights([noise, good], labels)
    assert fit.weights[1] > 0.5 and fit.accuracy >= fit.equal_accuracy and fit.accuracy > 0.8
    assert fit_weights([noise, good], labels) == fit  # deterministic


def _index(tmp_path: Path, test_images_from: str) -> Path:
    """A CSV index over 3 demo models: 4 val and 4 test images each (test images from another folder on demand)."""
    rows = ["path,label,split"]
    for m in ("gen-nearest", "gen-transposed", "gen-bilinear"):
        for i in range(8):
            folder = m if i < 4 else test_images_from
            rows.append(f"{DEMO / folder / f'{folder}_{i:02d}.png'},{m},{'val' if i < 4 else 'test'}")
    path = tmp_path / f"index-{test_images_from}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fusion_weights_are_fit_on_validation_only(tmp_path) -> None:
    views = [("spectral", 1.0), ("dire-fourier", 1.0)]
    params = {"dire-fourier": {"max_tiles": 4}}
    fits = []
    for other in ("gen-nearest", "gen-deep-transposed"):  # only the test rows' images differ
        fused = load_method("fused", views=views, params=params)
        fits.append((fit_fusion_dataset(fused, _index(tmp_path, other), "val"), fused.views))
    assert fits[0] == fits[1] and fits[0][0].queries == 12


def test_a_gallery_reopens_fused_with_its_learned_weights(tmp_path) -> None:
    fused = load_method("fused", views=[("spectral", 1.0), ("dire-stats", 1.0)],
                        params={"dire-stats": {"max_tiles": 4}})
    fused.fit_embeddings([np.eye(6)[[0, 0, 1, 1, 2, 2]], np.ones((6, 3))], list("aabbcc"))  # the first view only
    assert [n for n, _ in fused.views] == ["spectral"]
    fused = load_method("fused", views=[("spectral", 0.3), ("dire-stats", 0.7)],  # non-default, as a fit gives
                        params={"dire-stats": {"max_tiles": 4}})
    save_fusion(tmp_path / "fusion.npz", fused.views, fused.params, {"note": "test"})
    from_file = load_method("fused", weights=str(tmp_path / "fusion.npz"))
    assert from_file.tag == fused.tag and load_fusion(tmp_path / "fusion.npz")["fit"] == {"note": "test"}
    files = {}
    for m in ("gen-nearest", "gen-transposed"):
        files[m] = sorted((DEMO / m).glob("*.png"))
    with Gallery(tmp_path / "g.sqlite") as g:
        for m, paths in files.items():
            api.enroll(g, m, paths[:3], method="fused", params={"weights": str(tmp_path / "fusion.npz")})
    with Gallery(tmp_path / "g.sqlite", create=False) as g:
        assert g.method_params("fused", fused.version)["views"] == [["spectral", 0.3], ["dire-stats", 0.7]]
        reopened = api.gallery_method(g, None)
        assert reopened.tag == fused.tag
        report = api.identify(g, [files["gen-nearest"][5], files["gen-transposed"][5]])
    assert report.method == fused.tag and len(report.results) == 2
    direct = fused.embed([np.asarray(Image.open(files["gen-nearest"][5]).convert("RGB"), np.float32) / 255])
    with Gallery(tmp_path / "g.sqlite", create=False) as g:
        assert g.identify_embeddings(direct, fused.name, fused.version)[0].similarity == pytest.approx(
            report.results[0].similarity, abs=1e-6)


def test_old_galleries_reopen_their_method_with_defaults(tmp_path) -> None:
    spectral = load_method("spectral")
    with Gallery(tmp_path / "s.sqlite") as g:  # enrolled before parameters were stored: none with the method
        for name in ("a", "b"):
            g.add_embeddings(name, np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32),
                             [f"{name}{i}".encode().hex().ljust(64, "0") for i in range(2)], ["0", "1"],
                             spectral.name, spectral.version)
        assert g.method_params(spectral.name, spectral.version) is None
        assert api.gallery_method(g, None).tag == spectral.tag


def test_a_gallery_of_the_old_learned_default_is_refused_with_a_message_to_re_enroll(tmp_path) -> None:
    """The committed fixture holds ``learned`` embeddings of its old default (``tile_grid=0``), without stored
    parameters: reopened with today's defaults it would compare other embeddings, so it is refused."""
    fixture = Path(__file__).parent / "data" / "gallery-v1"
    expected = json.loads((fixture / "expected.json").read_text())
    shutil.copyfile(fixture / "gallery.sqlite", tmp_path / "g.sqlite")
    old = f"{expected['method']}@{expected['version']}"
    with Gallery(tmp_path / "g.sqlite", read_only=True) as g:
        assert g.method_params(expected["method"], expected["version"]) is None
        with pytest.raises(ModelprintError, match=f"holds {old} embeddings, made by another version of learned "
                                                  r"than learned@.*g2b128.*; re-enroll its models"):
            api.gallery_method(g, None)
        assert api.gallery_method(g, None, {"tile_grid": 0}).tag == old  # the parameters it was enrolled with


def test_method_params_on_the_command_line() -> None:
    from modelprint.cli.app import method_params

    assert method_params(None) is None
    assert method_params(["weights=f.npz", 'views=[["spectral", 1]]', "max_tiles=4"]) == {
        "weights": "f.npz", "views": [["spectral", 1]], "max_tiles": 4}
    with pytest.raises(ModelprintError, match="expected KEY=VALUE"):
        method_params(["weights"])


@pytest.mark.parametrize("name", ["dire-stats", "dire-fourier", "dire-cnn"])
def test_dire_views_embed_in_torch_with_gradients_through_the_residual(name: str) -> None:
    from modelprint.methods.differentiable import images_tensor, why_not_differentiable

    view = load_method(name, max_tiles=4)
    assert why_not_differentiable(view) is None
    for images in ([IMAGES[0]], [natural_like(80, 72, seed=3).astype(np.float32) / 255]):  # one tile; four tiles
        x = images_tensor(images).requires_grad_(True)
        e = view.embed_torch(x)
        gap = np.abs(e.detach().numpy() - view.embed(images))
        quantum = float(getattr(view, "quantum", 0.0))
        step = quantum / view._std if quantum else 0.0  # a band at a rounding boundary may round apart
        assert (gap <= step + 5e-3).all() and (gap <= 5e-3).mean() >= 0.95
        e[:, :3].sum().backward()
        assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
        with torch.no_grad():  # what does not survive saving as 8 bits does not move the embedding either
            np.testing.assert_array_equal(view.embed_torch(x + 0.4 / 255).numpy(), e.detach().numpy())


def test_views_attacked_together_rebuild_each_iterate_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelprint.causal import views
    from modelprint.causal.reconstruction import Reconstructor
    from modelprint.methods.differentiable import images_tensor

    stats, fourier = load_method("dire-stats", max_tiles=4), load_method("dire-fourier", max_tiles=4)
    calls: list[str] = []
    rebuilt = Reconstructor.rebuilt

    def counted(self: Reconstructor, model: object, tiles: np.ndarray, meter: object = None) -> torch.Tensor:
        calls.append(self.name)
        return rebuilt(self, model, tiles, meter)

    monkeypatch.setattr(Reconstructor, "rebuilt", counted)
    monkeypatch.setattr(views, "_REBUILT", type(views._REBUILT)())
    x = images_tensor([natural_like(40, 40, seed=5).astype(np.float32) / 255])
    stats.embed_torch(x), fourier.embed_torch(x)
    assert sorted(calls) == ["dire", "one-step"]  # dire-fourier reuses dire-stats' reconstruction
    fourier.embed_torch(x + 3 / 255)  # a new iterate: rebuilt again
    assert calls.count("dire") == 2
