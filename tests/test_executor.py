"""One execution interface, three backends: this process, spawned processes and a local Ray cluster give the same
results (synthetic pool weights bit for bit, embeddings), in input order, with bad inputs reported the same way."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import natural_like
from modelprint.executor import LocalExecutor, ProcessExecutor, RayExecutor, executor_for
from modelprint.synthesis.pool import SynthesisSettings, read_manifest, synthesize_pool

ARCHS = ["b1-c1-pre-up_nearest-act_relu-norm_batch", "b2-c2-post-up_transposed-act_tanh-norm_instance",
         "b1-c2-post-up_bilinear-act_sigmoid-norm_none"]


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the whole session (Ray takes seconds to start)."""
    ray = pytest.importorskip("ray")
    here = str(Path(__file__).resolve().parent)  # this module's functions are tasks: importable by the workers
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def _square(x: int) -> int:
    return x * x


_STATE: dict[str, int] = {}


def _init(offset: int) -> None:
    _STATE["offset"] = offset


def _shifted(x: int) -> int:
    return x + _STATE["offset"]


def _until_two_done(ex) -> list[int]:  # noqa: ANN001
    done: list[int] = []
    for i, _ in ex.run(_square, [(i,) for i in range(5)], may_start=lambda: len(done) < 2):
        done.append(i)
    return done


def test_backends_run_every_task_once_with_the_initializer(ray_cluster) -> None:  # noqa: ANN001
    for ex in (LocalExecutor(), RayExecutor(2)):
        assert sorted(ex.run(_square, [(i,) for i in range(6)])) == [(i, i * i) for i in range(6)]
        assert sorted(ex.run(_shifted, [(i,) for i in range(4)], initializer=_init, initargs=(10,))) == [
            (i, i + 10) for i in range(4)]
        assert 2 <= len(_until_two_done(ex)) < 5  # no task starts once may_start() is false
    assert isinstance(executor_for(1), LocalExecutor) and isinstance(executor_for(2), ProcessExecutor)
    assert isinstance(executor_for(1, ray=True), RayExecutor)


def test_ray_pool_has_the_weights_of_the_process_pool(ray_cluster, tmp_path: Path,  # noqa: ANN001
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        Image.fromarray(natural_like(96, 112, seed=100 + i)).save(photos / f"photo_{i:02d}.png")
    settings = SynthesisSettings(crop=16, max_steps=4, batch_size=4, check_every=2, train_crops=64, val_crops=8,
                                 pool_folders=(str(photos),), include_packages=False)
    digests = {}
    for name, ex in (("process", ProcessExecutor(2)), ("ray", RayExecutor(2))):
        summary = synthesize_pool(tmp_path / name, ARCHS[:2], [0], settings=settings, crop=16, max_steps=4,
                                  executor=ex)
        assert summary.trained == 2 and summary.complete
        digests[name] = {k: r["sha256"] for k, r in read_manifest(tmp_path / name).items()}
    assert len(digests["ray"]) == 2 and digests["ray"] == digests["process"]


def test_ray_embedding_matches_in_process_embedding(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    from modelprint.api import collect_paths, embed_paths
    from modelprint.methods import load_method

    for i in range(20):
        Image.fromarray(natural_like(48, 48, seed=i)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "07b.png").write_bytes(b"not an image")
    paths = collect_paths([tmp_path, tmp_path / "missing.png"])
    method = load_method("spectral")
    local = embed_paths(method, paths)
    seen: list[int] = []
    remote = embed_paths(method, paths, executor=RayExecutor(2), progress=seen.append)
    assert remote.paths == local.paths and remote.hashes == local.hashes and len(remote.paths) == 20
    assert np.array_equal(remote.vectors, local.vectors)
    assert [str(e) for e in remote.errors] == [str(e) for e in local.errors] and len(remote.errors) == 2
    assert sum(seen) == len(paths)


@pytest.mark.slow  # trains two tiny zoo models twice (about 40 s on an idle core)
def test_ray_zoo_build_has_the_files_of_the_in_process_build(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    from modelprint.zoo import build_zoo

    only = ["tiny-gan", "tiny-vae"]  # one wave of two models: two Ray tasks
    local = build_zoo(tmp_path / "local", tier="tiny", only=only, n_samples=2)
    remote = build_zoo(tmp_path / "ray", tier="tiny", only=only, n_samples=2, executor=RayExecutor(2))
    assert [(e["name"], e["files"], e["samples"]["sha256"]) for e in remote] == [
        (e["name"], e["files"], e["samples"]["sha256"]) for e in local]
