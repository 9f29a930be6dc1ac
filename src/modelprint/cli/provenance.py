"""``modelprint provenance fit|score|attribute-fit|attribute``: training member, the model's own generation or
external, and which of several diffusion models made an image, or none (:mod:`modelprint.provenance.workflow`).

Every command runs torch on ``MODELPRINT_THREADS`` threads (default: all cores). Gradient features are summed in
an order that depends on the thread count, so the same seed gives the same numbers on the same thread count."""

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
from modelprint.cli.probe import ZooOptionalOpt

provenance_app = make_typer("Provenance through a diffusion model: training member, its own generation, or external; "
                            "and which of several models made an image, or none.")

ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="The diffusion model: a zoo model name (with --zoo), a diffusers folder such as a saved "
    "DDPMPipeline, or a UNet .safetensors/.pth with config.json beside it.")]
ModelsOpt = Annotated[list[str], typer.Option(
    "--model", "-m", help="Candidate diffusion model as NAME=SOURCE (zoo model name, diffusers folder, or UNet "
    "checkpoint); repeat for each candidate.")]
SampleOpt = Annotated[int | None, typer.Option(
    "--sample", min=1, help="Draw this many images from the model (DDIM, 50 steps, from --seed) as its generations.")]
ExternalOpt = Annotated[Path, typer.Option(
    "--external", "-e", help="Folder of external images (made by none of the models, never trained on).")]


@provenance_app.command("fit", cls=Command)
def provenance_fit(
    model: ModelOpt,
    members: Annotated[Path, typer.Option("--members", help="Folder of images the model was trained on.")],
    external: ExternalOpt,
    dest: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fitted provenance (.npz).")],
    generated: Annotated[Path | None, typer.Option(
        "--generated", help="Folder of images the model generated (or use --sample N).")] = None,
    sample: SampleOpt = None,
    zoo: ZooOptionalOpt = None,
    timesteps: Annotated[list[int] | None, typer.Option(
        "--timestep", "-t", help="A timestep of the trajectory features; repeat (default: 10 from 0.5% to 90% of "
        "the schedule).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Noises per timestep for the denoising loss.")] = 4,
    classifier: Annotated[str, typer.Option(
        help="linear (calibrated logistic regression) or boosted (gradient boosting).")] = "linear",
    target_accuracy: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Answer 'uncertain' below the confidence at which validation images are this "
        "accurate.")] = 0.95,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Fit member / generated / external provenance for one model from folders of each."""
    with fatal_errors():
        from modelprint.provenance import Provenance, ProvenanceClassifier, TrajectoryExtractor
        from modelprint.provenance.workflow import fit_provenance, load_model
        from modelprint.seeding import configure_torch_threads

        configure_torch_threads()
        seed_all(seed)
        denoiser = load_model(model, zoo=zoo)
        provenance = Provenance(TrajectoryExtractor(timesteps=tuple(timesteps) if timesteps else None,
                                                    repeats=repeats, seed=seed),
                                ProvenanceClassifier(classifier, target_accuracy=target_accuracy, seed=seed),  # type: ignore[arg-type]
                                seed=seed)
        with calls_bar("extracting trajectories") as progress:
            fit = fit_provenance(provenance, denoiser, members, external, generated, sample, progress)
        provenance.save(dest)
        res = {"provenance": str(dest), **fit.to_dict()}

        def show() -> None:
            counts = ", ".join(f"{c} ({n})" for c, n in res["counts"].items())
            out.print(f"wrote {shown(dest)}: provenance of {shown(res['denoiser'])} from {shown(counts)}, "
                      f"{res['calls_per_image']} denoiser calls and {res['backwards_per_image']} backward passes "
                      f"per image; uncertain below {res['confidence_threshold']:.3f}", soft_wrap=True)

        finish_per_file(res, as_json, json_out, show)


@provenance_app.command("score", cls=Command)
def provenance_score(
    paths: PathsArg,
    model: ModelOpt,
    provenance: Annotated[Path, typer.Option(
        "--provenance", "-p", help="Provenance written by `modelprint provenance fit` for this model.")],
    zoo: ZooOptionalOpt = None,
    seed: UnusedSeedOpt = None,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Member, generated, external or uncertain, with the probability of each class, for every image."""
    with fatal_errors():
        from modelprint.provenance import Provenance
        from modelprint.provenance.workflow import load_model, score_files
        from modelprint.seeding import configure_torch_threads

        configure_torch_threads()
        fitted = Provenance.load(provenance)
        denoiser = load_model(model, zoo=zoo)
        with calls_bar("scoring") as progress:
            res = score_files(fitted, denoiser, paths, progress).to_dict()

        def show() -> None:
            table = make_table(f"provenance through {shown(res['model'])} ({res['calls_per_image']} calls per image)",
                               "image", "decision", *res["classes"])
            for row in res["results"]:
                table.add_row(shown(Path(row["path"]).name), shown(row["decision"]),
                              *(f"{row['probabilities'][c]:.3f}" for c in res["classes"]))
            out.print(table)

        finish_per_file(res, as_json, json_out, show)


def describe_rule(res: dict) -> str:
    """One phrase for a fitted attribution rule's settings (``rule`` and its parameters)."""
    if res["rule"] == "threshold":
        return f"threshold ({res['normalisation']} losses accepting {res['accept']:.0%} of own samples)"
    return f"learned ({res['kind']}, C = {res['C']:g}, none below probability {res['threshold']:.2f})"


@provenance_app.command("attribute-fit", cls=Command)
def provenance_attribute_fit(
    models: ModelsOpt,
    external: ExternalOpt,
    dest: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fitted attributor (.npz).")],
    samples: Annotated[list[str] | None, typer.Option(
        "--samples", "-s", help="A candidate's own generated images as NAME=DIR; repeat per candidate (or use "
        "--sample N).")] = None,
    sample: SampleOpt = None,
    zoo: ZooOptionalOpt = None,
    preset: Annotated[str, typer.Option(
        help="Denoising-loss setting: loss-fast or loss-trajectory.")] = "loss-trajectory",
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Fit attribution with reject: per-candidate loss thresholds or a rule learned from the trajectories (own
    samples against external images), the rule and its settings chosen on held-out own samples and external
    images."""
    with fatal_errors():
        from modelprint.probes import DenoisingLossProbe
        from modelprint.probes.workflow import load_candidates, parse_named
        from modelprint.provenance.workflow import fit_attribution
        from modelprint.seeding import configure_torch_threads

        configure_torch_threads()
        seed_all(seed)
        probe = DenoisingLossProbe.preset(preset, seed=seed)  # an unknown or non-loss preset: one-line ProbeError
        folders = dict(parse_named(spec, "samples folder") for spec in samples or [])
        candidates = load_candidates(models, zoo=zoo)
        with calls_bar("probing") as progress:
            fit = fit_attribution(candidates, folders, external, probe, sample, seed, progress=progress)
        fit.model.save(dest)
        res = {"attributor": str(dest), "preset": preset, **fit.to_dict()}

        def show() -> None:
            counts = ", ".join(f"{c} ({n})" for c, n in res["counts"].items())
            out.print(f"wrote {shown(dest)}: {len(candidates)} candidates from {shown(counts)}, "
                      f"{shown(describe_rule(res))} rule, "
                      f"{res['calls_per_image']} denoiser calls per image", soft_wrap=True)

        finish_per_file(res, as_json, json_out, show)


@provenance_app.command("attribute", cls=Command)
def provenance_attribute(
    paths: PathsArg,
    attributor: Annotated[Path, typer.Option(
        "--attributor", "-a", help="Attributor written by `modelprint provenance attribute-fit`.")],
    models: ModelsOpt,
    zoo: ZooOptionalOpt = None,
    seed: UnusedSeedOpt = None,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Which candidate made each image, or none of them."""
    with fatal_errors():
        from modelprint.probes.workflow import load_candidates
        from modelprint.provenance.workflow import AttributionModel, attribute_files
        from modelprint.seeding import configure_torch_threads

        configure_torch_threads()
        fitted = AttributionModel.load(attributor)
        candidates = load_candidates(models, zoo=zoo)
        with calls_bar("probing") as progress:
            res = attribute_files(fitted, candidates, paths, progress).to_dict()

        def show() -> None:
            names = sorted(res["candidates"])
            table = make_table(f"provenance attribute ({res['calls_per_image']} calls per image; margin ≥ 0: "
                               "accepted)", "image", "prediction", *map(shown, names))
            for row in res["results"]:
                table.add_row(shown(Path(row["path"]).name), shown(row["prediction"]),
                              *(f"{row['margins'][n]:+.3f}" for n in names))
            out.print(table)

        finish_per_file(res, as_json, json_out, show)
