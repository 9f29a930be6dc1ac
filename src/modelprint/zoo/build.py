"""Building a zoo on disk: resumable, parallel, verified by sha256 (the layout is :mod:`modelprint.zoo.store`'s).

A model folder and its samples are written under temporary names and renamed into place before the manifest line
is written, so a killed build leaves only complete models. On restart, lines whose files are missing or fail their
sha256 are dropped and those models train again (training is deterministic, so they come out the same).

A model may start once its parent is built (a lineage child or latent diffusion model after its parent);
``workers > 1`` trains that many models at once in spawned processes, always starting, among the models ready to
train, the one heading the longest chain of training still to do (so the critical path does not wait behind short
models), and the parent process alone writes the manifest.
Every model trains and samples with exactly one torch thread, in a worker or in-process: float reductions depend on
the thread count, so this is what makes a model's weights depend only on its recipe and seed, not on ``--workers``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelprint.artefacts import file_digests
from modelprint.errors import ModelprintError
from modelprint.executor import Executor, LocalExecutor, ProcessExecutor
from modelprint.manifest import check_settings, write_manifest
from modelprint.zoo.base import Recipe
from modelprint.zoo.store import (
    FORMAT,
    MODELS_DIR,
    SAMPLES_DIR,
    SETTINGS,
    family,
    load_model,
    read_manifest,
    samples_digest,
    verify_entry,
)

SEED_STRIDE = 1000
#: Torch threads every model trains and samples with (see the module docstring).
TRAIN_THREADS = 1

#: Called as ``progress(done, total, manifest_line)`` after every finished model.
BuildProgress = Callable[[int, int, dict], None]


def seeded(recipe: Recipe, seed: int) -> Recipe:
    """The recipe as trained under global seed ``seed`` (seed 0 leaves it unchanged)."""
    return replace(recipe, seed=recipe.seed + SEED_STRIDE * seed) if seed else recipe


def _write_manifest(out_dir: Path, entries: dict[str, dict], order: Sequence[str]) -> None:
    write_manifest(out_dir, [entries[n] for n in order if n in entries]
                   + [entries[n] for n in sorted(set(entries) - set(order))])


def save_samples(images, folder: Path) -> None:  # noqa: ANN001
    """Write uint8 ``(n, H, W, 3)`` images as ``0000.png`` … into a fresh ``folder``."""
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:04d}.png")


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def train_one(out_dir: str, recipe: Recipe, n_samples: int, sample_seed: int) -> dict[str, Any]:
    """Train, save and sample one recipe with one torch thread; return its manifest line."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _train_one(out_dir, recipe, n_samples, sample_seed)
    finally:
        torch.set_num_threads(threads)


def _train_one(out_dir: str, recipe: Recipe, n_samples: int, sample_seed: int) -> dict[str, Any]:
    import torch

    from modelprint.zoo.data import training_images

    root = Path(out_dir)
    parent = load_model(root, recipe.parent) if recipe.parent else None
    images = training_images(recipe.data)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    torch.manual_seed(recipe.seed)
    model = family(recipe.family)(recipe, parent=parent)
    model.fit(images)
    train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0

    folder = root / MODELS_DIR / recipe.name
    tmp = folder.with_name(f".{recipe.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp)
    _replace_dir(tmp, folder)

    entry: dict[str, Any] = {
        "name": recipe.name,
        "family": recipe.family,
        "kind": model.kind,
        "recipe": recipe.describe(),
        "parameters": int(model.num_parameters()),
        "training_images": int(len(images)),
        "final_loss": float(model.final_loss),
        "cpu_seconds": round(train_cpu, 2),
        "wall_seconds": round(train_wall, 2),
        "threads": torch.get_num_threads(),
        "files": file_digests(folder),
    }
    if recipe.holdout is not None:
        entry["splits"] = membership_splits(recipe, images)
    if n_samples and model.kind != "autoencoder":
        sample_folder = root / SAMPLES_DIR / recipe.name
        tmp = sample_folder.with_name(f".{recipe.name}.tmp")
        t0 = time.process_time()
        save_samples(model.sample(n_samples, seed=sample_seed), tmp)
        _replace_dir(tmp, sample_folder)
        entry["samples"] = {"n": n_samples, "seed": sample_seed, "sha256": samples_digest(sample_folder),
                            "cpu_seconds": round(time.process_time() - t0, 2)}
    return entry


def membership_splits(recipe: Recipe, members: Any) -> dict[str, dict[str, Any]]:
    """The manifest's record of a member-split recipe: which images it trained on (``members``) and which images of
    the same distribution it never saw (``holdout``), each as its data spec, image count and sha256."""
    from modelprint.zoo.data import images_digest, training_images

    held = training_images(recipe.holdout)
    return {"members": {**recipe.data.describe(), "n_images": int(len(members)), "sha256": images_digest(members)},
            "holdout": {**recipe.holdout.describe(), "n_images": int(len(held)), "sha256": images_digest(held)}}


def _cost(recipe: Recipe) -> int:
    """A recipe's training work for scheduling: images seen (steps × batch size)."""
    return recipe.steps * recipe.batch_size


class _ReadyQueue:
    """The models still to train, handed out as they become ready (their parent built or not among them), the one
    with the most training left along its chain of descendants first (ties in recipe order)."""

    def __init__(self, recipes: Sequence[Recipe]) -> None:
        self.todo = list(recipes)
        names = {r.name for r in recipes}
        children: dict[str, list[Recipe]] = {}
        for r in recipes:
            if r.parent in names:
                children.setdefault(r.parent, []).append(r)
        self.priority: dict[str, int] = {}

        def chain(r: Recipe, seen: tuple[str, ...] = ()) -> int:
            if r.name in seen:
                raise ModelprintError(f"zoo recipe {r.name!r}: circular parent chain {' → '.join(seen + (r.name,))}")
            if r.name not in self.priority:
                below = [chain(c, seen + (r.name,)) for c in children.get(r.name, [])]
                self.priority[r.name] = _cost(r) + max(below, default=0)
            return self.priority[r.name]

        for r in recipes:
            chain(r)
        self.waiting = {r.name for r in recipes}  # not yet built (in training or not started)

    def finished(self, name: str) -> None:
        self.waiting.discard(name)

    def _ready(self) -> list[Recipe]:
        return [r for r in self.todo if r.parent not in self.waiting]

    def may_start(self) -> bool:
        """Whether a model can start now (also true when none is left, so the caller sees the end)."""
        return not self.todo or bool(self._ready())

    def __iter__(self) -> Iterator[Recipe]:
        while self.todo:
            ready = self._ready()
            best = max(ready, key=lambda r: self.priority[r.name])  # max keeps the first of equals
            self.todo.remove(best)
            yield best


def _with_parents(recipes: Sequence[Recipe], wanted: Sequence[str]) -> list[Recipe]:
    by_name = {r.name: r for r in recipes}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ModelprintError(f"unknown zoo model(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    keep: set[str] = set()
    for n in wanted:
        while n and n not in keep:
            keep.add(n)
            n = by_name[n].parent
    return [r for r in recipes if r.name in keep]


def build_zoo(
    out_dir: str | Path,
    tier: str = "standard",
    only: Sequence[str] = (),
    seed: int = 0,
    workers: int = 1,
    n_samples: int | None = None,
    progress: BuildProgress | None = None,
    executor: Executor | None = None,
) -> list[dict]:
    """Train every recipe of ``tier`` (or ``only`` those and their parents) that is not yet valid in ``out_dir``.

    Returns the manifest lines of the requested models. ``n_samples`` overrides the tier's samples per model.
    ``executor`` (default: a process pool of ``workers``, or this process) trains the models, e.g. a
    :class:`~modelprint.executor.RayExecutor`.
    """
    from modelprint.zoo.recipes import tier_recipes, tier_samples

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out / SETTINGS, {"format": FORMAT, "tier": tier, "seed": seed}, "zoo")
    all_recipes = [seeded(r, seed) for r in tier_recipes(tier)]
    order = [r.name for r in all_recipes]
    recipes = _with_parents(all_recipes, only) if only else all_recipes
    n = tier_samples(tier) if n_samples is None else n_samples
    entries = {k: e for k, e in read_manifest(out).items() if verify_entry(out, e) is None}
    _write_manifest(out, entries, order)
    todo = [r for r in recipes if r.name not in entries]
    done = len(recipes) - len(todo)
    ex = executor or (ProcessExecutor(workers) if workers > 1 and len(todo) > 1 else LocalExecutor())
    queue = _ReadyQueue(todo)
    tasks = ((str(out), r, n, seed) for r in queue)
    for _i, entry in ex.run(train_one, tasks, may_start=queue.may_start):
        queue.finished(entry["name"])
        entries[entry["name"]] = entry
        _write_manifest(out, entries, order)
        done += 1
        if progress:
            progress(done, len(recipes), entry)
    return [entries[r.name] for r in recipes]

