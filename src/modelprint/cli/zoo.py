"""``modelprint zoo build|list|info|sample``: modelprint's own zoo of trained generative models."""

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

zoo_app = make_typer("modelprint's own zoo of trained generative models (test beds for attribution).")

ZooOpt = Annotated[Path, typer.Option("--zoo", help="Zoo folder (manifest.jsonl, models/, samples/).")]


@zoo_app.command("build", cls=Command)
def zoo_build(
    zoo: ZooOpt = Path("out/zoo"),
    tier: Annotated[str, typer.Option(help="tiny (tests, minutes) or standard (benchmarks).")] = "standard",
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Build only this model (and its parents); repeatable.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (1 torch thread each).")] = 1,
    samples: Annotated[int | None, typer.Option(min=0, help="Samples saved per model (default: the tier's).")] = None,
    seed: SeedOpt = 0,
    ray: RayFlag = False,
    address: AddressOpt = None,
) -> None:
    """Train the zoo's recipes (resumes: models already built and intact are kept)."""
    with fatal_errors():
        from modelprint.executor import executor_for
        from modelprint.zoo import build_zoo, tier_recipes

        total = len(only) if only else len(tier_recipes(tier))
        bar, task = progress_bar(total, f"building {tier} zoo")

        def on_model(done: int, tot: int, entry: dict[str, Any]) -> None:
            bar.update(task, completed=done, total=tot)
            err.print(f"{shown(entry['name'])}: {shown(entry['family'])}, {entry['parameters']:,} parameters, "
                      f"loss {entry['final_loss']:.4f}, {entry['cpu_seconds']:.0f} CPU s", highlight=False,
                      soft_wrap=True)

        with bar:
            entries = build_zoo(zoo, tier=tier, only=only or (), seed=seed, workers=workers, n_samples=samples,
                                progress=on_model, executor=executor_for(workers, ray, address))
        emit_json({"zoo": str(zoo), "tier": tier, "models": len(entries),
                   "cpu_seconds": round(sum(e["cpu_seconds"] for e in entries), 1)})


@zoo_app.command("list", cls=Command)
def zoo_list(zoo: ZooOpt = Path("out/zoo"), as_json: JsonFlag = False, json_out: JsonOutOpt = None) -> None:
    """List the built models."""
    with fatal_errors():
        from modelprint.zoo import Zoo

        entries = Zoo(zoo).entries()
        emit_json(list(entries.values()), as_json, json_out)
        if as_json:
            return
        table = make_table(f"zoo {shown(zoo)}", "model", "family", "parent", "parameters", "steps", "loss", "CPU s",
                           "samples")
        for e in entries.values():
            table.add_row(shown(e["name"]), shown(e["family"]), shown(e["recipe"]["parent"] or ""),
                          f"{e['parameters']:,}",
                          str(e["recipe"]["steps"]), f"{e['final_loss']:.4f}", f"{e['cpu_seconds']:.0f}",
                          str(e.get("samples", {}).get("n", 0)))
        out.print(table)


@zoo_app.command("info", cls=Command)
def zoo_info(name: Annotated[str, typer.Argument(help="Zoo model name.")], zoo: ZooOpt = Path("out/zoo")) -> None:
    """Print a model's manifest line (recipe, data, seed, steps, CPU seconds, sha256 of every file)."""
    with fatal_errors():
        from modelprint.zoo import Zoo

        emit_json(Zoo(zoo).info(name))


@zoo_app.command("sample", cls=Command)
def zoo_sample(
    name: Annotated[str, typer.Argument(help="Zoo model name, or a diffusers folder.")],
    n: Annotated[int, typer.Option("-n", min=1, help="Number of images.")] = 16,
    dest: Annotated[Path, typer.Option("--out", help="Folder for the PNGs.")] = Path("out/samples"),
    zoo: ZooOpt = Path("out/zoo"),
    seed: SeedOpt = 0,
) -> None:
    """Generate images with a zoo model (its sha256 is checked first) or a user's diffusers folder."""
    with fatal_errors():
        from PIL import Image

        from modelprint.atomic import atomic_path
        from modelprint.zoo.store import load_generator

        seed_all(seed)
        model = load_generator(name, zoo=zoo)
        dest.mkdir(parents=True, exist_ok=True)
        stem = Path(name).name
        for i, im in enumerate(model.sample(n, seed=seed)):
            with atomic_path(dest / f"{stem}-seed{seed}-{i:04d}.png") as tmp:
                Image.fromarray(im).save(tmp, format="PNG")
        out.print(f"wrote {n} images to {shown(dest)}", soft_wrap=True)
