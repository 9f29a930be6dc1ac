"""Training a synthetic generator to reconstruct real crops, and passing images through it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from modelprint.synthesis.model import SyntheticGenerator
from modelprint.synthesis.space import Architecture

# The paper trains each synthetic model to reconstruct real images down to a minimum residual of 0.005:
# we stop once the running mean absolute reconstruction error (images in [-1, 1]) falls to it.
RESIDUAL_CRITERION = 0.005


@dataclass
class TrainStats:
    arch: str
    seed: int
    steps: int
    final_loss: float
    seconds: float
    reached_criterion: bool


def _to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) → float (n, 3, H, W) in [-1, 1], channels_last."""
    t = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return t.contiguous(memory_format=torch.channels_last)


def train_generator(
    arch: Architecture,
    crops: np.ndarray,
    *,
    seed: int = 0,
    max_steps: int = 300,
    batch_size: int = 16,
    lr: float = 2e-3,
    criterion: float = RESIDUAL_CRITERION,
) -> tuple[SyntheticGenerator, TrainStats]:
    """Train ``arch`` (initialised from ``seed``) on uint8 crops with an L1 loss until the criterion or ``max_steps``."""
    torch.manual_seed(seed)
    model = SyntheticGenerator(arch).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = _to_tensor(crops)
    gen = torch.Generator().manual_seed(seed)
    start, ema, step = time.perf_counter(), None, 0
    model.train()
    for step in range(1, max_steps + 1):
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        x = data[idx]
        loss = (model(x) - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        if ema <= criterion:
            break
    model.eval()
    stats = TrainStats(arch.id, seed, step, float(ema), time.perf_counter() - start, bool(ema <= criterion))
    return model, stats


@torch.inference_mode()
def apply_generator(model: SyntheticGenerator, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pass uint8 images (n, H, W, 3) through ``model``; returns uint8 images (8-bit quantised, like a saved PNG)."""
    out = np.empty_like(images)
    for i in range(0, len(images), batch_size):
        y = model(_to_tensor(images[i : i + batch_size]))
        y = y.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
        out[i : i + batch_size] = y.permute(0, 2, 3, 1).numpy()
    return out
