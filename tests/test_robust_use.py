"""Clean-enrolled / degraded-queried evaluation, gallery adaptations, rejection rules, and the learned method's
block-capped residual and mirror test-time augmentation (issue 15)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import natural_like
from modelprint.evaluation import REJECTION_RULES, evaluate_embeddings
from modelprint.gallery.adaptation import ADAPTATIONS

FILTERS = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def clean_and_jpeg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """clean/<model>/<i>.png (3 upsampling "models", 6 images of 64² each) and jpeg/<model>/<i>.jpg (quality 75),
    where jpeg/up0/5.jpg is missing and jpeg/up1/4 exists twice (.jpg and .jpeg)."""
    root = tmp_path_factory.mktemp("query-dataset")
    for m, f in enumerate(FILTERS):
        (root / "clean" / f"up{m}").mkdir(parents=True)
        (root / "jpeg" / f"up{m}").mkdir(parents=True)
        for i in range(6):
            img = Image.fromarray(natural_like(32, 32, seed=10 * m + i)).resize((64, 64), f)
            img.save(root / "clean" / f"up{m}" / f"{i}.png")
            if (m, i) != (0, 5):
                img.save(root / "jpeg" / f"up{m}" / f"{i}.jpg", quality=75)
    (root / "jpeg" / "up1" / "4.jpeg").write_bytes((root / "jpeg" / "up1" / "4.jpg").read_bytes())
    return root / "clean", root / "jpeg"


def test_query_dataset_takes_queries_from_the_counterparts_and_names_the_missing(clean_and_jpeg) -> None:
    from modelprint.api import evaluate_dataset, query_counterparts
    from modelprint.io import Dataset

    clean, degraded = clean_and_jpeg
    found, errors = query_counterparts(Dataset.from_path(clean), Dataset.from_path(degraded))
    assert sum(f is None for f in found) == 2 and len(errors) == 2
    messages = sorted(str(e) for e in errors)
    assert "up0/5.png" in messages[0] and "no counterpart" in messages[0] and "\n" not in messages[0]
    assert "up1/4.png" in messages[1] and "2 candidate counterparts (4.jpeg, 4.jpg)" in messages[1]
    kw = {"support": 3, "pairs": 60, "seed": 0, "min_per_class": 4}
    same = evaluate_dataset(clean, "learned", query_dataset=clean, **kw)
    plain = evaluate_dataset(clean, "learned", **kw)
    assert same.result.to_dict()["identification"] == plain.result.to_dict()["identification"]
    res = evaluate_dataset(clean, "learned", query_dataset=degraded, **kw)
    assert res.result.n_images == 16 and len(res.errors) == 2
    assert [Path(q).suffix for q in res.queries.paths] == [".jpg"] * 16
    assert res.result.config["queries"] == "query_embeddings"
    assert res.result.to_dict()["identification"] != same.result.to_dict()["identification"]


def test_cli_query_dataset_exits_1_naming_the_missing_counterpart(clean_and_jpeg) -> None:
    clean, degraded = clean_and_jpeg
    res = subprocess.run([sys.executable, "-m", "modelprint.cli.main", "evaluate", str(clean), "--query-dataset",
                          str(degraded), "--support", "3", "--min-per-class", "4", "--pairs", "60", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stderr
    assert sum("no counterpart in the query dataset" in line for line in res.stderr.splitlines()) == 1
    assert '"queries": "query_embeddings"' in res.stdout


def _clusters(seed: int = 0, n_models: int = 6, per: int = 12, noise: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_models, 16))
    labels = np.repeat([f"m{i}" for i in range(n_models)], per)
    return centres[np.repeat(np.arange(n_models), per)] + noise * rng.normal(size=(n_models * per, 16)), labels


def test_query_embeddings_score_against_prototypes_of_the_embeddings() -> None:
    x, labels = _clusters()
    base = evaluate_embeddings(x, labels, support=5, n_boot=0).to_dict()
    assert evaluate_embeddings(x, labels, support=5, n_boot=0, query_embeddings=x).to_dict()["identification"] == \
        base["identification"]
    rng = np.random.default_rng(1)
    moved = evaluate_embeddings(x, labels, support=5, n_boot=0, query_embeddings=x + 3 * rng.normal(size=x.shape))
    assert moved.identification.accuracy < base["identification"]["accuracy"]
    with pytest.raises(ValueError, match="shaped like embeddings"):
        evaluate_embeddings(x, labels, support=5, n_boot=0, query_embeddings=x[:-1])


def test_within_class_whitening_removes_a_nuisance_direction() -> None:
    x, labels = _clusters(noise=0.3)
    rng = np.random.default_rng(2)
    x[:, 0] += 8 * rng.normal(size=len(x))  # large within-model variation along one axis
    plain = evaluate_embeddings(x, labels, support=5, n_boot=0).identification.accuracy
    whitened = evaluate_embeddings(x, labels, support=5, n_boot=0, adaptation=ADAPTATIONS.create("wccn", shrinkage=0.1))
    assert whitened.identification.accuracy > plain + 0.2
    assert whitened.config["adaptation"] == "wccn@wccn-v1-s0.1"


def test_rejection_rules_are_all_reported_and_margin_prefers_a_clear_winner() -> None:
    x, labels = _clusters()
    rules = evaluate_embeddings(x, labels, support=5, n_boot=0).open_set.rules
    assert set(rules) == set(REJECTION_RULES.names()) >= {"max_cosine", "margin", "calibrated", "knn", "znorm", "tnorm"}
    assert all(0.0 <= r["open_set_auroc"] <= 1.0 and 0.0 <= r["oscr"] <= 1.0 for r in rules.values())
    assert rules["max_cosine"]["open_set_auroc"] == evaluate_embeddings(x, labels, support=5, n_boot=0).open_set.auroc
    rule = REJECTION_RULES.create("margin").fit(np.eye(3), np.arange(3))
    scores = rule.score(np.array([[0.9, 0.1, 0.0], [0.6, 0.6, 0.0]]), np.zeros((2, 3)))
    assert scores[0] > scores[1]


def test_tnorm_prefers_a_query_that_resembles_one_model_only() -> None:
    rule = REJECTION_RULES.create("tnorm").fit(np.eye(3), np.arange(3))
    scores = rule.score(np.array([[0.9, 0.1, 0.0], [0.9, 0.8, 0.7]]), np.zeros((2, 3)))
    assert scores[0] > scores[1]


def test_calibrated_rule_scores_each_model_against_its_own_spread() -> None:
    support = np.array([[1, 0, 0], [0.99, 0.14, 0], [0.99, -0.14, 0], [0, 1, 0], [0.6, 0.8, 0], [-0.6, 0.8, 0]])
    rule = REJECTION_RULES.create("calibrated", prior=0.0).fit(support / np.linalg.norm(support, axis=1)[:, None],
                                                                 np.array([0, 0, 0, 1, 1, 1]))
    # the same cosine 0.9 is far below model 0's tight genuine scores but typical of model 1's loose ones
    z = rule.score(np.array([[0.9, 0.0], [0.0, 0.9]]), np.zeros((2, 3)))
    assert z[0] < -3 < 0 < z[1]


@pytest.fixture(scope="module")
def learned_pair():
    from modelprint.methods import load_method

    return load_method("learned"), load_method("learned", tile_grid=2, block=64, flips=True)


def test_tile_grid_caps_the_residual_and_small_images_run_whole(learned_pair) -> None:
    import torch

    whole, capped = learned_pair
    assert capped.version != whole.version and "g2b64" in capped.version and "-flip" in capped.version
    big = natural_like(200, 232, seed=3).astype(np.float32) / 255
    starts = capped._tile_starts(*big.shape[:2])
    assert len(starts) == 4 and starts[-1] == (200 - 64, 232 - 64)
    e = capped.embed([big])
    x = torch.from_numpy(big.transpose(2, 0, 1)[None].copy())
    assert np.allclose(capped.embed_torch(x).detach().numpy(), e, atol=1e-5)
    small = natural_like(80, 80, seed=4).astype(np.float32) / 255  # fewer pixels than 4 blocks with margins
    assert capped._tile_starts(80, 80) is None
    mirrored = np.ascontiguousarray(small[:, ::-1])
    assert np.allclose(capped.embed([small]), capped.embed([mirrored]), atol=1e-6)  # mirror TTA: mirror-invariant
    assert not np.allclose(whole.embed([small]), whole.embed([mirrored]), atol=1e-4)


def test_spectrum_symmetries_are_exact_and_shared_by_both_paths() -> None:
    import torch

    from modelprint.methods import load_method
    from modelprint.methods.learned import symmetric_spectra
    from modelprint.spectra import window_log_spectra

    # the spectrum's mirror and transpose are those of the mirrored and transposed signal's spectrum, exactly
    r = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, 64, 64)))
    s = window_log_spectra(r, 64)
    sym = symmetric_spectra(s, "d4")
    assert sym.shape == (4, 3, 64, 64) and torch.equal(symmetric_spectra(s, "none"), s)
    assert torch.allclose(sym[1], window_log_spectra(r.flip(-1), 64)[0], atol=1e-6)
    assert torch.allclose(sym[2], window_log_spectra(r.transpose(-1, -2), 64)[0], atol=1e-6)
    assert torch.allclose(symmetric_spectra(s, "mirror")[1], window_log_spectra(r.flip(-2), 64)[0], atol=1e-6)

    plain, d4 = load_method("learned"), load_method("learned", symmetries="d4")
    assert d4.version != plain.version and "-symd4" in d4.version
    img = natural_like(96, 80, seed=6).astype(np.float32) / 255
    e = d4.embed([img])
    assert not np.allclose(e, plain.embed([img]), atol=1e-4)
    x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
    assert np.allclose(d4.embed_torch(x).detach().numpy(), e, atol=1e-5)
    with pytest.raises(ValueError, match="symmetries must be one of none, mirror, d4"):
        load_method("learned", symmetries="rot")


def test_a_gallery_enrolled_with_the_old_whole_image_default_is_refused(tmp_path: Path) -> None:
    from modelprint.api import identify
    from modelprint.errors import GalleryError
    from modelprint.gallery import Gallery
    from modelprint.methods import load_method

    old = load_method("learned", tile_grid=0)
    assert load_method("learned").version != old.version
    query = tmp_path / "q.png"
    Image.fromarray(natural_like(64, 64, seed=5)).save(query)
    rng = np.random.default_rng(0)
    with Gallery(tmp_path / "g.sqlite") as g:
        for name in ("a", "b"):
            hashes = [f"{name}{i}".encode().hex().ljust(64, "0") for i in range(2)]
            g.add_embeddings(name, rng.normal(size=(2, 256)).astype(np.float32), hashes,
                             [f"{name}0.png", f"{name}1.png"], old.name, old.version)
        with pytest.raises(GalleryError, match=f"holds {re.escape(old.tag)} embeddings, made by another version of "
                                               r"learned than learned@.*g2b128.*; re-enroll its models"):
            identify(g, [query])
