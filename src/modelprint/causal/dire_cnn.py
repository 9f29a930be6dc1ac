"""``dire-cnn``: a small CNN over the log-spectrum of an image's DIRE residual, trained here to tell generators apart.

The residual tiles' centred log-power spectra (Hann window, as the extractor's) are averaged into one
``(3, t, t)`` spectrum per image, and a narrow :class:`~modelprint.extractor.network.FingerprintNet` embeds it. It
is trained by the extractor's own code (:func:`~modelprint.extractor.train.train_extractor`: cosine-softmax
cross-entropy + batch-hard triplet on P models × K images, checkpoint chosen on held-out architectures) on images
of synthetic generators (:mod:`modelprint.synthesis`: real crops passed through them), never on a benchmark
generator, so it is zero-shot like ``learned``. Shipped weights: ``weights/dire_cnn.safetensors`` with
``DIRE_CNN_MODEL_CARD.md``; :func:`train_dire_cnn` is its recipe (``modelprint views train-cnn``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelprint.artefacts import open_artefact, shipped_path, write_sidecar
from modelprint.causal.reconstruction import DireReconstruction
from modelprint.causal.views import DireView, _model, image_tiles, reconstruction_residuals
from modelprint.errors import ModelprintError
from modelprint.methods.base import METHODS

#: The shipped DIRE CNN.
DEFAULT_CNN = shipped_path("dire_cnn.safetensors")


def residual_spectrum(residual_tiles: np.ndarray) -> np.ndarray:
    """Mean centred log-power spectrum ``(3, t, t)`` float32 of residual tiles ``(k, t, t, 3)``."""
    x = torch.from_numpy(np.ascontiguousarray(residual_tiles.transpose(0, 3, 1, 2), dtype=np.float32))
    return mean_log_spectrum(x).numpy()


def mean_log_spectrum(tiles: torch.Tensor) -> torch.Tensor:
    """Mean centred log-power spectrum ``(3, t, t)`` of torch residual tiles ``(k, 3, t, t)`` (differentiable)."""
    from modelprint.spectra import window_log_spectra

    return window_log_spectra(tiles, tiles.shape[-1]).mean(0)


@METHODS.register("dire-cnn")
class DireCnnView(DireView):
    """A small CNN on the DIRE residual's log-spectrum (see the module); ``weights`` ``None`` = the shipped ones."""

    def __init__(self, model: str | None = None, zoo: str | None = None, steps: int = 5, max_tiles: int = 16,
                 weights: str | None = None, batch_size: int = 64) -> None:
        from modelprint.extractor.checkpoint import load_extractor

        self.model, self.zoo, self.steps, self.max_tiles = model, zoo, steps, max_tiles
        self.weights, self.batch_size = weights, batch_size
        self._setup(model, zoo, steps, max_tiles, batch_size)
        path = DEFAULT_CNN if weights is None else Path(weights)
        open_artefact(path, "DIRE CNN weights", shipped=weights is None)
        self._net, self._mean, self._std, meta = load_extractor(path)
        if int(self._net.config["tile"]) != self.tile:
            raise ModelprintError(f"{path}: the CNN takes {self._net.config['tile']}² spectra but model tiles are "
                                  f"{self.tile}²")
        self._sha = str(meta["sha256"])[:12]

    @property
    def version(self) -> str:
        return f"{self._base_version()}-cnn:{self._sha}"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        from modelprint.extractor.train import embed_spectra

        if not len(images):
            return np.zeros((0, int(self._net.config["embed_dim"])), np.float32)
        spectra = np.stack([residual_spectrum(r) for r in self.residuals(images)])
        return embed_spectra(self._net, spectra, self._mean, self._std).astype(np.float32)

    def embed_torch(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`embed` as a torch function of pixels ``(n, 3, H, W)`` in [0, 1], differentiable through the
        residual's spectrum and the network with each reconstruction held constant (BPDA, as the other DIRE views)."""
        self._net.eval()
        spectra = [mean_log_spectrum(self._torch_residuals(self.dire, t).permute(0, 3, 1, 2))
                   for t in self._torch_tiles(x)]
        mean, std = (torch.from_numpy(np.asarray(v, np.float32)) for v in (self._mean, self._std))
        e = self._net((torch.stack(spectra) - mean) / std)
        return torch.nn.functional.normalize(e, dim=1)


def sample_architectures(n: int, seed: int) -> list[Any]:
    """``n`` architectures of the paper's space, drawn by ``seed`` (sorted by id; a smaller ``n`` draws a subset)."""
    from modelprint.synthesis.pool import resolve_archs

    archs = sorted(resolve_archs("paper"), key=lambda a: a.id)
    if not 2 <= n <= len(archs):
        raise ModelprintError(f"archs must be in [2, {len(archs)}], got {n}")
    return [archs[i] for i in sorted(np.random.default_rng(seed).permutation(len(archs))[:n])]


def train_dire_cnn(out: str | Path, pool: str | Path, *, archs: int = 8, seeds: int = 2, max_steps: int = 10,
                   val_archs: int = 2, per_model: int = 24, size: int = 64, steps: int = 600, model: str | None = None,
                   zoo: str | None = None, dire_steps: int = 5, max_tiles: int = 4, seed: int = 0,
                   command: str = "") -> dict[str, Any]:
    """Train the DIRE CNN and write ``out`` (safetensors) with its sidecar; returns the sidecar's fields.

    ``archs`` architectures of the paper's space (drawn by ``seed``) × ``seeds`` synthetic generators are trained
    into ``pool`` (resumable, :func:`~modelprint.synthesis.pool.synthesize_pool`, ``max_steps`` each); each
    renders ``per_model`` real ``size``² training crops; their DIRE residuals (``dire_steps`` steps through
    ``model``, ``max_tiles`` tiles) become spectra; the last ``val_archs`` architectures are held out to choose the
    checkpoint.
    """
    from modelprint.extractor.data import SpectraSet
    from modelprint.extractor.train import TrainConfig, train_extractor
    from modelprint.io.pool import RealPool
    from modelprint.synthesis.pool import load_synthetic, model_id, synthesize_pool
    from modelprint.synthesis.train import apply_generator

    out, pool = Path(out), Path(pool)
    if out.suffix != ".safetensors":
        raise ModelprintError(f"{out}: the DIRE CNN is written as .safetensors")
    if not 1 <= val_archs < archs:
        raise ModelprintError(f"val_archs must be in [1, archs), got {val_archs} of {archs}")
    cpu0 = time.process_time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        arch_list = sample_architectures(archs, seed)
        synthesize_pool(pool, arch_list, seeds=seeds, max_steps=max_steps)
        ids = [model_id(a, s) for a in arch_list for s in range(seeds)]
        bank = RealPool().crops(len(ids) * per_model, size=size, seed=seed, split="train")
        candidate, digest = _model(model, zoo)
        dire = DireReconstruction(steps=dire_steps, batch_size=64)
        tile = candidate.sample_size[0] * candidate.factor if candidate.sample_size else 32
        spectra = []
        for m, mid in enumerate(ids):
            fake = apply_generator(load_synthetic(pool, mid), bank[m * per_model:(m + 1) * per_model])
            tiles = [image_tiles(im.astype(np.float32) / 255, tile, max_tiles, candidate.name) for im in fake]
            spectra += [residual_spectrum(r) for r in reconstruction_residuals(candidate, digest, dire, tiles)]
        data = SpectraSet(np.stack(spectra).astype(np.float16), np.repeat(np.arange(len(ids)), per_model), ids)
        n_train = (archs - val_archs) * seeds
        train, val = data.subset_models(range(n_train)), data.subset_models(range(n_train, len(ids)))
        config = TrainConfig(widths=(16, 32, 64), embed_dim=64, head_channels=8, region=tile, P=min(12, n_train),
                             K=4, steps=steps, warmup=50, eval_every=50, checkpoint_every=steps, seed=seed)
        work = out.with_name(f".{out.stem}.work")
        shutil.rmtree(work, ignore_errors=True)
        history = train_extractor(train, work, config, val=val, resume=False)
    finally:
        torch.set_num_threads(threads)
    shutil.copyfile(work / "extractor.safetensors", out)
    fields = {**open_artefact(work / "extractor.safetensors", "DIRE CNN weights").sidecar}
    fields.pop("file", None), fields.pop("bytes", None), fields.pop("sha256", None)
    shutil.rmtree(work, ignore_errors=True)
    fields.update({"format": "modelprint-dire-cnn-1", "command": command, "reconstructor": digest,
                   "data": {"architectures": [a.id for a in arch_list], "seeds": seeds, "max_steps": max_steps,
                            "train_models": n_train, "val_models": len(ids) - n_train, "per_model": per_model,
                            "size": size, "dire_steps": dire_steps, "max_tiles": max_tiles, "seed": seed},
                   "val_accuracy_curve": history["val"], "cpu_seconds": round(time.process_time() - cpu0, 1)})
    sha = write_sidecar(out, fields)
    return {**fields, "sha256": sha}
