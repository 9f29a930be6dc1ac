"""Synthetic generators: the space, every component, grouped training, and the resumable pool on disk.

No mocks: real networks trained for a few steps on real (small, generated-on-disk) images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modelprint.errors import CheckpointError, ModelprintError
from modelprint.synthesis.grouped import init_state, load_single, pack_states, unpack_state
from modelprint.synthesis.model import SyntheticGenerator
from modelprint.synthesis.pool import (
    SynthesisSettings,
    load_synthetic,
    read_manifest,
    synthesize_pool,
    verify_pool,
)
from modelprint.synthesis.space import (
    ACTIVATIONS,
    EXTENDED_SPACE,
    FACTORS,
    NORMS,
    PAPER_SPACE,
    UPSAMPLERS,
    Architecture,
    all_architectures,
    list_architectures,
    model_id,
    parse_model_id,
    restrict,
)
from modelprint.synthesis.train import apply_generator, train_group
from conftest import natural_like

def _covering_archs() -> list[Architecture]:
    """Seven architectures that together use every value of every factor of the extended space."""
    n = max(len(v) for v in EXTENDED_SPACE.values())
    return [Architecture(*(EXTENDED_SPACE[f][i % len(EXTENDED_SPACE[f])] for f in FACTORS)) for i in range(n)]


def _crops(n: int, size: int, seed: int) -> np.ndarray:
    return np.stack([natural_like(size, size, seed=seed * 1000 + i) for i in range(n)])


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real-image pool: 12 natural-like PNGs (both the train and holdout splits are non-empty)."""
    from modelprint.io.pool import _split_of

    folder = tmp_path_factory.mktemp("photos")
    for i in range(12):
        Image.fromarray(natural_like(96, 112, seed=100 + i)).save(folder / f"photo_{i:02d}.png")
    splits = {_split_of(p) for p in folder.iterdir()}
    assert splits == {"train", "holdout"}
    return folder


@pytest.fixture
def small_settings(photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SynthesisSettings:
    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path / "cache"))
    return SynthesisSettings(crop=16, max_steps=4, batch_size=4, check_every=2, train_crops=64, val_crops=8,
                             pool_folders=(str(photo_dir),), include_packages=False)


# --------------------------------------------------------------------------------------------------------- space
def test_paper_space_has_288_and_extended_adds_every_extension() -> None:
    paper = list_architectures("paper")
    assert len(paper) == len(set(paper)) == 288
    extended = all_architectures("extended")
    assert len(extended) == 3 * 2 * 2 * 4 * 7 * 4
    assert set(paper) <= {a.id for a in extended}
    for registry, name in [(UPSAMPLERS, "pixelshuffle"), (ACTIVATIONS, "leakyrelu"), (ACTIVATIONS, "gelu"),
                           (ACTIVATIONS, "silu"), (NORMS, "group")]:
        assert name in registry.names()
        assert any(name in a.id for a in extended)
    assert any(a.blocks == 3 for a in extended)
    assert len(all_architectures(restrict(PAPER_SPACE, upsampling="bilinear"))) == 96


def test_ids_round_trip_and_malformed_ids_are_rejected() -> None:
    for arch in all_architectures("extended"):
        assert Architecture.parse(arch.id) == arch
        assert parse_model_id(model_id(arch, 17)) == (arch, 17)
    for bad in ["", "b1-c1-post", "b4-c1-post-up_nearest-act_relu-norm_none", "b1-c1-post-up_cubic-act_relu-norm_none",
                "b1-c1-sideways-up_nearest-act_relu-norm_none", "x1-c1-post-up_nearest-act_relu-norm_none"]:
        with pytest.raises(ModelprintError):
            Architecture.parse(bad)
    with pytest.raises(ModelprintError):
        parse_model_id("b1-c1-post-up_nearest-act_relu-norm_none")


def test_post_order_relu_output_cannot_be_negative() -> None:
    """The reference's post order activates the last RGB layer: ReLU models cannot output the darker half."""
    model = load_single(Architecture.parse("b1-c1-post-up_nearest-act_relu-norm_none"),
                        init_state(Architecture.parse("b1-c1-post-up_nearest-act_relu-norm_none"), 0))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).min() >= 0


# ------------------------------------------------------------------------------------ every component trains
@pytest.mark.parametrize("arch", _covering_archs(), ids=lambda a: a.id)
def test_every_component_builds_and_trains(arch: Architecture) -> None:
    torch.set_num_threads(1)
    crops = _crops(32, 16, seed=1)
    start = init_state(arch, 0)
    hist: list = []
    states, stats = train_group(arch, [0], crops, max_steps=6, batch_size=4, check_every=3, criterion=0.0,
                                history=hist, val_crops=crops[:8])
    assert stats[0].steps == 6 and not stats[0].reached_criterion and np.isfinite(stats[0].final_loss)
    changed = [k for k in start if start[k].dtype.is_floating_point and not torch.equal(start[k], states[0][k])]
    assert changed, "training did not change any weight"
    images = apply_generator(load_single(arch, states[0]), crops[:2])
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8


def test_grouped_slices_equal_models_trained_alone_with_early_stops() -> None:
    """In float64 a grouped model's slice is the same model trained alone, bit for bit, also when others stop early."""
    torch.set_num_threads(1)
    arch = Architecture.parse("b2-c2-pre-up_transposed-act_tanh-norm_batch")
    crops, val = _crops(24, 16, seed=2), _crops(6, 16, seed=3)
    seeds = [0, 1, 2, 3]
    kw = dict(val_crops=val, max_steps=6, batch_size=3, check_every=2, dtype=torch.float64, channels_last=False)
    hist: list = []
    train_group(arch, seeds, crops, criterion=0.0, history=hist, **kw)
    first = sorted(m for step, _, m in hist if step == 2)
    threshold = (first[1] + first[2]) / 2  # two models stop at step 2, the group shrinks to the other two
    grouped, gstats = train_group(arch, seeds, crops, criterion=threshold, **kw)
    assert sorted(s.steps for s in gstats) == [2, 2, 6, 6]
    for i, s in enumerate(seeds):
        alone, astats = train_group(arch, [s], crops, criterion=threshold, **kw)
        assert astats[0].steps == gstats[i].steps and astats[0].final_loss == pytest.approx(gstats[i].final_loss, abs=1e-12)
        for key, value in alone[0].items():
            assert torch.allclose(value, grouped[i][key], rtol=0, atol=1e-10), key


def test_pack_unpack_round_trip() -> None:
    arch = Architecture.parse("b3-c2-post-up_pixelshuffle-act_gelu-norm_group")
    states = [init_state(arch, s) for s in range(3)]
    assert not torch.equal(states[0]["down.0.1.weight"], states[1]["down.0.1.weight"])
    back = unpack_state(pack_states(states), 3)
    for a, b in zip(states, back, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    grouped = SyntheticGenerator(arch, groups=3)
    grouped.load_state_dict(pack_states(states))  # shapes of the grouped network match the packed states


# ---------------------------------------------------------------------------------------------- pool on disk
def test_pool_saves_loads_and_detects_tampering(tmp_path: Path, small_settings: SynthesisSettings) -> None:
    torch.set_num_threads(1)
    archs = _covering_archs()
    out = tmp_path / "pool"
    summary = synthesize_pool(out, archs, 1, crop=16, max_steps=4, settings=small_settings)
    assert (summary.total, summary.trained, summary.skipped) == (7, 7, 0)
    records = list(read_manifest(out).values())
    assert sorted(r["model_id"] for r in records) == sorted(model_id(a, 0) for a in archs)
    assert verify_pool(out) == []
    for rec in records:
        assert {"arch", "seed", "steps", "final_loss", "reached_criterion", "seconds", "sha256"} <= set(rec)
        model = load_synthetic(out, rec["model_id"])
        assert model.arch.id == rec["arch"] and not model.training
    victim = out / records[0]["file"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=victim.name):
        load_synthetic(out, records[0]["model_id"])
    assert verify_pool(out) == [records[0]["model_id"]]
    again = synthesize_pool(out, archs, 1, crop=16, max_steps=4, settings=small_settings)  # re-trains the bad one
    assert (again.trained, again.skipped) == (1, 6) and verify_pool(out) == []
    with pytest.raises(ModelprintError, match="other settings"):
        synthesize_pool(out, archs, 1, crop=16, max_steps=5, settings=small_settings)


@pytest.mark.slow  # trains pools in processes it kills, then resumes (about 20 s)
def test_pool_resumes_after_a_kill_without_duplicates(tmp_path: Path, small_settings: SynthesisSettings) -> None:
    out = tmp_path / "pool"
    archs = [a.id for a in _covering_archs()[:4]]
    script = tmp_path / "run_pool.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys, torch
        from modelprint.synthesis.pool import SynthesisSettings, synthesize_pool

        def progress(done, total, record):
            if os.environ.get("KILL_AT") and done == int(os.environ["KILL_AT"]):
                os._exit(3)  # dies like a killed process: no cleanup, no finally blocks

        if __name__ == "__main__":
            torch.set_num_threads(1)
            kwargs = json.loads(sys.argv[2])
            settings = SynthesisSettings(**{{**kwargs, "pool_folders": tuple(kwargs["pool_folders"])}})
            summary = synthesize_pool(sys.argv[1], {archs!r}, 2, crop=16, max_steps=4, settings=settings,
                                      workers=int(sys.argv[3]), progress=progress)
            print(summary.trained, summary.skipped)
    """))
    args = [sys.executable, str(script), str(out), json.dumps(_settings_kwargs(small_settings))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([*args, "1"], env={**env, "KILL_AT": "3"}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 3, killed.stderr
    partial = read_manifest(out)
    assert 2 <= len(partial) < 8 and verify_pool(out) == []
    assert not list(out.rglob("*.tmp")) or all(p.name.startswith(".") for p in out.rglob("*.tmp"))
    resumed = subprocess.run([*args, "2"], env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    trained, skipped = map(int, resumed.stdout.split())
    assert (trained, skipped) == (8 - len(partial), len(partial))
    final = list(read_manifest(out).values())
    ids = [r["model_id"] for r in final]
    assert len(ids) == len(set(ids)) == 8 and verify_pool(out) == []
    for r in final:
        load_synthetic(out, r["model_id"])
    # Worker processes (1 thread each) and the in-process run make bit-identical weights.
    in_process = tmp_path / "again"
    torch.set_num_threads(1)
    synthesize_pool(in_process, archs, 2, crop=16, max_steps=4, settings=small_settings)
    assert {k: r["sha256"] for k, r in read_manifest(in_process).items()} == {r["model_id"]: r["sha256"] for r in final}


def _settings_kwargs(settings: SynthesisSettings) -> dict:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def test_fidelity_returns_ffd_and_the_ablation_table(tmp_path: Path, small_settings: SynthesisSettings) -> None:
    from modelprint.synthesis.fidelity import fidelity

    torch.set_num_threads(1)
    archs = ["b1-c1-post-up_bilinear-act_none-norm_none", "b1-c1-pre-up_nearest-act_relu-norm_batch",
             "b2-c2-pre-up_transposed-act_tanh-norm_instance", "b1-c2-post-up_nearest-act_none-norm_none"]
    pool = tmp_path / "pool"
    synthesize_pool(pool, archs, 2, crop=16, max_steps=2, settings=small_settings)
    real = tmp_path / "real"
    for c, name in enumerate(["gen_a", "gen_b", "gen_c", "real_photos", "too_small"]):
        (real / name).mkdir(parents=True)
        for i in range(8 if name != "too_small" else 3):
            Image.fromarray(natural_like(64, 72, seed=50 * c + i)).save(real / name / f"{i}.png")
    result = fidelity(pool, real, n_images=8, crop=32, trials=3)
    assert result["real_classes"] == ["gen_a", "gen_b", "gen_c"] and result["n_models"] == 8
    assert np.isfinite(result["ffd"]) and result["ffd"] >= 0
    rows = {r["name"]: r for r in result["ablation"]}
    assert list(rows) == ["All", "w/o K", "w/o L", "w/o S", "w/o U", "w/o A", "w/o N", "w/o seed"]
    assert rows["w/o seed"]["n_models"] == 4 and rows["w/o K"]["n_models"] == 6 and rows["w/o U"]["n_models"] == 2
    assert rows["w/o A"]["ffd"] >= 0 and "random_subset_ffd_mean" in rows["w/o A"]
    assert (pool / "fidelity").is_dir()  # per-model spectra are cached
    assert fidelity(pool, real, n_images=8, crop=32, trials=3)["ffd"] == pytest.approx(result["ffd"])
