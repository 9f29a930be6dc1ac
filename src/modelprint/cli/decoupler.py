"""``modelprint decoupler train``: fit the causal decoupler on pairs that a zoo's models redraw."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelprint.cli.app import Command, JsonOutOpt, SeedOpt, command_line, emit_json, fatal_errors, make_typer, seed_all

decoupler_app = make_typer("The causal decoupler: fingerprints that keep the model and drop the content.")


@decoupler_app.command("train", cls=Command)
def decoupler_train(
    zoo: Annotated[Path, typer.Option("--zoo", help="Zoo folder (modelprint zoo build).")],
    model: Annotated[list[str], typer.Option(
        "--model", help="A zoo model that redraws the contents (repeat; GAN, VAE, autoencoder or diffusion).")],
    out_path: Annotated[Path, typer.Option("--out", help="Decoupler weights (.safetensors; a .json sidecar beside).")],
    base: Annotated[str, typer.Option(help="The fingerprint method whose embeddings are decoupled.")] = "learned",
    photos: Annotated[int, typer.Option(min=0, help="Held-out photo crops as contents.")] = 16,
    faces: Annotated[int, typer.Option(min=0, help="Held-out LFW faces as contents.")] = 8,
    strength: Annotated[float, typer.Option(help="SDEdit strength of the diffusion models' redraws.")] = 0.5,
    gan_steps: Annotated[int, typer.Option(min=1, help="Adam steps of a GAN's projection.")] = 200,
    real: Annotated[bool, typer.Option(help="Include the contents themselves as the model 'real'.")] = True,
    holdout: Annotated[float, typer.Option(
        help="Share of contents held out of the fit and measured before/after (0: none).")] = 0.25,
    dim: Annotated[int, typer.Option(min=2, help="Output size of the MLP projection.")] = 32,
    rank: Annotated[int, typer.Option(min=0, help=(
        "0: the MLP projection; k > 0: the removal form (the features minus k learned directions, same size)."))] = 0,
    epochs: Annotated[int, typer.Option(min=1)] = 200,
    adversary: Annotated[str, typer.Option(help="'pairs' (same content?) or 'content' (which content?).")] = "pairs",
    adversary_weight: Annotated[float, typer.Option(min=0.0)] = 1.0,
    pairs_cache: Annotated[Path | None, typer.Option(
        "--pairs-cache", help="Where to keep the redrawn pairs (.npz), reused when the settings match.")] = None,
    seed: SeedOpt = 0,
    json_out: JsonOutOpt = None,
) -> None:
    """Redraw contents with the zoo's models, embed them with --base, fit the decoupler and write it; prints JSON
    with the held-out contents' leakage and identification before and after."""
    with fatal_errors():
        from modelprint.causal.decoupler import CausalDecoupler
        from modelprint.causal.workflow import train_decoupler

        seed_all(seed)
        decoupler = CausalDecoupler(dim=dim, rank=rank, epochs=epochs, adversary=adversary,
                                    adversary_weight=adversary_weight, seed=seed)
        result = train_decoupler(zoo, list(model), out_path, base=base, decoupler=decoupler, holdout=holdout,
                                 pairs_cache=pairs_cache, seed=seed, command=command_line(),
                                 pair_settings={"n_photos": photos, "n_faces": faces, "strength": strength,
                                                "gan_steps": gan_steps, "include_real": real})
        emit_json(result, True, json_out)
