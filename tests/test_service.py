"""The REST service (``modelprint serve``): auth, limits, bad uploads, results equal to the CLI's, concurrent
enrolment and a killed server, on a gallery of the bundled demo images."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modelprint.service import Settings, create_app, load_tokens
from modelprint.service.guard import Guard
from modelprint.service.settings import ServiceError, check_exposure
from serving import MODELS, SUPPORT, build_gallery, demo_images, served

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUERY = demo_images("gen-deep-transposed")[12]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo gallery (read it; copy it to write)."""
    return build_gallery(tmp_path_factory.mktemp("service") / "demo.sqlite")


@pytest.fixture
def writable(gallery: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(gallery, tmp_path / "g.sqlite"))


@pytest.fixture(scope="module")
def client(gallery: Path) -> TestClient:
    return TestClient(create_app(gallery, Settings(tokens=(TOKEN,), rate=1000, burst=1000)))


def upload(path: Path | None = None, name: str | None = None, data: bytes | None = None) -> dict:
    content = data if data is not None else Path(path).read_bytes()
    return {"file": (name or Path(path).name, content, "image/png")}


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width × height`` RGB pixels, with almost no data (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------------ auth and exposure


def test_auth_missing_wrong_and_right_token(client):
    assert client.get("/v1/health").status_code == 200  # liveness needs no token
    missing = client.get("/v1/models")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "missing bearer token" in missing.json()["detail"]
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer"):
        r = client.get("/v1/models", headers={"Authorization": wrong})
        assert r.status_code == 401, wrong
    assert client.post("/v1/identify", files=upload(QUERY)).status_code == 401
    right = client.get("/v1/models", headers=AUTH)
    assert right.status_code == 200 and [m["name"] for m in right.json()["models"]] == sorted(MODELS)


def test_tokens_from_file_and_environment_and_exposure(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# analysts\nalpha\n\n beta \n")
    assert load_tokens(f, {"MODELPRINT_TOKENS": "gamma, alpha,"}) == ("alpha", "beta", "gamma")
    assert load_tokens(None, {}) == ()
    (tmp_path / "empty").write_text("# none\n")
    with pytest.raises(ServiceError, match="holds no token"):
        load_tokens(tmp_path / "empty", {})
    check_exposure("127.0.0.1", ())
    check_exposure("::1", ())
    check_exposure("0.0.0.0", ("alpha",))
    with pytest.raises(ServiceError, match="refusing to listen on 0.0.0.0 without authentication"):
        check_exposure("0.0.0.0", ())


def test_serve_refuses_a_public_address_without_tokens(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MODELPRINT_TOKENS"}
    r = subprocess.run([sys.executable, "-m", "modelprint.cli.main", "serve", "--gallery", str(tmp_path / "g.sqlite"),
                        "--host", "0.0.0.0"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: refusing to listen on 0.0.0.0 without authentication: give --token-file F or MODELPRINT_TOKENS, "
        "or listen on 127.0.0.1"]
    assert not (tmp_path / "g.sqlite").exists()


# ------------------------------------------------------------------------------------------------ limits


def test_body_over_the_byte_limit_is_413_unread(gallery):
    small = TestClient(create_app(gallery, Settings(max_upload_bytes=20_000)))
    big = QUERY.read_bytes() + b"\0" * 30_000
    r = small.post("/v1/identify", files=upload(name="big.png", data=big))
    assert r.status_code == 413 and "over the limit of 20,000 bytes" in r.json()["detail"]
    assert small.post("/v1/identify", files=upload(QUERY)).status_code == 200


def test_decompression_bomb_is_refused_from_its_header(client):
    bomb = png_bomb(100_000, 100_000)
    assert len(bomb) < 200
    r = client.post("/v1/identify", headers=AUTH, files=upload(name="bomb.png", data=bomb))
    assert r.status_code == 413
    assert r.json()["detail"].startswith("bomb.png: image is 100000x100000 = 10,000,000,000 pixels, over the limit")
    assert "decompression bomb" in r.json()["detail"]


def test_pixel_limit_setting(gallery):
    strict = TestClient(create_app(gallery, Settings(max_pixels=90 * 90)))
    r = strict.post("/v1/identify", files=upload(QUERY))
    assert r.status_code == 413 and "96x96 = 9,216 pixels, over the limit of 8,100" in r.json()["detail"]


def test_rate_limit_per_token(gallery):
    limited = TestClient(create_app(gallery, Settings(tokens=("a", "b"), rate=0.01, burst=2)))
    codes = [limited.get("/v1/models", headers={"Authorization": "Bearer a"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = limited.get("/v1/models", headers={"Authorization": "Bearer a"})
    assert int(refused.headers["retry-after"]) >= 1 and "rate limit" in refused.json()["detail"]
    assert limited.get("/v1/models", headers={"Authorization": "Bearer b"}).status_code == 200  # its own bucket


def test_worker_pool_admits_workers_plus_queue_and_refuses_the_rest():
    """Three POSTs at once with 1 worker and 1 queue slot: two run, the third is refused with 503 at once."""
    release = anyio.Event()
    started: list[str] = []
    statuses: list[int] = []

    async def slow_app(scope, receive, send):
        started.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = Guard(slow_app, Settings(workers=1, queue=1))

    async def request() -> None:
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
                if message["status"] == 503:
                    assert dict(message["headers"])[b"retry-after"] == b"1"

        scope = {"type": "http", "method": "POST", "path": "/v1/identify", "headers": [(b"content-length", b"0")],
                 "client": ("127.0.0.1", 1)}
        await guard(scope, receive, send)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(request)
            while len(statuses) < 1 or len(started) < 2:
                await anyio.sleep(0.01)
            assert statuses == [503] and guard.busy == 2
            release.set()

    anyio.run(main)
    assert sorted(statuses) == [200, 200, 503] and guard.busy == 0


# ------------------------------------------------------------------------------------------------ bad uploads


def test_bad_uploads_are_one_line_json_errors(client):
    data = QUERY.read_bytes()
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiny, format="PNG")
    cases = {
        "corrupt.png": (data[: len(data) // 2], "corrupt.png: truncated or corrupt image data"),
        "notes.png": (b"these are not the pixels you are looking for", "notes.png: not an image"),
        "empty.png": (b"", "empty.png: file is empty (0 bytes)"),
        "tiny.png": (tiny.getvalue(), "tiny.png: image is 8x8; at least 32 px on each side is needed"),
    }
    for name, (content, reason) in cases.items():
        r = client.post("/v1/identify", headers=AUTH, files=upload(name=name, data=content))
        assert r.status_code == 422, name
        detail = r.json()["detail"]
        assert detail.startswith(reason) and "\n" not in detail and "Traceback" not in r.text
    r = client.post("/v1/identify", headers=AUTH)
    assert r.status_code == 422 and r.json() == {"detail": "file: Field required"}
    r = client.post("/v1/identify?top_k=0", headers=AUTH, files=upload(QUERY))
    assert r.status_code == 422 and r.json()["detail"] == "query.top_k: Input should be greater than or equal to 1"
    r = client.post("/v1/verify", headers=AUTH, files=upload(QUERY))
    assert r.status_code == 422 and "two images" in r.json()["detail"]


def test_a_batch_with_some_bad_uploads_answers_the_good_ones(client):
    files = [("file", ("good.png", QUERY.read_bytes(), "image/png")), ("file", ("bad.png", b"xx", "image/png"))]
    d = client.post("/v1/identify", headers=AUTH, files=files).json()
    assert [r["path"] for r in d["results"]] == ["good.png"]
    assert d["failed"] == ["bad.png: not an image (content is not a known image format)"]


def test_upload_names_lose_client_folders_and_no_server_path_is_shown(client, gallery, tmp_path):
    r = client.post("/v1/identify", headers=AUTH, files=upload(QUERY, name="C:\\Users\\me\\q.png"))
    assert r.json()["results"][0]["path"] == "q.png"
    pair = [("file", ("a.png", QUERY.read_bytes(), "image/png")),
            ("file", ("b.png", demo_images("gen-deep-transposed")[13].read_bytes(), "image/png"))]
    v = client.post("/v1/verify", headers=AUTH, files=pair)
    assert v.status_code == 200 and v.json()["threshold_source"] == "calibrated in <gallery>"
    empty = TestClient(create_app(tmp_path / "new.sqlite"))
    r = empty.post("/v1/identify", files=upload(QUERY))
    assert r.status_code == 409 and r.json()["detail"] == "<gallery>: gallery is empty; enroll models first"
    for text in (v.text, r.text):
        assert str(tmp_path) not in text and str(gallery.parent) not in text


# ------------------------------------------------------------------------------------------------ results


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_identify_equals_the_cli_json(client, gallery, tmp_path):
    query = Path(shutil.copy(QUERY, tmp_path / "query.png"))
    cli = subprocess.run([sys.executable, "-m", "modelprint.cli.main", "identify", "--gallery", str(gallery),
                          "query.png", "--top-k", "4", "--json"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "MODELPRINT_THREADS": "1"}, timeout=120, check=True)
    served_json = client.post("/v1/identify?top_k=4", headers=AUTH, files=upload(query)).json()
    assert _rounded(served_json) == _rounded(json.loads(cli.stdout))
    assert served_json["results"][0]["prediction"] == "gen-deep-transposed"


def test_spectra_of_the_image_and_of_its_best_match(client):
    d = client.post("/v1/identify?spectra=true", headers=AUTH, files=upload(QUERY)).json()
    (entry,) = d["spectra"]
    image, mean = np.array(entry["image"]), np.array(entry["model_mean"])
    assert entry["model"] == d["results"][0]["top_k"][0]["model"] == "gen-deep-transposed"
    assert image.shape == mean.shape == (64, 64) and np.isfinite(image).all() and np.isfinite(mean).all()
    assert not np.allclose(image, mean, atol=1e-2)  # one image is not its model's mean


def test_enroll_list_remove_and_evaluate(writable, tmp_path):
    dataset = tmp_path / "ds"
    for model in MODELS[:3]:
        (dataset / model).mkdir(parents=True)
        for p in demo_images(model)[:8]:
            shutil.copy(p, dataset / model / p.name)
    app = TestClient(create_app(writable, Settings(datasets={"demo": dataset})))
    extra = demo_images("gen-nearest")[SUPPORT : SUPPORT + 2]
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in extra + extra[:1]]
    r = app.post("/v1/models/gen-nearest?notes=more", files=files)
    assert r.status_code == 200
    assert (r.json()["added"], r.json()["skipped_duplicates"], r.json()["threshold_source"]) == (2, 1, "calibrated")
    listing = app.get("/v1/models").json()
    counts = {m["name"]: m["n_images"] for m in listing["models"]}
    assert counts == {**dict.fromkeys(MODELS, SUPPORT), "gen-nearest": SUPPORT + 2}
    assert app.delete("/v1/models/gen-nearest").json() == {"removed": "gen-nearest"}
    assert app.delete("/v1/models/gen-nearest").status_code == 404
    assert "gen-nearest" not in {m["name"] for m in app.get("/v1/models").json()["models"]}
    assert app.get("/v1/datasets").json() == {"datasets": ["demo"]}
    r = app.post("/v1/evaluate", json={"dataset": "demo", "support": 3, "pairs": 20, "seed": 0})
    assert r.status_code == 200 and r.json()["n_models"] == 3 and r.json()["n_images"] == 24
    assert str(dataset) not in r.text
    assert app.post("/v1/evaluate", json={"dataset": str(dataset)}).status_code == 404  # a path is not a name


# ------------------------------------------------------------------------------------------------ a real server


def test_concurrent_enrolment_and_a_killed_server_keep_every_committed_image(writable):
    from modelprint.api import Gallery

    images = demo_images("gen-bilinear")[SUPPORT:]
    halves = (images[:3], images[3:6])
    with served(writable, token=TOKEN) as (url, proc):
        results: list[dict] = []

        def enroll(paths):
            files = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
            results.append(httpx.post(f"{url}/v1/models/newcomer", headers=AUTH, files=files, timeout=120).json())

        threads = [threading.Thread(target=enroll, args=(half,)) for half in halves]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r["added"] for r in results) == [3, 3]
        models = {m["name"]: m["n_images"] for m in httpx.get(f"{url}/v1/models", headers=AUTH).json()["models"]}
        assert models["newcomer"] == 6
        late = [p for m in MODELS for p in demo_images(m)[SUPPORT:]]  # 50 images: killed while it embeds them
        killer = threading.Timer(0.5, proc.send_signal, (signal.SIGKILL,))
        killer.start()
        with pytest.raises(httpx.TransportError):
            enroll(late)
        killer.join()
        proc.wait(timeout=10)
    with Gallery(writable, create=False) as g:  # opening checks integrity
        counts = {m.name: m.n_images for m in g.models()}
        assert counts == {**dict.fromkeys(MODELS, SUPPORT), "newcomer": 6}  # the interrupted one left no trace
        assert "newcomer" in g.mean_spectra()
