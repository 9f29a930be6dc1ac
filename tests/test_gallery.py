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

from modelprint import api
from modelprint.errors import GalleryError
from modelprint.gallery import UNKNOWN, Calibration, EnrollResult, Gallery, ModelInfo
from modelprint.gallery.fallback import FALLBACK_FILE, fallback_threshold, load_fallbacks
from modelprint.methods import FingerprintMethod

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
    from modelprint.gallery import calibrate

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


def test_verification_threshold_is_the_one_eer():
    """The gallery's verification threshold and EER are :func:`modelprint.scores.eer` of its pairs, the EER that
    ``evaluate`` reports (interpolated ROC crossing), not a definition of its own."""
    from modelprint.evaluation import metrics
    from modelprint.gallery import calibrate
    from modelprint.scores import eer

    x = np.concatenate([cluster(c, 6, seed=k, noise=1.2) for k, c in enumerate(centers(3, seed=0)[:, :8])])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cal = calibrate(x, np.array([0, 6, 12]), np.array([6, 6, 6]))
    labels = np.repeat(np.arange(3), 6)
    iu = np.triu_indices(len(x), 1)
    scores, same = (x @ x.T)[iu].astype(np.float64), (labels[:, None] == labels[None, :])[iu]
    assert (cal["eer"], cal["verify_threshold"]) == eer(scores, same) == metrics.eer(scores, same)
    assert "interpolated" in cal["rule"]


def test_verify_pair_is_decided_by_the_gallery(tmp_path):
    """``modelprint.verify`` scores and decides a pair exactly as the gallery does, with or without a gallery."""
    from modelprint.gallery import verify
    from modelprint.io.images import load_image_file

    images = [str(p) for p in write_pngs(tmp_path / "imgs", 6, seed=5)]
    method = TinyMethod()
    with Gallery(tmp_path / "g.sqlite") as g:
        api.enroll(g, "a", images[:3], method=method)
        api.enroll(g, "b", images[3:], method=method)
    va, vb = method.embed([load_image_file(p).pixels for p in (images[0], images[4])])
    with Gallery(tmp_path / "g.sqlite", read_only=True) as g:
        expected = g.verify_embeddings(va, vb, "tiny", "1")
    assert expected.threshold is not None
    got = api.verify_pair(images[0], images[4], gallery=tmp_path / "g.sqlite", method=method)
    assert (got["similarity"], got["threshold"], got["same_model"]) == (
        expected.similarity, expected.threshold, expected.same_model
    )
    assert got["threshold_source"] == f"calibrated in {tmp_path / 'g.sqlite'}"
    alone = api.verify_pair(images[0], images[4], method=method, threshold=0.5)
    assert (alone["similarity"], alone["same_model"], alone["threshold_source"]) == (
        verify(va, vb, 0.5).similarity, verify(va, vb, 0.5).same_model, "given"
    )
    assert alone["similarity"] == expected.similarity
    with pytest.raises(GalleryError, match="threshold must be a finite number"):
        api.verify_pair(images[0], images[4], gallery=tmp_path / "g.sqlite", method=method, threshold=float("nan"))


def test_path_level_gallery_is_the_api_layer(tmp_path):
    """``modelprint.Gallery`` (the README's ``g.enroll``/``g.identify``) is the API's; the store embeds nothing."""
    import modelprint
    from modelprint.gallery import Gallery as Store

    assert modelprint.Gallery is api.Gallery and issubclass(api.Gallery, Store)
    assert not hasattr(Store, "enroll") and not hasattr(Store, "identify")
    images = [str(p) for p in write_pngs(tmp_path / "imgs", 5, seed=6)]
    with modelprint.Gallery(tmp_path / "g.sqlite") as g:
        rep = g.enroll("a", images[:2], method=TinyMethod())
        g.enroll("b", images[2:4], method=TinyMethod())
        found = g.identify(images[4:], method=TinyMethod(), top_k=2).to_dict()
        assert (rep.added, rep.method) == (2, "tiny@1")
        assert found == api.identify(g, images[4:], method=TinyMethod(), top_k=2).to_dict()
        assert [r["model"] for r in found["results"][0]["top_k"]] in (["a", "b"], ["b", "a"])


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


# --------------------------------------------------------------------------- reliability (issue 11, items 5-10, 14)

FIXTURE = Path(__file__).parent / "data" / "gallery-v1"
TESTS_DIR = Path(__file__).parent


class TinyMethod(FingerprintMethod):
    """A cheap, deterministic method (colour statistics) so path-level enrolments need no torch."""

    name = "tiny"

    def __init__(self, version: str = "1", nan: bool = False) -> None:
        self._version, self._nan = version, nan

    @property
    def version(self) -> str:
        return self._version

    def embed(self, images):
        out = np.stack([np.concatenate([im.mean((0, 1)), im.std((0, 1)), [1.0]]) for im in images]).astype(np.float32)
        return np.full_like(out, np.nan) if self._nan else out


def write_pngs(folder: Path, n: int, seed: int) -> list[Path]:
    from PIL import Image

    from conftest import natural_like

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        Image.fromarray(natural_like(40, 40, seed=seed * 1000 + i)).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def gallery_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, MODELPRINT_THREADS="1", PYTHONPATH=str(Path(api.__file__).parent.parent))
    return subprocess.run([sys.executable, "-m", "modelprint.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_gallery_made_before_checksums_opens_and_identifies_identically(tmp_path):
    """The committed fixture was made by modelprint before checksums existed (schema 1, no checksum column)."""
    expected = json.loads((FIXTURE / "expected.json").read_text())
    path = tmp_path / "gallery.sqlite"
    path.write_bytes((FIXTURE / "gallery.sqlite").read_bytes())
    method, version = expected["method"], expected["version"]
    queries = np.array([q["vector"] for q in expected["queries"]], dtype=np.float32)

    def check(g: Gallery) -> None:
        assert [(m.name, m.n_embeddings, m.methods) for m in g.models()] == [
            (m["name"], m["n_embeddings"], m["methods"]) for m in expected["models"]
        ]
        cal = g.calibration(method, version)
        assert (cal.unknown_threshold, cal.verify_threshold) == (
            expected["calibration"]["unknown_threshold"], expected["calibration"]["verify_threshold"]
        )
        for r, q in zip(g.identify_embeddings(queries, method, version, top_k=3), expected["queries"], strict=True):
            # same answers; scores equal up to float32 rounding (a dot product's last bit depends on the CPU's SIMD)
            assert (r.model, [m for m, _ in r.top_k]) == (q["prediction"], [m for m, _ in q["top_k"]])
            np.testing.assert_allclose([r.similarity, *(v for _, v in r.top_k)],
                                       [q["similarity"], *(v for _, v in q["top_k"])], rtol=1e-6, atol=1e-7)

    with Gallery(path, read_only=True) as g:  # as it is: nothing migrated, nothing created beside it
        check(g)
    assert gallery_files(tmp_path) == ["gallery.sqlite"]
    with Gallery(path, create=False) as g:  # writable: gains checksums, answers the same
        check(g)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*), count(checksum) FROM embeddings").fetchone() == (12, 12)
    conn.close()
    with Gallery(path, create=False) as g:
        check(g)


TINY_ENROLL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_gallery import TinyMethod
    from modelprint.api import enroll
    from modelprint.gallery import Gallery

    gallery, folder, who, rounds = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    failed = []
    for r in range(rounds):
        (folder / f"ready-{{r}}-{{who}}").touch()
        while len(list(folder.glob(f"ready-{{r}}-*"))) < 2:  # a barrier: both processes enroll at once
            time.sleep(0.0005)
        try:
            with Gallery(gallery) as g:
                rep = enroll(g, f"model{{r}}", sorted((folder / who / str(r)).glob("*.png")), method=TinyMethod())
            assert rep.added == 2 and not rep.errors, rep
        except Exception as exc:
            failed.append(f"round {{r}}: {{exc}}")
    print(f"{{len(failed)}} of {{rounds}} failed", *failed, sep="\\n")
    sys.exit(1 if failed else 0)
    """
)


def test_concurrent_enrolls_of_one_new_model_both_add(tmp_path):
    """Two processes enroll the same new model name at once, 12 times (the issue saw 3 failures in 12)."""
    rounds = 12
    for who in ("a", "b"):
        for r in range(rounds):
            write_pngs(tmp_path / who / str(r), 2, seed=hash((who, r)) % 10_000)
    script = TINY_ENROLL_SCRIPT.format(tests=str(TESTS_DIR))
    env = dict(os.environ, MODELPRINT_THREADS="1")
    gallery = tmp_path / "g.sqlite"  # does not exist yet: both also race to create it
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(gallery), str(tmp_path), who, str(rounds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for who in ("a", "b")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with Gallery(gallery, create=False) as g:
        assert {m.name: m.n_embeddings for m in g.models()} == {f"model{r}": 4 for r in range(rounds)}


ENROLL_KILLED_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    from test_gallery import TinyMethod
    from modelprint.api import enroll
    from modelprint.gallery import Gallery

    g = Gallery(sys.argv[1])

    def trace(sql):
        if sql.lstrip().upper().startswith("INSERT") and "INTO EMBEDDINGS" in sql.upper():
            os._exit(1)  # killed between creating the model and adding its images

    g._conn.set_trace_callback(trace)
    enroll(g, "newmodel", sys.argv[2:], method=TinyMethod())
    print("enroll completed")
    """
)


def test_enroll_is_one_transaction(tmp_path):
    images = [str(p) for p in write_pngs(tmp_path / "imgs", 3, seed=1)]
    path = tmp_path / "g.sqlite"
    with Gallery(path) as g:
        api.enroll(g, "old", images[:2], method=TinyMethod())
        before = snapshot(g, tmp_path)
        # an embedding that fails validation: refused, and no empty model is left behind
        with pytest.raises(GalleryError, match="NaN"):
            api.enroll(g, "newmodel", images, method=TinyMethod(nan=True))
        assert snapshot(g, tmp_path) == before
    proc = subprocess.run([sys.executable, "-c", ENROLL_KILLED_SCRIPT.format(tests=str(TESTS_DIR)), str(path), *images],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, MODELPRINT_THREADS="1"))
    assert proc.returncode == 1 and "enroll completed" not in proc.stdout, proc.stdout + proc.stderr
    with Gallery(path, create=False) as g:
        assert [m.name for m in g.models()] == ["old"]
        assert snapshot(g, tmp_path) == before


def _corrupt(src: Path, dst: Path, find: bytes | None = None, page_of: str | None = None) -> Path:
    """Copy ``src`` to ``dst`` with 4 bytes overwritten: inside ``find``'s bytes, or a b-tree page's cell pointers."""
    data = bytearray(src.read_bytes())
    if find is not None:
        at = data.find(find)
        assert at > 0
        data[at + 8 : at + 12] = b"\x00\x00\x80\x7f"  # a float becomes +inf
    else:
        conn = sqlite3.connect(src)
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (page_of,)).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        at = (root - 1) * page_size + 8  # the cell pointer array of a leaf page
        data[at : at + 4] = b"\xff\xff\xff\xff"
    dst.write_bytes(bytes(data))
    return dst


def test_damaged_gallery_is_refused(built, tmp_path):
    path, _ = built
    conn = sqlite3.connect(path)
    vector = conn.execute("SELECT vector FROM embeddings WHERE id = 7").fetchone()[0]
    prototype = conn.execute("SELECT vector FROM prototypes LIMIT 1").fetchone()[0]
    conn.close()
    cases = {
        "quick_check": _corrupt(path, tmp_path / "index.sqlite", page_of="embeddings_by_method"),
        "fail their checksum": _corrupt(path, tmp_path / "vector.sqlite", find=vector),
        "prototypes of dct@1 do not match": _corrupt(path, tmp_path / "prototype.sqlite", find=prototype),
    }
    for what, bad in cases.items():
        conn = sqlite3.connect(bad)  # SQLite itself still answers queries from every one of them
        assert conn.execute("SELECT count(*) FROM prototypes").fetchone() == (3,)
        conn.close()
        with pytest.raises(GalleryError, match=rf"{bad.name}: gallery is damaged \(.*{what}") as exc:
            Gallery(bad, create=False)
        assert "\n" not in str(exc.value)
        with pytest.raises(GalleryError, match=rf"{bad.name}: gallery is damaged \(.*{what}"):
            Gallery(bad, read_only=True)
    proc = run_cli("gallery", "list", "--gallery", str(cases["quick_check"]), cwd=tmp_path)
    assert proc.returncode == 2 and "gallery is damaged" in one_error_line(proc)


def test_read_only_opening_creates_nothing_and_refuses_writes(built, tmp_path):
    path, c = built
    folder = path.parent
    assert gallery_files(folder) == ["g.sqlite"]
    with Gallery(path, read_only=True) as g:
        assert g.read_only and len(g.models()) == 3
        assert g.identify_embeddings(cluster(c[1], 2, seed=3), METHOD, VERSION)[0].top_k[0][0] == "model1"
        g.export(tmp_path / "out" / "out.json")
        with pytest.raises(GalleryError, match=r"g\.sqlite: cannot write to the gallery: opened read-only"):
            enroll(g, "model9", cluster(c[0], 2, seed=1))
        with pytest.raises(GalleryError, match="opened read-only"):
            g.check_enroll("model9", METHOD, VERSION)
        assert gallery_files(folder) == ["g.sqlite", "out"]  # no -wal or -shm beside it
    with pytest.raises(GalleryError, match="no such gallery file"):
        Gallery(tmp_path / "missing.sqlite", read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()


READ_ONLY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from modelprint.errors import GalleryError
    from modelprint.gallery import Gallery

    with Gallery(sys.argv[1], create=False) as g:
        print("read_only", g.read_only, len(g.models()), g.identify_embeddings(np.ones(32), "dct", "1")[0].model)
    for path in sys.argv[1:]:
        try:
            with Gallery(path) as g:
                g.add_model("another")
        except GalleryError as exc:
            print("refused", exc)
    """
)


@pytest.mark.parametrize("target", ["folder", "file"])
def test_gallery_on_read_only_file_system(built, tmp_path, target):
    """A real read-only folder or file (a read-only bind mount in a private mount namespace; root cannot write it)."""
    import shlex

    folder = tmp_path / target
    folder.mkdir()
    path = folder / "g.sqlite"
    path.write_bytes(built[0].read_bytes())
    ro = folder if target == "folder" else path
    unshare = ["unshare", "--user", "--map-root-user", "--mount"] if os.geteuid() else ["unshare", "--mount"]
    q = shlex.quote(str(ro))
    mount = f"mount --bind {q} {q} && mount -o remount,ro,bind {q}"
    probe = subprocess.run([*unshare, "sh", "-c", mount], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no read-only bind mount here ({probe.stderr.strip()})")
    script = tmp_path / "check.py"
    script.write_text(READ_ONLY_SCRIPT)
    new = folder / "new.sqlite"
    cli = [sys.executable, "-m", "modelprint.cli.main", "gallery", "list", "--json", "--gallery", str(path)]
    check = [sys.executable, str(script), str(path)] + ([str(new)] if target == "folder" else [])
    env = dict(os.environ, MODELPRINT_THREADS="1", PYTHONPATH=str(Path(api.__file__).parent.parent))
    shell = f"{mount} && {shlex.join(cli)} && {shlex.join(check)}"
    proc = subprocess.run([*unshare, "sh", "-c", shell], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    listed, _, rest = proc.stdout.partition("\n}\n")
    assert [m["name"] for m in json.loads(listed + "\n}")["models"]] == ["model0", "model1", "model2"]
    lines = rest.strip().splitlines()
    assert lines[0] == "read_only True 3 " + lines[0].split()[-1]
    read_only_fs = "is on a read-only file system"
    assert lines[1] == f"refused {path}: cannot write to the gallery: the gallery file {path} {read_only_fs}"
    if target == "folder":
        assert lines[2] == f"refused {new}: cannot create the gallery: its folder {folder} {read_only_fs}"
    assert gallery_files(folder) == ["g.sqlite"]  # no -wal or -shm was created, even in the writable folder


def test_one_method_per_gallery(built, tmp_path):
    path, c = built
    images = [str(p) for p in write_pngs(tmp_path / "imgs", 2, seed=2)]
    with Gallery(path) as g:
        before = snapshot(g, tmp_path)
        with pytest.raises(GalleryError, match=r"gallery holds dct embeddings; enrolling model0 with other would mix"):
            enroll(g, "model0", cluster(c[0], 3, seed=1), method="other")
        with pytest.raises(GalleryError, match="holds dct embeddings"):  # refused before any image is embedded
            api.enroll(g, "model0", images, method=TinyMethod(nan=True))
        assert snapshot(g, tmp_path) == before
        # another version of the same method may join; images are counted once however many versions embed them
        enroll(g, "model0", cluster(c[0], 40, seed=10), version="2")
        info = {m.name: m for m in g.models()}["model0"]
        assert (info.n_embeddings, info.n_images, info.methods) == (80, 40, ["dct@1", "dct@2"])
    # verify with a gallery and another method: refused naming both, never silently without the gallery
    with pytest.raises(GalleryError, match=r"g\.sqlite: gallery holds dct@1, dct@2 embeddings, not tiny@1"):
        api.verify_pair(images[0], images[1], gallery=path, method=TinyMethod())


def test_unknown_without_calibration_falls_back_to_measured_threshold(tmp_path):
    doc = load_fallbacks()
    tag = next(t for t in doc["methods"] if t.startswith("learned@"))
    method, version = tag.split("@", 1)
    by_k = {int(k): v["threshold"] for k, v in doc["methods"][tag]["by_support"].items()}
    rng = np.random.default_rng(0)
    center = rng.normal(size=256)
    with Gallery(tmp_path / "g.sqlite") as g:
        g.add_embeddings("one", center + 0.3 * rng.normal(size=(4, 256)), [sha(f"o{i}") for i in range(4)], ["-"] * 4,
                         method, version)
        chosen = g.open_set_threshold(method, version)
        k = max(s for s in by_k if s <= 4)
        assert (chosen.value, chosen.source, chosen.calibrated) == (by_k[k], "fallback", False)
        assert "cannot calibrate 'unknown' (1 model, 4 images" in chosen.detail
        measured = f"measured for learned on {doc['data']['classes']} held-out classes with {k}-image prototypes"
        assert measured in chosen.detail
        far, near = g.identify_embeddings(np.stack([-center, center]), method, version)
        assert (far.model, far.threshold, near.model) == (UNKNOWN, by_k[k], "one")
        g.add_embeddings("two", [rng.normal(size=256)], [sha("t")], ["-"], method, version)  # 2 models: calibrates
        assert g.open_set_threshold(method, version).calibrated
    with Gallery(tmp_path / "singles.sqlite") as g:  # one image per model: the 1-image prototype threshold
        for i in range(3):
            g.add_embeddings(f"m{i}", [rng.normal(size=256)], [sha(f"s{i}")], ["-"], method, version)
        chosen = g.open_set_threshold(method, version)
        assert (chosen.value, chosen.source) == (by_k[1], "fallback")
        assert "(3 models, each with 1 image;" in chosen.detail
    # a method nobody measured: said so at enroll and identify, and "unknown" is never answered
    images = [str(p) for p in write_pngs(tmp_path / "imgs", 3, seed=3)]
    with Gallery(tmp_path / "tiny.sqlite") as g:
        rep = api.enroll(g, "alone", images[:2], method=TinyMethod())
        assert (rep.unknown_threshold, rep.threshold_source) == (None, "none")
        assert any("no threshold was measured for tiny@1" in w for w in rep.warnings)
        d = api.identify(g, images[2:], method=TinyMethod()).to_dict()
        assert d["threshold_source"] == "none" and "cannot calibrate" in d["warnings"][0]
        assert d["results"][0]["threshold"] is None


def test_fallback_choice_and_shipped_measurement():
    doc = load_fallbacks()
    assert doc["seed"] == 0 and "python -m modelprint.evaluation.fallback" in doc["command"]
    assert doc["data"]["classes"] >= 10 and doc["data"]["images_per_class"] >= 16
    tags = {t.split("@")[0]: t for t in doc["methods"]}
    assert sorted(tags) == ["fused", "learned", "spectral"]
    for tag, entry in doc["methods"].items():
        by_k = {int(k): v for k, v in entry["by_support"].items()}
        assert all(v["genuine_accept_rate"] >= 0.95 and -1 <= v["threshold"] <= 1 for v in by_k.values())
        assert fallback_threshold(tag, 1)[0] == by_k[1]["threshold"]
        assert fallback_threshold(tag, 4)[0] == by_k[max(k for k in by_k if k <= 4)]["threshold"]
        assert fallback_threshold(tag, 10_000)[0] == by_k[max(by_k)]["threshold"]
    assert fallback_threshold("learned@another-version", 5) is None
    assert FALLBACK_FILE.parent.name == "weights"
    # measured for the methods as shipped: new weights (a new tag) must be measured again
    from modelprint.methods import load_method

    assert load_method("fused").tag in doc["methods"]  # its views are the default learned and spectral
    assert {load_method(name).tag for name in ("learned", "spectral")} <= set(doc["methods"])


def test_fallback_measurement_rule():
    from modelprint.evaluation.fallback import held_out_architectures, support_thresholds
    from modelprint.synthesis import all_architectures

    archs = held_out_architectures(8, seed=0)
    assert archs == held_out_architectures(8, seed=0) and len(set(archs)) == 8
    assert not set(archs) & set(all_architectures("paper"))  # never seen by the extractor
    rng = np.random.default_rng(0)
    centers_ = rng.normal(size=(6, 16))
    labels = np.repeat(np.arange(6), 20)
    x = centers_[labels] + 0.7 * rng.normal(size=(120, 16))
    out = support_thresholds(x, labels, (1, 5), repeats=3, target_tpr=0.95, seed=0)
    assert out["1"]["n_genuine"] == 6 * 19 * 3 and out["5"]["n_genuine"] == 6 * 15 * 3
    assert out["1"]["threshold"] < out["5"]["threshold"]  # larger prototypes, higher genuine scores
    assert all(v["genuine_accept_rate"] >= 0.95 for v in out.values())


def test_duplicate_images_under_another_name_are_reported(tmp_path):
    images = [str(p) for p in write_pngs(tmp_path / "imgs", 3, seed=4)]
    with Gallery(tmp_path / "g.sqlite") as g:
        assert api.enroll(g, "first", images[:2], method=TinyMethod()).also_enrolled_as == {}
        rep = api.enroll(g, "second", images, method=TinyMethod())
        assert rep.added == 3 and rep.also_enrolled_as == {"first": 2}
        assert "already enrolled under other model names: first (2)" in rep.warnings[0]
        res = g.add_embeddings("third", np.ones((1, 7)), [sha("x")], ["-"], "tiny", "1")
        assert res == EnrollResult(1, 0) and res.also_enrolled_as == ()


def test_cli_bad_method_leaves_no_gallery_and_warns_at_enroll(tmp_path):
    demo = Path(api.__file__).parent / "demo" / "images"
    images = [str(demo / "gen-nearest" / f"gen-nearest_0{i}.png") for i in range(3)]
    proc = run_cli("enroll", "--gallery", "new.sqlite", "--model", "m", "--method", "nosuch", images[0], cwd=tmp_path)
    assert proc.returncode == 2 and "nosuch" in one_error_line(proc)
    assert gallery_files(tmp_path) == []
    first = run_cli("enroll", "--gallery", "g.sqlite", "--model", "a", "--json", *images, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "warning: the gallery cannot calibrate 'unknown' (1 model, 3 images" in one_error_line(first)
    d = json.loads(first.stdout)
    assert d["threshold_source"] == "fallback" and d["unknown_threshold"] == fallback_threshold(d["method"], 3)[0]
    second = run_cli("enroll", "--gallery", "g.sqlite", "--model", "b", "--json", *images, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "already enrolled under other model names: a (3)" in one_error_line(second)
    assert json.loads(second.stdout)["also_enrolled_as"] == {"a": 3}


def test_enroll_report_to_dict_is_what_enroll_json_prints(tmp_path: Path, rgb_png: Path) -> None:
    from modelprint.api import enroll

    rep = enroll(tmp_path / "g.sqlite", "m", [rgb_png, tmp_path / "missing.png"], method="spectral")
    d = rep.to_dict()
    assert d["model"] == "m" and d["added"] == 1 and d["skipped_duplicates"] == 0
    assert len(d["failed"]) == 1 and "missing.png" in d["failed"][0]
    assert json.loads(json.dumps(d)) == d
