"""Datasets of labelled images: a folder with one sub-folder per model, or a CSV/JSONL index; and folder scans.

Index files have columns ``path,label[,split]``; relative paths resolve against the index file's folder.

A folder scan names everything it cannot use instead of dropping it silently: a sub-folder it cannot read, a
link to a folder (not followed, so no link can make a scan loop), and a folder with no images each become an
:class:`~modelprint.errors.ImageError`; broken or looping links and FIFOs, devices or sockets are kept as paths, so
that reading them names the problem. Hidden entries and regular files that do not look like images are skipped.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelprint.errors import DatasetError, ImageError
from modelprint.io.images import ImageBytes

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".jfif"}
_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)

#: What a batch of inputs holds: a file to read (on disk or in memory), or the error of something a folder scan had
#: to skip.
Input = Path | ImageBytes | ImageError


def looks_like_image(path: Path) -> bool:
    """Cheap test for a regular file met in a folder scan: an image extension or image magic bytes.

    A file that cannot be read counts as an image, so that reading it names the problem.
    """
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return True
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder (links followed); False when it cannot be told (the reader names why)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _listing(folder: Path) -> list[os.DirEntry] | ImageError:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return ImageError(folder, f"cannot read folder ({exc.strerror or exc})")


def _scan_folder(folder: Path) -> list[Input]:
    """The inputs under ``folder``, recursively, in path order (see the module docstring for what is kept)."""
    out: list[Input] = []
    stack: list[Iterator[os.DirEntry]] = []

    def enter(sub: Path) -> None:
        listing = _listing(sub)
        if isinstance(listing, ImageError):
            out.append(listing)
        else:
            stack.append(iter(listing))

    enter(folder)
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            real_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            real_dir = False
        if real_dir:
            enter(path)
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError:  # a broken or looping link, or no permission: reading it says which
            out.append(path)
            continue
        if stat.S_ISDIR(mode):
            out.append(ImageError(path, "link to a folder, not followed by folder scans (name it on its own to "
                                        "include it)"))
        elif not stat.S_ISREG(mode) or looks_like_image(path):
            out.append(path)
    return out


def _folder_inputs(folder: Path) -> list[Input]:
    return _scan_folder(folder) or [ImageError(folder, "no images found in this folder")]


class Inputs(list[Input]):
    """The inputs of a batch as :func:`expand_paths` found them; expanding them again returns them as they are."""


def expand_paths(paths: Iterable[str | Path | ImageBytes | ImageError]) -> Inputs:
    """Inputs of a batch: files as given (kept even if they are not images, so the error names them), what the
    scan of each folder given finds (see the module docstring), and any :class:`ImageBytes` or :class:`ImageError`
    given, in order.

    Given the :class:`Inputs` it returned, it returns them without a second look at the disk: a batch is scanned
    once, so a count taken from the scan (a progress bar's) is the count of what is read."""
    if isinstance(paths, Inputs):
        return paths
    out = Inputs()
    for raw in paths:
        if isinstance(raw, ImageBytes | ImageError):
            out.append(raw)
            continue
        p = Path(raw)
        out.extend(_folder_inputs(p) if _is_dir(p) else [p])
    return out


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str | None = None


@dataclass
class Dataset:
    """An ordered list of labelled image paths."""

    samples: list[Sample]
    source: str = ""
    skipped: list[ImageError] = field(default_factory=list)  # what the folder scan could not use
    _by_label: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_label = {}
        for i, s in enumerate(self.samples):
            self._by_label.setdefault(s.label, []).append(i)

    @classmethod
    def from_path(cls, path: str | Path) -> Dataset:
        """A folder of per-model sub-folders, or a ``.csv`` / ``.jsonl`` index file."""
        p = Path(path)
        if p.is_dir():
            return cls.from_folder(p)
        if not p.exists():
            raise DatasetError(f"{p}: no such dataset folder or index file")
        suffix = p.suffix.lower()
        if suffix == ".csv":
            return cls.from_csv(p)
        if suffix in (".jsonl", ".ndjson"):
            return cls.from_jsonl(p)
        raise DatasetError(f"{p}: a dataset is a folder of per-model sub-folders, or a .csv / .jsonl index")

    @classmethod
    def from_folder(cls, folder: Path) -> Dataset:
        try:
            entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        except OSError as exc:
            raise DatasetError(f"{folder}: cannot read dataset folder ({exc.strerror or exc})") from None
        samples: list[Sample] = []
        skipped: list[ImageError] = []
        for sub in entries:
            if _is_dir(sub):
                for item in _folder_inputs(sub):
                    if isinstance(item, ImageError):
                        skipped.append(item)
                    else:
                        samples.append(Sample(item, sub.name))
            elif os.path.islink(sub) and not os.path.exists(sub):
                skipped.append(ImageError(sub, "broken or looping link where a model folder was expected"))
        if not samples:
            first = f" ({len(skipped)} skipped, first: {skipped[0]})" if skipped else ""
            raise DatasetError(f"{folder}: no images found in per-model sub-folders{first}")
        return cls(samples, str(folder), skipped)

    @classmethod
    def from_records(cls, records: Iterable[dict], index: Path) -> Dataset:
        samples = []
        base = index.parent
        for lineno, rec in enumerate(records, start=2):
            if "path" not in rec or "label" not in rec or not rec["path"] or not rec["label"]:
                raise DatasetError(f"{index}: record {lineno - 1} needs non-empty 'path' and 'label'")
            path = Path(rec["path"])
            samples.append(Sample(path if path.is_absolute() else base / path, str(rec["label"]), rec.get("split") or None))
        if not samples:
            raise DatasetError(f"{index}: index lists no images")
        return cls(samples, str(index))

    @classmethod
    def from_csv(cls, index: Path) -> Dataset:
        with open(index, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise DatasetError(f"{index}: CSV header must contain 'path' and 'label' (got {reader.fieldnames})")
            return cls.from_records(list(reader), index)

    @classmethod
    def from_jsonl(cls, index: Path) -> Dataset:
        records = []
        with open(index, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{index}: line {lineno} is not valid JSON ({exc.msg})") from None
        return cls.from_records(records, index)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.samples]

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    @property
    def classes(self) -> list[str]:
        return sorted(self._by_label)

    def counts(self) -> Counter:
        return Counter(self.labels)

    def indices_of(self, label: str) -> list[int]:
        return list(self._by_label.get(label, []))

    def subset(self, indices: Sequence[int]) -> Dataset:
        return Dataset([self.samples[i] for i in indices], self.source, self.skipped)

    def with_min_count(self, min_count: int) -> Dataset:
        """Keep only classes with at least ``min_count`` images."""
        keep = {c for c, n in self.counts().items() if n >= min_count}
        return Dataset([s for s in self.samples if s.label in keep], self.source, self.skipped)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)


def query_counterparts(dataset: Dataset, queries: Dataset) -> tuple[list[Path | None], list[ImageError]]:
    """For each image of ``dataset``, the file of ``queries`` with the same class folder (label) and file stem, any
    extension; ``None`` and an error naming the image where there is none, or more than one (never guessed)."""
    by_key: dict[tuple[str, str], list[Path]] = {}
    for s in queries:
        by_key.setdefault((s.label, Path(s.path).stem), []).append(Path(s.path))
    found: list[Path | None] = []
    errors: list[ImageError] = []
    for s in dataset:
        hits = by_key.get((s.label, Path(s.path).stem), [])
        found.append(hits[0] if len(hits) == 1 else None)
        if len(hits) != 1:
            why = ("no counterpart" if not hits else f"{len(hits)} candidate counterparts "
                   f"({', '.join(h.name for h in sorted(hits))})")
            errors.append(ImageError(s.path, f"{why} in the query dataset {queries.source} "
                                             f"(expected {s.label}/{Path(s.path).stem}.*); left out"))
    return found, errors
