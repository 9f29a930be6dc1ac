"""Helpers shared by the benchmarks: locating ../shared, machine facts, writing results and README rows."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

from modelprint import config
from modelprint.atomic import write_text

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"


def shared_dir() -> Path:
    """``../shared`` beside the repository (or ``MODELPRINT_SHARED``)."""
    env = config.shared_dir()
    path = Path(env) if env else BENCH_DIR.parent.parent / "shared"
    if not path.is_dir():
        raise SystemExit(f"{path}: shared data folder not found; set MODELPRINT_SHARED")
    return path


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_result(name: str, payload: dict) -> Path:
    path = RESULTS_DIR / f"{name}.json"
    write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def update_readme_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    block = f"<!-- {name}:start -->\n{markdown.strip()}\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    write_text(README, text)


def fmt_ci(value: float | None, ci: list | None) -> str:
    if value is None:
        return "n/a"
    if not ci or None in ci:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
