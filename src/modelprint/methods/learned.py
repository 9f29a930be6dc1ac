"""``learned``: the zero-shot fingerprint extractor trained on synthetic models (Model Synthesis).

image → DnCNN residual → log-spectra of a grid of windows (sliding window, any size ≥ 32 px) → standardised →
:class:`~modelprint.extractor.network.FingerprintNet` → window embeddings averaged and L2-normalised.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelprint.atomic import sha256_file
from modelprint.errors import CheckpointError
from modelprint.methods.base import METHODS, FingerprintMethod

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "extractor.safetensors"


def load_extractor(path: str | Path | None = None):  # noqa: ANN201
    """Load a FingerprintNet and its normalisation, verifying the sidecar's sha256; returns (net, mean, std, meta)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from modelprint.extractor.network import FingerprintNet

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: extractor weights not found")
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    sha = sha256_file(path)
    if meta.get("sha256") and meta["sha256"] != sha:
        raise CheckpointError(f"{path}: sha256 {sha[:12]}… does not match {sidecar.name} ({meta['sha256'][:12]}…); file corrupt or replaced")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    config = meta.get("config")
    if config is None:
        raise CheckpointError(f"{path}: no config sidecar {sidecar.name}; cannot build the network")
    try:
        mean, std = tensors.pop("norm.mean").numpy(), tensors.pop("norm.std").numpy()
        net = FingerprintNet(tuple(config["widths"]), config["blocks_per_stage"], config["embed_dim"],
                             config["head_channels"], config["tile"], 0)
        net.load_state_dict(tensors, strict=True)
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path}: checkpoint does not match the extractor network ({first})") from None
    return net.eval().to(memory_format=torch.channels_last), mean, std, {**meta, "sha256": sha}


@METHODS.register("learned")
class LearnedMethod(FingerprintMethod):
    """Zero-shot fingerprint embeddings from modelprint's extractor.

    Parameters
    ----------
    weights:
        ``None`` for the shipped extractor, or a ``.safetensors`` file written by ``modelprint train``.
    windows_per_side:
        The sliding-window grid (3 gives 9 windows, as in the paper); 1 disables sliding windows.
    """

    def __init__(self, weights: str | Path | None = None, windows_per_side: int = 3, residual: str = "dncnn") -> None:
        self.weights = weights
        self.windows_per_side = windows_per_side
        self.residual = residual
        self._net, self._mean, self._std, self.meta = load_extractor(weights)
        from modelprint.residuals import get_residual
        from modelprint.seeding import configure_torch_threads

        configure_torch_threads()
        self._residual = get_residual(residual)

    @property
    def version(self) -> str:
        return f"1-{self.meta['sha256'][:12]}-w{self.windows_per_side}-{self.residual}:{self._residual.version}"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from modelprint.extractor.features import window_spectra

        dim = self._net.config["embed_dim"]
        if len(images) == 0:
            return np.zeros((0, dim), dtype=np.float32)
        tile = self._net.config["tile"]
        spectra, owner = [], []
        for i, r in enumerate(self._residual.batch(list(images))):
            s = window_spectra(r, tile, self.windows_per_side)
            spectra.append(s)
            owner += [i] * len(s)
        x = torch.from_numpy((np.concatenate(spectra) - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            e = torch.nn.functional.normalize(self._net(x), dim=1).numpy()
        out = np.zeros((len(images), dim), dtype=np.float32)
        np.add.at(out, np.array(owner), e)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
