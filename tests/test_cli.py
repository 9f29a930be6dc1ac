"""The CLI end to end, in subprocesses, on images made by three distinct upsampling "generators"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import natural_like

GENERATORS = {  # name: (resampling filter, upsampling factor)
    "nearest": (Image.Resampling.NEAREST, 2),
    "bilinear": (Image.Resampling.BILINEAR, 2),
    "bicubic3x": (Image.Resampling.BICUBIC, 3),
}


def run(*args: str | bytes, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelprint.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=None if env is None else {**os.environ, **env})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dataset/<generator>/*.png: 8 images per generator, each a small image upsampled to 96²."""
    root = tmp_path_factory.mktemp("cli")
    for g, (name, (resample, factor)) in enumerate(GENERATORS.items()):
        folder = root / "dataset" / name
        folder.mkdir(parents=True)
        for i in range(8):
            small = Image.fromarray(natural_like(96 // factor, 96 // factor, seed=100 * g + i))
            small.resize((96, 96), resample).save(folder / f"{i}.png")
    (root / "dataset" / "tiny").mkdir()  # too few images for support 3: left out, and said so
    for i in range(4):
        (root / "dataset" / "tiny" / f"{i}.png").write_bytes((root / "dataset" / "nearest" / f"{i}.png").read_bytes())
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.png").write_bytes((root / "dataset" / "nearest" / "0.png").read_bytes()[:200])
    (root / "bad" / "notes.png").write_text("not an image")
    return root


def test_enroll_identify_verify_gallery_and_evaluate(workspace: Path) -> None:
    ds, gallery = workspace / "dataset", workspace / "g.sqlite"
    for name in GENERATORS:
        files = [str(ds / name / f"{i}.png") for i in range(4)]
        res = run("enroll", "--gallery", str(gallery), "--model", name, "--json", "--seed", "0", *files, cwd=workspace)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["added"] == 4

    queries = [str(ds / name / f"{i}.png") for name in GENERATORS for i in range(4, 8)]
    bad = [str(workspace / "bad" / "corrupt.png"), str(workspace / "bad" / "notes.png")]
    res = run("identify", "--gallery", str(gallery), "--json", "--threshold", "-1", *queries, *bad, cwd=workspace)
    assert res.returncode == 1  # some inputs failed, the batch went on
    payload = json.loads(res.stdout)
    assert len(payload["results"]) == len(queries) and len(payload["failed"]) == 2
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(errors) == 2 and all("Traceback" not in line for line in errors)
    assert any("corrupt.png" in line and "truncated" in line for line in errors)
    assert any("notes.png" in line and "not an image" in line for line in errors)
    correct = sum(Path(r["path"]).parent.name == r["prediction"] for r in payload["results"])
    assert correct / len(queries) >= 0.9

    res = run("verify", "--gallery", str(gallery), "--json", str(ds / "nearest/5.png"), str(ds / "nearest/6.png"),
              cwd=workspace)
    assert res.returncode == 0, res.stderr
    assert set(json.loads(res.stdout)) >= {"similarity", "same_model", "threshold"}

    listed = json.loads(run("gallery", "list", "--gallery", str(gallery), "--json", cwd=workspace).stdout)
    assert sorted(m["name"] for m in listed["models"]) == sorted(GENERATORS)
    assert run("gallery", "export", "--gallery", str(gallery), str(workspace / "g.json"), cwd=workspace).returncode == 0
    exported = json.loads((workspace / "g.json").read_text())
    assert len(exported["embeddings"]) == 12
    assert run("gallery", "remove", "--gallery", str(gallery), "bicubic3x", cwd=workspace).returncode == 0
    listed = json.loads(run("gallery", "list", "--gallery", str(gallery), "--json", cwd=workspace).stdout)
    assert "bicubic3x" not in {m["name"] for m in listed["models"]}

    out_json, report = workspace / "eval.json", workspace / "eval.html"
    res = run("evaluate", str(ds), "--support", "3", "--pairs", "200", "--seed", "1", "--json-out", str(out_json),
              "--report", str(report), cwd=workspace)
    assert res.returncode == 0, res.stderr
    result = json.loads(out_json.read_text())
    assert result["dropped_classes"] == {"tiny": {"images": 4, "reason": "4 image(s), fewer than support + 3 = 6"}}
    lines = res.stderr.splitlines()  # off a terminal: one line per phase and per model left out, nothing else
    assert [line.split(":")[0] for line in lines] == ["evaluate"] * 4 + ["dropped"]
    assert lines[0].startswith("evaluate: embedding 24 images of 3 models") and lines[2].startswith("evaluate: report")
    assert lines[3].startswith("evaluate: done in")
    assert lines[4] == f"dropped: tiny: {result['dropped_classes']['tiny']['reason']}"
    assert "identification.accuracy" in res.stdout  # the summary table
    for section, key in (("identification", "accuracy"), ("identification", "macro_f1"), ("verification", "auc"),
                         ("verification", "eer"), ("verification", "accuracy")):
        assert isinstance(result[section][key], float)
    assert result["n_models"] == 3 and result["n_images"] == 24
    assert result["identification"]["accuracy"] >= 0.9
    html = report.read_text()
    assert html.count("data:image/png;base64") >= 3 and 'src="http' not in html


def test_fatal_errors_are_one_line_with_exit_code_2(workspace: Path) -> None:
    res = run("identify", "--gallery", str(workspace / "missing.sqlite"), str(workspace / "dataset"), cwd=workspace)
    assert res.returncode == 2
    assert "missing.sqlite" in res.stderr and "Traceback" not in res.stderr
    res = run("evaluate", str(workspace / "nowhere"), cwd=workspace)
    assert res.returncode == 2 and "nowhere" in res.stderr and "Traceback" not in res.stderr


def test_same_seed_same_numbers_and_json_on_stdout_or_in_a_file(workspace: Path) -> None:
    """``--json`` prints the JSON on stdout (instead of the table); ``--json PATH``, the old form, still writes PATH."""
    args = ("evaluate", str(workspace / "dataset"), "--support", "3", "--pairs", "100", "--seed", "7")
    printed = run(*args, "--json", cwd=workspace)
    assert printed.returncode == 0, printed.stderr
    path = workspace / "eval-legacy.json"
    written = run(*args, "--json", str(path), cwd=workspace)
    assert written.returncode == 0, written.stderr
    assert "read as --json-out" in written.stderr and "identification.accuracy" in written.stdout
    outs = [json.loads(printed.stdout), json.loads(path.read_text())]
    first = (outs[0]["identification"], outs[0]["verification"])
    assert [(d["identification"], d["verification"]) for d in outs] == [first] * 2


@pytest.mark.slow  # trains (2 steps) in a subprocess
def test_denoiser_train_command_writes_loadable_weights(tmp_path: Path) -> None:
    out = tmp_path / "dn.safetensors"
    res = run("denoiser", "train", "--out", str(out), "--steps", "2", "--batch-size", "2", "--crop", "32",
              "--depth", "3", "--width", "8", "--seed", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["params"] > 0
    from modelprint.residuals import get_residual

    residual = get_residual("dncnn", weights=out)
    assert residual(np.zeros((40, 40, 3), np.float32)).shape == (40, 40, 3)


@pytest.mark.slow  # trains two synthetic generators in a subprocess, twice
def test_synthesize_list_and_a_tiny_pool(tmp_path: Path) -> None:
    res = run("synthesize", "--list", cwd=tmp_path)
    assert res.returncode == 0 and len(res.stdout.split()) == 288 and "288 architectures" in res.stderr
    archs = "b1-c1-post-up_nearest-act_relu-norm_none,b1-c1-pre-up_transposed-act_tanh-norm_batch"
    res = run("synthesize", "--out", str(tmp_path / "pool"), "--archs", archs, "--seeds", "1", "--max-steps", "3",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["trained"] == 2
    again = json.loads(run("synthesize", "--out", str(tmp_path / "pool"), "--archs", archs, "--seeds", "1",
                           "--max-steps", "3", cwd=tmp_path).stdout)
    assert again["trained"] == 0 and again["already_done"] == 2  # resumes: nothing to redo


def test_names_print_literally_on_one_line_and_json_keeps_them(workspace: Path) -> None:
    """Brackets are not Rich markup, control characters and undecodable bytes are shown escaped, names are not cut."""
    ds, gallery = workspace / "dataset", workspace / "names.sqlite"
    res = run("enroll", "--gallery", str(gallery), "--model", "sd[/x]",
              *(str(ds / "nearest" / f"{i}.png") for i in range(3)), cwd=workspace)
    assert res.returncode == 0 and "as sd[/x] (" in res.stdout, res.stderr
    res = run("enroll", "--gallery", str(gallery), "--model", "bl{x}[/b]",  # a terminal: the name is in the bar's label
              *(str(ds / "bilinear" / f"{i}.png") for i in range(3)), cwd=workspace, env={"TTY_COMPATIBLE": "1"})
    assert res.returncode == 0 and "enrolling bl{x}[/b] " in res.stderr, res.stderr
    res = run("gallery", "list", "--gallery", str(gallery), cwd=workspace)
    assert res.returncode == 0 and "sd[/x]" in res.stdout and "bl{x}[/b]" in res.stdout, res.stderr

    folder = workspace / "a[/b]"  # folder "a[" holding folder "b]"
    folder.mkdir(parents=True)
    good = folder / ("photo[v2]" + "-long" * 40 + ".png")
    good.write_bytes((ds / "nearest" / "5.png").read_bytes())
    (folder / "bad.png").write_text("not an image")
    weird = os.fsencode(folder) + b"/x\n\x1b[31mred\tcaf\xe9.png"
    with open(weird, "wb") as fh:
        fh.write(b"junk")
    out_json = workspace / "names.json"
    res = run("identify", "--gallery", str(gallery), "--json-out", str(out_json), "a[/b]/bad.png", str(good), weird,
              "missing.png", cwd=workspace)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("skipped: ") for line in lines), res.stderr
    assert lines[0] == "skipped: a[/b]/bad.png: not an image (content is not a known image format)"
    assert "/x\\n\\x1b[31mred\\tcaf\\xe9.png: " in lines[1] and "\x1b" not in res.stderr
    assert lines[2].startswith("skipped: missing.png: ")
    table = [line for line in res.stdout.splitlines() if "photo" in line]
    assert len(table) == 1 and good.name in table[0] and "sd[/x]" in table[0]  # one row, the whole name
    payload = json.loads(out_json.read_text())
    assert payload["results"][0]["path"] == str(good)
    assert os.fsdecode(weird) in [f.split(": ")[0] for f in payload["failed"]]  # the true name, JSON-escaped


def test_a_missing_input_is_a_bad_input_for_identify_and_verify_alike(workspace: Path) -> None:
    ds = workspace / "dataset"
    res = run("verify", str(ds / "nearest" / "0.png"), str(workspace / "missing.png"), cwd=workspace)
    assert res.returncode == 1 and res.stderr.splitlines() == [f"error: {workspace / 'missing.png'}: no such file"]
    assert res.stdout == ""


def test_version_and_help_texts_without_artefacts() -> None:
    from typer.testing import CliRunner

    import modelprint
    from modelprint.cli.main import app

    res = run("--version", cwd=Path.cwd())
    assert res.returncode == 0 and res.stdout == f"modelprint {modelprint.__version__}\n"
    runner, seen = CliRunner(), 0
    groups = [[]]
    while groups:
        prefix = groups.pop()
        text = runner.invoke(app, [*prefix, "--help"], terminal_width=200).output
        assert "Usage:" in text and "{" not in text and "<bool>" not in text and "list[" not in text, (prefix, text)
        seen += 1
        section = text.split("Commands")[1] if "Commands" in text else ""
        names = [line.split()[1] for line in section.splitlines()
                 if line.startswith("│ ") and line.split()[1][0].isalpha()]
        groups += [[*prefix, name] for name in names]
    assert seen >= 25  # every command and group


SEEDED = {"evaluate", "demo", "synthesize", "fidelity", "spectral-reference", "denoiser train", "extractor train",
          "zoo build", "zoo sample", "probe prototypes", "anonymize", "views train-reconstructor", "views train-cnn"}
# no random draw: an old --seed is accepted, noted
SEEDLESS = {"enroll", "identify", "verify", "probe identify", "fusion fit"}


def test_seed_only_where_it_changes_something(workspace: Path, small_gallery: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelprint.cli.main import app

    for command in SEEDED | SEEDLESS:
        text = CliRunner().invoke(app, [*command.split(), "--help"], terminal_width=200).output
        assert ("--seed" in text) == (command in SEEDED), command
    gallery = tmp_path / "g.sqlite"
    gallery.write_bytes(small_gallery.read_bytes())
    images = [str(workspace / "dataset" / "nearest" / f"{i}.png") for i in range(3)]
    res = run("enroll", "--gallery", str(gallery), "--model", "nearest", "--seed", "5", *images, cwd=workspace)
    assert res.returncode == 0 and res.stderr == (
        "note: --seed changes nothing in modelprint enroll (its output depends on no random draw); ignored\n")
    command = ["identify", "--gallery", str(gallery), "--json", str(workspace / "dataset" / "nearest" / "6.png")]
    plain, seeded = run(*command, cwd=workspace), run(*command, "--seed", "9", cwd=workspace)
    assert plain.returncode == seeded.returncode == 0 and plain.stdout == seeded.stdout, seeded.stderr
    assert plain.stderr == "" and seeded.stderr.startswith("note: --seed changes nothing in modelprint identify ")


def test_extractor_train_and_its_old_name_run_one_command(tmp_path: Path) -> None:
    new = run("extractor", "train", "--pool", "no-pool", "--out", "out", cwd=tmp_path)
    old = run("train", "--pool", "no-pool", "--out", "out", cwd=tmp_path)
    assert new.returncode == old.returncode == 2 and "a synthetic pool with at least 4 models" in new.stderr
    assert old.stderr == "DeprecationWarning: The command 'train' is deprecated. Use 'modelprint extractor train'.\n" \
        + new.stderr


def test_help_imports_nothing_heavy() -> None:
    """``modelprint --help`` stays fast: the command modules defer torch, numpy, PIL and the API to their commands."""
    code = ("import sys, modelprint.cli.main; print(sorted(m for m in ('torch', 'numpy', 'PIL', 'diffusers', "
            "'modelprint.api', 'modelprint.gallery', 'modelprint.io') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == "[]\n", res.stderr


def test_list_names_every_registry_and_its_entries(tmp_path: Path) -> None:
    from modelprint.registry import all_registries

    res = run("list", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    expected = {kind: sorted(reg.names()) for kind, reg in all_registries().items()}
    assert {kind: sorted(entries) for kind, entries in listing.items()} == expected
    assert {"residual", "fingerprint method", "metric", "probe", "zoo family", "membership attack"} <= set(listing)
    table = run("list", cwd=tmp_path)
    assert table.returncode == 0 and "learned" in table.stdout and "dncnn" in table.stdout
