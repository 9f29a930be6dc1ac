"""The contract every zoo family implements, and the registry of families.

A *family* (GAN, VAE, flow, pixel DDPM, latent diffusion, fine-tuned child, LoRA child) is one class registered in
:data:`FAMILIES`. A :class:`Recipe` names a family and holds everything that determines the trained weights: the
family's hyper-parameters, the training data, the seed, the number of steps and (for lineage and shared
autoencoders) the recipe it builds on. Following scikit-learn, hyper-parameters go to ``__init__`` and learning
happens in :meth:`ZooModel.fit`; following diffusers, the networks, the noise schedulers and the sampling loop stay
separate (diffusion families save standard diffusers folders).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelprint.registry import Registry

#: Called as ``progress(step, total_steps, loss)`` while a model trains.
TrainProgress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class DataSpec:
    """Which real images a zoo model trains on (see :func:`modelprint.zoo.data.training_images`).

    ``subset`` is ``photos`` (crops of the real pool's training photos), ``photos-a`` / ``photos-b`` (crops of two
    disjoint halves of those photos) or ``faces`` (the ``members`` half of scikit-image's 200 LFW faces).
    """

    subset: str = "photos"
    n: int = 4096
    size: int = 32
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"subset": self.subset, "n": self.n, "size": self.size, "seed": self.seed}


@dataclass(frozen=True)
class Recipe:
    """Everything that determines one zoo model."""

    name: str
    family: str
    params: dict[str, Any] = field(default_factory=dict)
    data: DataSpec = DataSpec()
    seed: int = 0
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    parent: str | None = None
    note: str = ""
    #: Images of the training data's distribution the model never sees (membership tests' matched non-members).
    holdout: DataSpec | None = None

    def describe(self) -> dict[str, Any]:
        extra = {"holdout": self.holdout.describe()} if self.holdout is not None else {}
        return {
            "name": self.name,
            "family": self.family,
            "params": dict(self.params),
            "data": self.data.describe(),
            "seed": self.seed,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "parent": self.parent,
            "note": self.note,
            **extra,
        }


class ZooModel(ABC):
    """A small generative model that modelprint trains itself.

    Subclasses set ``kind`` (``gan``, ``vae``, ``flow``, ``diffusion``) and implement :meth:`fit`,
    :meth:`sample`, :meth:`save` and :meth:`load`. A freshly constructed model is untrained but can already
    :meth:`sample` (the tests compare trained with untrained output).
    """

    name: ClassVar[str] = "base"
    kind: ClassVar[str] = "base"

    def __init__(self, recipe: Recipe, parent: ZooModel | None = None) -> None:
        self.recipe = recipe
        self.parent = parent
        self.final_loss: float = float("nan")

    @abstractmethod
    def fit(self, images: np.ndarray, progress: TrainProgress | None = None) -> ZooModel:
        """Train on ``images`` (uint8, ``(n, H, W, 3)``) for ``recipe.steps`` steps; set ``final_loss``."""

    @abstractmethod
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` generated images, uint8 ``(n, H, W, 3)``, deterministic given ``seed``."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the weights (safetensors or a diffusers folder) into the empty folder ``folder``."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, recipe: Recipe, parent: ZooModel | None = None) -> ZooModel:
        """Rebuild a model saved by :meth:`save`; raise :class:`~modelprint.errors.CheckpointError` if it does not fit."""

    def num_parameters(self) -> int:
        """Trainable and frozen parameters of every network the model samples with."""
        return sum(p.numel() for m in self.modules() for p in m.parameters())

    @abstractmethod
    def modules(self) -> list[Any]:
        """The torch modules that make up the model."""


FAMILIES: Registry[ZooModel] = Registry("zoo family")


def to_unit(images: np.ndarray):  # noqa: ANN201
    """uint8 ``(n, H, W, 3)`` → float32 torch tensor ``(n, 3, H, W)`` in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x) -> np.ndarray:  # noqa: ANN001
    """torch ``(n, 3, H, W)`` in [-1, 1] → uint8 ``(n, H, W, 3)`` (clipped, rounded)."""
    import torch

    with torch.no_grad():
        y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def batches(n_items: int, batch_size: int, steps: int, seed: int):  # noqa: ANN201
    """Index batches for ``steps`` steps: reshuffled epochs, deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    order: np.ndarray = np.empty(0, dtype=np.int64)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(n_items)])
        idx, order = order[:batch_size], order[batch_size:]
        yield idx
