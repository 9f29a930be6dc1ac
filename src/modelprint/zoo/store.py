"""The zoo's format and its reader: a zoo folder's manifest, its models (checked against their sha256), and users'
diffusers folders.

Layout of a zoo folder (written by :func:`~modelprint.zoo.build.build_zoo`)::

    zoo.json                  format, tier and global seed (a resumed build must match them)
    manifest.jsonl            one JSON line per finished model, in recipe order (see :mod:`modelprint.manifest`)
    models/<name>/            the model's weights (safetensors, or a diffusers folder for diffusion models)
    samples/<name>/NNNN.png   its samples: one folder per model, so ``samples/`` is a labelled dataset

A manifest line holds the model's ``name``, ``family``, ``kind``, ``recipe``, the sha256 of every file under
``models/<name>/`` (``files``) and of its samples (``samples.sha256``), and training costs.

``load_generator`` is the one entry point for white-box methods: it accepts the name of a zoo model or the path
of a diffusers folder (modelprint's own or a user's) and returns a model with the same interface either way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelprint.artefacts import verify_files
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.manifest import MANIFEST
from modelprint.manifest import read_manifest as _read_records
from modelprint.zoo.base import FAMILIES, DataSpec, Recipe, ZooModel

FORMAT = "modelprint-zoo/1"
SETTINGS = "zoo.json"
MODELS_DIR = "models"
SAMPLES_DIR = "samples"


def read_manifest(root: str | Path) -> dict[str, dict]:
    """The manifest lines of the zoo folder ``root`` by model name, in recipe order (``{}`` if it has none)."""
    return _read_records(root, "name")


def samples_digest(folder: Path) -> str:
    """One sha256 over the sample files (names and bytes) of a model."""
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.png")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def verify_entry(root: Path, entry: dict) -> str | None:
    """``None`` if the model's files and samples match its manifest line, else what is wrong."""
    try:
        verify_files(Path(root) / MODELS_DIR / entry["name"], entry["files"], complete=True)
    except CheckpointError as err:
        return str(err)
    samples = Path(root) / SAMPLES_DIR / entry["name"]
    if entry.get("samples") and (not samples.is_dir() or samples_digest(samples) != entry["samples"]["sha256"]):
        return f"{samples}: samples differ from the manifest (sha256)"
    return None


def check_entry(root: Path, entry: dict) -> None:
    """Raise :class:`CheckpointError` if a model's files do not match its manifest line."""
    problem = verify_entry(root, entry)
    if problem:
        raise CheckpointError(f"zoo model {entry['name']!r}: {problem}; rebuild it with "
                              f"`modelprint zoo build --only {entry['name']}`")


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
        self.root = Path(self.root)
        if not (self.root / MANIFEST).is_file():
            raise ModelprintError(f"{self.root}: not a zoo folder (no {MANIFEST}); build one with `modelprint zoo build --zoo {self.root}`")

    def entries(self) -> dict[str, dict]:
        return read_manifest(self.root)

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, e in self.entries().items() if kind is None or e["kind"] == kind]

    def info(self, name: str) -> dict:
        entries = self.entries()
        if name not in entries:
            raise ModelprintError(f"{self.root}: no zoo model {name!r}; built: {', '.join(entries) or 'none'}")
        return entries[name]

    def samples_dir(self, name: str) -> Path:
        self.info(name)  # a clear error for an unknown model
        return self.root / SAMPLES_DIR / name

    def load(self, name: str) -> ZooModel:
        """Load ``name`` (and its parent) after checking every file's sha256 against the manifest."""
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
    from modelprint.zoo.diffusion_model import DiffusionModel

    path = Path(name_or_path)
    if path.is_dir():
        return DiffusionModel.from_folder(path)
    if path.suffix in (".safetensors", ".pth", ".pt", ".bin"):
        return DiffusionModel.from_checkpoint(path)
    if zoo is None:
        raise CheckpointError(f"{name_or_path}: no such diffusers folder (pass --zoo to look the name up in a zoo)")
    model = Zoo(Path(zoo)).load(str(name_or_path))
    return getattr(model, "diffusion", model)

