"""A test bed with known membership, read from a built zoo.

A member-split zoo recipe (one with a ``holdout``: ``tiny-ddpm-members``, ``ddpm-members``, ``ddpm-faces``) records
in its manifest line which images it trained on and which images of the same distribution it never saw, with
their sha256. :func:`membership_testbed` rebuilds both (checking the sha256, so the test bed is the one the model was
trained against) and adds the model's own samples (generated), images from another source (shifted: LFW faces
for photo models, photo crops for face models) and other zoo models' samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from modelprint.errors import ProbeError
from modelprint.zoo.base import DataSpec
from modelprint.zoo.data import images_digest, training_images
from modelprint.zoo.store import Zoo

__all__ = ["MembershipTestBed", "membership_testbed", "shifted_spec"]


@dataclass
class MembershipTestBed:
    """The images of one member-split model's provenance test bed, uint8 ``(n, H, W, 3)`` each."""

    model: str
    members: np.ndarray
    matched: np.ndarray
    shifted: np.ndarray
    generated: np.ndarray
    others: dict[str, np.ndarray] = field(default_factory=dict)
    splits: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Counts per part and the manifest's split record."""
        counts = {"members": len(self.members), "matched": len(self.matched), "shifted": len(self.shifted),
                  "generated": len(self.generated), **{f"other:{k}": len(v) for k, v in self.others.items()}}
        return {"model": self.model, "counts": {k: int(v) for k, v in counts.items()}, "splits": self.splits}


def shifted_spec(member_subset: str, n: int, size: int) -> DataSpec:
    """The default shifted non-members of a member-split model: LFW faces for photo models, photo crops for face
    models."""
    faces = str(member_subset).startswith("faces")
    return DataSpec("photos", n, size, 0) if faces else DataSpec("faces-holdout", n, size, 0)


def _samples(zoo: Zoo, name: str) -> np.ndarray:
    files = sorted(zoo.samples_dir(name).glob("*.png"))
    if not files:
        raise ProbeError(f"{zoo.root}: zoo model {name!r} has no saved samples")
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])


def _checked(spec: dict[str, Any], what: str, name: str) -> np.ndarray:
    images = training_images(DataSpec(**{k: spec[k] for k in ("subset", "n", "size", "seed")}))
    if images_digest(images) != spec["sha256"]:
        raise ProbeError(f"zoo model {name!r}: its {what} images rebuilt here differ from those recorded in the "
                         "manifest (sha256); the real-image pool on this machine is not the one it was built with")
    return images


def membership_testbed(zoo: str | Path | Zoo, name: str, shifted: DataSpec | None = None,
                       others: Sequence[str] = ()) -> MembershipTestBed:
    """The test bed of member-split zoo model ``name``: members, matched held-out images, ``shifted`` images
    (default: LFW faces for photo models, photo crops for face models, as many as the held-out images), its saved
    samples, and the saved samples of the zoo models ``others``."""
    zoo = zoo if isinstance(zoo, Zoo) else Zoo(Path(zoo))
    entry = zoo.info(name)
    splits = entry.get("splits")
    if not splits:
        raise ProbeError(f"zoo model {name!r} has no member split in its manifest (member-split recipes: those "
                         "with a holdout, e.g. tiny-ddpm-members, ddpm-members, ddpm-faces)")
    members = _checked(splits["members"], "member", name)
    matched = _checked(splits["holdout"], "held-out", name)
    size, n = members.shape[1], len(matched)
    shifted = shifted or shifted_spec(splits["members"]["subset"], n, size)
    return MembershipTestBed(model=name, members=members, matched=matched, shifted=training_images(shifted)[:n],
                             generated=_samples(zoo, name), others={o: _samples(zoo, o) for o in others},
                             splits=splits)
