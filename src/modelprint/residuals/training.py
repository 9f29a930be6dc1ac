"""Training modelprint's DnCNN denoiser (the ``dncnn`` residual) from scratch on the real-image pool.

Recipe: clean ``crop``×``crop`` crops from ``RealPool().crops(..., split="train")`` (uint8 → float/255), a random
flip/rotation per batch, Gaussian noise of standard deviation ``sigma``/255 added, the network predicts the noise
(MSE on the 0–255 scale, so predicting zero scores σ²), Adam with a short linear warm-up then cosine decay,
everything deterministic by ``seed``. The first layer's kernels start zero-mean (as in constrained-convolution
forensics nets): with random kernels the 1/255 noise is drowned by image content and training stalls at
predicting zero; with zero-mean kernels it learns from the first steps (measured: +1.7 dB after 150 steps vs 0).
Evaluation uses crops of the ``holdout`` photos (never seen in training) with fixed noise: validation MSE of the
predicted noise (0–255 scale), PSNR of noisy and denoised crops and the gain.

The weights are written atomically as safetensors (with the config in its metadata) plus a JSON sidecar holding
the config, the command that reproduces them, the data, the losses, the time, the metrics and the file's sha256.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelprint.artefacts import sidecar_path, write_sidecar, write_tensors
from modelprint.residuals.dncnn import (
    DEFAULT_DEPTH,
    DEFAULT_WIDTH,
    FORMAT,
    build_dncnn,
    checkpoint_metadata,
    default_config,
    saved_state_dict,
)

if TYPE_CHECKING:
    from modelprint.io.pool import RealPool

Progress = Callable[[int, int, float], Any]


def _psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error on the [0, 1] scale."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def _command(out: Path, args: dict[str, Any]) -> str:
    kw = ", ".join(f"{k}={json.dumps(v) if isinstance(v, str) else repr(v)}" for k, v in args.items())
    code = f"from modelprint.residuals.training import train_denoiser; train_denoiser({json.dumps(str(out))}, {kw})"
    quoted = f"'{code}'" if "'" not in code else shlex.quote(code)
    return "MODELPRINT_THREADS=1 python -c " + quoted


def evaluate_denoiser(model, clean: np.ndarray, sigma: float, seed: int, batch: int = 32) -> dict[str, float]:  # noqa: ANN001
    """Held-out metrics of ``model`` on uint8 crops ``clean`` (n, s, s, 3) with fixed Gaussian noise σ/255."""
    import torch

    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    se_pred = se_zero = 0.0
    dot = pp = 0.0
    clean_rms = 0.0
    count = 0
    with torch.inference_mode():
        for s in range(0, len(clean), batch):
            x = torch.from_numpy(clean[s : s + batch]).permute(0, 3, 1, 2).float().div_(255.0)
            noise = torch.randn(x.shape, generator=g) * (sigma / 255.0)
            pred = model(x + noise)
            se_pred += float(((pred - noise) ** 2).sum())
            se_zero += float((noise**2).sum())
            dot += float((pred * noise).sum())
            pp += float((pred**2).sum())
            clean_rms += float((model(x) ** 2).sum())
            count += noise.numel()
    model.train(was_training)
    mse_pred, mse_zero = se_pred / count, se_zero / count  # on the [0, 1] scale
    return {
        "val_mse": mse_pred * 255.0**2,  # predicted vs true noise, 0–255 scale
        "val_mse_zero": mse_zero * 255.0**2,  # the noise power (what predicting zero scores)
        "val_noise_corr": dot / math.sqrt(max(pp * se_zero, 1e-30)),
        "psnr_noisy_db": _psnr(mse_zero),
        "psnr_denoised_db": _psnr(mse_pred),
        "psnr_gain_db": _psnr(mse_pred) - _psnr(mse_zero),
        "clean_residual_rms": math.sqrt(clean_rms / count) * 255.0,  # residual of the clean crops, 0–255 scale
    }


def train_denoiser(
    out: str | Path,
    *,
    steps: int = 1500,
    batch_size: int = 32,
    crop: int = 48,
    sigma: float = 1.0,
    lr: float = 1e-3,
    seed: int = 0,
    pool: RealPool | None = None,
    progress: Progress | None = None,
    depth: int = DEFAULT_DEPTH,
    width: int = DEFAULT_WIDTH,
    train_crops: int = 8192,
    val_crops: int = 128,
    val_crop: int = 128,
    warmup: int | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train a DnCNN to predict Gaussian noise of std ``sigma``/255 and save it to ``out``; return the metrics.

    Parameters
    ----------
    out:
        The ``.safetensors`` file to write (its sidecar is ``out`` with a ``.json`` extension). A path without
        the ``.safetensors`` extension is taken as a folder and ``dncnn_s{sigma}.safetensors`` is written in it.
    steps, batch_size, crop:
        Optimisation steps, crops per step, crop side in pixels.
    sigma:
        Noise standard deviation on the 0–255 scale (1.0 means σ = 1/255).
    lr:
        Peak Adam learning rate (linear warm-up over ``warmup`` steps, default 5 % of ``steps`` capped at 200,
        then cosine decay to 1 % of it).
    seed:
        Seeds the initialisation, the crop draw (``pool.crops(..., seed=seed)``), batch sampling, augmentation
        and the noise; a run is reproducible on the same machine and thread count.
    pool:
        The :class:`~modelprint.io.RealPool` to draw from (default: the package-shipped photos).
    progress:
        Called as ``progress(step, steps, loss)`` after every step (``loss`` on the 0–255 scale).
    depth, width:
        The architecture (``depth`` 3×3 conv layers of ``width`` channels).
    train_crops:
        Distinct training crops drawn (``min(train_crops, steps * batch_size)``); batches sample them with
        replacement, so the pixels stay bounded while each step sees fresh noise and a random flip/rotation.
    val_crops, val_crop:
        Held-out crops (``split="holdout"``, seed ``seed + 1``) and their side, evaluated with fixed noise.
    command:
        The command to record in the sidecar (default: the equivalent ``python -c`` one-liner).

    Returns the metrics dict also stored in the sidecar (under ``metrics``), plus ``weights``/``sidecar`` paths.
    """
    import torch

    from modelprint.io.pool import RealPool
    from modelprint.seeding import configure_torch_threads, seed_everything

    if steps < 1 or batch_size < 1 or crop < 8 or sigma <= 0 or lr <= 0:
        raise ValueError("need steps >= 1, batch_size >= 1, crop >= 8, sigma > 0, lr > 0")
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        out = out / f"dncnn_s{sigma:g}.safetensors"
    args = {"steps": steps, "batch_size": batch_size, "crop": crop, "sigma": sigma, "lr": lr, "seed": seed}
    extra = {"depth": depth, "width": width, "train_crops": train_crops, "val_crops": val_crops, "val_crop": val_crop}
    defaults = {"depth": DEFAULT_DEPTH, "width": DEFAULT_WIDTH, "train_crops": 8192, "val_crops": 128, "val_crop": 128}
    args.update({k: v for k, v in extra.items() if v != defaults[k]})
    if warmup is not None:
        args["warmup"] = warmup
    command = command or _command(out, args)

    configure_torch_threads()
    t0 = time.perf_counter()
    seed_everything(seed)
    torch.manual_seed(seed)
    pool = pool or RealPool()
    n_train = int(min(train_crops, steps * batch_size))
    train_sources = [p.name for p in pool.sources("train")]
    holdout_sources = [p.name for p in pool.sources("holdout")]
    clean = torch.from_numpy(pool.crops(n_train, crop, seed=seed, split="train"))  # (n, c, c, 3) uint8
    val = pool.crops(val_crops, val_crop, seed=seed + 1, split="holdout")
    t_data = time.perf_counter() - t0

    config = default_config(depth=depth, width=width, sigma=sigma)
    model = build_dncnn(config).train()
    with torch.no_grad():  # zero-mean first-layer kernels: the σ=1/255 noise is not drowned by image content at init
        w = model.body[0].weight
        w.sub_(w.mean(dim=(2, 3), keepdim=True))
    init_metrics = evaluate_denoiser(model, val, sigma, seed=seed + 2)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warm = min(200, max(1, steps // 20)) if warmup is None else max(0, warmup)

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    g = torch.Generator().manual_seed(seed)
    scale = sigma / 255.0
    losses: list[float] = []
    t1 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, n_train, (batch_size,), generator=g)
        k, flip = (int(v) for v in torch.randint(0, 4, (2,), generator=g))
        x = clean[idx].permute(0, 3, 1, 2).float().div_(255.0)
        if flip % 2:
            x = x.flip(3)
        if k:
            x = torch.rot90(x, k, dims=(2, 3))
        x = x.contiguous()
        noise = torch.randn(x.shape, generator=g) * scale
        pred = model(x + noise)
        loss = torch.mean(((pred - noise) * 255.0) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"training diverged at step {step} (loss {lv}); lower lr")
        losses.append(lv)
        if progress is not None:
            progress(step + 1, steps, lv)
    t_train = time.perf_counter() - t1
    metrics = evaluate_denoiser(model, val, sigma, seed=seed + 2)
    seconds = time.perf_counter() - t0

    write_tensors(out, saved_state_dict(model), checkpoint_metadata(config))
    n_params = int(sum(p.numel() for p in model.parameters()))
    every = max(1, steps // 200)  # keep ≤ ~200 points of the loss curve: means over windows of `every` steps
    curve = [float(np.mean(losses[i : i + every])) for i in range(0, steps, every)]
    head = float(np.mean(losses[: max(1, min(50, steps // 10))]))
    tail = float(np.mean(losses[-max(1, min(50, steps // 10)) :]))
    result: dict[str, Any] = {
        **metrics,
        "init_val_mse": init_metrics["val_mse"],
        "train_loss_start": head,
        "train_loss_end": tail,
        "params": n_params,
        "seconds": seconds,
        "seconds_train": t_train,
        "seconds_data": t_data,
        "ms_per_step": 1000.0 * t_train / steps,
    }
    sidecar = {
        "format": FORMAT,
        "config": config,
        "command": command,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "crop": crop,
        "sigma": sigma,
        "lr": lr,
        "warmup": warm,
        "schedule": "linear warm-up, cosine decay to 1% (Adam)",
        "data": {
            "pool": "RealPool" + ("" if pool.include_packages and not pool.folders else f"(folders={[str(f) for f in pool.folders]}, include_packages={pool.include_packages})"),
            "train_split": {"photos": len(train_sources), "crops": n_train, "crop": crop, "seed": seed, "sources": train_sources},
            "holdout_split": {"photos": len(holdout_sources), "crops": val_crops, "crop": val_crop, "seed": seed + 1, "noise_seed": seed + 2, "sources": holdout_sources},
            "augmentation": "random flip + rot90 per batch",
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds": seconds,
        "loss_every": every,
        "losses": curve,
        "metrics": result,
    }
    sha = write_sidecar(out, sidecar)
    return {**result, "weights": str(out), "sidecar": str(sidecar_path(out)), "sha256": sha}
