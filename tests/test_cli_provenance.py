"""``modelprint provenance fit|score|attribute-fit|attribute`` end to end on the tiny member-split zoo DDPM:
probabilities and decisions, determinism, members against held-out images, a bad image, a provenance of another
model, attribution answering a candidate or ``none``, and a folder written by diffusers' ``DDPMPipeline`` as
``--model``. Each command runs once in a subprocess; the checks beside the main path run in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from modelprint.provenance import membership_testbed
from modelprint.provenance.attribution import ACCEPTS, LEARNED_CS, LEARNED_KINDS
from modelprint.zoo.build import build_zoo
from modelprint.zoo.store import load_generator

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

MODEL = "tiny-ddpm-members"
#: Few timesteps and noises, so that every command takes seconds.
SMALL = ["-t", "10", "-t", "500", "--repeats", "1"]
CLASSES = {"member", "generated", "external", "uncertain"}
#: Gradient features depend on the thread count at float precision: every run here uses one thread.
THREADS = {"MODELPRINT_THREADS": "1"}


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """The command in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "modelprint.cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={**os.environ, **THREADS})


def invoke(*args: str | Path, cwd: Path) -> Result:
    """The same command in this process (no second start-up of torch and diffusers): for the checks beside the
    main path, which each run once in a subprocess."""
    from modelprint.cli.main import app

    here = Path.cwd()
    os.chdir(cwd)
    try:
        with mock.patch.dict(os.environ, THREADS):
            return CliRunner().invoke(app, list(map(str, args)))
    finally:
        os.chdir(here)


def _save(images: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny zoo with the member-split DDPM; its members (first half: fitting, second half: scoring), held-out,
    shifted and generated images as PNG folders; the model saved by diffusers' DDPMPipeline (``pipe``) and a
    DDPMPipeline of an untrained UNet of the same architecture (``other``)."""
    from diffusers import DDPMPipeline, UNet2DModel

    root = tmp_path_factory.mktemp("provenance-cli")
    build_zoo(root / "zoo", tier="tiny", only=[MODEL], n_samples=16)
    bed = membership_testbed(root / "zoo", MODEL)
    _save(bed.members[:16], root / "members")
    _save(bed.members[16:], root / "unseen-members")
    _save(bed.matched[:16], root / "matched")
    _save(bed.shifted[:16], root / "shifted")
    _save(bed.generated, root / "generated")
    model = load_generator(MODEL, zoo=root / "zoo")
    DDPMPipeline(unet=model.unet, scheduler=model.scheduler).save_pretrained(root / "pipe")
    torch.manual_seed(1)
    untrained = UNet2DModel.from_config(model.unet.config)
    DDPMPipeline(unet=untrained, scheduler=model.scheduler).save_pretrained(root / "other")
    return root


@pytest.fixture(scope="module")
def fitted(ws: Path) -> tuple[Path, dict]:
    res = run("provenance", "fit", "--model", MODEL, "--zoo", "zoo", "--members", "members", "--external",
              "shifted", "--generated", "generated", *SMALL, "--seed", "3", "--out", "p.npz", "--json", cwd=ws)
    assert res.returncode == 0, res.stderr
    return ws / "p.npz", json.loads(res.stdout)


def test_fit_then_score_gives_probabilities_decisions_and_one_line_per_bad_image(ws: Path, fitted: tuple) -> None:
    path, summary = fitted
    assert summary["counts"] == {"external": 16, "generated": 16, "member": 16} and summary["failed"] == []
    assert summary["calls_per_image"] == 15 and summary["backwards_per_image"] == 2
    assert len(summary["model_sha256"]) == 64
    assert json.loads(path.with_suffix(".json").read_text())["model_sha256"] == summary["model_sha256"]
    (ws / "bad.png").write_bytes((ws / "matched" / "000.png").read_bytes()[:100])
    res = run("provenance", "score", "unseen-members", "matched", "bad.png", "--model", MODEL, "--zoo", "zoo",
              "--provenance", path, "--json", cwd=ws)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "bad.png" in res.stderr, res.stderr
    out = json.loads(res.stdout)
    assert len(out["results"]) == 32 and out["failed"] == [res.stderr.split("skipped: ")[1].strip()]
    assert {r["decision"] for r in out["results"]} <= CLASSES
    for r in out["results"]:
        assert set(r["probabilities"]) == {"member", "generated", "external"}
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)
    member = np.array([r["probabilities"]["member"] for r in out["results"]])
    assert member[:16].mean() > member[16:].mean() + 0.05  # members never seen in fitting against held-out images


def test_same_seed_same_provenance_and_a_ddpm_pipeline_folder_is_the_same_model(ws: Path, fitted: tuple) -> None:
    path, summary = fitted
    again = invoke("provenance", "fit", "--model", "pipe", "--members", "members", "--external", "shifted",
                "--generated", "generated", *SMALL, "--seed", "3", "--out", "again.npz", "--json", cwd=ws)
    assert again.exit_code == 0, again.stderr
    assert {k: v for k, v in json.loads(again.stdout).items() if k not in ("provenance", "denoiser")} == \
        {k: v for k, v in summary.items() if k not in ("provenance", "denoiser")}
    with np.load(path) as a, np.load(ws / "again.npz") as b:
        assert np.array_equal(a["features"], b["features"]) and np.array_equal(a["probabilities"], b["probabilities"])
    by_name = invoke("provenance", "score", "matched/000.png", "--model", MODEL, "--zoo", "zoo", "-p", path, "--json",
                     cwd=ws)
    by_folder = invoke("provenance", "score", "matched/000.png", "--model", "pipe", "-p", path, "--json", cwd=ws)
    assert by_name.exit_code == by_folder.exit_code == 0, by_folder.stderr
    assert json.loads(by_name.stdout)["results"] == json.loads(by_folder.stdout)["results"]


def test_a_provenance_of_another_model_is_refused_in_one_line(ws: Path, fitted: tuple) -> None:
    res = run("provenance", "score", "matched", "--model", "other", "-p", fitted[0], cwd=ws)
    assert res.returncode == 2 and res.stdout == "" and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: ") and "is not the model this provenance was fitted on" in res.stderr
    missing = invoke("provenance", "score", "matched", "--model", "nowhere", "-p", fitted[0], cwd=ws)
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1 and "nowhere" in missing.stderr


def test_attribution_answers_a_candidate_or_none(ws: Path) -> None:
    fit = invoke("provenance", "attribute-fit", "--model", f"a={MODEL}", "--model", "b=other", "--zoo", "zoo",
              "--samples", "a=generated", "--sample", "16", "--external", "shifted", "--preset", "loss-fast",
              "--out", "attributor.npz", "--json", cwd=ws)
    assert fit.exit_code == 0, fit.stderr
    summary = json.loads(fit.stdout)
    assert summary["counts"] == {"a": 16, "b": 16, "none": 16} and summary["sampled"] == {"b": 16}
    grid = 2 * len(ACCEPTS) + len(LEARNED_KINDS) * len(LEARNED_CS)  # threshold x normalisation, learned kind x C
    assert summary["rule"] in ("threshold", "learned") and len(summary["validation"]) == grid
    assert summary["counts"]["none"] == 16 and {r["rule"] for r in summary["validation"]} == {"threshold", "learned"}
    res = run("provenance", "attribute", "generated", "shifted", "--attributor", "attributor.npz", "--model",
              f"a={MODEL}", "--model", "b=other", "--zoo", "zoo", "--json", cwd=ws)
    assert res.returncode == 0, res.stderr
    answers = [r["prediction"] for r in json.loads(res.stdout)["results"]]
    assert len(answers) == 32 and set(answers) <= {"a", "b", "none"} and answers[:16].count("a") >= 12  # a's samples
    swapped = invoke("provenance", "attribute", "shifted", "--attributor", "attributor.npz", "--model", "a=other",
                  "--model", f"b={MODEL}", "--zoo", "zoo", cwd=ws)
    assert swapped.exit_code == 2 and swapped.stderr.count("\n") == 1 and "'a'" in swapped.stderr, swapped.stderr


def test_seed_where_random_numbers_are_drawn() -> None:
    """fit and attribute-fit draw noises (and samples); score and attribute take them from the fitted file."""
    from modelprint.cli.main import app

    for command, seeded in (("fit", True), ("attribute-fit", True), ("score", False), ("attribute", False)):
        text = CliRunner().invoke(app, ["provenance", command, "--help"], terminal_width=200).output
        assert ("--seed" in text) == seeded, command


def test_attribute_fit_refuses_a_preset_that_is_not_a_loss_setting(tmp_path: Path) -> None:
    res = run("provenance", "attribute-fit", "--model", "a=missing", "--external", tmp_path, "--out",
              tmp_path / "a.npz", "--preset", "reference-5", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: unknown loss probe preset 'reference-5'; known: loss-fast, loss-trajectory"]
    assert not (tmp_path / "a.npz").exists()
