"""A pool of trained synthetic generators on disk: resumable, parallel, verified by sha256.

Layout of ``out_dir``::

    pool.json                      settings and training data description (a resumed run must match them)
    manifest.jsonl                 one JSON line per finished model, by model id (see :mod:`modelprint.manifest`)
    weights/<model id>.safetensors one file per model (written atomically before its manifest line)

A model id is ``<architecture id>-s<seed>`` (:func:`~modelprint.synthesis.space.model_id`). Every manifest line
holds ``model_id, arch, seed, steps, final_loss, train_loss, reached_criterion, seconds, group_size, group (the
seeds trained together), crop, file, sha256, params``; losses are residuals as defined in :mod:`modelprint.synthesis.train` (eval-mode MSE on [-1, 1]
over held-out crops), ``seconds`` is the model's share of its group's wall time.

**Resuming.** A killed run leaves only complete files (see :mod:`modelprint.atomic`). On restart, manifest lines
whose weights file is missing or fails its sha256 are dropped, and every model without a valid line is trained
again (training is deterministic, so a re-trained model has the same weights whether or not its file survived).

**Grouping.** Seeds of one architecture train as one grouped network, in fixed blocks of ``group_size`` of the
requested seed list. Grouping changes nothing in exact arithmetic; in float32 different kernels round differently
and training amplifies that (as would another thread count), so the weights' bits depend on the group, which the
manifest records. Runs with the same seeds, group size and thread count are bit-identical.

**Parallelism.** ``workers > 1`` runs groups (one architecture, up to ``group_size`` seeds) in that many spawned
processes with one torch thread each (the measured best on this 2-core machine), or on a Ray cluster (an
:class:`~modelprint.executor.Executor`); the parent process alone writes the manifest. ``workers=1`` trains in the
calling process with its current torch thread setting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelprint.artefacts import read_tensors, verify_files, write_tensors
from modelprint.errors import CheckpointError, ModelprintError
from modelprint.executor import Executor, LocalExecutor, ProcessExecutor
from modelprint.manifest import MANIFEST, check_settings, write_manifest
from modelprint.manifest import read_manifest as _read_records
from modelprint.synthesis.space import Architecture, all_architectures, model_id, parse_model_id
from modelprint.synthesis.defaults import (
    DEFAULT_BATCH,
    DEFAULT_CHECK_EVERY,
    DEFAULT_CROP,
    DEFAULT_GROUP_SIZE,
    DEFAULT_LR,
    DEFAULT_STEPS,
    RESIDUAL_CRITERION,
)

FORMAT = "modelprint-synthetic-pool/1"
SETTINGS = "pool.json"
WEIGHTS_DIR = "weights"

ProgressFn = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class SynthesisSettings:
    """Everything besides (architecture, seed) that determines a pool model's weights."""

    crop: int = DEFAULT_CROP
    max_steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH
    lr: float = DEFAULT_LR
    criterion: float = RESIDUAL_CRITERION
    check_every: int = DEFAULT_CHECK_EVERY
    schedule: str = "cosine"
    train_crops: int = 4096
    val_crops: int = 64
    data_seed: int = 0
    pool_folders: tuple[str, ...] = ()
    include_packages: bool = True

    def real_pool(self):
        from modelprint.io.pool import RealPool

        return RealPool(folders=self.pool_folders, include_packages=self.include_packages)

    def training_data(self) -> tuple[np.ndarray, np.ndarray]:
        """(train crops from the pool's train split, validation crops from its holdout split), uint8 NHWC."""
        pool = self.real_pool()
        train = pool.crops(self.train_crops, size=self.crop, seed=self.data_seed, split="train")
        val = pool.crops(self.val_crops, size=self.crop, seed=self.data_seed + 1, split="holdout")
        return train, val


@dataclass
class PoolSummary:
    """What one :func:`synthesize_pool` call did."""

    out_dir: str
    total: int  # models requested
    skipped: int  # already in the manifest with a valid file
    trained: int
    seconds: float
    records: list[dict] = field(default_factory=list, repr=False)  # the whole manifest afterwards
    complete: bool = True  # every requested model is in the manifest


# ----------------------------------------------------------------------------------------------------- manifest
def read_manifest(out_dir: str | Path) -> dict[str, dict]:
    """The manifest lines of the pool ``out_dir`` by model id (``{}`` if it has none)."""
    return _read_records(out_dir, "model_id")


def _problem(out_dir: Path, rec: dict) -> str | None:
    """``None`` if the model's weights file matches its manifest line, else what is wrong."""
    file, digest = rec.get("file"), rec.get("sha256")
    if not isinstance(file, str) or not isinstance(digest, str):
        return f"{out_dir / MANIFEST}: the line of {rec.get('model_id')!r} names no weights file and sha256"
    try:
        verify_files(out_dir, {file: digest})
    except CheckpointError as err:
        return str(err)
    return None


def verify_pool(out_dir: str | Path) -> list[str]:
    """Ids of manifest models whose weights file is missing or does not match its sha256."""
    out = Path(out_dir)
    return [mid for mid, r in read_manifest(out).items() if _problem(out, r)]


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ------------------------------------------------------------------------------------------------ weights files
def _save_weights(path: Path, arch: Architecture, seed: int, state: dict) -> str:
    meta = {"modelprint": json.dumps({"format": FORMAT, "arch": arch.id, "seed": seed}, sort_keys=True)}
    return write_tensors(path, {k: v.detach().contiguous() for k, v in state.items()}, meta)


def load_synthetic(out_dir: str | Path, model_id: str):
    """The pool model ``model_id`` as a :class:`~modelprint.synthesis.model.SyntheticGenerator` in eval mode.

    The weights file is checked against the manifest's sha256 first; a missing model, a missing or altered file,
    or weights that do not fit the architecture raise :class:`~modelprint.errors.CheckpointError` naming the file.
    """
    from modelprint.synthesis.grouped import load_single

    out = Path(out_dir)
    recs = read_manifest(out)
    if model_id not in recs:
        raise CheckpointError(f"{out / MANIFEST}: no synthetic model {model_id!r} in this pool ({len(recs)} models)")
    problem = _problem(out, recs[model_id])
    if problem:
        raise CheckpointError(f"synthetic model {model_id!r}: {problem}")
    path = out / recs[model_id]["file"]
    arch, _ = parse_model_id(model_id)
    state, _ = read_tensors(path)
    try:
        return load_single(arch, state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: cannot load into {arch.id}: {str(exc).splitlines()[0]}") from None


# ------------------------------------------------------------------------------------------------ training tasks
_WORKER: dict[str, Any] = {}


def _init_worker(train: np.ndarray, val: np.ndarray, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    _WORKER["train"], _WORKER["val"] = train, val


def _run_task(out_dir: str, arch_id: str, seeds: list[int], settings: SynthesisSettings) -> list[dict]:
    from modelprint.synthesis.train import train_group

    arch = Architecture.parse(arch_id)
    states, stats = train_group(
        arch, seeds, _WORKER["train"], val_crops=_WORKER["val"], max_steps=settings.max_steps,
        batch_size=settings.batch_size, lr=settings.lr, criterion=settings.criterion,
        check_every=settings.check_every, schedule=settings.schedule,
    )
    records = []
    for state, st in zip(states, stats, strict=True):
        mid = model_id(arch, st.seed)
        rel = f"{WEIGHTS_DIR}/{mid}.safetensors"
        digest = _save_weights(Path(out_dir) / rel, arch, st.seed, state)
        records.append({
            "model_id": mid, "arch": arch.id, "seed": st.seed, "steps": st.steps,
            "final_loss": round(st.final_loss, 6), "train_loss": round(st.train_loss, 6),
            "reached_criterion": st.reached_criterion, "seconds": round(st.seconds, 3),
            "group_size": st.group_size, "group": seeds, "crop": st.crop, "file": rel, "sha256": digest,
            "params": int(sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)),
        })
    return records


def resolve_archs(archs: str | Iterable[Architecture | str] | dict | None) -> list[Architecture]:
    """Architectures from a space name (``"all"``/``"paper"``, ``"extended"``), a space dict, or ids/objects."""
    if archs is None or archs == "all":
        return all_architectures("paper")
    if isinstance(archs, (str, dict)):
        return all_architectures(archs)
    return [a if isinstance(a, Architecture) else Architecture.parse(a) for a in archs]


def _cost(arch: Architecture) -> float:
    """Relative training cost, for scheduling the longest groups first."""
    return arch.blocks * (1 + 0.5 * (arch.convs - 1)) * (2 if arch.upsampling == "pixelshuffle" else 1)


def synthesize_pool(
    out_dir: str | Path,
    archs: str | Iterable[Architecture | str] | dict | None = "paper",
    seeds: int | Sequence[int] = 2,
    *,
    crop: int = DEFAULT_CROP,
    max_steps: int = DEFAULT_STEPS,
    workers: int = 1,
    progress: ProgressFn | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
    settings: SynthesisSettings | None = None,
    time_limit: float | None = None,
    executor: Executor | None = None,
) -> PoolSummary:
    """Train every (architecture, seed) not yet in ``out_dir`` and record it; see the module docstring.

    ``archs``: a space name (``"paper"``/``"all"`` = 288, ``"extended"`` = 1344), a space dict, or architecture
    ids. ``seeds``: a count ``N`` (seeds ``0 … N-1``) or explicit seeds. ``crop`` and ``max_steps`` override the
    corresponding fields of ``settings``. ``progress(done, total, record)`` is called in this process after each
    model is recorded. With ``time_limit`` (seconds), no new group starts after that time; the groups under way
    finish and are recorded, and a later call resumes (``PoolSummary.complete`` tells). ``executor`` (default: a
    process pool of ``workers``, or this process) runs the groups, e.g. a :class:`~modelprint.executor.RayExecutor`.
    With worker processes call this from a ``if __name__ == "__main__":`` block (they re-import the main module).
    """
    from dataclasses import replace

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = replace(settings or SynthesisSettings(), crop=crop, max_steps=max_steps)
    arch_list = resolve_archs(archs)
    if not arch_list:
        raise ModelprintError("no architectures to synthesise")
    if settings.crop % (2 ** max(a.blocks for a in arch_list)):
        raise ModelprintError(f"crop {settings.crop} must be a multiple of 2**blocks for every architecture")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(dict.fromkeys(int(s) for s in seeds))
    if not seed_list or min(seed_list) < 0 or group_size < 1:
        raise ModelprintError("need at least one seed (>= 0) and group_size >= 1")
    check_settings(out / SETTINGS, {"format": FORMAT, "settings": _jsonable(asdict(settings))}, "pool")

    records = {k: r for k, r in read_manifest(out).items() if not _problem(out, r)}
    wanted = [(a, s) for a in arch_list for s in seed_list]
    # Groups are fixed blocks of the requested seed list (not of the seeds still missing): a group's records are
    # written together, so an interrupted run resumes with the same groups and makes the same float32 weights.
    blocks = [seed_list[i : i + group_size] for i in range(0, len(seed_list), group_size)]
    tasks = [(a, [s for s in block if model_id(a, s) not in records]) for a in arch_list for block in blocks]
    tasks = [(a, ss) for a, ss in tasks if ss]
    tasks.sort(key=lambda t: -_cost(t[0]) * len(t[1]))  # longest first: better balance across workers
    total = len(wanted)
    skipped = total - sum(len(ss) for _, ss in tasks)
    done = skipped
    start = time.perf_counter()
    if not tasks:
        write_manifest(out, [records[k] for k in sorted(records)])
        return PoolSummary(str(out), total, skipped, 0, 0.0, list(records.values()), True)
    train, val = settings.training_data()

    def record(new: list[dict]) -> None:
        nonlocal done
        for rec in new:
            records[rec["model_id"]] = rec
        write_manifest(out, [records[k] for k in sorted(records)])
        for rec in new:
            done += 1
            if progress is not None:
                progress(done, total, rec)

    def may_start() -> bool:
        return time_limit is None or time.perf_counter() - start < time_limit

    ex = executor or (ProcessExecutor(workers) if workers > 1 else LocalExecutor())
    threads = None if isinstance(ex, LocalExecutor) else 1  # workers: one torch thread each
    work = [(str(out), a.id, ss, settings) for a, ss in tasks]
    for _i, new in ex.run(_run_task, work, initializer=_init_worker, initargs=(train, val, threads),
                          may_start=may_start):
        record(new)
    trained = done - skipped
    return PoolSummary(str(out), total, skipped, trained, time.perf_counter() - start, list(records.values()),
                       done == total)
