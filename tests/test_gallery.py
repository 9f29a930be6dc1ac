"""Tests of the SQLite attribution gallery (real SQLite files, seeded synthetic embeddings with cluster structure)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelprint.errors import GalleryError
from modelprint.gallery import UNKNOWN, Calibration, EnrollResult, Gallery, ModelInfo

DIM = 32
METHOD, VERSION = "dct", "1"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def centers(n_models: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_models, DIM))


def cluster(center: np.ndarray, n: int, seed: int, noise: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (center + noise * rng.normal(size=(n, len(center)))).astype(np.float32)


def enroll(g: Gallery, name: str, vecs: np.ndarray, tag: str = "", method: str = METHOD, version: str = VERSION):
    hashes = [sha(f"{name}{tag}-{i}") for i in range(len(vecs))]
    sources = [f"/data/{name}/{tag}{i}.png" for i in range(len(vecs))]
    return g.add_embeddings(name, vecs, hashes, sources, method=method, version=version)


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A gallery with 3 well-separated models of 40 embeddings each."""
    c = centers()
    path = tmp_path / "g.sqlite"
    with Gallery(path) as g:
        for k in range(3):
            assert enroll(g, f"model{k}", cluster(c[k], 40, seed=10 + k)) == EnrollResult(40, 0)
    return path, c


def snapshot(g: Gallery, tmp: Path) -> dict:
    out = tmp / "snapshot.json"
    g.export(out)
    doc = json.loads(out.read_text())
    doc.pop("exported")
    return doc


def test_round_trip(built, tmp_path):
    path, c = built
    with Gallery(path, create=False) as g:
        infos = g.models()
        assert [m.name for m in infos] == ["model0", "model1", "model2"]
        assert all(isinstance(m, ModelInfo) and m.n_embeddings == 40 and m.methods == ["dct@1"] for m in infos)
        assert g.methods() == [(METHOD, VERSION)]
        names, protos = g.prototypes(METHOD, VERSION)
        assert names == ["model0", "model1", "model2"] and protos.shape == (3, DIM)
        np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-5)
        # the prototype is the normalised mean of normalised embeddings
        x = cluster(c[1], 40, seed=11)
        mean = (x / np.linalg.norm(x, axis=1, keepdims=True)).mean(0)
        np.testing.assert_allclose(protos[1], mean / np.linalg.norm(mean), atol=1e-5)

        queries = np.concatenate([cluster(c[k], 10, seed=100 + k) for k in range(3)])
        results = g.identify_embeddings(queries, METHOD, VERSION, top_k=2)
        assert [r.top_k[0][0] for r in results] == ["model0"] * 10 + ["model1"] * 10 + ["model2"] * 10
        # by design about 5% of genuine images fall below the calibrated unknown threshold
        assert sum(r.is_unknown for r in results) <= 4
        assert all(r.model in (r.top_k[0][0], UNKNOWN) and r.similarity == r.top_k[0][1] for r in results)
        assert all(len(r.top_k) == 2 and r.top_k[0][1] >= r.top_k[1][1] for r in results)
        assert all(r.threshold == g.calibration(METHOD, VERSION).unknown_threshold for r in results)
        single = g.identify_embeddings(queries[0], METHOD, VERSION, top_k=10)[0]
        assert len(single.top_k) == 3 and single.top_k[0][1] >= single.top_k[1][1] >= single.top_k[2][1]

        g.export(tmp_path / "out.json")
        g.export(tmp_path / "out.npz")
        with pytest.raises(GalleryError, match="json or .npz"):
            g.export(tmp_path / "out.txt")

    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["format"] == "modelprint-gallery" and doc["schema_version"] == 1
    assert [m["name"] for m in doc["models"]] == names
    assert len(doc["embeddings"]) == 120 and len(doc["prototypes"]) == 3 and len(doc["calibrations"]) == 1
    emb0 = [e for e in doc["embeddings"] if e["model"] == "model0"]
    np.testing.assert_array_equal(np.array([e["vector"] for e in emb0], np.float32), cluster(c[0], 40, seed=10))
    assert emb0[0]["image_sha256"] == sha("model0-0") and emb0[0]["source"] == "/data/model0/0.png"
    np.testing.assert_allclose(np.array([p["vector"] for p in doc["prototypes"]], np.float32), protos)

    with np.load(tmp_path / "out.npz", allow_pickle=False) as npz:
        index = json.loads(str(npz["index_json"]))
        group = index["groups"][0]
        assert (group["method"], group["version"]) == (METHOD, VERSION)
        assert group["prototype_models"] == names and group["prototype_n"] == [40, 40, 40]
        rows = [r["model"] for r in group["rows"]]
        np.testing.assert_array_equal(npz["embeddings_0"][rows.index("model2") :], cluster(c[2], 40, seed=12))
        np.testing.assert_array_equal(npz["prototypes_0"], protos)
        assert group["calibration"]["n_embeddings"] == 120


def test_duplicates_are_skipped(built):
    path, c = built
    with Gallery(path) as g:
        before = g.calibration(METHOD, VERSION)
        assert enroll(g, "model0", cluster(c[0], 40, seed=10)) == EnrollResult(0, 40)
        assert g.calibration(METHOD, VERSION) == before  # a no-op write does not recalibrate
        # 40 old + 10 new images, and one image twice within the batch
        vecs = cluster(c[0], 51, seed=10)
        hashes = [sha(f"model0-{i}") for i in range(50)] + [sha("model0-45")]
        result = g.add_embeddings("model0", vecs, hashes, ["x"] * 51, METHOD, VERSION)
        assert result == EnrollResult(added=10, skipped=41)
        assert {m.name: m.n_embeddings for m in g.models()}["model0"] == 50
        # the same image under another method version is a different embedding
        assert enroll(g, "model0", cluster(c[0], 40, seed=10), version="2") == EnrollResult(40, 0)
        assert g.models()[0].methods == ["dct@1", "dct@2"]


def test_remove_model(built):
    path, c = built
    with Gallery(path) as g:
        g.add_model("empty", notes="no images yet")
        with pytest.raises(GalleryError, match="already exists"):
            g.add_model("empty")
        assert g.calibration(METHOD, VERSION).n_models == 3
        g.remove_model("model2")
        assert [m.name for m in g.models()] == ["empty", "model0", "model1"]
        assert g.prototypes(METHOD, VERSION)[0] == ["model0", "model1"]
        cal = g.calibration(METHOD, VERSION)
        assert cal.n_models == 2 and cal.n_embeddings == 80
        with pytest.raises(GalleryError, match="no model named 'model2'"):
            g.remove_model("model2")
        # a model2 query now goes to unknown or to a remaining model, never to model2
        r = g.identify_embeddings(cluster(c[2], 5, seed=7), METHOD, VERSION)
        assert all(x.model != "model2" for x in r)

        # one model left: too little data to calibrate; identify never says unknown, verify is undecided
        g.remove_model("model1")
        assert g.calibration(METHOD, VERSION) is None
        far = g.identify_embeddings(-c[0], METHOD, VERSION)[0]
        assert far.model == "model0" and far.threshold is None and far.similarity < 0
        v = g.verify_embeddings(c[0], c[1], METHOD)
        assert v.same_model is None and v.threshold is None
        assert g.identify_embeddings(-c[0], METHOD, VERSION, threshold=0.0)[0].model == UNKNOWN

        g.remove_model("model0")
        g.remove_model("empty")
        assert g.models() == [] and g.methods() == []
        with pytest.raises(GalleryError, match="empty"):
            g.identify_embeddings(c[0], METHOD, VERSION)


def test_unknown_detection(built):
    path, c = built
    far_center = np.random.default_rng(99).normal(size=DIM)
    with Gallery(path) as g:
        results = g.identify_embeddings(cluster(far_center, 20, seed=5), METHOD, VERSION)
        assert all(r.model == UNKNOWN and r.is_unknown for r in results)
        assert all(r.top_k[0][0].startswith("model") for r in results)
        # an explicit threshold overrides the calibrated one
        relaxed = g.identify_embeddings(cluster(far_center, 20, seed=5), METHOD, VERSION, threshold=-1.0)
        assert not any(r.is_unknown for r in relaxed) and relaxed[0].threshold == -1.0
        with pytest.raises(GalleryError, match="reserved"):
            g.add_model(UNKNOWN)


def test_calibration_values(tmp_path):
    c = centers(4, seed=1)
    noise = 0.9  # overlapping enough that thresholds are not trivial
    with Gallery(tmp_path / "g.sqlite") as g:
        for k in range(4):
            enroll(g, f"m{k}", cluster(c[k], 100, seed=20 + k, noise=noise))
        cal = g.calibration(METHOD, VERSION)
    assert isinstance(cal, Calibration)
    assert cal.target_tpr == 0.95 and cal.n_models == 4 and cal.n_embeddings == 400
    assert cal.n_genuine == 400 and cal.n_impostor == 400
    assert cal.n_same_pairs == 4 * 100 * 99 // 2 and cal.n_diff_pairs == 400 * 399 // 2 - cal.n_same_pairs
    assert "leave-one-out" in cal.rule and "equal-error-rate" in cal.rule

    # recompute the leave-one-out genuine scores independently
    x = np.concatenate([cluster(c[k], 100, seed=20 + k, noise=noise) for k in range(4)])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat(np.arange(4), 100)
    genuine = []
    for i in range(len(x)):
        rest = x[(labels == labels[i]) & (np.arange(len(x)) != i)].mean(0)
        genuine.append(x[i] @ rest / np.linalg.norm(rest))
    genuine = np.array(genuine)
    assert cal.unknown_threshold == pytest.approx(np.sort(genuine)[20], abs=1e-5)  # floor(400 * 0.05) = 20
    assert np.mean(genuine >= cal.unknown_threshold - 1e-6) >= 0.95
    assert np.mean(genuine >= cal.unknown_threshold + 1e-6) < 0.95  # and it is the largest such value
    assert cal.genuine_accept_rate == pytest.approx(0.95, abs=0.005)
    assert cal.impostor_reject_rate > 0.9

    # verification threshold separates same- and different-model pairs at (approximately) equal error
    sims = x @ x.T
    iu = np.triu_indices(len(x), 1)
    same = (labels[:, None] == labels[None, :])[iu]
    s, d = sims[iu][same], sims[iu][~same]
    frr, far = np.mean(s < cal.verify_threshold), np.mean(d >= cal.verify_threshold)
    assert abs(frr - far) < 0.01 and cal.eer == pytest.approx((frr + far) / 2, abs=0.01)
    assert d.mean() < cal.verify_threshold < s.mean()

    # fresh images of enrolled models are accepted at about the target rate
    with Gallery(tmp_path / "g.sqlite") as g:
        fresh = np.concatenate([cluster(c[k], 100, seed=300 + k, noise=noise) for k in range(4)])
        results = g.identify_embeddings(fresh, METHOD, VERSION)
        accepted = np.mean([not r.is_unknown for r in results])
        assert 0.88 <= accepted <= 1.0
        assert np.mean([r.model == f"m{k // 100}" for k, r in enumerate(results)]) > 0.85
        same_pair = g.verify_embeddings(fresh[0], fresh[1], METHOD, VERSION)
        diff_pair = g.verify_embeddings(fresh[0], fresh[399], METHOD)
        assert same_pair.same_model is True and diff_pair.same_model is False
        assert same_pair.threshold == cal.verify_threshold
        g.recalibrate(target_tpr=0.5)
        assert g.calibration(METHOD, VERSION).unknown_threshold == pytest.approx(np.sort(genuine)[200], abs=1e-5)
    with Gallery(tmp_path / "g.sqlite") as g:
        assert g.target_tpr == 0.5


def test_sampled_pairs_are_deterministic(tmp_path):
    from modelprint.gallery.store import calibrate

    c = centers(3, seed=2)
    x = np.concatenate([cluster(c[k], 200, seed=k) for k in range(3)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    starts, counts = np.array([0, 200, 400]), np.array([200, 200, 200])
    a = calibrate(x, starts, counts, max_pairs=1000)
    b = calibrate(x, starts, counts, max_pairs=1000)
    assert a == b and a["n_same_pairs"] == a["n_diff_pairs"] == 1000 and "sampled" in a["rule"]
    full = calibrate(x, starts, counts)
    assert abs(full["verify_threshold"] - a["verify_threshold"]) < 0.1
    assert calibrate(x[:200], starts[:1], counts[:1]) is None  # one model
    assert calibrate(x[[0, 200]], np.array([0, 1]), np.array([1, 1])) is None  # no model with 2 images


def test_refuses_other_method_version_dimension(built, tmp_path):
    path, c = built
    with Gallery(path) as g:
        q = cluster(c[0], 3, seed=1)
        with pytest.raises(GalleryError, match=r"no dct@2 embeddings; it holds: dct@1"):
            g.identify_embeddings(q, METHOD, "2")
        with pytest.raises(GalleryError, match=r"no wavelet@1 embeddings; it holds: dct@1"):
            g.identify_embeddings(q, "wavelet", VERSION)
        with pytest.raises(GalleryError, match="dimension 16.*dimension 32"):
            g.identify_embeddings(q[:, :16], METHOD, VERSION)
        with pytest.raises(GalleryError, match="dimension 16.*dimension 32"):
            enroll(g, "model0", q[:, :16], tag="short")
        with pytest.raises(GalleryError, match="no wavelet embeddings"):
            g.verify_embeddings(q[0], q[1], "wavelet")
        with pytest.raises(GalleryError, match="dimension"):
            g.verify_embeddings(q[0, :16], q[1, :16], METHOD)
        enroll(g, "model0", cluster(c[0], 5, seed=3), tag="v2", version="2")
        with pytest.raises(GalleryError, match=r"several versions of dct \(1, 2\)"):
            g.verify_embeddings(q[0], q[1], METHOD)
        # invalid input is refused before anything is written
        with pytest.raises(GalleryError, match="NaN"):
            enroll(g, "model9", np.full((2, DIM), np.nan))
        with pytest.raises(GalleryError, match="all zeros"):
            enroll(g, "model9", np.zeros((2, DIM)))
        with pytest.raises(GalleryError, match="2 vectors but 1 image hashes"):
            g.add_embeddings("model9", q[:2], [sha("a")], ["a", "b"], METHOD, VERSION)
        with pytest.raises(GalleryError, match="not a hex sha256"):
            g.add_embeddings("model9", q[:1], ["abc"], ["a"], METHOD, VERSION)
        assert "model9" not in [m.name for m in g.models()]


def test_not_a_gallery(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database\n")
    with pytest.raises(GalleryError, match=r"notes\.txt: not a modelprint gallery \(not an SQLite database\)"):
        Gallery(text)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    conn.close()
    with pytest.raises(GalleryError, match=r"other\.sqlite: not a modelprint gallery \(SQLite database without"):
        Gallery(other)
    with pytest.raises(GalleryError, match=r"missing\.sqlite: no such gallery file"):
        Gallery(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()

    newer = tmp_path / "newer.sqlite"
    Gallery(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(GalleryError, match=r"newer\.sqlite: gallery schema version 99 is newer"):
        Gallery(newer)

    g = Gallery(tmp_path / "sub" / "new.sqlite")
    g.close()
    g.close()
    with pytest.raises(GalleryError, match="closed"):
        g.models()


KILL_SCRIPT = textwrap.dedent(
    """
    import hashlib, os, sys
    import numpy as np
    from modelprint.gallery import Gallery

    path, table, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    g = Gallery(path, create=False)
    seen = 0

    def trace(sql):
        global seen
        if sql.lstrip().upper().startswith("INSERT") and f"INTO {table.upper()}" in sql.upper():
            seen += 1
            if seen == nth:
                os._exit(1)  # like a kill: no rollback, no close, no atexit

    g._conn.execute("PRAGMA cache_size = 8")  # tiny page cache: uncommitted pages spill into the WAL file
    g._conn.set_trace_callback(trace)
    vecs = np.random.default_rng(5).normal(size=(2000, 32)).astype(np.float32)
    hashes = [hashlib.sha256(f"new-{i}".encode()).hexdigest() for i in range(2000)]
    g.add_embeddings("model1", vecs, hashes, [f"/new/{i}.png" for i in range(2000)], "dct", "1")
    print("write completed")
    """
)


@pytest.mark.parametrize(("table", "nth"), [("embeddings", 1200), ("prototypes", 2), ("calibrations", 1)])
def test_write_killed_midway_leaves_gallery_unchanged(built, tmp_path, table, nth):
    path, _ = built
    with Gallery(path) as g:
        before = snapshot(g, tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", MODELPRINT_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(path), table, str(nth)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "write completed" not in proc.stdout
    wal = Path(f"{path}-wal")
    assert wal.exists() and wal.stat().st_size > 0  # the uncommitted transaction did reach the disk

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    with Gallery(path, create=False) as g:
        assert snapshot(g, tmp_path) == before
        assert {m.name: m.n_embeddings for m in g.models()} == {"model0": 40, "model1": 40, "model2": 40}
        # and the gallery is writable again
        vecs = np.random.default_rng(5).normal(size=(10, DIM)).astype(np.float32)
        assert enroll(g, "model1", vecs, tag="again") == EnrollResult(10, 0)
        assert g.calibration(METHOD, VERSION).n_embeddings == 130


def test_scale_tens_of_thousands(tmp_path):
    c = np.random.default_rng(3).normal(size=(8, 64))
    with Gallery(tmp_path / "big.sqlite") as g:
        for k in range(8):
            vecs = (c[k] + 0.8 * np.random.default_rng(k).normal(size=(1500, 64))).astype(np.float32)
            g.add_embeddings(f"m{k}", vecs, [sha(f"{k}-{i}") for i in range(1500)], ["-"] * 1500, METHOD, VERSION)
        cal = g.calibration(METHOD, VERSION)
        assert cal.n_embeddings == 12000 and cal.n_same_pairs == cal.n_diff_pairs == 100_000
        assert "sampled" in cal.rule
        queries = np.concatenate([c[k] + 0.8 * np.random.default_rng(50 + k).normal(size=(2500, 64)) for k in range(8)])
        results = g.identify_embeddings(queries, METHOD, VERSION)
        assert len(results) == 20000
        assert np.mean([r.top_k[0][0] == f"m{i // 2500}" for i, r in enumerate(results)]) > 0.99
