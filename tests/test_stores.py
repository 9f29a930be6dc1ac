"""Zoos and synthetic pools written before a change still open and give the same answers.

``tests/data/zoo-v1`` and ``tests/data/pool-v1`` were written by an earlier modelprint (see ``stores-v1.json``):
a zoo manifest of two models of which only ``tiny-gan`` kept its files, and a pool manifest of two models of which
only seed 0 kept its weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modelprint.errors import CheckpointError
from modelprint.synthesis.pool import load_synthetic, read_manifest, verify_pool
from modelprint.zoo import Zoo

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "stores-v1.json").read_text())


@pytest.fixture
def zoo_v1(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA / "zoo-v1", tmp_path / "zoo"))


@pytest.fixture
def pool_v1(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA / "pool-v1", tmp_path / "pool"))


def test_an_old_zoo_lists_verifies_and_samples_as_before(zoo_v1: Path) -> None:
    zoo = Zoo(zoo_v1)
    assert zoo.names() == EXPECTED["zoo"]["names"]
    entry = zoo.info("tiny-gan")
    saved = np.stack([np.asarray(Image.open(p)) for p in sorted(zoo.samples_dir("tiny-gan").glob("*.png"))])
    np.testing.assert_array_equal(zoo.load("tiny-gan").sample(len(saved), seed=entry["samples"]["seed"]), saved)
    with pytest.raises(CheckpointError, match="tiny-ddpm.*missing") as err:
        zoo.load("tiny-ddpm")
    assert "\n" not in str(err.value)


def test_an_old_pool_lists_verifies_and_loads_as_before(pool_v1: Path) -> None:
    expected = EXPECTED["pool"]
    assert list(read_manifest(pool_v1)) == expected["model_ids"]
    assert verify_pool(pool_v1) == expected["unverified"]
    model = load_synthetic(pool_v1, expected["model_ids"][0])
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        y = model(x).numpy()
    np.testing.assert_allclose(y.ravel()[:4], expected["output_of_s0"]["first"], rtol=1e-5, atol=1e-7)
    assert float(y.sum()) == pytest.approx(expected["output_of_s0"]["sum"], rel=1e-5)
    with pytest.raises(CheckpointError, match="missing"):
        load_synthetic(pool_v1, expected["unverified"][0])
