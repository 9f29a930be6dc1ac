"""``modelprint views train-reconstructor|train-cnn`` (the DIRE views' shipped weights) and ``modelprint fusion fit``
(learned weights of the ``fused`` method)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelprint.cli.app import (
    Command,
    SeedOpt,
    UnusedSeedOpt,
    command_line,
    emit_json,
    fatal_errors,
    make_typer,
    seed_all,
)

views_app = make_typer("The DIRE feature views: their reconstruction model and residual CNN.")


@views_app.command("train-reconstructor", cls=Command)
def train_reconstructor(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the .safetensors (a .json sidecar beside).")],
    steps: Annotated[int, typer.Option(min=1, help="Training steps (batch 16).")] = 2000,
    seed: SeedOpt = 1014,
) -> None:
    """Train the small pixel DDPM the DIRE views reconstruct through (the shipped one's recipe)."""
    with fatal_errors():
        from modelprint.causal.reference import train_reconstructor as train

        seed_all(seed)
        emit_json(train(out_path, seed=seed, steps=steps, command=command_line()))


@views_app.command("train-cnn", cls=Command)
def train_cnn(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the .safetensors (a .json sidecar beside).")],
    pool: Annotated[Path, typer.Option(help="Synthetic generator pool folder (made or resumed here).")],
    archs: Annotated[int, typer.Option(min=2, help="Architectures of the paper's space, drawn by --seed.")] = 8,
    seeds: Annotated[int, typer.Option(min=1, help="Generators per architecture.")] = 2,
    max_steps: Annotated[int, typer.Option(min=1, help="Training steps of each synthetic generator.")] = 10,
    val_archs: Annotated[int, typer.Option(min=1, help="Architectures held out to choose the checkpoint.")] = 2,
    per_model: Annotated[int, typer.Option(min=4, help="Images rendered per generator.")] = 24,
    steps: Annotated[int, typer.Option(min=1, help="CNN training steps.")] = 600,
    seed: SeedOpt = 0,
) -> None:
    """Train the CNN of the dire-cnn view on DIRE residuals of synthetic generators' images (the shipped recipe)."""
    with fatal_errors():
        from modelprint.causal.dire_cnn import train_dire_cnn

        seed_all(seed)
        emit_json(train_dire_cnn(out_path, pool, archs=archs, seeds=seeds, max_steps=max_steps, val_archs=val_archs,
                                 per_model=per_model, steps=steps, seed=seed, command=command_line()))


fusion_app = make_typer("Learned weights of the fused method.")


@fusion_app.command("fit", cls=Command)
def fusion_fit(
    dataset: Annotated[Path, typer.Argument(help="Labelled images: a folder per model, or a CSV/JSONL index.")],
    out_path: Annotated[Path, typer.Option("--out", help="Fusion file to write (.npz, with a .json sidecar).")],
    view: Annotated[list[str], typer.Option("--view", help="A view (registered method) to fuse; repeatable.")],
    split: Annotated[str | None, typer.Option(
        help="Fit on the index rows of this split only ('' = every image, e.g. a folder of validation images).")
    ] = "val",
    resolution: Annotated[float, typer.Option(help="Step of the weight grid.")] = 0.1,
    seed: UnusedSeedOpt = None,
) -> None:
    """Learn the fused method's view weights on a validation split (leave-one-out nearest-prototype accuracy)."""
    with fatal_errors():
        from modelprint.methods import load_method
        from modelprint.methods.fusion import fit_fusion_dataset, save_fusion

        fused = load_method("fused", views=[(v, 1.0) for v in view], resolution=resolution)
        fit = fit_fusion_dataset(fused, dataset, split or None)
        sha = save_fusion(out_path, fused.views, fused.params, {**fit.to_dict(), "views_given": list(view),
                                                                 "split": split or None, "dataset": str(dataset)})
        emit_json({"out": str(out_path), "sha256": sha, "views": [list(v) for v in fused.views],
                   "version": fused.version, **fit.to_dict()})
