"""Commands on a gallery: ``enroll``, ``identify``, ``verify`` and ``gallery list|remove|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelprint.cli.app import (
    AddressOpt,
    Command,
    GalleryOpt,
    JsonFlag,
    JsonOutOpt,
    MaxPixelsOpt,
    MethodOpt,
    MethodParamOpt,
    PathsArg,
    RayFlag,
    TopKOpt,
    UnusedSeedOpt,
    WorkersOpt,
    emit_json,
    fatal_errors,
    make_table,
    make_typer,
    method_params,
    out,
    progress_bar,
    report_input_errors,
    report_warnings,
    shown,
)

gallery_app = make_typer("Inspect and edit a gallery.")


def enroll(
    paths: Annotated[list[Path], typer.Argument(help="Images or folders of images made by the model.", readable=False)],
    gallery: GalleryOpt,
    model: Annotated[str, typer.Option("--model", help="Name of the model the images come from.")],
    method: MethodOpt = None,
    method_param: MethodParamOpt = None,
    notes: Annotated[str, typer.Option(help="Free-text notes stored with the model.")] = "",
    max_pixels: MaxPixelsOpt = None,
    seed: UnusedSeedOpt = None,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
    workers: WorkersOpt = 1,
    ray: RayFlag = False,
    address: AddressOpt = None,
) -> None:
    """Enroll a model into a gallery from a few of its images."""
    with fatal_errors():
        from modelprint.api import collect_paths
        from modelprint.api import enroll as api_enroll
        from modelprint.executor import executor_for
        from modelprint.io import ImageLimits

        files = collect_paths(paths)  # scanned once: api_enroll takes the collected inputs as they are
        bar, task = progress_bar(len(files), f"enrolling {model}")
        with bar:
            rep = api_enroll(gallery, model, files, method=method, params=method_params(method_param), notes=notes,
                             limits=ImageLimits(max_pixels=max_pixels), progress=lambda n: bar.advance(task, n),
                             executor=executor_for(workers, ray, address))
        report_input_errors(rep.errors)
        report_warnings(rep.warnings)
        emit_json(rep.to_dict(), as_json, json_out)
        if not as_json:
            out.print(f"enrolled [bold]{rep.added}[/bold] image(s) as [bold]{shown(model)}[/bold] ({rep.skipped} "
                      f"already enrolled, {len(rep.errors)} failed) with {shown(rep.method.split('@')[0])}",
                      soft_wrap=True)
        if rep.errors:
            raise typer.Exit(1)


def identify(
    paths: PathsArg,
    gallery: GalleryOpt,
    top_k: TopKOpt = 3,
    threshold: Annotated[float | None, typer.Option(
        help="Similarity below which the answer is 'unknown' (default: the gallery's calibrated one).")] = None,
    method: MethodOpt = None,
    method_param: MethodParamOpt = None,
    max_pixels: MaxPixelsOpt = None,
    seed: UnusedSeedOpt = None,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
    workers: WorkersOpt = 1,
    ray: RayFlag = False,
    address: AddressOpt = None,
) -> None:
    """Attribute images to the enrolled models (1:N), answering 'unknown' below the threshold."""
    with fatal_errors():
        from modelprint.api import collect_paths
        from modelprint.api import identify as api_identify
        from modelprint.executor import executor_for
        from modelprint.gallery import Gallery
        from modelprint.io import ImageLimits

        files = collect_paths(paths)  # scanned once: api_identify takes the collected inputs as they are
        bar, task = progress_bar(len(files), "identifying")
        with Gallery(gallery, create=False) as g, bar:
            rep = api_identify(g, files, method=method, params=method_params(method_param), top_k=top_k,
                               threshold=threshold,
                               limits=ImageLimits(max_pixels=max_pixels), progress=lambda n: bar.advance(task, n),
                               executor=executor_for(workers, ray, address))
        report_input_errors(rep.errors)
        report_warnings(rep.warnings)
        d = rep.to_dict()
        emit_json(d, as_json, json_out)
        if not as_json and d["results"]:  # no usable image at all: the skipped lines are the whole answer (exit 1)
            table = make_table(f"identify ({shown(rep.method.split('@')[0])})", "image", "prediction", "similarity",
                               f"top-{top_k}")
            for row in d["results"]:
                cands = ", ".join(f"{shown(c['model'])} {c['similarity']:.3f}" for c in row["top_k"])
                pred = shown(row["prediction"])
                table.add_row(shown(Path(row["path"]).name), f"[red]{pred}[/red]" if row["prediction"] == "unknown"
                              else pred, f"{row['similarity']:.3f}", cands)
            out.print(table)
        if rep.errors:
            raise typer.Exit(1)


def verify(
    image_a: Annotated[Path, typer.Argument(help="First image.")],
    image_b: Annotated[Path, typer.Argument(help="Second image.")],
    gallery: Annotated[Path | None, typer.Option(
        "--gallery", "-g", help="Use this gallery's method and calibrated threshold.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Decision threshold on cosine similarity.")] = None,
    method: MethodOpt = None,
    method_param: MethodParamOpt = None,
    max_pixels: MaxPixelsOpt = None,
    seed: UnusedSeedOpt = None,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Did the same model make both images (1:1)? A missing or unusable image is a bad input (exit 1)."""
    with fatal_errors():
        from modelprint.api import verify_pair
        from modelprint.errors import ImageError

        try:
            res = verify_pair(image_a, image_b, gallery=gallery, method=method, threshold=threshold,
                              max_pixels=max_pixels, params=method_params(method_param))
        except ImageError as exc:
            report_input_errors([exc], "error")
            raise typer.Exit(1) from None
        emit_json(res, as_json, json_out)
        if not as_json:
            decision = {True: "[green]same model[/green]", False: "[red]different models[/red]",
                        None: "no decision (no threshold)"}
            out.print(f"similarity {res['similarity']:.4f} → {decision[res['same_model']]}"
                      + (f" (threshold {res['threshold']:.4f}, {shown(res['threshold_source'])})"
                         if res["threshold"] is not None else ""), soft_wrap=True)


@gallery_app.command("list", cls=Command)
def gallery_list(gallery: GalleryOpt, as_json: JsonFlag = False, json_out: JsonOutOpt = None) -> None:
    """List enrolled models."""
    with fatal_errors():
        from modelprint.api import Gallery

        with Gallery(gallery, create=False) as g:
            models = g.models()
            calibs = {f"{n}@{v}": g.calibration(n, v) for n, v in g.methods()}
            listing = g.listing()
        emit_json(listing, as_json, json_out)
        if as_json:
            return
        table = make_table(shown(gallery), "model", "images", "methods", "created", "notes")
        for i in models:
            table.add_row(shown(i.name), str(i.n_images), shown(", ".join(x.split("@")[0] for x in i.methods)),
                          shown(i.created), shown(i.notes))
        out.print(table)
        for k, c in calibs.items():
            if c is not None:
                out.print(f"{shown(k.split('@')[0])}: unknown below {c.unknown_threshold:.4f}, verify at "
                          f"{c.verify_threshold:.4f}", soft_wrap=True)


@gallery_app.command("remove", cls=Command)
def gallery_remove(gallery: GalleryOpt, model: Annotated[str, typer.Argument(help="Model to remove.")]) -> None:
    """Remove a model and its embeddings."""
    with fatal_errors():
        from modelprint.gallery import Gallery

        with Gallery(gallery, create=False) as g:
            g.remove_model(model)
        out.print(f"removed {shown(model)}", soft_wrap=True)


@gallery_app.command("export", cls=Command)
def gallery_export(
    gallery: GalleryOpt, dest: Annotated[Path, typer.Argument(help="Output .json or .npz file.")]
) -> None:
    """Export models, embeddings, prototypes and calibration."""
    with fatal_errors():
        from modelprint.gallery import Gallery

        with Gallery(gallery, create=False) as g:
            g.export(dest)
        out.print(f"wrote {shown(dest)}", soft_wrap=True)


@gallery_app.command("reindex", cls=Command)
def gallery_reindex(
    gallery: GalleryOpt,
    threshold: Annotated[int | None, typer.Option(
        min=0, help="Rows from which an index is built and used (default MODELPRINT_INDEX_THRESHOLD).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Build every index, even below the threshold.")] = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Rebuild the gallery's ANN indexes (prototypes and images) from its current content; prints JSON."""
    with fatal_errors():
        from modelprint.gallery import Gallery

        with Gallery(gallery, create=False, index_threshold=threshold) as g:
            built = g.reindex(force=force)
            status = [vars(s) for s in g.index_status()]
        emit_json({"reindexed": built, "indexes": status}, True, json_out)
