"""The ``modelprint`` command line: a thin layer over :mod:`modelprint.api` and the subpackages' public functions.

This module assembles the commands, one module per group: :mod:`~modelprint.cli.gallery` (enroll, identify,
verify, gallery …), :mod:`~modelprint.cli.evaluate`, :mod:`~modelprint.cli.train` (denoiser, synthesize, fidelity,
extractor, spectral-reference), :mod:`~modelprint.cli.demo`, :mod:`~modelprint.cli.zoo`,
:mod:`~modelprint.cli.probe`, :mod:`~modelprint.cli.provenance`, :mod:`~modelprint.cli.decoupler`,
:mod:`~modelprint.cli.anonymize`, :mod:`~modelprint.cli.serve` and :mod:`~modelprint.cli.registries` (``list``);
what they share (options, output, exit codes) is in :mod:`~modelprint.cli.app`.
"""

from __future__ import annotations

import sys

from modelprint.cli import (
    anonymize,
    decoupler,
    demo,
    evaluate,
    gallery,
    probe,
    provenance,
    registries,
    serve,
    train,
    views,
    zoo,
)
from modelprint.cli.app import Command, app, legacy_json_path

app.command("enroll", cls=Command)(gallery.enroll)
app.command("identify", cls=Command)(gallery.identify)
app.command("verify", cls=Command)(gallery.verify)
app.command("evaluate", cls=Command)(evaluate.evaluate)
app.command("synthesize", cls=Command)(train.synthesize)
app.command("fidelity", cls=Command)(train.fidelity)
app.command("spectral-reference", cls=Command)(train.spectral_reference)
app.command("demo", cls=Command)(demo.demo)
app.command("list", cls=Command)(registries.list_registries)
app.command("anonymize", cls=Command)(anonymize.anonymize)
app.command("serve", cls=Command)(serve.serve)
# The extractor's training was ``modelprint train`` before it had its group: the old name still works.
app.command("train", cls=Command, hidden=True, deprecated="Use 'modelprint extractor train'.")(train.extractor_train)
app.add_typer(gallery.gallery_app, name="gallery")
app.add_typer(train.denoiser_app, name="denoiser")
app.add_typer(train.extractor_app, name="extractor")
app.add_typer(zoo.zoo_app, name="zoo")
app.add_typer(probe.probe_app, name="probe")
app.add_typer(provenance.provenance_app, name="provenance")
app.add_typer(decoupler.decoupler_app, name="decoupler")
app.add_typer(views.views_app, name="views")
app.add_typer(views.fusion_app, name="fusion")


def main() -> None:
    """The ``modelprint`` entry point."""
    app(args=legacy_json_path(sys.argv[1:]))


if __name__ == "__main__":
    main()
