"""``modelprint evaluate``: a method on a labelled dataset, with its summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelprint.cli.app import (
    JsonFlag,
    JsonOutOpt,
    MaxPixelsOpt,
    MethodParamOpt,
    Phases,
    SeedOpt,
    emit_json,
    fatal_errors,
    make_table,
    method_params,
    out,
    report_input_errors,
    seed_all,
    shown,
)

_SUMMARY_METRICS = (("identification", "accuracy"), ("identification", "macro_f1"), ("verification", "auc"),
                   ("verification", "eer"), ("verification", "accuracy"), ("open_set", "auroc"),
                   ("open_set", "oscr"), ("clustering", "silhouette"))


def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Folder with one sub-folder per model, or a CSV/JSONL index.")],
    method: Annotated[str | None, typer.Option(
        "--method", "-m", help="Fingerprint method: learned (default), spectral, fused, a DIRE view, or any other "
        "`modelprint list` shows.")] = None,
    method_param: MethodParamOpt = None,
    support: Annotated[int, typer.Option(min=1, help="Support images per model (1:N protocol).")] = 5,
    pairs: Annotated[int, typer.Option(min=2, help="Verification pairs (half same, half different).")] = 2000,
    min_per_class: Annotated[int | None, typer.Option(
        help="Drop models with fewer images (default support + 3).")] = None,
    query_dataset: Annotated[Path | None, typer.Option(
        "--query-dataset", help="Queries from here (e.g. JPEG copies): for each image of DATASET, the file with "
                                "its model folder and file stem, any extension; support stays DATASET's.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")] = None,
    max_pixels: MaxPixelsOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Evaluate a method on a labelled dataset: identification, verification, open-set, clustering.

    Models left out for too few images are named on stderr, one line each (off a terminal, so is every phase)."""
    with fatal_errors():
        from modelprint.api import evaluate_dataset

        seed_all(seed)
        progress = Phases("evaluate")
        with progress.bar:
            res = evaluate_dataset(dataset, method, support=support, pairs=pairs, seed=seed,
                                   min_per_class=min_per_class, max_pixels=max_pixels, report=report,
                                   progress=progress.advance, phase=progress.phase,
                                   params=method_params(method_param), query_dataset=query_dataset)
        progress.done()
        report_input_errors(res.errors)
        report_input_errors((f"{name}: {why['reason']}" for name, why in res.result.dropped_classes.items()),
                            "dropped")
        d = res.result.to_dict()
        emit_json(d, as_json, json_out)
        if not as_json:
            _print_summary(d)
            if report:
                out.print(f"report: {shown(report)}", soft_wrap=True)
        if res.errors:
            raise typer.Exit(1)


def _print_summary(d: dict[str, Any]) -> None:
    def fmt(section: str, key: str) -> str:
        sec = d.get(section) or {}
        v, ci = sec.get(key), sec.get(f"{key}_ci")
        if v is None:
            return "—"
        return f"{v:.3f}" + (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")

    table = make_table(f"{shown(d.get('method', '').split('@')[0])}: {d['n_models']} models, {d['n_images']} "
                       f"images, seed {d.get('seed')}", "metric", escape("value  [95% CI]"))
    for section, key in _SUMMARY_METRICS:
        table.add_row(f"{section}.{key}", fmt(section, key))
    out.print(table)
