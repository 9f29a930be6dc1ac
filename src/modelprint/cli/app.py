"""The root ``modelprint`` app and what every command module shares: help conventions, options, output, errors.

Exit codes: 0 all inputs processed; 1 some inputs failed (each named on stderr in one line, the rest processed;
a missing or unreadable input file is such a failure); 2 the command could not run (bad arguments, missing
gallery or model, incompatible checkpoint).

Output: ``--json`` prints the result as JSON on stdout instead of the table; ``--json-out PATH`` writes the same
JSON to a file (atomically). Every name that comes from the user or the disk (paths, model names) is printed
through :func:`shown`, so it can neither be read as Rich markup nor put a raw control character on the terminal.
Heavy modules (torch, diffusers, the API) are imported inside the commands, so ``modelprint --help`` stays fast.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
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


def shown(value: object) -> str:
    """``value`` as Rich markup that prints literally, on one line: markup escaped (``photo[v2].png`` stays
    itself), and control characters, line separators, bidi overrides and undecodable file-name bytes written as
    ``\\n``, ``\\t``, ``\\x1b``, ``\\u202e``, ``\\xff``."""
    return escape(_CONTROL.sub(_visible, str(value)))


def make_console(stderr: bool = False) -> Console:
    """A console that never expands ``:emoji:`` codes and, off a terminal, never wraps or cuts (pipes get it all)."""
    console = Console(stderr=stderr, emoji=False)
    if not console.is_terminal:
        console.width = _UNLIMITED_WIDTH
    return console


out = make_console()
err = make_console(stderr=True)


def make_table(title: str, *columns: str) -> Table:
    """A table whose cells fold rather than cut on a narrow terminal; ``title`` is markup (pass names shown)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _json_text(payload: Any) -> str:
    return json.dumps(payload, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n"


def emit_json(payload: Any, as_json: bool = True, json_out: Path | None = None) -> None:
    """The result as JSON: to ``json_out`` (atomically) when given, and on stdout when ``as_json``."""
    if json_out is not None:
        from modelprint.atomic import write_text

        write_text(json_out, _json_text(payload))
    if as_json:
        sys.stdout.write(_json_text(payload))


def finish_per_file(res: dict[str, Any], as_json: bool, json_out: Path | None, show: Callable[[], None]) -> None:
    """The end of a command over many files: a line per file it could not use (``res["failed"]``), the result as JSON
    when asked, else ``show()`` for people; exit status 1 when any file failed."""
    report_input_errors(res["failed"])
    emit_json(res, as_json, json_out)
    if not as_json:
        show()
    if res["failed"]:
        raise typer.Exit(1)


def report_input_errors(errors: Iterable[object], label: str = "skipped") -> None:
    """One line on stderr per bad input (``errors`` are ImageErrors or messages naming the file)."""
    for e in errors:
        err.print(f"[yellow]{label}:[/yellow] {shown(e)}", highlight=False, soft_wrap=True)


def report_warnings(warnings: Iterable[str]) -> None:
    """One line on stderr per warning (they may name models and files)."""
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {shown(w)}", highlight=False, soft_wrap=True)


def _new_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def progress_bar(total: int | None, label: str) -> tuple[Progress, TaskID]:
    """A progress bar on stderr (shown on a terminal only) and its task; ``label`` may hold user names."""
    bar = _new_bar()
    return bar, bar.add_task(shown(label), total=total)


@contextmanager
def calls_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over denoiser calls; yields the ``progress(done, total)`` callback the probes take."""
    bar, task = progress_bar(None, label)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


class Phases:
    """Progress of a command that runs in phases: a bar per phase on a terminal; elsewhere one plain stderr line
    as each phase starts, and the total time at the end."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.bar = _new_bar()
        self.task: TaskID | None = None
        self.start = time.perf_counter()

    def phase(self, label: str, steps: int) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(shown(label), total=steps or None)
        if not err.is_terminal:
            err.print(f"{self.command}: {shown(label)}", highlight=False, soft_wrap=True)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)

    def done(self) -> None:
        if not err.is_terminal:
            err.print(f"{self.command}: done in {time.perf_counter() - self.start:.1f} s", highlight=False)


# ------------------------------------------------------------------------------------------------- errors and seeds


@contextmanager
def fatal_errors() -> Iterator[None]:
    """Turn modelprint's own errors into one line on stderr and exit code 2."""
    from modelprint.errors import ModelprintError

    try:
        yield
    except ModelprintError as exc:
        err.print(f"[red]error:[/red] {shown(exc)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch before a command that draws random numbers."""
    from modelprint.seeding import seed_everything

    seed_everything(seed)


def command_line() -> str:
    """The command as typed, for the recipes that training commands record."""
    return "modelprint " + " ".join(sys.argv[1:])


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


class Command(TyperCommand):
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
    """A command group with the same help conventions as :class:`Command`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help(super().get_params(ctx))


def make_typer(help: str) -> typer.Typer:
    """A command group (or the root app) with modelprint's help conventions and no tracebacks."""
    return typer.Typer(cls=_Group, help=help, no_args_is_help=True, pretty_exceptions_enable=False,
                       add_completion=False)


app = make_typer("Which generative model made this image? Enroll models from a few images, then identify and "
                 "verify.")


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


def _seed_changes_nothing(ctx: typer.Context, value: int | None) -> None:
    if value is not None:
        names = []
        while ctx.parent is not None:  # the command's words after the program's name, e.g. "probe identify"
            names.append(ctx.info_name or "")
            ctx = ctx.parent
        err.print(f"note: --seed changes nothing in modelprint {shown(' '.join(reversed(names)))} (its output "
                  "depends on no random draw); ignored", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------- shared options

SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same numbers.")]
#: ``--seed`` of a command whose output depends on no random draw: hidden, accepted (older scripts pass it), noted.
UnusedSeedOpt = Annotated[int | None, typer.Option("--seed", hidden=True, callback=_seed_changes_nothing)]
JsonFlag = Annotated[bool, typer.Option(
    "--json", help="Print the result as JSON on stdout (instead of the human-readable output).")]
JsonOutOpt = Annotated[Path | None, typer.Option("--json-out", help="Also write the result as JSON to this file.")]
GalleryOpt = Annotated[Path, typer.Option("--gallery", "-g", help="Gallery file (SQLite).")]
MethodOpt = Annotated[str | None, typer.Option(
    "--method", "-m", help="Fingerprint method: learned, spectral, fused, a DIRE view (dire-stats, dire-fourier, "
    "dire-cnn) or any other `modelprint list` shows (default: the gallery's, else learned).")]
MethodParamOpt = Annotated[list[str] | None, typer.Option(
    "--method-param", "-p", help="A parameter of the method as KEY=VALUE (VALUE is read as JSON when it parses, "
    "else as a string), e.g. -p weights=fusion.json; repeatable. A gallery stores them with the method.")]
MaxPixelsOpt = Annotated[int | None, typer.Option(
    "--max-pixels", help="Refuse images with more pixels (default 64M or MODELPRINT_MAX_PIXELS).")]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many candidates to list.")]
PathsArg = Annotated[list[Path], typer.Argument(help="Images or folders to attribute.", readable=False)]
WorkersOpt = Annotated[int, typer.Option(
    min=1, help="Embed in this many worker processes (or Ray workers with --ray).")]
RayFlag = Annotated[bool, typer.Option(
    "--ray", help="Run the tasks on Ray: a local cluster of --workers CPUs, or the one at --address.")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster to join (host:port of 'ray start --head', or 'auto'); implies --ray.")]


def method_params(values: list[str] | None) -> dict[str, Any] | None:
    """``--method-param KEY=VALUE`` options as a dict (``None`` if none); a one-line error for a malformed one."""
    from modelprint.errors import ModelprintError

    if not values:
        return None
    params: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ModelprintError(f"--method-param {item!r}: expected KEY=VALUE")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def legacy_json_path(args: list[str]) -> list[str]:
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
            err.print(f"note: --json {shown(args[i + 1])} is read as --json-out {shown(args[i + 1])}; --json alone "
                      "now prints the JSON on stdout", highlight=False, soft_wrap=True)
    return args
