"""Reading a built zoo: its manifest, its models (checked against their sha256), and users' diffusers folders.

``load_generator`` is the one entry point for white-box methods: it accepts the name of a zoo model or the path
of a diffusers folder (modelprint's own or a user's) and returns a model with the same interface either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelprint.errors import CheckpointError, ModelprintError
from modelprint.zoo.base import FAMILIES, DataSpec, Recipe, ZooModel


def family(name: str) -> type[ZooModel]:
    """The registered family class ``name`` (importing every family on first use)."""
    import modelprint.zoo.families  # noqa: F401  (registers the families)

    return FAMILIES.get(name)


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    return Recipe(name=d["name"], family=d["family"], params=dict(d["params"]), data=DataSpec(**d["data"]),
                  seed=d["seed"], steps=d["steps"], batch_size=d["batch_size"], lr=d["lr"], parent=d["parent"],
                  note=d.get("note", ""), holdout=DataSpec(**d["holdout"]) if d.get("holdout") else None)


@dataclass
class Zoo:
    """A zoo folder written by :func:`~modelprint.zoo.build.build_zoo`."""

    root: Path

    def __post_init__(self) -> None:
        from modelprint.zoo.build import MANIFEST

        self.root = Path(self.root)
        if not (self.root / MANIFEST).is_file():
            raise ModelprintError(f"{self.root}: not a zoo folder (no {MANIFEST}); build one with `modelprint zoo build --zoo {self.root}`")

    def entries(self) -> dict[str, dict]:
        from modelprint.zoo.build import read_manifest

        return read_manifest(self.root)

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, e in self.entries().items() if kind is None or e["kind"] == kind]

    def info(self, name: str) -> dict:
        entries = self.entries()
        if name not in entries:
            raise ModelprintError(f"{self.root}: no zoo model {name!r}; built: {', '.join(entries) or 'none'}")
        return entries[name]

    def samples_dir(self, name: str) -> Path:
        from modelprint.zoo.build import SAMPLES_DIR

        self.info(name)  # a clear error for an unknown model
        return self.root / SAMPLES_DIR / name

    def load(self, name: str) -> ZooModel:
        """Load ``name`` (and its parent) after checking every file's sha256 against the manifest."""
        from modelprint.zoo.build import MODELS_DIR, check_entry

        entry = self.info(name)
        check_entry(self.root, entry)
        recipe = recipe_from_dict(entry["recipe"])
        parent = self.load(recipe.parent) if recipe.parent else None
        return family(recipe.family).load(self.root / MODELS_DIR / name, recipe, parent=parent)


def load_model(root: str | Path, name: str) -> ZooModel:
    """Load zoo model ``name`` from the zoo folder ``root``."""
    return Zoo(Path(root)).load(name)


def load_generator(name_or_path: str | Path, zoo: str | Path | None = None) -> Any:
    """A diffusion model by zoo name (with ``zoo``), diffusers folder, or UNet checkpoint file (``.safetensors`` /
    ``.pth`` with ``config.json`` beside it), as a ``DiffusionModel``.

    Non-diffusion zoo models are returned as their :class:`ZooModel`.
    """
    from modelprint.zoo.diffusion import DiffusionModel

    path = Path(name_or_path)
    if path.is_dir():
        return DiffusionModel.from_folder(path)
    if path.suffix in (".safetensors", ".pth", ".pt", ".bin"):
        return DiffusionModel.from_checkpoint(path)
    if zoo is None:
        raise CheckpointError(f"{name_or_path}: no such diffusers folder (pass --zoo to look the name up in a zoo)")
    model = Zoo(Path(zoo)).load(str(name_or_path))
    return getattr(model, "diffusion", model)

