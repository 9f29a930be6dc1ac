"""One place to make runs deterministic."""

from __future__ import annotations

import os
import random

import numpy as np

from modelprint.config import torch_threads


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (if imported) torch; return a NumPy generator for local use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    import sys

    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def configure_torch_threads() -> None:
    """Use all cores in one process (the measured best on 2 cores); honour MODELPRINT_THREADS."""
    import torch

    threads = torch_threads() or os.cpu_count() or 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
