"""The gallery's ANN indexes: same answers as exact search, stale or damaged files never used, kept in sync by
writes, a killed reindex harmless."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from modelprint.errors import GalleryError
from modelprint.gallery import Gallery, IndexParams, index
from modelprint.gallery.index import DEFAULT_PARAMS, build, cells, describe, nearest

DIM, MODELS, PER_MODEL = 48, 40, 60  # 40 prototypes, 2,400 image embeddings
EXACT = 10**9  # an index threshold no test gallery reaches: exact search


def _sha(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _centres(seed: int = 0) -> np.ndarray:
    return _unit(np.random.default_rng(seed).standard_normal((MODELS, DIM)))


def _draw(centres: np.ndarray, models: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Embeddings of the given models: their centre plus as much noise (cosine to the centre about 0.7)."""
    return _unit(0.7 * centres[models] + 0.7 * _unit(rng.standard_normal((len(models), DIM))))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``g.sqlite`` (40 models × 60 images) enrolled without indexes (read it, or copy it)."""
    root = tmp_path_factory.mktemp("indexed")
    centres, rng = _centres(), np.random.default_rng(1)
    with Gallery(root / "g.sqlite", index_threshold=EXACT) as g:
        for m in range(MODELS):
            x = _draw(centres, np.full(PER_MODEL, m), rng)
            g.add_embeddings(f"m{m:03d}", x, [_sha(m, i) for i in range(PER_MODEL)],
                             [f"m{m}/{i}.png" for i in range(PER_MODEL)], "toy", "1")
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst / "g.sqlite"


def _queries(n: int = 200, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _draw(_centres(), rng.integers(0, MODELS, n), rng)


def _answers(g: Gallery, q: np.ndarray) -> tuple[list, list]:
    ids = g.identify_embeddings(q, "toy", "1", top_k=5)
    near = g.nearest_images(q, "toy", "1", k=5)
    return ([(r.model, r.top_k) for r in ids], [[(n.model, n.source, n.similarity) for n in row] for row in near])


def _same(a: tuple[list, list], b: tuple[list, list]) -> None:
    """Same models and images in the same order; similarities equal to float32 rounding."""
    for (ma, ta), (mb, tb) in zip(a[0], b[0], strict=True):
        assert ma == mb and [n for n, _ in ta] == [n for n, _ in tb]
        assert np.allclose([s for _, s in ta], [s for _, s in tb], atol=1e-5)
    for ra, rb in zip(a[1], b[1], strict=True):
        assert [x[:2] for x in ra] == [x[:2] for x in rb]
        assert np.allclose([x[2] for x in ra], [x[2] for x in rb], atol=1e-5)


def test_indexed_search_equals_exact_search(indexed: Path, tmp_path: Path) -> None:
    path = _copy(indexed, tmp_path / "g")
    q = _queries()
    with Gallery(path, index_threshold=EXACT) as g:
        exact = _answers(g, q)
        assert {s.state for s in g.index_status()} == {"below threshold"}
    with Gallery(path, index_threshold=20) as g:
        assert {s.state for s in g.index_status()} == {"missing"}
        built = g.reindex()
        assert [(b["kind"], b["rows"], b["built"]) for b in built] == [("prototypes", MODELS, True),
                                                                      ("images", MODELS * PER_MODEL, True)]
        assert all(s.used and s.state == "fresh" for s in g.index_status())
        _same(_answers(g, q), exact)
    with Gallery(path, index_threshold=20) as g:  # a new process loads the files
        _same(_answers(g, q), exact)
        assert all(s.used for s in g.index_status())


def test_writes_keep_the_index_in_sync_and_stale_or_damaged_files_are_never_used(indexed: Path,
                                                                                 tmp_path: Path) -> None:
    path = _copy(indexed, tmp_path / "g")
    with Gallery(path, index_threshold=20) as g:
        g.reindex()
    files = sorted(path.with_name("g.sqlite.ann").glob("*.npz"))
    old = tmp_path / "old"
    old.mkdir()
    for f in files:
        shutil.copy2(f, old / f.name)
    new = _unit(np.random.default_rng(5).standard_normal((3, DIM)))
    with Gallery(path, index_threshold=20) as g:  # an enrolment extends the images index, rebuilds prototypes
        g.add_embeddings("newcomer", new, [_sha("new", i) for i in range(3)], ["n/0", "n/1", "n/2"], "toy", "1")
        rows = {s.kind: (s.rows, s.state) for s in g.index_status()}
        assert rows == {"prototypes": (MODELS + 1, "fresh"), "images": (MODELS * PER_MODEL + 3, "fresh")}
        assert g.identify_embeddings(new, "toy", "1")[0].top_k[0][0] == "newcomer"
        assert g.nearest_images(new[:1], "toy", "1", k=1)[0][0].source == "n/0"
    with Gallery(path, index_threshold=EXACT) as g:
        exact = _answers(g, np.concatenate([new, _queries(50)]))
    for f in files:  # the files of the state before the enrolment: stale now
        shutil.copy2(old / f.name, f)
    with Gallery(path, index_threshold=20) as g:
        assert {s.state for s in g.index_status()} == {"stale"}
        _same(_answers(g, np.concatenate([new, _queries(50)])), exact)
        assert "reindex" in describe(g.index_status())  # the warning of path-level identification
        g.reindex()
        assert {s.state for s in g.index_status()} == {"fresh"}
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # damage the index bytes: their sha256 no longer matches
    files[0].write_bytes(bytes(data))
    with Gallery(path, index_threshold=20) as g:
        assert {s.kind: s.state for s in g.index_status()}[files[0].name.split("-")[0]] == "damaged"
        _same(_answers(g, np.concatenate([new, _queries(50)])), exact)
        g.remove_model("newcomer")  # a removal rebuilds both
        assert {s.state for s in g.index_status()} == {"fresh"}
    with Gallery(path, index_threshold=10**6) as g:  # below a higher threshold, a write removes the files
        g.remove_model("m000")
        assert {s.state for s in g.index_status()} == {"below threshold"}
    assert not list(path.with_name("g.sqlite.ann").glob("*.npz"))


def test_a_killed_reindex_leaves_a_usable_gallery(indexed: Path, tmp_path: Path) -> None:
    path = _copy(indexed, tmp_path / "g")
    q = _queries(50)
    with Gallery(path, index_threshold=EXACT) as g:
        exact = _answers(g, q)
    script = ("import sys; from modelprint.gallery import Gallery\n"
              "g = Gallery(sys.argv[1], index_threshold=20); print('go', flush=True); g.reindex(force=True)\n")
    for delay in (0.05, 0.3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with Gallery(path, index_threshold=20) as g:
            _same(_answers(g, q), exact)
            assert {s.state for s in g.index_status()} <= {"fresh", "missing"}
    with Gallery(path, index_threshold=20) as g:
        g.reindex()
        assert {s.state for s in g.index_status()} == {"fresh"}
        _same(_answers(g, q), exact)


def test_cli_reindex_prints_what_it_built(indexed: Path, tmp_path: Path) -> None:
    path = _copy(indexed, tmp_path / "g")
    done = subprocess.run([sys.executable, "-m", "modelprint.cli.main", "gallery", "reindex", "--gallery", str(path),
                           "--threshold", "1000"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [(r["kind"], r["built"]) for r in out["reindexed"]] == [("prototypes", False), ("images", True)]
    assert [(s["kind"], s["state"]) for s in out["indexes"]] == [("prototypes", "below threshold"),
                                                                  ("images", "fresh")]
    missing = subprocess.run([sys.executable, "-m", "modelprint.cli.main", "gallery", "reindex", "--gallery",
                              str(tmp_path / "none.sqlite")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such gallery file" in missing.stderr and "Traceback" not in missing.stderr


def test_ivf_finds_the_exact_nearest_image_on_clustered_data(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    centres = _unit(rng.standard_normal((100, DIM)))
    x = _draw(centres, np.repeat(np.arange(100), 100), rng)  # 10,000 images of 100 models
    q = _draw(centres, rng.integers(0, 100, 300), rng)
    exact_sims, exact_pos = nearest(q, x, 10)
    built = []
    for two_level in (10**9, 64):  # plain k-means, then FAISS's two-level clustering (16 coarse cells)
        monkeypatch.setattr(index, "TWO_LEVEL", two_level)
        ann = build("images", "toy", "1", "-", np.arange(len(x)), x, DEFAULT_PARAMS["images"])
        assert ann.params.structure == "ivf" and ann.params.nlist == cells(len(x), ann.params) == 256
        sims, pos = ann.search(q, 10)
        assert np.array_equal(pos[:, 0], exact_pos[:, 0])
        assert np.allclose(sims, exact_sims, atol=1e-5)
        built.append(ann.index.quantizer.reconstruct_n(0, 256))
    assert not np.allclose(built[0], built[1])  # two trainings, not one twice


def _rewrite_params(path: Path, **change: object) -> None:
    """Rewrite the settings recorded in an index file (``None`` drops a key), its index bytes untouched."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["params"] = {k: v for k, v in {**meta["params"], **change}.items() if v is not None}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def test_index_settings_round_trip_and_files_of_older_or_foreign_settings(indexed: Path, tmp_path: Path) -> None:
    path = _copy(indexed, tmp_path / "g")
    q = _queries(50)
    with Gallery(path, index_threshold=EXACT) as g:
        exact = _answers(g, q)
    for bad in ({"structure": "annoy"}, {"nprobe": 0}, {"nlist": -1}):
        with pytest.raises(GalleryError, match="index"):
            IndexParams(**bad)
    ivf = IndexParams("ivf", nlist=20, nprobe=7, seed=3)
    with Gallery(path, index_threshold=20, index_params=ivf) as g:
        assert [b["params"] for b in g.reindex()] == [{**asdict(ivf), "nlist": 1}, asdict(ivf)]  # 40 rows: 1 cell
    with Gallery(path, index_threshold=20) as g:  # another process reads the settings the files were built with
        assert {s.kind: s.params for s in g.index_status()} == {"prototypes": {**asdict(ivf), "nlist": 1},
                                                                 "images": asdict(ivf)}
        _same(_answers(g, q), exact)
    with Gallery(path, index_threshold=20, index_params=IndexParams("hnsw", m=8)) as g:
        g.reindex()
    files = sorted(path.with_name("g.sqlite.ann").glob("*.npz"))
    for f in files:  # as written before IVF: HNSW settings only
        _rewrite_params(f, structure=None, nlist=None, nprobe=None, seed=None)
    with Gallery(path, index_threshold=20) as g:
        assert all(s.state == "fresh" and s.params == asdict(IndexParams("hnsw", m=8)) for s in g.index_status())
        _same(_answers(g, q), exact)
    for change in ({"structure": "ivf"}, {"structure": "annoy"}, {"nprobe": 0}, {"shards": 4}):
        for f in files:  # settings that do not describe the index bytes, or that this version does not know
            _rewrite_params(f, **change)
        with Gallery(path, index_threshold=20) as g:
            assert {(s.state, s.params) for s in g.index_status()} == {("damaged", None)}, change
            _same(_answers(g, q), exact)
        for f in files:
            _rewrite_params(f, **{**dict.fromkeys(change), "structure": "hnsw"})
