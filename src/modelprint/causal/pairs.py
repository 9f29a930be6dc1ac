"""Paired images modelprint makes itself: the same content redrawn by different zoo models.

A :class:`PairSet` is a full grid: every model redraws every content image, so fixing the content and varying the
model, or fixing the model and varying the content, are both a row or column of it. Each image is labelled
``(model, content id)``. Contents are a seeded set of the real pool's *held-out* photo crops (the zoo trains on
the ``train`` photos) and held-out LFW faces. How a model redraws an image depends on its kind (:func:`redraw`):

- diffusion models (pixel, latent, fine-tuned, LoRA): SDEdit (``edit``) at ``strength`` with a seeded noise, the
  same noise for every model, in the model's own number of sampling steps;
- autoencoders (``AutoencoderKL``): decode of the latent mean;
- VAEs: decoder mean of the encoder's mean;
- GANs: projection: the latent that minimises the squared error to the image (Adam, ``gan_steps`` steps from a
  seeded start), decoded.

Flows are refused: a Glow inverts exactly, so it would return the content unchanged. With ``include_real`` the
content images themselves are the model ``real``. The set is deterministic given its settings and seed (on a fixed
thread count: the GAN projection's gradients depend on it) and cached to an ``.npz`` with a sidecar; a cache made
with other settings or other model files is rebuilt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.artefacts import meta_array, read_arrays, read_meta, write_arrays
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.zoo.base import ZooModel, to_uint8, to_unit
from modelprint.zoo.data import faces, images_digest
from modelprint.zoo.store import Zoo

__all__ = ["PAIRS_FORMAT", "REAL", "PairSet", "build_pairs", "content_images", "redraw"]

PAIRS_FORMAT = "modelprint-pairs/1"
#: The model label of the content images themselves.
REAL = "real"


@dataclass
class PairSet:
    """Images ``(n, s, s, 3)`` uint8 labelled by model and content id, with the content's source and the settings."""

    images: np.ndarray
    models: np.ndarray
    contents: np.ndarray
    content_sources: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def float_images(self) -> list[np.ndarray]:
        """The images as float32 RGB in ``[0, 1]``, the input of a fingerprint method's ``embed``."""
        return [im.astype(np.float32) / 255.0 for im in self.images]

    def cells(self) -> set[tuple[str, int]]:
        """The ``(model, content id)`` cells present."""
        return {(str(m), int(c)) for m, c in zip(self.models, self.contents)}

    def save(self, path: str | Path) -> str:
        """Write the set as an ``.npz`` with a sidecar, atomically; returns its sha256."""
        meta = {**self.meta, "format": PAIRS_FORMAT, "content_sources": list(self.content_sources)}
        arrays = {"images": self.images, "models": np.asarray(self.models, dtype=str),
                  "contents": np.asarray(self.contents, dtype=np.int64), "meta": meta_array(meta)}
        return write_arrays(path, arrays, {"format": PAIRS_FORMAT, "settings": meta.get("settings", {})})

    @classmethod
    def load(cls, path: str | Path) -> PairSet:
        """Read a set written by :meth:`save`; :class:`CheckpointError` naming the file if it is not one."""
        arrays = read_arrays(path, "pair set")
        meta = read_meta(arrays, path, "pair set", PAIRS_FORMAT)
        try:
            images, models, contents = arrays["images"], arrays["models"].astype(str), arrays["contents"]
        except KeyError as exc:
            raise CheckpointError(f"{path}: pair set without {exc.args[0]!r}") from None
        if images.dtype != np.uint8 or images.ndim != 4 or not len(images) == len(models) == len(contents):
            raise CheckpointError(f"{path}: pair set arrays do not agree (images {images.shape} {images.dtype}, "
                                  f"{len(models)} model labels, {len(contents)} content ids)")
        return cls(images, models, contents.astype(np.int64), list(meta.pop("content_sources", [])), meta)


def content_images(n_photos: int, n_faces: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n_photos`` held-out photo crops then ``n_faces`` held-out LFW faces, uint8 ``(n, size, size, 3)``, and
    each one's source (``photo`` / ``face``); deterministic given ``seed``."""
    from modelprint.io.pool import RealPool

    if n_photos < 0 or n_faces < 0 or n_photos + n_faces < 2:
        raise ModelprintError(f"pairs need at least 2 contents, got {n_photos} photos and {n_faces} faces")
    parts = []
    if n_photos:
        parts.append(RealPool().crops(n_photos, size=size, seed=seed, split="holdout"))
    if n_faces:
        held = faces(size, "holdout")
        if n_faces > len(held):
            raise ModelprintError(f"pairs: at most {len(held)} held-out faces, asked for {n_faces}")
        parts.append(held[np.sort(np.random.default_rng(seed).choice(len(held), n_faces, replace=False))])
    return np.concatenate(parts), ["photo"] * n_photos + ["face"] * n_faces


def _project_gan(model: ZooModel, images: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """The GAN's closest images to ``images``: its latent fitted by Adam on the squared error, then decoded."""
    import torch

    g = model.generator.eval()  # type: ignore[attr-defined]
    target = to_unit(images)
    z = torch.randn(len(images), model.params["z_dim"],  # type: ignore[attr-defined]
                    generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    frozen = [p.requires_grad for p in g.parameters()]
    g.requires_grad_(False)
    try:
        for _ in range(steps):
            loss = (g(z) - target).pow(2).flatten(1).sum(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return to_uint8(g(z))
    finally:
        for p, flag in zip(g.parameters(), frozen):
            p.requires_grad_(flag)


def redraw(model: ZooModel, images: np.ndarray, *, strength: float = 0.5, seed: int = 0,
           gan_steps: int = 200) -> np.ndarray:
    """``model``'s rendering of uint8 ``images`` ``(n, s, s, 3)`` (see the module's list), uint8, same shape."""
    import torch

    name = model.recipe.name
    size = model.recipe.data.size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        raise ModelprintError(f"zoo model {name!r}: redraws uint8 images of {size}x{size}x3, got "
                              f"{images.shape} {images.dtype}")
    if hasattr(model, "diffusion"):
        return model.diffusion.edit(images, strength=strength, seed=seed, steps=model.sample_steps)
    if model.kind == "autoencoder":
        return model.reconstruct(images)  # type: ignore[attr-defined]
    if model.kind == "vae":
        with torch.no_grad():
            mu, _ = model.encoder(to_unit(images)).chunk(2, dim=1)  # type: ignore[attr-defined]
            return to_uint8(model.decoder(mu))  # type: ignore[attr-defined]
    if model.kind == "gan":
        return _project_gan(model, images, gan_steps, seed)
    raise ModelprintError(f"zoo model {name!r} ({model.kind}) cannot redraw given content (a flow inverts exactly); "
                          "leave it out of the pairs")


def build_pairs(
    zoo: str | Path,
    models: list[str],
    *,
    n_photos: int = 16,
    n_faces: int = 8,
    strength: float = 0.5,
    gan_steps: int = 200,
    include_real: bool = True,
    seed: int = 0,
    cache: str | Path | None = None,
) -> PairSet:
    """Every model of ``zoo`` in ``models`` redraws every content image (and, with ``include_real``, the contents
    are the model ``real``). Reads ``cache`` if it holds this very set, else builds it and writes it there."""
    if not models or len(set(models)) != len(models) or REAL in models:
        raise ModelprintError(f"pairs need distinct zoo model names (not {REAL!r}), got {models}")
    store = Zoo(Path(zoo))
    digests = {name: store.info(name)["files"] for name in models}
    settings = {"models": list(models), "n_photos": n_photos, "n_faces": n_faces, "strength": strength,
                "gan_steps": gan_steps, "include_real": include_real, "seed": seed}
    if cache is not None and Path(cache).is_file():
        try:
            cached = PairSet.load(cache)
        except CheckpointError:
            cached = None  # a damaged cache is rebuilt
        if cached is not None and cached.meta.get("settings") == settings and cached.meta.get("model_files") == digests:
            return cached
    start = time.perf_counter()
    loaded = {name: store.load(name) for name in models}
    sizes = {m.recipe.data.size for m in loaded.values()}
    if len(sizes) != 1:
        raise ModelprintError(f"pairs need models of one image size, got {sorted(sizes)}")
    content, sources = content_images(n_photos, n_faces, size=sizes.pop(), seed=seed)
    ids = np.arange(len(content), dtype=np.int64)
    images, labels, contents = [], [], []
    seconds: dict[str, float] = {}
    for name in ([REAL] if include_real else []) + list(models):
        t0 = time.perf_counter()
        drawn = content if name == REAL else redraw(loaded[name], content, strength=strength, seed=seed,
                                                    gan_steps=gan_steps)
        seconds[name] = round(time.perf_counter() - t0, 3)
        images.append(drawn)
        labels += [name] * len(drawn)
        contents.append(ids)
    meta = {"settings": settings, "model_files": digests, "content_sha256": images_digest(content),
            "seconds_per_model": seconds, "seconds": round(time.perf_counter() - start, 3)}
    pairs = PairSet(np.concatenate(images), np.asarray(labels, dtype=str), np.concatenate(contents), sources, meta)
    if cache is not None:
        pairs.save(cache)
    return pairs
