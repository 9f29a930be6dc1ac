"""Datasets of labelled images: a folder with one sub-folder per model, or a CSV/JSONL index.

Index files have columns ``path,label[,split]``; relative paths resolve against the index file's folder.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelprint.errors import DatasetError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".jfif"}
_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


def looks_like_image(path: Path) -> bool:
    """Cheap test used when scanning folders: an image extension, or image magic bytes."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _scan_folder(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts) and looks_like_image(p)
    )


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given (kept even if they are not images, so the error names them) and images found in folders."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        out.extend(_scan_folder(p) if p.is_dir() else [p])
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
        samples = []
        subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        for sub in subdirs:
            samples += [Sample(f, sub.name) for f in _scan_folder(sub)]
        if not samples:
            raise DatasetError(f"{folder}: no images found in per-model sub-folders")
        return cls(samples, str(folder))

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
        return Dataset([self.samples[i] for i in indices], self.source)

    def with_min_count(self, min_count: int) -> Dataset:
        """Keep only classes with at least ``min_count`` images."""
        keep = {c for c, n in self.counts().items() if n >= min_count}
        return Dataset([s for s in self.samples if s.label in keep], self.source)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)
