"""Counterfactual anonymization: differentiable embeddings equal the NumPy path, PGD stays in its ε ball and moves
the gallery's decision, and ``modelprint anonymize`` writes its files safely."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import natural_like
from modelprint.causal.anonymize import Anonymizer, GalleryJudge, parse_epsilon, quantise_in_ball
from modelprint.errors import AttackError
from modelprint.gallery import Gallery
from modelprint.io import load_image
from modelprint.methods import load_method
from modelprint.methods.differentiable import images_tensor, why_not_differentiable

DEMO = Path(__file__).resolve().parent.parent / "src" / "modelprint" / "demo" / "images"
MODELS = ("gen-bilinear", "gen-deep-nearest", "gen-transposed")


def demo_files(model: str, start: int, stop: int) -> list[Path]:
    return sorted((DEMO / model).glob("*.png"))[start:stop]


@pytest.fixture(scope="module")
def demo_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three demo generators, six 96² images each, enrolled with the default (learned) method."""
    from modelprint.api import enroll

    path = tmp_path_factory.mktemp("anonymize") / "g.sqlite"
    with Gallery(path) as g:
        for model in MODELS:
            enroll(g, model, demo_files(model, 0, 6))
    return path


@pytest.mark.parametrize(("name", "params"), [
    ("learned", {}), ("learned", {"window": 64, "windows_per_side": 2}), ("spectral", {}),
    ("spectral", {"reference": None}), ("fused", {}),
])
def test_embed_torch_equals_the_numpy_path_and_has_gradients(name: str, params: dict) -> None:
    method = load_method(name, **params)
    demo = load_image(demo_files("gen-bilinear", 0, 1)[0])
    for images in ([demo, demo[::-1].copy()], [natural_like(50, 70, 3).astype(np.float32) / 255]):
        x = images_tensor(images).requires_grad_(True)
        torch_emb = method.embed_torch(x)
        np.testing.assert_allclose(torch_emb.detach().numpy(), method.embed(images), atol=1e-4, rtol=0)
        torch_emb[:, 0].sum().backward()
        assert float(x.grad.abs().sum()) > 0


def test_dncnn_residual_torch_tiles_exactly_like_batch() -> None:
    from modelprint.methods.differentiable import images_tensor
    from modelprint.residuals import get_residual

    residual = get_residual("dncnn", tile=48, overlap=12)
    image = natural_like(100, 70, 5).astype(np.float32) / 255
    tiled = residual.residual_torch(images_tensor([image]).requires_grad_(True))
    assert tiled.shape == (1, 3, 100, 70)
    np.testing.assert_allclose(tiled[0].detach().numpy().transpose(1, 2, 0), residual(image), atol=1e-6, rtol=0)


def test_views_without_a_differentiable_path_are_named() -> None:
    spectral = load_method("spectral", residual="highpass", reference=None)
    assert "highpass" in why_not_differentiable(spectral)
    with pytest.raises(AttackError, match="highpass"):
        spectral.embed_torch(images_tensor([natural_like(48, 48).astype(np.float32) / 255]))
    fused = load_method("fused", params={"spectral": {"residual": "highpass", "reference": None}})
    image = natural_like(48, 64, 1).astype(np.float32) / 255
    with pytest.raises(AttackError, match="spectral's residual 'highpass'"):
        fused.embed_torch(images_tensor([image]))
    held = fused.embed_torch(images_tensor([image]), fixed={"spectral": spectral.embed([image])})
    np.testing.assert_allclose(held.detach().numpy(), fused.embed([image]), atol=1e-4, rtol=0)


def test_epsilon_parsing_and_quantisation_stay_in_the_ball() -> None:
    assert parse_epsilon("4/255") == pytest.approx(4 / 255) and parse_epsilon(" 0.01 ") == 0.01
    for bad in ("abc", "0", "2", "1/0", "-1/255", "nan"):
        with pytest.raises(AttackError, match="epsilon"):
            parse_epsilon(bad)
    rng = np.random.default_rng(0)
    for original in (rng.integers(0, 256, (20, 20, 3)) / 255.0, rng.random((20, 20, 3))):  # 8-bit, then finer
        x = np.clip(original + rng.uniform(-0.1, 0.1, original.shape), 0, 1)
        for eps in (2 / 255, 2.5 / 255, 8 / 255):
            q = quantise_in_ball(x, original, eps)
            assert q.dtype == np.uint8 and np.abs(q / 255.0 - original).max() <= eps + 1e-9


def test_untargeted_attack_stays_in_the_ball_and_drops_the_source(demo_gallery: Path) -> None:
    eps = 2 / 255
    with Gallery(demo_gallery, create=False) as g:
        judge = GalleryJudge(g, load_method("learned"))
        results = [Anonymizer(epsilon=eps, steps=20).attack(judge, load_image(f))
                   for model in MODELS for f in demo_files(model, 8, 9)]
    for r in results:
        assert r.before.model == r.source  # each was attributed to its source first
        assert r.pixels.shape == (96, 96, 3) and r.pixels.dtype == np.uint8
        assert r.quality["linf"] <= eps + 1e-9 and r.quality["psnr"] > 40
        before, after = dict(r.before.top_k)[r.source], dict(r.after.top_k)[r.source]
        assert after < before - 0.05
    assert sum(r.success for r in results) >= 2


def test_a_stalled_attack_halves_its_step_and_patience_zero_keeps_it(demo_gallery: Path) -> None:
    eps = 1 / 255  # a goal that cannot hold by a cosine margin of 2 in a ball this small: the objective stalls
    with Gallery(demo_gallery, create=False) as g:
        judge = GalleryJudge(g, load_method("learned"))
        image = load_image(demo_files(MODELS[0], 8, 9)[0])
        kw = {"epsilon": eps, "steps": 30, "margin": 2.0}
        scheduled = Anonymizer(**kw).attack(judge, image)
        fixed = Anonymizer(**kw, patience=0).attack(judge, image)
    assert scheduled.steps == fixed.steps == 30
    assert fixed.last_step_size == pytest.approx(eps / 4)
    assert eps / 32 - 1e-12 <= scheduled.last_step_size < eps / 4
    # the schedule's smaller steps go further from the source than fixed steps oscillating at the ball's corners
    source = scheduled.source
    assert dict(scheduled.after.top_k)[source] < dict(fixed.after.top_k)[source]
    assert scheduled.quality["linf"] <= eps + 1e-9
    assert scheduled.to_dict()["last_step_size_255"] == pytest.approx(scheduled.last_step_size * 255)
    with pytest.raises(AttackError, match="patience"):
        Anonymizer(patience=-1)


def test_targeted_and_counterfactual_attacks_move_toward_the_target(demo_gallery: Path) -> None:
    image = load_image(demo_files("gen-bilinear", 9, 10)[0])
    with Gallery(demo_gallery, create=False) as g:
        judge = GalleryJudge(g, load_method("learned"))
        targeted = Anonymizer(epsilon=4 / 255, steps=20, mode="targeted", target="gen-transposed").attack(judge, image)
        counter = Anonymizer(epsilon=4 / 255, steps=20, mode="counterfactual").attack(judge, image)
        with pytest.raises(AttackError, match="not in the gallery"):
            Anonymizer(mode="targeted", target="nope").attack(judge, image)
        with pytest.raises(AttackError, match="source"):
            Anonymizer(mode="targeted", target="gen-bilinear").attack(judge, image)
    for r, target in ((targeted, "gen-transposed"), (counter, counter.before.top_k[1][0])):
        assert r.target == target and r.source == "gen-bilinear"
        assert dict(r.after.top_k)[target] > dict(r.before.top_k)[target] + 0.05
        assert r.success == (r.after.model == target)
    assert targeted.success and targeted.quality["linf"] <= 4 / 255 + 1e-9


def invoke(*args: str | Path, cwd: Path):  # noqa: ANN201
    from modelprint.cli.main import app

    here = Path.cwd()
    os.chdir(cwd)
    try:
        with mock.patch.dict(os.environ, {"MODELPRINT_THREADS": "1"}):
            return CliRunner().invoke(app, list(map(str, args)))
    finally:
        os.chdir(here)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_cli_writes_outputs_at_input_size_reproducibly_and_leaves_inputs(demo_gallery: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in demo_files("gen-deep-nearest", 8, 10):
        (inputs / f.name).write_bytes(f.read_bytes())
    Image.fromarray(natural_like(40, 56, 7)).save(inputs / "wide.jpg")
    (inputs / "notes.png").write_text("not an image")
    originals = digests(inputs)
    common = ["anonymize", inputs, "--gallery", demo_gallery, "--epsilon", "4/255", "--steps", "5", "--random-start"]
    first = invoke(*common, "--out", tmp_path / "a", "--seed", "3", "--json", cwd=tmp_path)
    assert first.exit_code == 1  # one input unreadable, the rest written
    assert first.stderr.count("\n") == 1 and "notes.png" in first.stderr
    payload = json.loads(first.stdout)
    assert {Path(r["out"]).name for r in payload["results"]} == {"gen-deep-nearest_08.png", "gen-deep-nearest_09.png",
                                                                "wide.png"}
    for r in payload["results"]:
        assert Image.open(r["out"]).size == Image.open(r["path"]).size
        assert r["linf_255"] <= 4 + 1e-6 and {"success", "psnr", "ssim", "before", "after"} <= set(r)
    again = invoke(*common, "--out", tmp_path / "b", "--seed", "3", cwd=tmp_path)
    other = invoke(*common, "--out", tmp_path / "c", "--seed", "4", cwd=tmp_path)
    assert again.exit_code == other.exit_code == 1
    assert digests(tmp_path / "a") == digests(tmp_path / "b") != digests(tmp_path / "c")
    assert not [p for p in (tmp_path / "a").iterdir() if p.suffix != ".png"]  # no temporary file left behind
    assert digests(inputs) == originals


def test_cli_bad_inputs_are_one_line_errors(demo_gallery: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(demo_files("gen-bilinear", 8, 9)[0].read_bytes())
    (tmp_path / "x.jpg").write_bytes(image.read_bytes())
    (tmp_path / "file").write_text("")
    cases = {
        ("--epsilon", "four"): "epsilon 'four' is not a number",
        ("--target", "nope"): "model 'nope' is not in the gallery",
        ("--out", tmp_path / "file"): "--out exists and is not a folder",
        ("--out", tmp_path): "would overwrite the input",
    }
    for extra, message in cases.items():
        args = ["anonymize", image, "--gallery", demo_gallery, "--out", tmp_path / "out", *extra]
        res = invoke(*args, cwd=tmp_path)
        assert res.exit_code == 2 and res.stderr.count("\n") == 1 and message in res.stderr, (extra, res.stderr)
    res = invoke("anonymize", image, tmp_path / "x.jpg", "--gallery", demo_gallery, "--out", tmp_path / "o",
                 cwd=tmp_path)
    assert res.exit_code == 2 and "would both be written to" in res.stderr
    res = invoke("anonymize", image, "--gallery", tmp_path / "missing.sqlite", "--out", tmp_path / "o", cwd=tmp_path)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()


def test_transfer_and_defences_report_source_rates(demo_gallery: Path, tmp_path: Path) -> None:
    from modelprint.api import enroll
    from modelprint.causal.transfer import GalleryAttributor, jpeg, jpeg_defence, refit_defence, transfer_rates

    files = [f for model in MODELS for f in demo_files(model, 6, 9)]
    sources = [f.parent.name for f in files]
    originals = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    spectral_gallery = tmp_path / "spectral.sqlite"
    with Gallery(spectral_gallery) as g:
        for model in MODELS:
            enroll(g, model, demo_files(model, 0, 6), method="spectral")
    untouched = demo_gallery.read_bytes()
    with Gallery(demo_gallery, create=False) as g, Gallery(spectral_gallery, create=False) as s:
        learned = load_method("learned")
        judge = GalleryJudge(g, learned)
        attack = Anonymizer(epsilon=4 / 255, steps=20)
        anonymized = [attack.attack(judge, x.astype(np.float32) / 255.0, src).pixels
                      for x, src in zip(originals, sources)]
        rates = transfer_rates({"learned": GalleryAttributor(g, learned),
                                "spectral": GalleryAttributor(s, load_method("spectral"))},
                               originals, anonymized, sources)
        assert rates["learned"]["before"] >= 0.5 and rates["learned"]["after"] <= 1 / 9  # the attacked view
        assert 0 <= rates["spectral"]["after"] <= 1  # measured, not asserted: the benchmark reports it
        assert set(jpeg_defence(GalleryAttributor(g, learned), anonymized, sources, (90, 50))) == {90, 50}
        refit = refit_defence(g, learned, anonymized, sources, fit=[0, 1, 3, 4, 6, 7])
    assert refit["tested_images"] == 3 and refit["before"] == 0 and refit["after"] > refit["before"]
    assert demo_gallery.read_bytes() == untouched  # the re-fit wrote a copy
    q = jpeg(originals[0], 50)
    assert q.shape == originals[0].shape and q.dtype == np.uint8 and not np.array_equal(q, originals[0])


def test_a_fused_view_without_gradients_is_held_and_named(tmp_path: Path) -> None:
    from modelprint.api import enroll

    method = load_method("fused", params={"spectral": {"residual": "highpass", "reference": None}})
    with Gallery(tmp_path / "g.sqlite") as g:
        for model in MODELS:
            enroll(g, model, demo_files(model, 0, 3), method=method)
        result = Anonymizer(epsilon=4 / 255, steps=5).attack(GalleryJudge(g, method),
                                                             load_image(demo_files("gen-bilinear", 8, 9)[0]))
    assert len(result.notes) == 1 and result.notes[0].startswith("view spectral not attacked")
    assert result.quality["linf"] <= 4 / 255 + 1e-9
    spectral = load_method("spectral", residual="highpass", reference=None)
    with Gallery(tmp_path / "s.sqlite") as g:
        for model in MODELS[:2]:
            enroll(g, model, demo_files(model, 0, 2), method=spectral)
        with pytest.raises(AttackError, match="cannot attack spectral@.*highpass"):
            Anonymizer().attack(GalleryJudge(g, spectral), load_image(demo_files("gen-bilinear", 8, 9)[0]))
