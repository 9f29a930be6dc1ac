"""``modelprint anonymize``: perturb images within an L∞ budget so a gallery no longer attributes them to their
source model (or attributes them to a chosen one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelprint.cli.app import (
    GalleryOpt,
    JsonFlag,
    JsonOutOpt,
    MaxPixelsOpt,
    MethodOpt,
    SeedOpt,
    emit_json,
    fatal_errors,
    make_table,
    out,
    progress_bar,
    report_input_errors,
    shown,
)


def anonymize(
    paths: Annotated[list[Path], typer.Argument(help="Images or folders to anonymize.", readable=False)],
    gallery: GalleryOpt,
    dest: Annotated[Path, typer.Option("--out", help="Folder for the anonymized PNGs (<input stem>.png).")],
    epsilon: Annotated[str, typer.Option(help="L∞ budget in pixel units, e.g. 4/255 or 0.0157.")] = "4/255",
    target: Annotated[str | None, typer.Option(
        help="Be attributed to this gallery model (targeted); default: to anything but the source.")] = None,
    counterfactual: Annotated[bool, typer.Option(
        "--counterfactual", help="Aim at the counterfactual fingerprint: the source's component swapped for the "
        "target's (--target, default the runner-up).")] = False,
    source: Annotated[str | None, typer.Option(
        help="The model to hide (default: each image's top-1 in the gallery).")] = None,
    steps: Annotated[int, typer.Option(min=0, help="At most this many PGD steps per image.")] = 50,
    step_size: Annotated[str | None, typer.Option(
        help="Size of the first steps (default: epsilon/4), e.g. 1/255.")] = None,
    patience: Annotated[int, typer.Option(min=0, help="Steps without progress before the step size halves "
                                                      "(at most 3 times; 0: a fixed step).")] = 3,
    margin: Annotated[float, typer.Option(min=0.0, help="Cosine margin by which the goal must hold.")] = 0.01,
    random_start: Annotated[bool, typer.Option(
        "--random-start", help="Start from a random point of the ε ball (drawn from --seed).")] = False,
    seed: SeedOpt = 0,
    method: MethodOpt = None,
    threshold: Annotated[float | None, typer.Option(
        help="Similarity below which the answer is 'unknown' (default: the gallery's calibrated one).")] = None,
    max_pixels: MaxPixelsOpt = None,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Perturb images within ε (L∞) until the gallery no longer names their source (or names --target); each is
    written to OUT/<input stem>.png, the inputs never."""
    with fatal_errors():
        from modelprint.api import collect_paths, gallery_method
        from modelprint.causal.anonymize import Anonymizer, parse_epsilon
        from modelprint.causal.anonymize_files import anonymize_files
        from modelprint.gallery import Gallery
        from modelprint.io import ImageLimits

        mode = "counterfactual" if counterfactual else "targeted" if target is not None else "untargeted"
        attacker = Anonymizer(epsilon=parse_epsilon(epsilon), steps=steps,
                              step_size=None if step_size is None else parse_epsilon(step_size), patience=patience,
                              mode=mode, target=target, margin=margin, random_start=random_start, seed=seed)
        files = collect_paths(paths)
        bar, task = progress_bar(len(files), "anonymizing")
        with Gallery(gallery, create=False) as g:
            m = gallery_method(g, method)
            with bar:
                rep = anonymize_files(files, g, m, dest, attacker, source=source, threshold=threshold,
                                      limits=ImageLimits(max_pixels=max_pixels),
                                      progress=lambda n: bar.advance(task, n))
        report_input_errors(rep.errors)
        d = rep.to_dict()
        emit_json(d, as_json, json_out)
        if not as_json and d["results"]:
            table = make_table(f"anonymize ({shown(m.name)}, {mode}, ε = {attacker.epsilon * 255:.3g}/255)",
                               "image", "before", "after", "success", "PSNR dB", "SSIM", "L∞ ×255", "steps")
            for row in d["results"]:
                ok = "[green]yes[/green]" if row["success"] else "[red]no[/red]"
                psnr = "∞" if row["psnr"] is None else f"{row['psnr']:.1f}"
                table.add_row(shown(Path(row["path"]).name), shown(row["before"]["prediction"]),
                              shown(row["after"]["prediction"]), ok, psnr, f"{row['ssim']:.4f}",
                              f"{row['linf_255']:.3g}", str(row["steps"]))
            out.print(table)
            s = d["summary"]
            out.print(f"{s['succeeded']}/{s['images']} succeeded; wrote {shown(dest)}", soft_wrap=True)
        if rep.errors:
            raise typer.Exit(1)
