"""The extractor's weights file: a :class:`~modelprint.extractor.network.FingerprintNet` without its training
classifier, plus the spectrum normalisation (``norm.mean``, ``norm.std``), as safetensors with a sidecar holding
the network's ``config`` (see :mod:`modelprint.artefacts`). The shipped one is ``weights/extractor.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.artefacts import (
    one_line,
    open_artefact,
    read_tensors,
    shipped_path,
    sidecar_path,
    write_sidecar,
    write_tensors,
)
from modelprint.errors import CheckpointError

#: The shipped extractor.
DEFAULT_WEIGHTS = shipped_path("extractor.safetensors")


def save_extractor(net: Any, mean: np.ndarray, std: np.ndarray, path: Path, meta: dict[str, Any]) -> str:
    """Write ``net`` (a FingerprintNet) and the normalisation to ``path`` and its sidecar (``config`` and
    ``meta``), atomically; returns the file's sha256."""
    import torch

    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    tensors["norm.mean"] = torch.from_numpy(mean)
    tensors["norm.std"] = torch.from_numpy(std)
    config = {k: v for k, v in net.config.items() if k != "n_classes"}
    write_tensors(path, tensors, {"config": json.dumps(config)})
    return write_sidecar(path, {"config": config, **meta})


def load_extractor(path: str | Path | None = None) -> tuple[Any, np.ndarray, np.ndarray, dict[str, Any]]:
    """The FingerprintNet (eval mode, channels-last) and its normalisation from ``path`` (``None``: the shipped
    extractor), checked against its sidecar's sha256; returns ``(net, mean, std, sidecar with sha256)``.

    Raises :class:`~modelprint.errors.CheckpointError` naming the file for every failure.
    """
    import torch

    from modelprint.extractor.network import FingerprintNet

    art = open_artefact(DEFAULT_WEIGHTS if path is None else path, "extractor weights", shipped=path is None)
    tensors, _ = read_tensors(art.path)
    config = art.sidecar.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{art.path}: its sidecar {sidecar_path(art.path).name} has no network config; "
                              "cannot build the network")
    try:
        mean, std = tensors.pop("norm.mean").numpy(), tensors.pop("norm.std").numpy()
        net = FingerprintNet(tuple(config["widths"]), config["blocks_per_stage"], config["embed_dim"],
                             config["head_channels"], config["tile"], 0, config["stem_stride"], config["region"])
        net.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{art.path}: checkpoint does not match the extractor network "
                              f"({one_line(exc)})") from None
    return net.eval().to(memory_format=torch.channels_last), mean, std, {**art.sidecar, "sha256": art.sha256}
