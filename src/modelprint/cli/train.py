"""Commands that train or rebuild what the default method ships: ``denoiser train``, ``synthesize``, ``fidelity``,
``extractor train`` (also ``train``, its old name) and ``spectral-reference``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from modelprint.cli.app import (
    AddressOpt,
    Command,
    JsonFlag,
    JsonOutOpt,
    RayFlag,
    SeedOpt,
    command_line,
    emit_json,
    err,
    fatal_errors,
    make_table,
    make_typer,
    out,
    progress_bar,
    seed_all,
    shown,
)

denoiser_app = make_typer("modelprint's own residual denoiser.")
extractor_app = make_typer("The zero-shot fingerprint extractor of the learned method.")

_SPACES = ("paper", "extended", "all")
_AUGMENTATIONS = ("standard", "robust", "mixed", "none")  # modelprint.io.degrade.AUGMENTATIONS


@denoiser_app.command("train", cls=Command)
def denoiser_train(
    out_path: Annotated[Path, typer.Option(
        "--out", help="Where to write the .safetensors weights (a .json sidecar goes beside).")],
    steps: Annotated[int, typer.Option(min=1)] = 1500,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    crop: Annotated[int, typer.Option(min=16)] = 48,
    sigma: Annotated[float, typer.Option(help="Noise σ on the 0–255 scale.")] = 1.0,
    lr: Annotated[float, typer.Option()] = 1e-3,
    depth: Annotated[int, typer.Option(min=3)] = 10,
    width: Annotated[int, typer.Option(min=4)] = 32,
    pool_folder: Annotated[list[Path] | None, typer.Option(
        "--pool-folder", help="Add your own photo folders to the real-image pool.")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Train modelprint's DnCNN residual denoiser on the real-image pool."""
    with fatal_errors():
        from modelprint.io import RealPool
        from modelprint.residuals.training import train_denoiser

        seed_all(seed)
        bar, task = progress_bar(steps, "training denoiser")
        with bar:
            metrics = train_denoiser(out_path, steps=steps, batch_size=batch_size, crop=crop, sigma=sigma, lr=lr,
                                     seed=seed, depth=depth, width=width, pool=RealPool(folders=pool_folder or []),
                                     command=command_line(),
                                     progress=lambda step, total, loss: bar.update(task, completed=step))
        emit_json(metrics)


def synthesize(
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Pool folder (weights + manifest.jsonl); resumes if it exists.")] = None,
    archs: Annotated[str, typer.Option(
        help="'paper' (288), 'extended', or comma-separated architecture ids.")] = "paper",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per architecture.")] = 2,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (1 torch thread each).")] = 1,
    crop: Annotated[int, typer.Option(min=8, help="Training crop size.")] = 32,
    max_steps: Annotated[int, typer.Option(
        min=1, help="Step budget per model when the residual criterion is not reached.")] = 200,
    list_only: Annotated[bool, typer.Option("--list", help="List the architectures and exit.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="First seed: models use seeds seed … seed+seeds-1.")] = 0,
    ray: RayFlag = False,
    address: AddressOpt = None,
) -> None:
    """Train a pool of synthetic generators (Model Synthesis) to reconstruct real photos."""
    with fatal_errors():
        from modelprint.executor import executor_for
        from modelprint.synthesis.pool import synthesize_pool
        from modelprint.synthesis.space import list_architectures

        names = list_architectures(archs) if archs in _SPACES else archs.split(",")
        if list_only:
            for name in names:
                out.print(shown(name), highlight=False, soft_wrap=True)
            err.print(f"{len(names)} architectures")
            return
        if out_dir is None:
            raise typer.BadParameter("--out is required unless --list is given")
        bar, task = progress_bar(len(names) * seeds, "synthesizing")
        with bar:
            summary = synthesize_pool(out_dir, archs if archs in _SPACES else names,
                                      list(range(seed, seed + seeds)), crop=crop, max_steps=max_steps, workers=workers,
                                      progress=lambda done, tot, rec: bar.update(task, completed=done, total=tot),
                                      executor=executor_for(workers, ray, address) if ray or address else None)
        emit_json({"out": str(out_dir), "models": summary.total, "trained": summary.trained,
                   "already_done": summary.skipped, "seconds": summary.seconds})


def fidelity(
    pool: Annotated[Path, typer.Option("--pool", help="Synthetic pool folder.")],
    real: Annotated[Path, typer.Option("--real", help="Folder of real generator classes (one sub-folder each).")],
    residual: Annotated[str, typer.Option(help="Residual extractor for the spectra.")] = "highpass",
    n_images: Annotated[int, typer.Option(min=10, help="Images per model / class (≥ 50 is stable).")] = 50,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """FFD between the synthetic pool and real generators, with the paper's Table II ablations."""
    with fatal_errors():
        from modelprint.synthesis.fidelity import fidelity as run_fidelity

        seed_all(seed)
        result = run_fidelity(pool, real, residual=residual, n_images=n_images, seed=seed)
        emit_json(result, as_json, json_out)
        if as_json:
            return
        table = make_table(f"FFD to {shown(real.name)} ({shown(residual)} residual)", "pool", "models", "FFD")
        for row in result.get("ablation", []):
            table.add_row(shown(row["name"]), str(row["n_models"]), f"{row['ffd']:.3f}")
        out.print(table if result.get("ablation") else result)


@extractor_app.command("train", cls=Command)
def extractor_train(
    pool: Annotated[Path, typer.Option("--pool", help="Synthetic pool folder written by `modelprint synthesize`.")],
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Output folder (weights, checkpoint, cached spectra, history).")],
    steps: Annotated[int, typer.Option(min=1)] = 3000,
    per_model: Annotated[int, typer.Option(min=8, help="Fingerprinted images rendered per synthetic model.")] = 32,
    val_fraction: Annotated[float, typer.Option(help="Share of architectures held out for model selection.")] = 0.1,
    widths: Annotated[str, typer.Option(help="ResNet stage widths, comma-separated.")] = "32,64,128,256",
    blocks: Annotated[int, typer.Option(min=1, help="Residual blocks per stage.")] = 1,
    embed_dim: Annotated[int, typer.Option()] = 256,
    p: Annotated[int, typer.Option("--P", help="Models per batch.")] = 32,
    k: Annotated[int, typer.Option("--K", help="Images per model per batch.")] = 4,
    region: Annotated[int, typer.Option(
        min=32, help="Region (sliding window) side whose Welch spectrum is embedded.")] = 128,
    lr: Annotated[float, typer.Option()] = 1e-3,
    augment: Annotated[str, typer.Option(
        help="Augmentation of the rendered images: 'standard' (the shipped extractor's: mild resize and JPEG), "
             "'robust' (JPEG q30–100 and double JPEG, resize ×0.25–2 with 5 kernels, crops, blur, noise), "
             "'mixed' (each image 'standard' or 'robust', even odds), 'none'.")] = "standard",
    no_augment: Annotated[bool, typer.Option(
        "--no-augment", hidden=True, help="Old spelling of --augment none.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Processes for rendering training spectra.")] = 1,
    init: Annotated[Path | None, typer.Option(
        "--init", help="Fine-tune these extractor weights (.safetensors; their shape and normalisation are kept).")
    ] = None,
    seed: SeedOpt = 0,
) -> None:
    """Train the zero-shot fingerprint extractor on a synthetic pool (resumes if killed).

    Prints one line per validation (held-out architectures) to stderr."""
    with fatal_errors():
        from modelprint.extractor.pipeline import train_from_pool
        from modelprint.extractor.train import TrainConfig

        if no_augment:
            err.print("note: --no-augment is now --augment none", highlight=False)
            augment = "none"
        if augment not in _AUGMENTATIONS:
            raise typer.BadParameter(f"{augment!r} is not one of {', '.join(_AUGMENTATIONS)}", param_hint="--augment")
        seed_all(seed)
        cfg = TrainConfig(widths=tuple(int(w) for w in widths.split(",")), blocks_per_stage=blocks,
                          embed_dim=embed_dim, P=p, K=k, steps=steps, lr=lr, seed=seed, region=region)
        bar, task = progress_bar(steps, "training extractor")
        render_task = bar.add_task("rendering spectra", total=None)

        def on_step(done: int, rec: dict[str, Any]) -> None:
            bar.update(task, completed=done)
            if "val_accuracy" in rec:
                err.print(f"step {done}: loss {rec['loss']:.3f} (ce {rec['ce']:.3f}, triplet {rec['triplet']:.3f}), "
                          f"held-out accuracy {rec['val_accuracy']:.3f}", highlight=False)

        with bar:
            result = train_from_pool(pool, out_dir, config=cfg, per_model=per_model, val_fraction=val_fraction,
                                     augment=augment, seed=seed, workers=workers, init=init, command=command_line(),
                                     render_progress=lambda n: bar.advance(render_task, n), train_progress=on_step)
        emit_json(result["recipe"])


def spectral_reference(
    residual: Annotated[str, typer.Option(help="Residual extractor.")] = "dncnn",
    n: Annotated[int, typer.Option(min=10, help="Real-pool crops to fit on.")] = 1000,
    size: Annotated[int, typer.Option(min=32)] = 128,
    seed: SeedOpt = 0,
) -> None:
    """Rebuild the shipped real-photo reference of the spectral method."""
    with fatal_errors():
        from modelprint.methods.spectral import build_reference

        path = build_reference(residual=residual, n=n, size=size, seed=seed)
        out.print(f"wrote {shown(path)}", soft_wrap=True)
