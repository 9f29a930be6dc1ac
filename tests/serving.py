"""A gallery of the bundled demo images, and ``modelprint serve`` run as a real process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

DEMO = Path(__file__).resolve().parent.parent / "src" / "modelprint" / "demo" / "images"
MODELS = ("gen-bilinear", "gen-nearest", "gen-transposed", "gen-deep-nearest", "gen-deep-transposed")
SUPPORT = 6  # images enrolled per model; the others are queries


def demo_images(model: str) -> list[Path]:
    return sorted((DEMO / model).glob("*.png"))


def build_gallery(path: Path) -> Path:
    """The first ``SUPPORT`` demo images of each model enrolled in a gallery at ``path``."""
    from modelprint.api import Gallery

    with Gallery(path) as g:
        for model in MODELS:
            g.enroll(model, demo_images(model)[:SUPPORT])
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(gallery: Path, *args: str, token: str | None = None, timeout: float = 90.0) -> Iterator[
        tuple[str, subprocess.Popen]]:
    """``modelprint serve --gallery gallery`` on a free 127.0.0.1 port: yields its URL and process, once healthy;
    killed (SIGKILL) on exit if still running."""
    port = free_port()
    env = {**os.environ, "MODELPRINT_THREADS": "1"}
    env.pop("MODELPRINT_TOKENS", None)
    if token:
        env["MODELPRINT_TOKENS"] = token
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelprint.cli.main", "serve", "--gallery", str(gallery), "--port", str(port),
         *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"modelprint serve exited {proc.returncode}: {proc.stderr.read().decode()}")
            try:
                if httpx.get(f"{url}/v1/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"modelprint serve did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stderr.close()
