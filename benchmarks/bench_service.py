"""Load test and schema fuzzing of `modelprint serve`, against 127.0.0.1 only, bounded in requests and time.

The server is a real `modelprint serve` process (the default `learned` method, `--workers 2`, each worker one torch
thread) on a gallery of the bundled demo set (5 models × 6 images). Clients are threads with their own HTTP
connection, each sending `/v1/identify` requests back to back.

- Load: 512² PNG queries at 1, 4 and 16 concurrent clients (`--requests` per level, `--level-seconds` cap):
  requests/s, latency p50/p95/p99, errors. The queue is set so that 16 clients are below the limits.
- Memory: the server's RSS sampled every 50 requests over `--rss-requests` identify requests (4 clients; queries of
  64² to 192², and one in 13 of 512²).
- Baseline: the same 512² identification in process (`modelprint.Gallery.identify`, one torch thread), so the
  service's own share of the latency shows.
- Overload: 16 clients against `--workers 2 --queue 2`: the excess is refused with 503 (not a crash), and the server
  answers afterwards.
- Fuzzing: Schemathesis on the served OpenAPI schema (examples, coverage and fuzzing phases, positive and negative
  data, bounded by `--fuzz-examples` per operation and `--fuzz-seconds`): every response's status, and whether any
  is a 5xx or carries a traceback (from the run's HAR record).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from common import BENCH_DIR, RESULTS_DIR, machine, update_readme_section, write_result

DEMO = BENCH_DIR.parent / "src" / "modelprint" / "demo" / "images"
MODELS = ("gen-bilinear", "gen-nearest", "gen-transposed", "gen-deep-nearest", "gen-deep-transposed")
TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def build_gallery(path: Path, support: int = 6) -> None:
    from modelprint.api import Gallery

    with Gallery(path) as g:
        for model in MODELS:
            g.enroll(model, sorted((DEMO / model).glob("*.png"))[:support])


def queries(side: int, n: int = 8) -> list[bytes]:
    """``n`` PNG queries of ``side``² px: held-out demo images resized (the content does not change the cost)."""
    out = []
    for i in range(n):
        src = sorted((DEMO / MODELS[i % len(MODELS)]).glob("*.png"))[10 + i // len(MODELS)]
        buf = io.BytesIO()
        Image.open(src).convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(gallery: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = {**os.environ, "MODELPRINT_THREADS": "1", "MODELPRINT_TOKENS": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "modelprint.cli.main", "serve", "--gallery", str(gallery),
                             "--port", str(port), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"modelprint serve exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load(url: str, bodies: list[bytes], clients: int, per_client: int, seconds: float,
         on_done: callable | None = None) -> dict:
    """``clients`` threads, each sending up to ``per_client`` identify requests (all stop after ``seconds``)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(headers=AUTH, timeout=300) as http:
            for i in range(per_client):
                if time.monotonic() > deadline:
                    return
                body = bodies[(k * per_client + i) % len(bodies)]
                t0 = time.perf_counter()
                try:
                    status = http.post(f"{url}/v1/identify", files={"file": ("q.png", body, "image/png")}).status_code
                except httpx.TransportError:
                    status = -1
                dt = time.perf_counter() - t0
                with lock:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(dt)
                    if on_done:
                        on_done(sum(statuses.values()))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "requests": sum(statuses.values()), "ok": statuses.get(200, 0),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "seconds": round(wall, 2),
            "requests_per_s": round(statuses.get(200, 0) / wall, 3),
            **{f"p{q}_s": round(float(np.percentile(lat, q)), 3) for q in (50, 95, 99)}}


def in_process(gallery: Path, bodies: list[bytes]) -> dict:
    """Seconds of ``Gallery.identify`` on each query, in this process with one torch thread (the method's cost)."""
    os.environ["MODELPRINT_THREADS"] = "1"
    from modelprint.api import Gallery
    from modelprint.io import ImageBytes

    with Gallery(gallery, create=False) as g:
        g.identify([ImageBytes("warm.png", bodies[0])])
        times = []
        for i, body in enumerate(bodies):
            t0 = time.perf_counter()
            g.identify([ImageBytes(f"q{i}.png", body)])
            times.append(time.perf_counter() - t0)
    return {"images": len(times), "median_s": round(float(np.median(times)), 3), "max_s": round(max(times), 3)}


def rss_run(url: str, pid: int, n: int, small_only: bool) -> dict:
    proc = psutil.Process(pid)
    sizes = (64,) if small_only else (64, 96, 128, 192, 512)
    bodies = queries(64, 8) if small_only else [b for s in sizes[:-1] for b in queries(s, 3)] + queries(512, 1)
    samples: list[tuple[int, int]] = [(0, proc.memory_info().rss)]

    def sample(done: int) -> None:
        if done % 50 == 0:
            samples.append((done, proc.memory_info().rss))

    res = load(url, bodies, 4, n // 4, 3600, on_done=sample)
    samples.append((res["requests"], proc.memory_info().rss))
    mb = [round(r / 2**20, 1) for _, r in samples]
    return {"requests": res["requests"], "ok": res["ok"], "statuses": res["statuses"], "sizes": list(sizes),
            "rss_mb": dict(zip([d for d, _ in samples], mb)), "rss_mb_first_half_max": max(mb[: len(mb) // 2]),
            "rss_mb_second_half_max": max(mb[len(mb) // 2:]), "seconds": res["seconds"]}


def fuzz(url: str, examples: int, seconds: int, seed: int, workdir: Path) -> dict:
    har = workdir / "fuzz.har"
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json", "-H",
           f"Authorization: Bearer {TOKEN}", "--checks", "not_a_server_error", "--max-examples", str(examples),
           "--max-time", str(seconds), "--seed", str(seed), "--workers", "1", "--phases", "examples,coverage,fuzzing",
           "--report", "har", "--report-har-path", str(har), "--request-timeout", "120", "--no-color",
           "--suppress-health-check", "all"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 600)
    wall = time.perf_counter() - t0
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = Counter(e["response"]["status"] for e in entries)
    texts = [e["response"].get("content", {}).get("text", "") or "" for e in entries]
    paths = (httpx.URL(e["request"]["url"]).path for e in entries)
    by_op = Counter((e["request"]["method"], "/v1/models/{name}" if p.startswith("/v1/models/") else p)
                    for e, p in zip(entries, paths))
    summary = [line.replace(str(workdir), "WORK") for line in run.stdout.splitlines() if line.strip()][-6:]
    return {"requests": len(entries), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors": sum(v for k, v in statuses.items() if k >= 500),
            "tracebacks": sum("Traceback" in t for t in texts), "operations": len(by_op),
            "seconds": round(wall, 1), "schemathesis_exit": run.returncode, "schemathesis_summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, nargs=3, default=(12, 24, 48),
                        help="identify requests at 1, 4 and 16 clients")
    parser.add_argument("--level-seconds", type=float, default=240.0, help="time cap of each load level")
    parser.add_argument("--rss-requests", type=int, default=1000)
    parser.add_argument("--fuzz-examples", type=int, default=30)
    parser.add_argument("--fuzz-seconds", type=int, default=240)
    parser.add_argument("--rss-small", action="store_true", help="64² queries only in the RSS run (a busy machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fuzzer")
    parser.add_argument("--phases", default="load,rss,overload,fuzz",
                        help="phases to run; the others are kept from the last result file (a shared machine)")
    args = parser.parse_args()
    phases = set(args.phases.split(","))

    out: dict = {"machine": machine(), "load_average_before": [round(x, 2) for x in os.getloadavg()],
                 "method": "learned", "server": "--workers 2, MODELPRINT_THREADS=1",
                 "gallery": f"{len(MODELS)} demo models x 6 images", "levels": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gallery = work / "g.sqlite"
        build_gallery(gallery)
        bodies = queries(512)
        if "load" in phases:
            out["in_process"] = in_process(gallery, bodies)
            print(json.dumps(out["in_process"]), flush=True)
        server = ("--workers", "2", "--queue", "16", "--rate", "1000", "--burst", "1000")
        if phases & {"load", "rss"}:
            with served(gallery, *server) as (url, proc):
                load(url, bodies, 1, 2, 120)  # warm-up
                for clients, n in zip((1, 4, 16), args.requests if "load" in phases else ()):
                    level = load(url, bodies, clients, max(1, n // clients), args.level_seconds)
                    print(json.dumps(level), flush=True)
                    out["levels"].append(level)
                if "rss" in phases:
                    out["rss"] = rss_run(url, proc.pid, args.rss_requests, args.rss_small)
                    print(json.dumps(out["rss"]), flush=True)
        if "overload" in phases:
            with served(gallery, "--workers", "2", "--queue", "2", "--rate", "1000", "--burst", "1000") as (url, _):
                over = load(url, bodies, 16, 2, 300)
                over["healthy_after"] = httpx.get(f"{url}/v1/models", headers=AUTH, timeout=30).status_code == 200
                out["overload"] = over
                print(json.dumps(over), flush=True)
        if "fuzz" in phases:
            fuzz_gallery = Path(shutil.copy(gallery, work / "fuzz.sqlite"))
            with served(fuzz_gallery, "--rate", "1000", "--burst", "1000", "--queue", "16") as (url, _):
                out["fuzz"] = fuzz(url, args.fuzz_examples, args.fuzz_seconds, args.seed, work)
                print(json.dumps(out["fuzz"]), flush=True)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    previous = RESULTS_DIR / "service.json"
    if phases != {"load", "rss", "overload", "fuzz"} and previous.exists():
        kept = json.loads(previous.read_text())
        for key, phase in (("levels", "load"), ("in_process", "load"), ("rss", "rss"), ("overload", "overload"),
                           ("fuzz", "fuzz")):
            if phase not in phases and key in kept:
                out[key] = kept[key]
        earlier = {**kept.get("phases_from_earlier_runs", {}),
                   **{ph: kept["machine"]["date"] for ph in {"load", "rss", "overload", "fuzz"} - phases}}
        out["phases_from_earlier_runs"] = {ph: day for ph, day in earlier.items() if ph not in phases}
    write_result("service", out)
    update_readme_section("service", readme(out))


def readme(out: dict) -> str:
    four = next(level for level in out["levels"] if level["clients"] == 4)
    md = [
        "## Service: load test and schema fuzzing (`bench_service.py`)",
        "",
        f"`modelprint serve` on 127.0.0.1 ({out['server']}; {out['gallery']}), `/v1/identify` of 512² PNGs, "
        f"{out['machine']['cpus']} shared cores, {out['machine']['date']}.",
        "",
        "| clients | requests | ok | requests/s | p50 s | p95 s | p99 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for lv in out["levels"]:
        md.append(f"| {lv['clients']} | {lv['requests']} | {lv['ok']} | {lv['requests_per_s']:.2f} | "
                  f"{lv['p50_s']:.2f} | {lv['p95_s']:.2f} | {lv['p99_s']:.2f} |")
    rss, over, fz, base = out["rss"], out["overload"], out["fuzz"], out["in_process"]
    one = next(lv for lv in out["levels"] if lv["clients"] == 1)
    md += [
        "",
        f"In process, the same identification takes {base['median_s']:.2f} s (median of {base['images']}) on one "
        f"torch thread: the method's cost. Load average (1/5/15 min) {out['load_average_before']} before and "
        f"{out['load_average_after']} after the run"
        + ("; phases kept from an earlier run of the same day: "
           + ", ".join(sorted(out["phases_from_earlier_runs"])) if out.get("phases_from_earlier_runs") else "")
        + ".",
        "",
        f"Target p95 < 1 s at 4 clients: **{'met' if four['p95_s'] < 1 else 'not met'}** ({four['p95_s']:.2f} s).",
        "",
        f"Reading: one 512² identification costs {base['median_s']:.2f} s of one core in process (the `learned` "
        f"method at its defaults), and {one['p50_s']:.2f} s served to one client"
        + (f", so decoding the upload, HTTP and JSON add about {one['p50_s'] - base['median_s']:.2f} s. "
           if one["p50_s"] > base["median_s"] else
           ": decoding, HTTP and JSON add no measurable time. ")
        + f"Throughput goes from {one['requests_per_s']:.1f} requests/s at one client to "
        f"{four['requests_per_s']:.1f} at four: the server is CPU-bound on 2 cores"
        + (", which it shared with other jobs on this run (see the load average)"
           if out["load_average_before"][0] > 1.5 else "")
        + ", so beyond that requests queue and latency grows with the number of clients while nothing fails "
        "below the limits; above its limits it refuses (503) instead of degrading.",
        "",
        f"- Memory: {rss['ok']} of {rss['requests']} identify requests ({'/'.join(map(str, rss['sizes']))}² px "
        f"queries, 4 clients) answered; server RSS peaked at {rss['rss_mb_first_half_max']:.0f} MB in the first "
        f"half and {rss['rss_mb_second_half_max']:.0f} MB in the second.",
        f"- Overload (16 clients, 2 workers + 2 queued): statuses {over['statuses']}; the server answered "
        f"afterwards: {over['healthy_after']}.",
        f"- Fuzzing (Schemathesis, {fz['operations']} method × path pairs, {fz['requests']} requests, "
        f"{fz['seconds']:.0f} s): "
        f"statuses {fz['statuses']}; 5xx: {fz['server_errors']}; responses with a traceback: {fz['tracebacks']}.",
    ]
    return "\n".join(md)


if __name__ == "__main__":
    main()
