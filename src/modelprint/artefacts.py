"""Every weights file modelprint ships or saves: where the shipped ones live, reading them with sha256
verification, writing them atomically with one sidecar convention, and one error for every failure.

**Sidecar.** The sidecar of ``name.ext`` is ``name.json`` beside it: a JSON object holding the file's name, size
and ``sha256``, and whatever the writer records to rebuild and explain it (``config``, ``seed``, recipe, …).
:func:`write_sidecar` writes it; :func:`open_artefact` checks a file against it. A shipped file must have a sidecar
with a sha256; a user's file may have none, and is then read unverified.

**Errors.** Every failure (a missing or unreadable file, a truncated or foreign one, a sidecar that is not a JSON
object, a sha256 that differs) raises :class:`~modelprint.errors.CheckpointError` whose one-line message names
the file and what is wrong.

Stores of many models (the zoo, synthetic pools) record their files' sha256 in a manifest instead
(:mod:`modelprint.manifest`) and check them with :func:`verify_files`. Torch, safetensors and numpy load lazily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelprint.atomic import atomic_path, sha256_file, write_text
from modelprint.errors import CheckpointError

#: The folder of the weights (and their sidecars and model cards) shipped with modelprint.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: File types :func:`read_tensors` reads.
TENSOR_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def shipped_path(name: str) -> Path:
    """The path of the shipped file ``name`` (in :data:`WEIGHTS_DIR`)."""
    return WEIGHTS_DIR / name


def sidecar_path(path: str | Path) -> Path:
    """The sidecar of a weights file: the same name with a ``.json`` extension."""
    return Path(path).with_suffix(".json")


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line of at most ``limit`` characters (its type if it has none)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, a ``what``; :class:`CheckpointError` if it is missing, unreadable, not JSON
    (a truncated file included) or not an object."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} not found") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable {what} ({one_line(exc)})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: {what} is not a JSON object")
    return doc


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``; :class:`CheckpointError` if it cannot be read."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None


@dataclass(frozen=True)
class Artefact:
    """A weights file checked against its sidecar: its path, sha256 and sidecar (``{}`` if it has none)."""

    path: Path
    sha256: str
    sidecar: dict[str, Any] = field(default_factory=dict)


def open_artefact(path: str | Path, what: str, *, shipped: bool = False, hint: str = "") -> Artefact:
    """Check that ``path`` (a ``what``) is a readable file matching its sidecar's sha256.

    ``shipped`` files must have a sidecar with a sha256. ``hint`` is appended to the message of a missing file.
    Raises :class:`CheckpointError` naming the file otherwise.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: {what} not found{hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} is not a file")
    side = sidecar_path(path)
    meta = read_json(side, f"sidecar of {path.name}") if side.is_file() else {}
    if shipped and not meta:
        raise CheckpointError(f"{path}: sidecar {side.name} with the expected sha256 is missing")
    sha = file_sha256(path)
    expected = meta.get("sha256")
    if expected:
        if str(expected).lower() != sha:
            raise CheckpointError(f"{path}: sha256 mismatch: the file's {sha[:12]}… does not match {side.name} "
                                  f"({str(expected)[:12]}…); the file is corrupt or was replaced")
    elif shipped:
        raise CheckpointError(f"{path}: sidecar {side.name} has no sha256")
    return Artefact(path, sha, meta)


def write_sidecar(path: str | Path, fields: Mapping[str, Any]) -> str:
    """Write the sidecar of the (written) file ``path``: ``fields``, then its name, size and sha256, atomically;
    returns the sha256."""
    path = Path(path)
    sha = sha256_file(path)
    doc = {**fields, "file": path.name, "bytes": path.stat().st_size, "sha256": sha}
    write_text(sidecar_path(path), json.dumps(doc, indent=2) + "\n")
    return sha


def update_sidecar(path: str | Path, fields: Mapping[str, Any]) -> str:
    """Add ``fields`` to the sidecar of ``path`` (checked against the file first)."""
    return write_sidecar(path, {**open_artefact(path, "weights file").sidecar, **fields})


# ------------------------------------------------------------------------------------------------- tensors
def read_tensors(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors of a ``.safetensors`` file and its header metadata, or of a PyTorch state dict (``.pt``,
    ``.pth``, ``.bin``, read with ``weights_only=True``; a nested ``state_dict`` and ``module.`` prefixes are
    unwrapped; no metadata). Does not verify the sha256 (see :func:`open_artefact`)."""
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TENSOR_SUFFIXES:
        raise CheckpointError(f"{path}: unsupported weights format {suffix or '(no extension)'}; use "
                              f"{', '.join(TENSOR_SUFFIXES)}")
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})  # noqa: SIM118
        except Exception as exc:  # noqa: BLE001  (safetensors raises several types on garbage)
            raise CheckpointError(f"{path}: not a readable safetensors file ({one_line(exc)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle, zip and weights_only errors have no common base)
        raise CheckpointError(f"{path}: not a readable state dict ({one_line(exc)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}, {}


def write_tensors(path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> str:
    """Write ``tensors`` (contiguous torch tensors) as safetensors atomically; returns the file's sha256.

    Give ``metadata`` at most one key: safetensors writes the map in hash order, so several keys could make the
    bytes (and sha256) of the same tensors differ from run to run.
    """
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=None if metadata is None else dict(metadata))
    return sha256_file(path)


# ------------------------------------------------------------------------------------------------- arrays
def read_arrays(path: str | Path, what: str, *, shipped: bool = False, hint: str = "") -> dict[str, Any]:
    """The arrays of an ``.npz`` file (a ``what``), verified against its sidecar (see :func:`open_artefact`);
    never unpickles."""
    import numpy as np

    art = open_artefact(path, what, shipped=shipped, hint=hint)
    try:
        with np.load(art.path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001  (zip, pickle-refusal and format errors have no common base)
        raise CheckpointError(f"{art.path}: not a {what} ({one_line(exc)})") from None


def write_arrays(path: str | Path, arrays: Mapping[str, Any], sidecar: Mapping[str, Any]) -> str:
    """Write ``arrays`` as an ``.npz`` atomically, then its sidecar with ``sidecar`` fields; returns the sha256."""
    import numpy as np

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return write_sidecar(path, sidecar)


def meta_array(meta: Mapping[str, Any]) -> Any:
    """``meta`` as JSON bytes in a uint8 array: the ``"meta"`` entry of an ``.npz`` written by :func:`write_arrays`
    (settings travel with the arrays, and no pickle is needed to read them)."""
    import numpy as np

    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def read_meta(arrays: Mapping[str, Any], path: str | Path, what: str, fmt: str, hint: str = "") -> dict[str, Any]:
    """The ``"meta"`` entry of ``arrays`` (read by :func:`read_arrays` from ``path``), checked to be of format
    ``fmt``; :class:`CheckpointError` naming the file if it is missing, not JSON or of another format."""
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (KeyError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a {what} ({one_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: format {found!r}, expected {fmt!r}{hint}")
    return meta


# ------------------------------------------------------------------------------------------------- folders
def file_digests(folder: str | Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by its path relative to ``folder``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def verify_files(folder: str | Path, expected: Mapping[str, str], *, complete: bool = False) -> None:
    """Check the files ``expected`` lists (paths relative to ``folder`` → sha256); with ``complete``, also that
    ``folder`` holds no other file. :class:`CheckpointError` naming the folder and the first problem otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: missing")
    for rel, digest in expected.items():
        path = folder / rel
        if not path.is_file():
            raise CheckpointError(f"{folder}: listed file {rel} is missing")
        actual = file_sha256(path)
        if actual != digest.lower():
            raise CheckpointError(f"{folder}: sha256 of {rel} is {actual}, expected {digest}")
    if complete:
        extra = sorted({p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - set(expected))
        if extra:
            raise CheckpointError(f"{folder}: unlisted file(s) {', '.join(extra[:3])}")
