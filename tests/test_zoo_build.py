"""The zoo on disk: the tiny tier builds, every family samples real output, resume, determinism, CLI, loading."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modelprint.errors import CheckpointError, ModelprintError
from modelprint.zoo import Zoo, build_zoo, load_generator, tier_recipes
from modelprint.zoo.data import training_images
from modelprint.zoo.store import MODELS_DIR, SAMPLES_DIR, read_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    build_zoo(root, tier="tiny", seed=0)
    return root


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelprint.cli.main", *args], capture_output=True, text=True, timeout=600)


def test_tiny_tier_builds_every_family_with_manifest_and_samples(tiny_zoo: Path) -> None:
    entries = read_manifest(tiny_zoo)
    recipes = tier_recipes("tiny")
    assert list(entries) == [r.name for r in recipes]
    families = {e["family"] for e in entries.values()}
    assert families >= {"gan", "vae", "flow", "ddpm", "autoencoder", "ldm", "ddpm-finetune", "ddpm-lora"}
    for name, e in entries.items():
        assert e["files"] and all(len(h) == 64 for h in e["files"].values())
        assert e["cpu_seconds"] > 0 and e["parameters"] > 0 and np.isfinite(e["final_loss"])
        if e["kind"] == "autoencoder":
            continue
        pngs = sorted((tiny_zoo / SAMPLES_DIR / name).glob("*.png"))
        assert len(pngs) == e["samples"]["n"] == 16
        im = np.asarray(Image.open(pngs[0]))
        assert im.shape == (32, 32, 3) and im.std() > 0


def test_samples_come_from_the_trained_weights(tiny_zoo: Path) -> None:
    """Saved samples are what the saved weights generate, and training moved every family off its untrained output."""
    zoo = Zoo(tiny_zoo)
    real = training_images(tier_recipes("tiny")[0].data).astype(np.float64)
    for name in zoo.names():
        entry = zoo.info(name)
        if entry["kind"] == "autoencoder":
            continue
        model = zoo.load(name)
        saved = np.stack([np.asarray(Image.open(p)) for p in sorted(zoo.samples_dir(name).glob("*.png"))])
        np.testing.assert_array_equal(model.sample(len(saved), seed=entry["samples"]["seed"]), saved)
        untrained = type(model)(model.recipe, parent=model.parent).sample(len(saved), seed=0)
        assert not np.array_equal(untrained, saved), name


def test_resume_rebuilds_only_what_is_missing_or_corrupt(tmp_path: Path) -> None:
    only = ["tiny-gan", "tiny-vae"]
    first = build_zoo(tmp_path, tier="tiny", only=only)
    files = {e["name"]: e["files"] for e in first}
    shutil.rmtree(tmp_path / MODELS_DIR / "tiny-gan")
    weights = next((tmp_path / MODELS_DIR / "tiny-vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    with pytest.raises(CheckpointError, match="tiny-vae"):
        Zoo(tmp_path).load("tiny-vae")
    again = build_zoo(tmp_path, tier="tiny", only=only)
    assert {e["name"]: e["files"] for e in again} == files  # deterministic: the same bytes again
    with pytest.raises(ModelprintError, match="built with"):
        build_zoo(tmp_path, tier="standard", only=["vae"])


def test_a_child_builds_after_its_parent_was_built_by_an_earlier_run(tmp_path: Path) -> None:
    build_zoo(tmp_path, tier="tiny", only=["tiny-ddpm"])
    parent = read_manifest(tmp_path)["tiny-ddpm"]["files"]
    build_zoo(tmp_path, tier="tiny", only=["tiny-ddpm-lora"])  # the parent is kept, not rebuilt
    manifest = read_manifest(tmp_path)
    assert manifest["tiny-ddpm"]["files"] == parent and "tiny-ddpm-lora" in manifest


def test_two_workers_train_a_child_once_its_parent_is_built_with_the_same_weights(tiny_zoo: Path,
                                                                                  tmp_path: Path) -> None:
    built = build_zoo(tmp_path, tier="tiny", only=["tiny-ddpm-lora", "tiny-gan"], workers=2, n_samples=2)
    assert [e["name"] for e in built] == ["tiny-gan", "tiny-ddpm", "tiny-ddpm-lora"]  # recipe order
    sequential = read_manifest(tiny_zoo)
    assert all(e["files"] == sequential[e["name"]]["files"] for e in built)


def test_a_seed_changes_the_weights_and_is_reproducible(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    other = 2 if threads == 1 else 1
    a = build_zoo(tmp_path / "a", tier="tiny", only=["tiny-gan"], seed=1, n_samples=2)[0]
    torch.set_num_threads(other)  # the caller's thread count must not change the weights
    try:
        b = build_zoo(tmp_path / "b", tier="tiny", only=["tiny-gan"], seed=1, n_samples=2)[0]
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    c = build_zoo(tmp_path / "c", tier="tiny", only=["tiny-gan"], seed=0, n_samples=2)[0]
    assert a["files"] == b["files"] and a["samples"]["sha256"] == b["samples"]["sha256"] and a["recipe"]["seed"] == 1000
    assert a["threads"] == b["threads"] == 1 and after == other
    assert a["files"] != c["files"]


def test_load_generator_by_name_and_by_diffusers_folder(tiny_zoo: Path) -> None:
    by_name = load_generator("tiny-ldm", zoo=tiny_zoo)
    by_path = load_generator(tiny_zoo / MODELS_DIR / "tiny-ldm")
    x = by_name.to_model_space(training_images(tier_recipes("tiny")[0].data)[:4])
    import torch

    t = torch.full((4,), 500, dtype=torch.long)
    np.testing.assert_allclose(by_name.predict_noise(x, t).numpy(), by_path.predict_noise(x, t).numpy(), atol=1e-6)
    with pytest.raises(CheckpointError):
        load_generator(tiny_zoo / "nope")
    with pytest.raises(ModelprintError, match="no zoo model"):
        load_generator("nope", zoo=tiny_zoo)


def test_cli_list_info_sample_and_errors(tiny_zoo: Path, tmp_path: Path) -> None:
    listed = run("zoo", "list", "--zoo", str(tiny_zoo), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == [r.name for r in tier_recipes("tiny")]
    info = run("zoo", "info", "tiny-ddpm", "--zoo", str(tiny_zoo))
    assert info.returncode == 0 and json.loads(info.stdout)["family"] == "ddpm"
    sampled = run("zoo", "sample", "tiny-gan", "-n", "3", "--out", str(tmp_path / "s"), "--zoo", str(tiny_zoo), "--seed", "5")
    assert sampled.returncode == 0, sampled.stderr
    assert len(list((tmp_path / "s").glob("*.png"))) == 3
    missing = run("zoo", "info", "nope", "--zoo", str(tiny_zoo))
    assert missing.returncode == 2 and "no zoo model 'nope'" in missing.stderr and "Traceback" not in missing.stderr
    not_zoo = run("zoo", "list", "--zoo", str(tmp_path))
    assert not_zoo.returncode == 2 and "not a zoo folder" in not_zoo.stderr


def test_a_single_unet_checkpoint_loads_with_its_config(tiny_zoo: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    folder = tiny_zoo / MODELS_DIR / "tiny-ddpm"
    ref = load_generator(folder)
    shutil.copy(folder / "unet" / "config.json", tmp_path / "config.json")
    shutil.copy(folder / "scheduler" / "scheduler_config.json", tmp_path / "scheduler_config.json")
    state = ref.unet.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "unet.safetensors"))
    torch.save(state, tmp_path / "unet.pth")
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    for name in ("unet.safetensors", "unet.pth"):
        model = load_generator(tmp_path / name)
        np.testing.assert_array_equal(model.predict_noise(x, t).numpy(), ref.predict_noise(x, t).numpy())
    from modelprint.zoo.diffusion_model import DiffusionModel

    with pytest.raises(CheckpointError, match="sha256"):
        DiffusionModel.from_checkpoint(tmp_path / "unet.pth", sha256="0" * 64)
    save_file({k: v.contiguous() for k, v in list(state.items())[:-1]}, str(tmp_path / "short.safetensors"))
    with pytest.raises(CheckpointError, match="short.safetensors: weights do not match"):
        load_generator(tmp_path / "short.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable"):
        load_generator(tmp_path / "junk.pth")
