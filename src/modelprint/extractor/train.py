"""Training the fingerprint extractor: P models × K images per batch, cross-entropy + batch-hard triplet,
AdamW with warm-up and cosine decay, checkpoint/resume, model selection on *held-out synthetic models*.

Unlike the reference code, gradients are zeroed every step, clipping happens after ``backward``, and every batch
holds K images of each of its P models, so every anchor has positives.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from modelprint.artefacts import one_line
from modelprint.atomic import atomic_path, write_text
from modelprint.errors import CheckpointError
from modelprint.extractor.checkpoint import load_extractor, save_extractor
from modelprint.extractor.data import SpectraSet
from modelprint.extractor.losses import fingerprint_loss
from modelprint.extractor.network import FingerprintNet
from modelprint.scores import l2_normalize


@dataclass
class TrainConfig:
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks_per_stage: int = 1
    embed_dim: int = 256
    head_channels: int = 32
    stem_stride: int = 2
    region: int = 128
    cosine_classifier: bool = True
    scale: float = 16.0
    P: int = 32
    K: int = 4
    steps: int = 3000
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    margin: float = 0.3
    triplet_weight: float = 1.0
    triplet_normalize: bool = True
    grad_clip: float = 5.0
    eval_every: int = 250
    checkpoint_every: int = 250
    seed: int = 0
    extra: dict = field(default_factory=dict)


def normalisation(spectra: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-frequency mean and standard deviation of log-spectra (computed in float64 by chunks)."""
    s = np.zeros(spectra.shape[1:], np.float64)
    ss = np.zeros_like(s)
    for i in range(0, len(spectra), chunk):
        x = spectra[i : i + chunk].astype(np.float64)
        s += x.sum(0)
        ss += (x**2).sum(0)
    n = len(spectra)
    mean = s / n
    return mean.astype(np.float32), np.sqrt(np.maximum(ss / n - mean**2, 1e-6)).astype(np.float32)


class PKSampler:
    """Batches of P distinct models × K distinct images each, deterministic by seed."""

    def __init__(self, labels: np.ndarray, P: int, K: int, seed: int) -> None:
        self.by_model = [np.flatnonzero(labels == m) for m in range(int(labels.max()) + 1)]
        self.models = np.array([m for m, idx in enumerate(self.by_model) if len(idx) >= K])
        if len(self.models) < P:
            raise ValueError(f"P={P} models with at least K={K} images each are needed; have {len(self.models)}")
        self.P, self.K = P, K
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> np.ndarray:
        models = self.rng.choice(self.models, self.P, replace=False)
        return np.concatenate([self.rng.choice(self.by_model[m], self.K, replace=False) for m in models])


def embed_spectra(net: FingerprintNet, spectra: np.ndarray, mean: np.ndarray, std: np.ndarray, batch: int = 256) -> np.ndarray:
    """L2-normalised embeddings of raw log-spectra (standardised here)."""
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(spectra), batch):
            x = torch.from_numpy((spectra[i : i + batch].astype(np.float32) - mean) / std)
            e = net(x.contiguous(memory_format=torch.channels_last))
            out.append(torch.nn.functional.normalize(e, dim=1).numpy())
    return np.concatenate(out)


def zero_shot_accuracy(emb: np.ndarray, labels: np.ndarray, support: int = 5, seed: int = 0) -> float:
    """1:N accuracy with ``support`` images per model as prototype, the rest as queries."""
    rng = np.random.default_rng(seed)
    protos, q_idx, q_lab = [], [], []
    for m in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == m))
        protos.append(emb[idx[:support]].mean(0))
        q_idx += list(idx[support:])
        q_lab += [len(protos) - 1] * (len(idx) - support)
    P = l2_normalize(np.stack(protos))
    pred = np.argmax(emb[q_idx] @ P.T, axis=1)
    return float((pred == np.array(q_lab)).mean())


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_extractor(
    train: SpectraSet,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    val: SpectraSet | None = None,
    resume: bool = True,
    init: str | Path | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train on ``train``; select the checkpoint by zero-shot accuracy on ``val`` (held-out synthetic models).

    ``init`` fine-tunes an existing extractor (``.safetensors``): its network shape (``config.widths`` … are then
    ignored), weights and spectrum normalisation are kept, and a new classifier is learned for ``train``'s models;
    with ``val``, the starting point is scored too (step 0), so a fine-tuned checkpoint is kept only if it beats it.
    Writes ``out_dir/checkpoint.pt`` (resumable) and ``out_dir/extractor.safetensors`` + ``.json`` (the best
    model by validation accuracy, or the last one without ``val``). Returns the training history.
    """
    from modelprint.seeding import configure_torch_threads

    cfg = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configure_torch_threads()
    torch.manual_seed(cfg.seed)
    if init is None:
        mean, std = normalisation(train.spectra)
        net = FingerprintNet(cfg.widths, cfg.blocks_per_stage, cfg.embed_dim, cfg.head_channels, train.spectra.shape[-1],
                             len(train.model_ids), cfg.stem_stride, cfg.region, cfg.cosine_classifier, cfg.scale)
    else:
        base, mean, std, _ = load_extractor(init)
        c = base.config
        net = FingerprintNet(tuple(c["widths"]), c["blocks_per_stage"], c["embed_dim"], c["head_channels"], c["tile"],
                             len(train.model_ids), c["stem_stride"], c["region"], cfg.cosine_classifier, cfg.scale)
        net.load_state_dict(base.state_dict(), strict=False)
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    sampler = PKSampler(train.labels, cfg.P, cfg.K, cfg.seed)
    history: dict = {"config": {**asdict(cfg), "widths": list(cfg.widths)}, "steps": [], "val": [], "best": None}
    start_step, ckpt = 0, out / "checkpoint.pt"
    if resume and ckpt.exists():
        try:  # written by this function (atomically), so its own pickled training state is trusted
            state = torch.load(ckpt, weights_only=False)
        except Exception as exc:  # noqa: BLE001  (pickle and zip errors have no common base)
            raise CheckpointError(f"{ckpt}: cannot resume from this training checkpoint ({one_line(exc)}); "
                                  "delete it to start over") from None
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        sampler.rng.bit_generator.state = state["sampler"]
        torch.set_rng_state(state["torch_rng"])
        history, start_step = state["history"], state["step"]
    started = time.perf_counter() - history.get("seconds", 0.0)
    if init is not None and val is not None and start_step == 0:  # fine-tuning must beat where it started
        acc = zero_shot_accuracy(embed_spectra(net, val.spectra, mean, std), val.labels, seed=cfg.seed)
        history["val"].append({"step": 0, "val_accuracy": acc})
        history["best"] = {"step": 0, "val_accuracy": acc}
        save_extractor(net, mean, std, out / "extractor.safetensors",
                       {"selected_by": "zero-shot accuracy on held-out synthetic models", **history["best"]})
    best = history["best"]["val_accuracy"] if history["best"] else -1.0
    for step in range(start_step, cfg.steps):
        net.train()
        idx = sampler()
        x = torch.from_numpy((train.spectra[idx].astype(np.float32) - mean) / std).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(train.labels[idx].astype(np.int64))
        emb = net(x)
        loss, parts = fingerprint_loss(emb, net.logits(emb), y, cfg.margin, cfg.triplet_weight, cfg.triplet_normalize)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        record = {"step": step + 1, "loss": float(loss.detach()), **parts, "lr": sched.get_last_lr()[0]}
        history["steps"].append(record)
        done = step + 1
        if val is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
            acc = zero_shot_accuracy(embed_spectra(net, val.spectra, mean, std), val.labels, seed=cfg.seed)
            history["val"].append({"step": done, "val_accuracy": acc})
            record["val_accuracy"] = acc
            if acc > best:
                best = acc
                history["best"] = {"step": done, "val_accuracy": acc}
                save_extractor(net, mean, std, out / "extractor.safetensors",
                              {"selected_by": "zero-shot accuracy on held-out synthetic models", **history["best"]})
        history["seconds"] = time.perf_counter() - started
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            with atomic_path(ckpt) as tmp:
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "sampler": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                            "history": history, "step": done}, tmp)
        if progress:
            progress(done, record)
    if val is None:
        save_extractor(net, mean, std, out / "extractor.safetensors", {"selected_by": "last step", "step": cfg.steps})
    write_text(out / "history.json", json.dumps(history, indent=1) + "\n")
    return history
