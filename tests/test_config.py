"""The ``MODELPRINT_*`` environment variables: read in one place, documented in the README, bad values named."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import natural_like
from modelprint import config
from modelprint.errors import ModelprintError

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"\bMODELPRINT_[A-Z_]+\b")
#: A read of a MODELPRINT_* variable (setting one for a child process, ``environ["MODELPRINT_X"] = …``, is not).
READ = re.compile(r"(environ\.get\(|getenv\()\s*[\"']MODELPRINT_"
                  r"|environ\[\s*[\"']MODELPRINT_[A-Z_]+[\"']\s*\](?!\s*=[^=])")


def _sources() -> list[Path]:
    return [p for folder in ("src", "benchmarks", "scripts") for p in (ROOT / folder).rglob("*.py")]


def test_every_variable_is_read_by_config_only_and_listed_there() -> None:
    names = {v.name for v in config.VARIABLES}
    used = {name for path in _sources() for name in NAME.findall(path.read_text(encoding="utf-8"))}
    assert used <= names, f"not in modelprint.config.VARIABLES: {sorted(used - names)}"
    readers = [str(p.relative_to(ROOT)) for p in _sources() if READ.search(p.read_text(encoding="utf-8"))]
    assert not readers, f"read MODELPRINT_* themselves instead of through modelprint.config: {readers}"


def test_the_readme_table_lists_every_variable_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `(MODELPRINT_[A-Z_]+)` \|([^|]*)\|", readme,
                                                                 re.MULTILINE)}
    assert rows == {v.name: v.default for v in config.VARIABLES}


def test_values_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for v in config.VARIABLES:
        monkeypatch.delenv(v.name, raising=False)
    assert config.max_pixels() == config.DEFAULT_MAX_PIXELS and config.torch_threads() == 0
    assert config.cache_dir() == Path.home() / ".cache" / "modelprint" and config.realworld_dir() is None
    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path))
    monkeypatch.setenv("MODELPRINT_MAX_PIXELS", " 1000 ")
    monkeypatch.setenv("MODELPRINT_THREADS", "")  # empty: the default
    assert config.cache_dir() == tmp_path and config.max_pixels() == 1000 and config.torch_threads() == 0


@pytest.mark.parametrize(("name", "value", "read"), [("MODELPRINT_MAX_PIXELS", "64M", config.max_pixels),
                                                     ("MODELPRINT_MAX_PIXELS", "0", config.max_pixels),
                                                     ("MODELPRINT_THREADS", "-1", config.torch_threads),
                                                     ("MODELPRINT_THREADS", "two", config.torch_threads)])
def test_a_bad_value_is_an_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                      read: object) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ModelprintError, match=f"^{name}='{value}': not an integer"):
        read()  # type: ignore[operator]


def test_a_bad_value_is_one_line_from_the_cli(tmp_path: Path) -> None:
    for i in range(2):
        Image.fromarray(natural_like(48, 48, seed=i)).save(tmp_path / f"{i}.png")
    res = subprocess.run([sys.executable, "-m", "modelprint.cli.main", "verify", "0.png", "1.png", "--method",
                          "spectral"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MODELPRINT_MAX_PIXELS": "lots"})
    assert res.returncode == 2 and res.stderr == "error: MODELPRINT_MAX_PIXELS='lots': not an integer of at least 1\n"
