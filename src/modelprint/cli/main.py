"""The ``modelprint`` command line: a thin layer over :mod:`modelprint.api`.

Exit codes: 0 all inputs processed; 1 some inputs failed (each named on stderr in one line, the rest processed;
a missing or unreadable input file is such a failure); 2 the command could not run (bad arguments, missing
gallery or model, incompatible checkpoint).

Output: ``--json`` prints the result as JSON on stdout instead of the table; ``--json-out PATH`` writes the same
JSON to a file (atomically). Every name that comes from the user or the disk (paths, model names) is printed
through :func:`_shown`, so it can neither be read as Rich markup nor put a raw control character on the terminal.
"""

from __future__ import annotations

import json
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# ------------------------------------------------------------------------------ output helpers, used by every command

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED_CONTROLS = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNLIMITED_WIDTH = 1 << 15


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if ch in _NAMED_CONTROLS:
        return _NAMED_CONTROLS[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 file name, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _shown(value: object) -> str:
    """``value`` as Rich markup that prints literally, on one line: markup escaped (``photo[v2].png`` stays
    itself), and control characters, line separators, bidi overrides and undecodable file-name bytes written as
    ``\\n``, ``\\t``, ``\\x1b``, ``\\u202e``, ``\\xff``."""
    return escape(_CONTROL.sub(_visible, str(value)))


def _console(stderr: bool = False) -> Console:
    """A console that never expands ``:emoji:`` codes and, off a terminal, never wraps or cuts (pipes get it all)."""
    console = Console(stderr=stderr, emoji=False)
    if not console.is_terminal:
        console.width = _UNLIMITED_WIDTH
    return console


out = _console()
err = _console(stderr=True)


def _table(title: str, *columns: str) -> Table:
    """A table whose cells fold rather than cut on a narrow terminal; ``title`` is markup (pass names _shown)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _json_text(payload: Any) -> str:
    return json.dumps(payload, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n"


def _emit_json(payload: Any, as_json: bool = True, json_out: Path | None = None) -> None:
    """The result as JSON: to ``json_out`` (atomically) when given, and on stdout when ``as_json``."""
    if json_out is not None:
        from modelprint.atomic import write_text

        write_text(json_out, _json_text(payload))
    if as_json:
        sys.stdout.write(_json_text(payload))


# ------------------------------------------------------------------------------------------ help without artefacts


def _plain_help(params: list[Any]) -> list[Any]:
    """Drop Typer's Python-type labels where they mislead: no ``<bool>`` after a flag, ``<path>`` for a list."""
    for p in params:
        if isinstance(p, TyperOption) and p.is_flag:
            p.metavar = ""
        elif isinstance(p, TyperOption) and p.multiple and p.metavar is None:
            p.metavar = p.display_type(None).replace("list[", "").replace("]", "").lower()
        elif isinstance(p, TyperArgument) and p.nargs != 1:
            label = p.display_type(None).replace("list[", "").replace("]", "").lower()
            p.display_type_rich = lambda ctx, label=label: label  # the name column already says "paths..."
    return params


class _Command(TyperCommand):
    """A command whose help reads ``PATHS...`` (not ``{paths}...``) and shows no Python-type artefacts."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if isinstance(p, TyperArgument):
                name = (p.metavar or p.name or "").upper() + ("..." if p.nargs != 1 else "")
                pieces.append(name if p.required else f"[{name}]")
        return pieces


class _Group(TyperGroup):
    """A command group with the same help conventions as :class:`_Command`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help(super().get_params(ctx))


def _typer(help: str) -> typer.Typer:
    return typer.Typer(cls=_Group, help=help, no_args_is_help=True, pretty_exceptions_enable=False,
                       add_completion=False)


app = _typer("Which generative model made this image? Enroll models from a few images, then identify and verify.")
gallery_app = _typer("Inspect and edit a gallery.")
denoiser_app = _typer("modelprint's own residual denoiser.")
zoo_app = _typer("modelprint's own zoo of trained generative models (test beds for attribution).")
probe_app = _typer("White-box attribution: probe images through candidate diffusion models (Spectral Denoising "
                   "Signatures).")
app.add_typer(gallery_app, name="gallery")
app.add_typer(denoiser_app, name="denoiser")
app.add_typer(zoo_app, name="zoo")
app.add_typer(probe_app, name="probe")


def _print_version(value: bool) -> None:
    if value:
        from modelprint import __version__

        sys.stdout.write(f"modelprint {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print modelprint's version and exit.")] = False,
) -> None:
    pass


SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same numbers.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (instead of the human-readable output).")]
JsonOutOpt = Annotated[Optional[Path], typer.Option("--json-out", help="Also write the result as JSON to this file.")]
GalleryOpt = Annotated[Path, typer.Option("--gallery", "-g", help="Gallery file (SQLite).")]
MethodOpt = Annotated[Optional[str], typer.Option("--method", "-m", help="Fingerprint method: learned, spectral, fused (default: the gallery's, else learned).")]
MaxPixelsOpt = Annotated[Optional[int], typer.Option("--max-pixels", help="Refuse images with more pixels (default 64M or MODELPRINT_MAX_PIXELS).")]


@contextmanager
def _fatal_errors():
    """Turn modelprint's own errors into one line on stderr and exit code 2."""
    from modelprint.errors import ModelprintError

    try:
        yield
    except ModelprintError as exc:
        err.print(f"[red]error:[/red] {_shown(exc)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _seed(seed: int) -> None:
    from modelprint.seeding import seed_everything

    seed_everything(seed)


def _report_input_errors(errors: Any, label: str = "skipped") -> None:
    """One line on stderr per bad input (``errors`` are ImageErrors or messages naming the file)."""
    for e in errors:
        err.print(f"[yellow]{label}:[/yellow] {_shown(e)}", highlight=False, soft_wrap=True)


def _report_warnings(warnings: Any) -> None:
    """One line on stderr per warning (they may name models and files)."""
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {_shown(w)}", highlight=False, soft_wrap=True)


def _new_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def _progress(total: int | None, label: str) -> tuple[Progress, Any]:
    """A progress bar on stderr (shown on a terminal only) and its task; ``label`` may hold user names."""
    bar = _new_bar()
    return bar, bar.add_task(_shown(label), total=total)


class _Phases:
    """Progress of a command that runs in phases: a bar per phase on a terminal; elsewhere one plain stderr line
    as each phase starts, and the total time at the end."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.bar = _new_bar()
        self.task: Any = None
        self.start = time.perf_counter()

    def phase(self, label: str, steps: int) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(_shown(label), total=steps or None)
        if not err.is_terminal:
            err.print(f"{self.command}: {_shown(label)}", highlight=False, soft_wrap=True)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)

    def done(self) -> None:
        if not err.is_terminal:
            err.print(f"{self.command}: done in {time.perf_counter() - self.start:.1f} s", highlight=False)


@app.command(cls=_Command)
def enroll(
    paths: Annotated[list[Path], typer.Argument(help="Images or folders of images made by the model.", readable=False)],
    gallery: GalleryOpt,
    model: Annotated[str, typer.Option("--model", help="Name of the model the images come from.")],
    method: MethodOpt = None,
    notes: Annotated[str, typer.Option(help="Free-text notes stored with the model.")] = "",
    max_pixels: MaxPixelsOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Enroll a model into a gallery from a few of its images."""
    with _fatal_errors():
        from modelprint.api import collect_paths, enroll as api_enroll
        from modelprint.io import ImageLimits

        _seed(seed)
        files = collect_paths(paths)
        bar, task = _progress(len(files), f"enrolling {model}")
        with bar:
            rep = api_enroll(gallery, model, files, method=method, notes=notes, limits=ImageLimits(max_pixels=max_pixels),
                             progress=lambda n: bar.advance(task, n))
        _report_input_errors(rep.errors)
        _report_warnings(rep.warnings)
        _emit_json({"model": rep.model, "method": rep.method, "added": rep.added, "skipped_duplicates": rep.skipped,
                    "failed": [str(e) for e in rep.errors], "unknown_threshold": rep.unknown_threshold,
                    "threshold_source": rep.threshold_source, "also_enrolled_as": rep.also_enrolled_as,
                    "warnings": rep.warnings},
                   as_json, json_out)
        if not as_json:
            out.print(f"enrolled [bold]{rep.added}[/bold] image(s) as [bold]{_shown(model)}[/bold] ({rep.skipped} "
                      f"already enrolled, {len(rep.errors)} failed) with {_shown(rep.method.split('@')[0])}",
                      soft_wrap=True)
        if rep.errors:
            raise typer.Exit(1)


@app.command(cls=_Command)
def identify(
    paths: Annotated[list[Path], typer.Argument(help="Images or folders to attribute.", readable=False)],
    gallery: GalleryOpt,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many candidates to list.")] = 3,
    threshold: Annotated[Optional[float], typer.Option(help="Similarity below which the answer is 'unknown' (default: the gallery's calibrated one).")] = None,
    method: MethodOpt = None,
    max_pixels: MaxPixelsOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Attribute images to the enrolled models (1:N), answering 'unknown' below the threshold."""
    with _fatal_errors():
        from modelprint.api import collect_paths, identify as api_identify
        from modelprint.gallery import Gallery
        from modelprint.io import ImageLimits

        _seed(seed)
        files = collect_paths(paths)
        bar, task = _progress(len(files), "identifying")
        with Gallery(gallery, create=False) as g, bar:
            rep = api_identify(g, files, method=method, top_k=top_k, threshold=threshold,
                               limits=ImageLimits(max_pixels=max_pixels), progress=lambda n: bar.advance(task, n))
        _report_input_errors(rep.errors)
        _report_warnings(rep.warnings)
        d = rep.to_dict()
        _emit_json(d, as_json, json_out)
        if not as_json and d["results"]:  # no usable image at all: the skipped lines are the whole answer (exit 1)
            table = _table(f"identify ({_shown(rep.method.split('@')[0])})", "image", "prediction", "similarity",
                           f"top-{top_k}")
            for row in d["results"]:
                cands = ", ".join(f"{_shown(c['model'])} {c['similarity']:.3f}" for c in row["top_k"])
                pred = _shown(row["prediction"])
                table.add_row(_shown(Path(row["path"]).name), f"[red]{pred}[/red]" if row["prediction"] == "unknown"
                              else pred, f"{row['similarity']:.3f}", cands)
            out.print(table)
        if rep.errors:
            raise typer.Exit(1)


@app.command(cls=_Command)
def verify(
    image_a: Annotated[Path, typer.Argument(help="First image.")],
    image_b: Annotated[Path, typer.Argument(help="Second image.")],
    gallery: Annotated[Optional[Path], typer.Option("--gallery", "-g", help="Use this gallery's method and calibrated threshold.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Decision threshold on cosine similarity.")] = None,
    method: MethodOpt = None,
    max_pixels: MaxPixelsOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Did the same model make both images (1:1)? A missing or unusable image is a bad input (exit 1)."""
    with _fatal_errors():
        from modelprint.api import verify_pair
        from modelprint.errors import ImageError

        _seed(seed)
        try:
            res = verify_pair(image_a, image_b, gallery=gallery, method=method, threshold=threshold,
                              max_pixels=max_pixels)
        except ImageError as exc:
            _report_input_errors([exc], "error")
            raise typer.Exit(1) from None
        _emit_json(res, as_json, json_out)
        if not as_json:
            decision = {True: "[green]same model[/green]", False: "[red]different models[/red]", None: "no decision (no threshold)"}
            out.print(f"similarity {res['similarity']:.4f} → {decision[res['same_model']]}"
                      + (f" (threshold {res['threshold']:.4f}, {_shown(res['threshold_source'])})"
                         if res["threshold"] is not None else ""), soft_wrap=True)


@gallery_app.command("list", cls=_Command)
def gallery_list(gallery: GalleryOpt, as_json: JsonFlag = False, json_out: JsonOutOpt = None) -> None:
    """List enrolled models."""
    with _fatal_errors():
        from modelprint.gallery import Gallery

        with Gallery(gallery, create=False) as g:
            models = g.models()
            calibs = {f"{n}@{v}": g.calibration(n, v) for n, v in g.methods()}
        _emit_json({
            "models": [{"name": i.name, "notes": i.notes, "created": i.created, "n_embeddings": i.n_embeddings,
                        "n_images": i.n_images, "methods": list(i.methods)} for i in models],
            "calibration": {k: (None if c is None else {"unknown_threshold": c.unknown_threshold,
                                                        "verify_threshold": c.verify_threshold, "rule": c.rule})
                            for k, c in calibs.items()},
        }, as_json, json_out)
        if as_json:
            return
        table = _table(_shown(gallery), "model", "images", "methods", "created", "notes")
        for i in models:
            table.add_row(_shown(i.name), str(i.n_images), _shown(", ".join(x.split("@")[0] for x in i.methods)),
                          _shown(i.created), _shown(i.notes))
        out.print(table)
        for k, c in calibs.items():
            if c is not None:
                out.print(f"{_shown(k.split('@')[0])}: unknown below {c.unknown_threshold:.4f}, verify at "
                          f"{c.verify_threshold:.4f}", soft_wrap=True)


@gallery_app.command("remove", cls=_Command)
def gallery_remove(gallery: GalleryOpt, model: Annotated[str, typer.Argument(help="Model to remove.")]) -> None:
    """Remove a model and its embeddings."""
    with _fatal_errors():
        from modelprint.gallery import Gallery

        with Gallery(gallery, create=False) as g:
            g.remove_model(model)
        out.print(f"removed {_shown(model)}", soft_wrap=True)


@gallery_app.command("export", cls=_Command)
def gallery_export(gallery: GalleryOpt, dest: Annotated[Path, typer.Argument(help="Output .json or .npz file.")]) -> None:
    """Export models, embeddings, prototypes and calibration."""
    with _fatal_errors():
        from modelprint.gallery import Gallery

        with Gallery(gallery, create=False) as g:
            g.export(dest)
        out.print(f"wrote {_shown(dest)}", soft_wrap=True)


@app.command(cls=_Command)
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Folder with one sub-folder per model, or a CSV/JSONL index.")],
    method: Annotated[Optional[str], typer.Option("--method", "-m", help="Fingerprint method: learned (default), spectral or fused.")] = None,
    support: Annotated[int, typer.Option(min=1, help="Support images per model (1:N protocol).")] = 5,
    pairs: Annotated[int, typer.Option(min=2, help="Verification pairs (half same, half different).")] = 2000,
    min_per_class: Annotated[Optional[int], typer.Option(help="Drop models with fewer images (default support + 3).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write a self-contained HTML report here.")] = None,
    max_pixels: MaxPixelsOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Evaluate a method on a labelled dataset: identification, verification, open-set, clustering.

    Models left out for too few images are named on stderr, one line each (off a terminal, so is every phase)."""
    with _fatal_errors():
        from modelprint.api import evaluate_dataset

        _seed(seed)
        progress = _Phases("evaluate")
        with progress.bar:
            res = evaluate_dataset(dataset, method, support=support, pairs=pairs, seed=seed,
                                   min_per_class=min_per_class, max_pixels=max_pixels, report=report,
                                   progress=progress.advance, phase=progress.phase)
        progress.done()
        _report_input_errors(res.errors)
        _report_input_errors((f"{name}: {why['reason']}" for name, why in res.result.dropped_classes.items()),
                             "dropped")
        d = res.result.to_dict()
        _emit_json(d, as_json, json_out)
        if not as_json:
            _print_summary(d)
            if report:
                out.print(f"report: {_shown(report)}", soft_wrap=True)
        if res.errors:
            raise typer.Exit(1)


def _print_summary(d: dict) -> None:
    def fmt(section: str, key: str) -> str:
        sec = d.get(section) or {}
        v, ci = sec.get(key), sec.get(f"{key}_ci")
        if v is None:
            return "—"
        return f"{v:.3f}" + (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")

    table = _table(f"{_shown(d.get('method', '').split('@')[0])}: {d['n_models']} models, {d['n_images']} images, "
                   f"seed {d.get('seed')}",
                   "metric", escape("value  [95% CI]"))
    for section, key in (("identification", "accuracy"), ("identification", "macro_f1"), ("verification", "auc"),
                         ("verification", "eer"), ("verification", "accuracy"), ("open_set", "auroc"),
                         ("open_set", "oscr"), ("clustering", "silhouette")):
        table.add_row(f"{section}.{key}", fmt(section, key))
    out.print(table)


@denoiser_app.command("train", cls=_Command)
def denoiser_train(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the .safetensors weights (a .json sidecar goes beside).")],
    steps: Annotated[int, typer.Option(min=1)] = 1500,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    crop: Annotated[int, typer.Option(min=16)] = 48,
    sigma: Annotated[float, typer.Option(help="Noise σ on the 0–255 scale.")] = 1.0,
    lr: Annotated[float, typer.Option()] = 1e-3,
    depth: Annotated[int, typer.Option(min=3)] = 10,
    width: Annotated[int, typer.Option(min=4)] = 32,
    pool_folder: Annotated[Optional[list[Path]], typer.Option("--pool-folder", help="Add your own photo folders to the real-image pool.")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Train modelprint's DnCNN residual denoiser on the real-image pool."""
    with _fatal_errors():
        from modelprint.io import RealPool
        from modelprint.residuals.training import train_denoiser

        _seed(seed)
        bar, task = _progress(steps, "training denoiser")
        with bar:
            metrics = train_denoiser(out_path, steps=steps, batch_size=batch_size, crop=crop, sigma=sigma, lr=lr,
                                     seed=seed, depth=depth, width=width, pool=RealPool(folders=pool_folder or []),
                                     command="modelprint " + " ".join(sys.argv[1:]),
                                     progress=lambda step, total, loss: bar.update(task, completed=step))
        _emit_json(metrics)


@app.command(cls=_Command)
def synthesize(
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Pool folder (weights + manifest.jsonl); resumes if it exists.")] = None,
    archs: Annotated[str, typer.Option(help="'paper' (288), 'extended', or comma-separated architecture ids.")] = "paper",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per architecture.")] = 2,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (1 torch thread each).")] = 1,
    crop: Annotated[int, typer.Option(min=8, help="Training crop size.")] = 32,
    max_steps: Annotated[int, typer.Option(min=1, help="Step budget per model when the residual criterion is not reached.")] = 200,
    list_only: Annotated[bool, typer.Option("--list", help="List the architectures and exit.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="First seed: models use seeds seed … seed+seeds-1.")] = 0,
) -> None:
    """Train a pool of synthetic generators (Model Synthesis) to reconstruct real photos."""
    with _fatal_errors():
        from modelprint.synthesis.pool import synthesize_pool
        from modelprint.synthesis.space import list_architectures

        names = list_architectures(archs) if archs in ("paper", "extended", "all") else archs.split(",")
        if list_only:
            for name in names:
                out.print(_shown(name), highlight=False, soft_wrap=True)
            err.print(f"{len(names)} architectures")
            return
        if out_dir is None:
            raise typer.BadParameter("--out is required unless --list is given")
        total = len(names) * seeds
        bar, task = _progress(total, "synthesizing")
        with bar:
            summary = synthesize_pool(out_dir, archs if archs in ("paper", "extended", "all") else names,
                                      list(range(seed, seed + seeds)), crop=crop, max_steps=max_steps, workers=workers,
                                      progress=lambda done, tot, rec: bar.update(task, completed=done, total=tot))
        _emit_json({"out": str(out_dir), "models": summary.total, "trained": summary.trained,
                    "already_done": summary.skipped, "seconds": summary.seconds})


@app.command(cls=_Command)
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
    with _fatal_errors():
        from modelprint.synthesis.fidelity import fidelity as run_fidelity

        _seed(seed)
        result = run_fidelity(pool, real, residual=residual, n_images=n_images, seed=seed)
        _emit_json(result, as_json, json_out)
        if as_json:
            return
        table = _table(f"FFD to {_shown(real.name)} ({_shown(residual)} residual)", "pool", "models", "FFD")
        for row in result.get("ablation", []):
            table.add_row(_shown(row["name"]), str(row["n_models"]), f"{row['ffd']:.3f}")
        out.print(table if result.get("ablation") else result)


@app.command(cls=_Command)
def train(
    pool: Annotated[Path, typer.Option("--pool", help="Synthetic pool folder written by `modelprint synthesize`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (weights, checkpoint, cached spectra, history).")],
    steps: Annotated[int, typer.Option(min=1)] = 3000,
    per_model: Annotated[int, typer.Option(min=8, help="Fingerprinted images rendered per synthetic model.")] = 32,
    val_fraction: Annotated[float, typer.Option(help="Share of architectures held out for model selection.")] = 0.1,
    widths: Annotated[str, typer.Option(help="ResNet stage widths, comma-separated.")] = "32,64,128,256",
    blocks: Annotated[int, typer.Option(min=1, help="Residual blocks per stage.")] = 1,
    embed_dim: Annotated[int, typer.Option()] = 256,
    p: Annotated[int, typer.Option("--P", help="Models per batch.")] = 32,
    k: Annotated[int, typer.Option("--K", help="Images per model per batch.")] = 4,
    region: Annotated[int, typer.Option(min=32, help="Region (sliding window) side whose Welch spectrum is embedded.")] = 128,
    lr: Annotated[float, typer.Option()] = 1e-3,
    augment: Annotated[bool, typer.Option(help="JPEG and resize augmentation.")] = True,
    workers: Annotated[int, typer.Option(min=1, help="Processes for rendering training spectra.")] = 1,
    seed: SeedOpt = 0,
) -> None:
    """Train the zero-shot fingerprint extractor on a synthetic pool (resumes if killed).

    Prints one line per validation (held-out architectures) to stderr."""
    with _fatal_errors():
        from modelprint.extractor.pipeline import train_from_pool
        from modelprint.extractor.train import TrainConfig

        _seed(seed)
        cfg = TrainConfig(widths=tuple(int(w) for w in widths.split(",")), blocks_per_stage=blocks, embed_dim=embed_dim, P=p, K=k, steps=steps,
                          lr=lr, seed=seed, region=region)
        command = "modelprint " + " ".join(sys.argv[1:])
        bar, task = _progress(steps, "training extractor")
        render_task = bar.add_task("rendering spectra", total=None)

        def on_step(done: int, rec: dict) -> None:
            bar.update(task, completed=done)
            if "val_accuracy" in rec:
                err.print(f"step {done}: loss {rec['loss']:.3f} (ce {rec['ce']:.3f}, triplet {rec['triplet']:.3f}), "
                          f"held-out accuracy {rec['val_accuracy']:.3f}", highlight=False)

        with bar:
            result = train_from_pool(pool, out_dir, config=cfg, per_model=per_model, val_fraction=val_fraction,
                                     augment=augment, seed=seed, workers=workers, command=command,
                                     render_progress=lambda n: bar.advance(render_task, n), train_progress=on_step)
        _emit_json(result["recipe"])


@app.command("spectral-reference", cls=_Command)
def spectral_reference(
    residual: Annotated[str, typer.Option(help="Residual extractor.")] = "dncnn",
    n: Annotated[int, typer.Option(min=10, help="Real-pool crops to fit on.")] = 1000,
    size: Annotated[int, typer.Option(min=32)] = 128,
    seed: SeedOpt = 0,
) -> None:
    """Rebuild the shipped real-photo reference of the spectral method."""
    with _fatal_errors():
        from modelprint.methods.spectral import build_reference

        path = build_reference(residual=residual, n=n, size=size, seed=seed)
        out.print(f"wrote {_shown(path)}", soft_wrap=True)


@app.command(cls=_Command)
def demo(
    seed: SeedOpt = 0,
    realworld: Annotated[Optional[Path], typer.Option(help="Folder of real-world generated images to add (default: ../shared/realworld if present).")] = None,
    workdir: Annotated[Path, typer.Option(help="Where the demo gallery and report go.")] = Path("out/demo"),
) -> None:
    """Enroll and identify the bundled demo set, print a table and write a report."""
    with _fatal_errors():
        from modelprint.demo import run_demo

        run_demo(workdir=workdir, seed=seed, realworld=realworld, console=out)


ZooOpt = Annotated[Path, typer.Option("--zoo", help="Zoo folder (manifest.jsonl, models/, samples/).")]


@zoo_app.command("build", cls=_Command)
def zoo_build(
    zoo: ZooOpt = Path("out/zoo"),
    tier: Annotated[str, typer.Option(help="tiny (tests, minutes) or standard (benchmarks).")] = "standard",
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Build only this model (and its parents); repeatable.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (1 torch thread each).")] = 1,
    samples: Annotated[Optional[int], typer.Option(min=0, help="Samples saved per model (default: the tier's).")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Train the zoo's recipes (resumes: models already built and intact are kept)."""
    with _fatal_errors():
        from modelprint.zoo import build_zoo, tier_recipes

        total = len(only) if only else len(tier_recipes(tier))
        bar, task = _progress(total, f"building {tier} zoo")

        def on_model(done: int, tot: int, entry: dict) -> None:
            bar.update(task, completed=done, total=tot)
            err.print(f"{_shown(entry['name'])}: {_shown(entry['family'])}, {entry['parameters']:,} parameters, "
                      f"loss {entry['final_loss']:.4f}, {entry['cpu_seconds']:.0f} CPU s", highlight=False,
                      soft_wrap=True)

        with bar:
            entries = build_zoo(zoo, tier=tier, only=only or (), seed=seed, workers=workers, n_samples=samples,
                                progress=on_model)
        _emit_json({"zoo": str(zoo), "tier": tier, "models": len(entries),
                    "cpu_seconds": round(sum(e["cpu_seconds"] for e in entries), 1)})


@zoo_app.command("list", cls=_Command)
def zoo_list(zoo: ZooOpt = Path("out/zoo"), as_json: JsonFlag = False, json_out: JsonOutOpt = None) -> None:
    """List the built models."""
    with _fatal_errors():
        from modelprint.zoo import Zoo

        entries = Zoo(zoo).entries()
        _emit_json(list(entries.values()), as_json, json_out)
        if as_json:
            return
        table = _table(f"zoo {_shown(zoo)}", "model", "family", "parent", "parameters", "steps", "loss", "CPU s",
                       "samples")
        for e in entries.values():
            table.add_row(_shown(e["name"]), _shown(e["family"]), _shown(e["recipe"]["parent"] or ""),
                          f"{e['parameters']:,}",
                          str(e["recipe"]["steps"]), f"{e['final_loss']:.4f}", f"{e['cpu_seconds']:.0f}",
                          str(e.get("samples", {}).get("n", 0)))
        out.print(table)


@zoo_app.command("info", cls=_Command)
def zoo_info(name: Annotated[str, typer.Argument(help="Zoo model name.")], zoo: ZooOpt = Path("out/zoo")) -> None:
    """Print a model's manifest line (recipe, data, seed, steps, CPU seconds, sha256 of every file)."""
    with _fatal_errors():
        from modelprint.zoo import Zoo

        _emit_json(Zoo(zoo).info(name))


@zoo_app.command("sample", cls=_Command)
def zoo_sample(
    name: Annotated[str, typer.Argument(help="Zoo model name, or a diffusers folder.")],
    n: Annotated[int, typer.Option("-n", min=1, help="Number of images.")] = 16,
    dest: Annotated[Path, typer.Option("--out", help="Folder for the PNGs.")] = Path("out/samples"),
    zoo: ZooOpt = Path("out/zoo"),
    seed: SeedOpt = 0,
) -> None:
    """Generate images with a zoo model (its sha256 is checked first) or a user's diffusers folder."""
    with _fatal_errors():
        from PIL import Image

        from modelprint.atomic import atomic_path
        from modelprint.zoo.store import load_generator

        _seed(seed)
        model = load_generator(name, zoo=zoo)
        dest.mkdir(parents=True, exist_ok=True)
        stem = Path(name).name
        for i, im in enumerate(model.sample(n, seed=seed)):
            with atomic_path(dest / f"{stem}-seed{seed}-{i:04d}.png") as tmp:
                Image.fromarray(im).save(tmp, format="PNG")
        out.print(f"wrote {n} images to {_shown(dest)}", soft_wrap=True)


CandidatesOpt = Annotated[list[str], typer.Option(
    "--candidates", "-c", help="Candidate diffusion model as NAME=SOURCE (zoo model name, diffusers folder, or UNet "
    ".safetensors/.pth with config.json beside it); repeat for each candidate.")]
ZooOptionalOpt = Annotated[Optional[Path], typer.Option("--zoo", help="Zoo folder for candidates given by zoo model name.")]


@contextmanager
def _probe_bar(label: str):
    """A progress bar over denoiser calls; yields the ``progress(done, total)`` callback the probes take."""
    bar, task = _progress(None, label)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


@probe_app.command("prototypes", cls=_Command)
def probe_prototypes(
    candidates: CandidatesOpt,
    refs: Annotated[list[str], typer.Option("--refs", "-r", help="Reference images of one class as CLASS=DIR, or DIR (class = folder name); repeat per class.")],
    dest: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fitted attributor (.npz).")],
    zoo: ZooOptionalOpt = None,
    preset: Annotated[str, typer.Option(help="Probe setting: SDS fast, reference-1 or reference-5; denoising loss loss-fast or loss-trajectory.")] = "fast",
    classifier: Annotated[str, typer.Option(help="prototype (cosine), logreg (PCA + logistic regression), svm, or lowest-loss (training-free; loss-* presets).")] = "logreg",
    features: Annotated[str, typer.Option(help="concat (all candidates' signatures) or distances (to every candidate's class prototypes).")] = "concat",
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Probe reference images of each class through every candidate and store the fitted attributor."""
    with _fatal_errors():
        from modelprint.probes import probe_from_preset
        from modelprint.probes.workflow import fit_prototypes, load_candidates

        _seed(seed)
        probe = probe_from_preset(preset, seed=seed)
        models = load_candidates(candidates, zoo=zoo)
        with _probe_bar("probing references") as progress:
            attributor, summary = fit_prototypes(models, refs, probe, features=features, classifier=classifier,
                                                 seed=seed, progress=progress)
        attributor.save(dest)
        _report_input_errors(summary["failed"])
        summary = {"attributor": str(dest), "preset": preset, "classifier": classifier, "features": features, **summary}
        _emit_json(summary, as_json, json_out)
        if not as_json:
            counts = ", ".join(f"{c} ({n})" for c, n in summary["classes"].items())
            out.print(f"wrote {_shown(dest)}: {len(summary['classes'])} classes {_shown(f'[{counts}]')} through "
                      f"{len(models)} candidates, {summary['calls_per_image']} denoiser calls per image",
                      soft_wrap=True)
        if summary["failed"]:
            raise typer.Exit(1)


@probe_app.command("identify", cls=_Command)
def probe_identify(
    paths: Annotated[list[Path], typer.Argument(help="Images or folders to attribute.", readable=False)],
    attributor: Annotated[Path, typer.Option("--attributor", "-a", help="Attributor written by `modelprint probe prototypes`.")],
    candidates: CandidatesOpt,
    zoo: ZooOptionalOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many candidates to list.")] = 3,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Which candidate made each image? Probes every image through every candidate (unknown origin)."""
    with _fatal_errors():
        from modelprint.probes import ProbeAttributor
        from modelprint.probes.workflow import identify_files, load_candidates

        _seed(seed)
        models = load_candidates(candidates, zoo=zoo)
        fitted = ProbeAttributor.load(attributor, models)
        with _probe_bar("probing") as progress:
            res = identify_files(fitted, paths, top_k=top_k, progress=progress)
        _report_input_errors(res["failed"])
        _emit_json(res, as_json, json_out)
        if not as_json:
            table = _table(f"probe identify ({_shown(res['classifier'])}, {res['calls_per_image']} calls per image)",
                           "image", "prediction", f"top-{top_k}")
            for row in res["results"]:
                table.add_row(_shown(Path(row["path"]).name), _shown(row["prediction"]),
                              ", ".join(f"{_shown(c['model'])} {c.get('probability', c['score']):.3f}"
                                        for c in row["top_k"]))
            out.print(table)
        if res["failed"]:
            raise typer.Exit(1)


def _legacy_json_path(args: list[str]) -> list[str]:
    """``evaluate``/``fidelity`` took ``--json PATH`` before ``--json`` meant stdout everywhere: read it as
    ``--json-out PATH`` (a following ``*.json`` file name tells the old form), with a note on stderr."""
    if not args or args[0] not in ("evaluate", "fidelity"):
        return args
    args = list(args)
    for i in range(1, len(args) - 1):
        if args[i] == "--":
            break
        if args[i] == "--json" and args[i + 1].lower().endswith(".json") and not args[i + 1].startswith("-"):
            args[i] = "--json-out"
            err.print(f"note: --json {_shown(args[i + 1])} is read as --json-out {_shown(args[i + 1])}; --json alone "
                      "now prints the JSON on stdout", highlight=False, soft_wrap=True)
    return args


def main() -> None:
    app(args=_legacy_json_path(sys.argv[1:]))


if __name__ == "__main__":
    main()
