"""``modelprint views train-reconstructor|train-cnn`` (the DIRE views' shipped weights) and ``modelprint fusion fit``
(learned weights of the ``fused`` method)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelprint.cli.app import Command, SeedOpt, command_line, emit_json, fatal_errors, make_typer, seed_all

views_app = make_typer("The DIRE feature views: their reconstruction model and residual CNN.")


@views_app.command("train-reconstructor", cls=Command)
def train_reconstructor(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the .safetensors (a .json sidecar beside).")],
    steps: Annotated[int, typer.Option(min=1, help="Training steps (batch 16).")] = 4000,
    seed: SeedOpt = 1014,
) -> None:
    """Train the small pixel DDPM the DIRE views reconstruct through (the shipped one's recipe)."""
    with fatal_errors():
        from modelprint.causal.reference import train_reconstructor as train

        seed_all(seed)
        emit_json(train(out_path, seed=seed, steps=steps, command=command_line()))
