"""``modelprint demo``: enroll and identify the bundled demo set (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelprint.cli.app import SeedOpt, fatal_errors, out


def demo(
    seed: SeedOpt = 0,
    realworld: Annotated[Path | None, typer.Option(
        help="Folder of real-world generated images to add (default: ../shared/realworld if present).")] = None,
    workdir: Annotated[Path, typer.Option(help="Where the demo gallery and report go.")] = Path("out/demo"),
) -> None:
    """Enroll and identify the bundled demo set, print a table and write a report."""
    with fatal_errors():
        from modelprint.demo import run_demo

        run_demo(workdir=workdir, seed=seed, realworld=realworld, console=out)
