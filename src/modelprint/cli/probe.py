"""``modelprint probe prototypes|identify``: white-box attribution through candidate diffusion models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelprint.cli.app import (
    Command,
    JsonFlag,
    JsonOutOpt,
    PathsArg,
    SeedOpt,
    TopKOpt,
    UnusedSeedOpt,
    calls_bar,
    fatal_errors,
    finish_per_file,
    make_table,
    make_typer,
    out,
    seed_all,
    shown,
)

probe_app = make_typer("White-box attribution: probe images through candidate diffusion models (Spectral Denoising "
                       "Signatures).")

CandidatesOpt = Annotated[list[str], typer.Option(
    "--candidates", "-c", help="Candidate diffusion model as NAME=SOURCE (zoo model name, diffusers folder, or UNet "
    ".safetensors/.pth with config.json beside it); repeat for each candidate.")]
ZooOptionalOpt = Annotated[Path | None, typer.Option(
    "--zoo", help="Zoo folder for candidates given by zoo model name.")]


@probe_app.command("prototypes", cls=Command)
def probe_prototypes(
    candidates: CandidatesOpt,
    refs: Annotated[list[str], typer.Option(
        "--refs", "-r", help="Reference images of one class as CLASS=DIR, or DIR (class = folder name); repeat per "
        "class.")],
    dest: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fitted attributor (.npz).")],
    zoo: ZooOptionalOpt = None,
    preset: Annotated[str, typer.Option(
        help="Probe setting: SDS fast, reference-1 or reference-5; denoising loss loss-fast or loss-trajectory.")
    ] = "fast",
    classifier: Annotated[str, typer.Option(
        help="prototype (cosine), logreg (PCA + logistic regression), svm, or lowest-loss (training-free; loss-* "
        "presets).")] = "logreg",
    features: Annotated[str, typer.Option(
        help="concat (all candidates' signatures) or distances (to every candidate's class prototypes).")
    ] = "concat",
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Probe reference images of each class through every candidate and store the fitted attributor."""
    with fatal_errors():
        from modelprint.probes import probe_from_preset
        from modelprint.probes.workflow import fit_prototypes, load_candidates

        seed_all(seed)
        probe = probe_from_preset(preset, seed=seed)
        models = load_candidates(candidates, zoo=zoo)
        with calls_bar("probing references") as progress:
            attributor, summary = fit_prototypes(models, refs, probe, features=features, classifier=classifier,
                                                 seed=seed, progress=progress)
        attributor.save(dest)
        summary = {"attributor": str(dest), "preset": preset, "classifier": classifier, "features": features,
                   **summary}

        def show() -> None:
            counts = ", ".join(f"{c} ({n})" for c, n in summary["classes"].items())
            out.print(f"wrote {shown(dest)}: {len(summary['classes'])} classes {shown(f'[{counts}]')} through "
                      f"{len(models)} candidates, {summary['calls_per_image']} denoiser calls per image",
                      soft_wrap=True)

        finish_per_file(summary, as_json, json_out, show)


@probe_app.command("identify", cls=Command)
def probe_identify(
    paths: PathsArg,
    attributor: Annotated[Path, typer.Option(
        "--attributor", "-a", help="Attributor written by `modelprint probe prototypes`.")],
    candidates: CandidatesOpt,
    zoo: ZooOptionalOpt = None,
    top_k: TopKOpt = 3,
    seed: UnusedSeedOpt = None,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Which candidate made each image? Probes every image through every candidate (unknown origin)."""
    with fatal_errors():
        from modelprint.probes import ProbeAttributor
        from modelprint.probes.workflow import identify_files, load_candidates

        models = load_candidates(candidates, zoo=zoo)
        fitted = ProbeAttributor.load(attributor, models)
        with calls_bar("probing") as progress:
            res = identify_files(fitted, paths, top_k=top_k, progress=progress).to_dict()

        def show() -> None:
            table = make_table(f"probe identify ({shown(res['classifier'])}, {res['calls_per_image']} calls per "
                               "image)", "image", "prediction", f"top-{top_k}")
            for row in res["results"]:
                table.add_row(shown(Path(row["path"]).name), shown(row["prediction"]),
                              ", ".join(f"{shown(c['model'])} {c.get('probability', c['score']):.3f}"
                                        for c in row["top_k"]))
            out.print(table)

        finish_per_file(res, as_json, json_out, show)
