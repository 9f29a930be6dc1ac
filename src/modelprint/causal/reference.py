"""The shipped reconstruction model: a small pixel DDPM that DIRE views rebuild images through, out of the box.

No diffusion model can be downloaded here, so modelprint ships its own, trained by the zoo's ``ddpm`` family on
crops of the real-image pool (not one of the zoo's benchmark generators: its own data seed and seed, see
:data:`RECIPE`) at 32², the size of ``ddpm-narrow`` (0.28 M parameters), so DIRE with a few DDIM steps is cheap on a
CPU. The file is one safetensors UNet state dict (``weights/dire_ddpm.safetensors``) whose sidecar holds the UNet and
scheduler configs, the recipe, the measured metrics and the sha256 (``weights/DIRE_DDPM_MODEL_CARD.md``).

:func:`load_reconstructor` gives a :class:`~modelprint.probes.candidates.DiffusersCandidate` for the shipped model
(``model=None``), a zoo model by name (with ``zoo``), a diffusers folder or a UNet checkpoint; any failure is one
:class:`~modelprint.errors.CheckpointError` line naming the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.artefacts import open_artefact, read_tensors, shipped_path, write_sidecar, write_tensors
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.probes.candidates import DiffusersCandidate
from modelprint.zoo.base import DataSpec, Recipe

#: The shipped reconstruction model's weights.
DEFAULT_RECONSTRUCTOR = shipped_path("dire_ddpm.safetensors")
#: The recipe of the shipped model: ``ddpm-narrow``'s network, on other crops of the photo pool, with other seeds.
RECIPE = Recipe("dire-reference", "ddpm",
                {"widths": [16, 32, 32], "layers_per_block": 1, "attention": True, "schedule": "linear",
                 "sample_steps": 50},
                DataSpec(subset="photos", n=8192, size=32, seed=1014), seed=1014, steps=2000, batch_size=16, lr=1e-3,
                note="DIRE reconstruction model shipped with modelprint; not a benchmark generator")


def _build(unet_config: dict[str, Any], scheduler_config: dict[str, Any], state: dict[str, Any], where: Path) -> Any:
    """A :class:`~modelprint.zoo.diffusion_model.DiffusionModel` from configs and a state dict."""
    from diffusers import DDPMScheduler, UNet2DModel

    from modelprint.zoo.diffusion_model import DiffusionModel

    try:
        unet = UNet2DModel.from_config(unet_config)
        unet.load_state_dict(state, strict=True)
        return DiffusionModel(unet.eval(), DDPMScheduler.from_config(scheduler_config))
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}: not a DIRE reconstruction model ({first})") from None


def load_reconstructor(model: str | Path | None = None, zoo: str | Path | None = None) -> DiffusersCandidate:
    """The diffusion model DIRE views reconstruct through: ``None`` the shipped one (sha256 checked), else a zoo
    model name (with ``zoo``), a diffusers folder or a UNet checkpoint file."""
    if model is not None:
        return DiffusersCandidate.load(str(model), zoo=None if zoo is None else str(zoo), name=str(model))
    art = open_artefact(DEFAULT_RECONSTRUCTOR, "DIRE reconstruction model", shipped=True)
    configs = (art.sidecar.get("unet_config"), art.sidecar.get("scheduler_config"))
    if not all(isinstance(c, dict) for c in configs):
        raise CheckpointError(f"{art.path}: its sidecar lacks the unet_config and scheduler_config")
    state, _ = read_tensors(art.path)
    diffusion = _build(configs[0], configs[1], {k: v.float() for k, v in state.items()}, art.path)
    return DiffusersCandidate(diffusion, name=f"dire-ddpm:{art.sha256[:12]}")


def reconstructor_digest(model: str | Path | None = None, zoo: str | Path | None = None) -> str:
    """A short identity of the reconstruction model for method versions: the shipped file's sha256, or a digest of
    the files of a folder / checkpoint / zoo model."""
    from modelprint.artefacts import file_digests, file_sha256

    if model is None:
        return open_artefact(DEFAULT_RECONSTRUCTOR, "DIRE reconstruction model", shipped=True).sha256[:12]
    path = Path(model)
    if path.is_dir():
        digests = file_digests(path)
    elif path.is_file():
        digests = {path.name: file_sha256(path)}
    elif zoo is not None:
        from modelprint.zoo.store import Zoo

        try:
            digests = Zoo(Path(zoo)).info(str(model))["files"]
        except (KeyError, TypeError):
            raise CheckpointError(f"{zoo}: zoo model {model!r} has no file digests in its manifest") from None
    else:
        raise CheckpointError(f"{model}: no such diffusers folder or checkpoint (pass zoo= to look the name up "
                              "in a zoo)")
    import hashlib

    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:12]


def train_reconstructor(out: str | Path, *, seed: int = RECIPE.seed, steps: int = RECIPE.steps,
                        command: str = "") -> dict[str, Any]:
    """Train :data:`RECIPE` (with ``seed`` and ``steps``) on one torch thread and write ``out`` (safetensors) and its
    sidecar atomically; returns the sidecar's fields (metrics included)."""
    import dataclasses

    import torch

    from modelprint.zoo.data import training_images
    from modelprint.zoo.store import family

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ModelprintError(f"{out}: the reconstruction model is written as .safetensors")
    recipe = dataclasses.replace(RECIPE, seed=int(seed), steps=int(steps),
                                 data=dataclasses.replace(RECIPE.data, seed=int(seed)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images = training_images(recipe.data)
        cpu0 = time.process_time()
        torch.manual_seed(recipe.seed)
        model = family(recipe.family)(recipe).fit(images)
        cpu = time.process_time() - cpu0
        diffusion = model.diffusion
        metrics = measure_reconstructor(DiffusersCandidate(diffusion, name="trained"), seed=recipe.seed)
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().contiguous() for k, v in diffusion.unet.state_dict().items()}
    write_tensors(out, state, {"format": "modelprint-dire-ddpm-1"})
    fields = {"format": "modelprint-dire-ddpm-1", "recipe": recipe.describe(), "command": command,
              "unet_config": json.loads(json.dumps(dict(diffusion.unet.config))),
              "scheduler_config": json.loads(json.dumps(dict(diffusion.scheduler.config))),
              "parameters": int(model.num_parameters()), "training_images": int(len(images)),
              "final_loss": round(float(model.final_loss), 5), "train_cpu_seconds": round(cpu, 1), **metrics}
    sha = write_sidecar(out, fields)
    return {**fields, "sha256": sha}


def measure_reconstructor(candidate: DiffusersCandidate, seed: int = 0, n: int = 64) -> dict[str, Any]:
    """Held-out figures of a 32² reconstruction model: DIRE (5 steps) distance on held-out photo crops vs on
    uniform-noise images, and the seconds per 32² tile."""
    from modelprint.causal.reconstruction import DireReconstruction
    from modelprint.io.pool import RealPool

    photos = RealPool().crops(n, size=32, seed=seed + 1, split="holdout")
    noise = np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    dire = DireReconstruction(steps=5)
    real = dire.residuals(candidate, photos)
    rand = dire.residuals(candidate, noise)
    return {"dire5_distance_holdout_photos": round(float(real.distances().mean()), 5),
            "dire5_distance_noise_images": round(float(rand.distances().mean()), 5),
            "dire5_seconds_per_tile": round(real.seconds_per_image, 4)}
