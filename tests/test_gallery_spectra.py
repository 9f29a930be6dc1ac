"""Each model's mean residual spectrum in the gallery (modelprint.gallery.spectra): counted once per image, written
in the enrolment's transaction, removed with the model, absent from galleries made before it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from modelprint.api import Gallery
from modelprint.errors import GalleryError
from modelprint.methods import load_method

DATA = Path(__file__).resolve().parent / "data" / "gallery-v1"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_mean_spectra_count_each_image_once_and_go_with_their_model(tmp_path):
    m = load_method("spectral")
    rng = np.random.default_rng(0)
    vecs, specs = rng.normal(size=(4, 8)), rng.normal(size=(4, 5, 5))
    with Gallery(tmp_path / "g.sqlite") as g:
        g.add_embeddings("a", vecs[:3], [sha("0"), sha("1"), sha("2")], ["0", "1", "2"], m.name, m.version,
                         log_spectra=specs[:3])
        # image 1 again (with another spectrum, which must not count) and a new image 3
        g.add_embeddings("a", vecs[[1, 3]], [sha("1"), sha("3")], ["1", "3"], m.name, m.version,
                         log_spectra=np.stack([specs[1] + 100, specs[3]]))
        g.add_embeddings("b", vecs[:1] + 1, [sha("b")], ["b"], m.name, m.version)  # a method without spectra
        means = g.mean_spectra(m)
        assert set(means) == {"a"} and means["a"].dtype == np.float32
        np.testing.assert_allclose(means["a"], specs.mean(axis=0), atol=1e-6)
        with pytest.raises(GalleryError, match=r"spectra of a: expected \(1, side, side\)"):
            g.add_embeddings("a", vecs[:1] + 2, [sha("4")], ["4"], m.name, m.version, log_spectra=specs[:2])
        assert {i.name: i.n_images for i in g.models()}["a"] == 4  # the refused enrolment wrote nothing
        np.testing.assert_allclose(g.mean_spectra(m)["a"], specs.mean(axis=0), atol=1e-6)
        g.remove_model("a")
        assert g.mean_spectra(m) == {}


def test_a_gallery_made_before_spectra_has_none(tmp_path):
    path = Path(shutil.copy(DATA / "gallery.sqlite", tmp_path / "old.sqlite"))
    old_default = load_method("learned", tile_grid=0)  # what the fixture was enrolled with (no stored params)
    with Gallery(path, read_only=True) as g:
        assert g.methods() == [(old_default.name, old_default.version)]
        assert g.mean_spectra(old_default) == {}
