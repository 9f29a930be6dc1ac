"""Every kind of weights file modelprint ships or saves fails the same way: a damaged sidecar (or the record that
holds the sha256), truncated weights, a wrong sha256 or a missing file is one CheckpointError line naming the file.

Kinds whose sha256 lives in a sidecar beside the file (``name.json``): DnCNN, extractor, spectral reference, probe
attributor, provenance model. Kinds whose sha256 lives in a store's manifest: zoo checkpoints (their sidecar is the
model folder's ``config.json``) and synthetic-pool weights (their record is the pool's ``manifest.jsonl``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from modelprint import artefacts
from modelprint.artefacts import file_digests, sidecar_path
from modelprint.atomic import sha256_file
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.manifest import check_settings, read_manifest, write_manifest

DATA = Path(__file__).parent / "data"
POOL_MODEL = "b1-c1-post-up_bilinear-act_none-norm_none-s0"


def _copy_shipped(name: str, tmp: Path) -> Path:
    src = artefacts.shipped_path(name)
    shutil.copy(src, tmp / src.name)
    shutil.copy(sidecar_path(src), sidecar_path(tmp / src.name))
    return tmp / src.name


def _reseal_sidecar(path: Path) -> None:
    side = sidecar_path(path)
    side.write_text(json.dumps({**json.loads(side.read_text()), "sha256": sha256_file(path)}))


def _make_attributor(tmp: Path) -> Path:
    from modelprint.probes import ProbeAttributor
    from modelprint.probes.loss import DenoisingLossProbe

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 2, 4)), np.repeat(["m0", "m1"], 6)
    x[y == "m0", 0] -= 1
    model = ProbeAttributor({"m0": None, "m1": None}, DenoisingLossProbe(timesteps=(1, 2, 3, 4)),
                            classifier="lowest-loss").fit(x, y)
    model.save(tmp / "attributor.npz")
    return tmp / "attributor.npz"


def _load_attributor(path: Path) -> object:
    from modelprint.probes import ProbeAttributor

    return ProbeAttributor.load(path, {"m0": None, "m1": None})


def _make_provenance(tmp: Path) -> Path:
    from modelprint.provenance import Provenance

    rng = np.random.default_rng(0)
    y = np.repeat(["member", "generated", "external"], 8)
    x = rng.normal(size=(24, 3)) + (np.arange(24) // 8)[:, None]
    Provenance(seed=0).fit_features(x, y, ["a", "b", "c"], "den").save(tmp / "provenance.npz")
    return tmp / "provenance.npz"


def _load_provenance(path: Path) -> object:
    from modelprint.provenance import Provenance

    return Provenance.load(path)


def _load_reference(path: Path) -> object:
    from modelprint.methods.spectral import SpectralMethod

    return SpectralMethod(reference=path)


def _load_dncnn(path: Path) -> object:
    from modelprint.residuals.dncnn import load_checkpoint

    return load_checkpoint(path)


def _load_extractor(path: Path) -> object:
    from modelprint.extractor.checkpoint import load_extractor

    return load_extractor(path)


def _make_zoo_checkpoint(tmp: Path) -> Path:
    return Path(shutil.copytree(DATA / "zoo-v1", tmp / "zoo")) / "models" / "tiny-gan" / "model.safetensors"


def _zoo_root(path: Path) -> Path:
    return path.parents[2]


def _load_zoo_checkpoint(path: Path) -> object:
    from modelprint.zoo import Zoo

    return Zoo(_zoo_root(path)).load("tiny-gan")


def _reseal_zoo(path: Path) -> None:
    entries = read_manifest(_zoo_root(path), "name")
    entries["tiny-gan"]["files"] = file_digests(path.parent)
    write_manifest(_zoo_root(path), entries.values())


def _make_pool_weights(tmp: Path) -> Path:
    return Path(shutil.copytree(DATA / "pool-v1", tmp / "pool")) / "weights" / f"{POOL_MODEL}.safetensors"


def _load_pool_weights(path: Path) -> object:
    from modelprint.synthesis.pool import load_synthetic

    return load_synthetic(path.parents[1], POOL_MODEL)


def _reseal_pool(path: Path) -> None:
    records = read_manifest(path.parents[1], "model_id")
    records[POOL_MODEL]["sha256"] = sha256_file(path)
    write_manifest(path.parents[1], records.values())


@dataclass(frozen=True)
class Kind:
    make: Callable[[Path], Path]  # writes a valid file under a folder, returns its path
    load: Callable[[Path], object]
    sidecar: Callable[[Path], Path] = sidecar_path  # the file that describes it
    reseal: Callable[[Path], None] = _reseal_sidecar  # record the file's current sha256 where it is checked
    sidecar_is_listed: bool = False  # the sidecar's own sha256 is recorded too (a zoo model folder's config.json)


KINDS = {
    "dncnn": Kind(lambda tmp: _copy_shipped("dncnn_s1.safetensors", tmp), _load_dncnn),
    "extractor": Kind(lambda tmp: _copy_shipped("extractor.safetensors", tmp), _load_extractor),
    "spectral-reference": Kind(lambda tmp: _copy_shipped("spectral_reference_dncnn_t64.npz", tmp), _load_reference),
    "probe-attributor": Kind(_make_attributor, _load_attributor),
    "provenance": Kind(_make_provenance, _load_provenance),
    "zoo-checkpoint": Kind(_make_zoo_checkpoint, _load_zoo_checkpoint, lambda p: p.with_name("config.json"),
                           _reseal_zoo, sidecar_is_listed=True),
    "pool-weights": Kind(_make_pool_weights, _load_pool_weights, lambda p: p.parents[1] / "manifest.jsonl",
                         _reseal_pool),
}


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _corrupt_sidecar(kind: Kind, path: Path) -> Path:
    side = kind.sidecar(path)
    _cut(side, 1 / 3)
    if kind.sidecar_is_listed:  # the manifest must not notice first
        kind.reseal(path)
    return side


def _truncate_weights(kind: Kind, path: Path) -> Path:
    _cut(path, 1 / 2)
    kind.reseal(path)  # the sha256 record agrees, so the reader itself must notice
    return path


def _wrong_sha256(kind: Kind, path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _missing(kind: Kind, path: Path) -> Path:
    path.unlink()
    return path


DAMAGE = {"corrupt-sidecar": _corrupt_sidecar, "truncated-weights": _truncate_weights,
          "wrong-sha256": _wrong_sha256, "missing-file": _missing}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_damage_to_every_artefact_is_one_checkpoint_error_naming_the_file(kind: str, damage: str,
                                                                                tmp_path: Path) -> None:
    spec = KINDS[kind]
    path = spec.make(tmp_path)
    spec.load(path)  # intact, it loads
    named = DAMAGE[damage](spec, path)
    with pytest.raises(CheckpointError) as err:
        spec.load(path)
    message = str(err.value)
    assert named.name in message and "\n" not in message and "Traceback" not in message, message
    if damage == "wrong-sha256":
        assert "sha256" in message


def test_a_shipped_file_needs_its_sidecar_and_its_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelprint.residuals.dncnn import load_checkpoint

    weights = _copy_shipped("dncnn_s1.safetensors", tmp_path)
    monkeypatch.setattr(artefacts, "WEIGHTS_DIR", tmp_path)
    assert load_checkpoint()[3] == weights
    side = sidecar_path(weights)
    side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items() if k != "sha256"}))
    with pytest.raises(CheckpointError, match="has no sha256"):
        load_checkpoint()
    load_checkpoint(weights)  # a user's file may go unverified
    side.unlink()
    with pytest.raises(CheckpointError, match="sidecar dncnn_s1.json with the expected sha256 is missing"):
        load_checkpoint()


def test_sidecars_record_file_size_and_sha256(tmp_path: Path) -> None:
    path = _make_provenance(tmp_path)
    side = json.loads(sidecar_path(path).read_text())
    assert side["format"] == "modelprint-provenance/1" and side["file"] == path.name
    assert side["bytes"] == path.stat().st_size and side["sha256"] == sha256_file(path)
    for name in ("dncnn_s1.safetensors", "extractor.safetensors", "spectral_reference_dncnn_t64.npz"):
        shipped = artefacts.shipped_path(name)
        assert json.loads(sidecar_path(shipped).read_text())["sha256"] == sha256_file(shipped), name


# --------------------------------------------------------------------------------------------------- manifests
def test_a_manifest_ignores_only_a_last_line_cut_short(tmp_path: Path) -> None:
    write_manifest(tmp_path, [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "a", "n": 3}])
    assert read_manifest(tmp_path, "name") == {"a": {"name": "a", "n": 3}, "b": {"name": "b", "n": 2}}
    manifest = tmp_path / "manifest.jsonl"
    with open(manifest, "a") as fh:
        fh.write('{"name": "c", "n"')  # a writer killed mid-line
    assert list(read_manifest(tmp_path, "name")) == ["a", "b"]
    manifest.write_text('{"name": "a"}\n{"name": \n{"name": "b"}\n')
    with pytest.raises(ModelprintError, match=r"manifest.jsonl:2: not a manifest line"):
        read_manifest(tmp_path, "name")
    manifest.write_text('{"name": "a"}\n{"other": 1}\n')  # complete, but without the key
    with pytest.raises(ModelprintError, match=r"manifest.jsonl:2: .*'name'"):
        read_manifest(tmp_path, "name")
    assert read_manifest(tmp_path / "none", "name") == {}


def test_store_settings_are_written_once_then_checked(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    wanted = {"format": "f/1", "settings": {"crop": 32, "steps": 5}}
    check_settings(path, wanted, "pool")
    assert json.loads(path.read_text()) == wanted
    check_settings(path, wanted, "pool")
    with pytest.raises(ModelprintError, match=r"other settings \(existing → requested: settings.crop: 32 → 16\)"):
        check_settings(path, {**wanted, "settings": {"crop": 16, "steps": 5}}, "pool")
    path.write_text("{")
    with pytest.raises(ModelprintError, match="unreadable pool settings"):
        check_settings(path, wanted, "pool")


def test_meta_entry_round_trips_and_bad_meta_is_one_checkpoint_error(tmp_path: Path) -> None:
    from modelprint.artefacts import meta_array, read_arrays, read_meta, write_arrays

    path = tmp_path / "thing.npz"
    write_arrays(path, {"meta": meta_array({"format": "thing/1", "k": [1, 2]}), "x": np.zeros(3)}, {"seed": 0})
    arrays = read_arrays(path, "thing file")
    assert read_meta(arrays, path, "thing file", "thing/1") == {"format": "thing/1", "k": [1, 2]}
    with pytest.raises(CheckpointError, match=r"thing\.npz: format 'thing/1', expected 'thing/2' \(hint\)$"):
        read_meta(arrays, path, "thing file", "thing/2", " (hint)")
    with pytest.raises(CheckpointError, match=r"thing\.npz: not a thing file"):
        read_meta({"meta": np.frombuffer(b"{not json", dtype=np.uint8)}, path, "thing file", "thing/1")
    with pytest.raises(CheckpointError, match=r"thing\.npz: not a thing file"):
        read_meta({"x": np.zeros(3)}, path, "thing file", "thing/1")
