"""The real-image pool: deterministic multi-scale crops of real photographs.

Sources are the photographs shipped inside installed packages (scikit-image, scikit-learn, matplotlib, and the
Debian wallpaper and OpenCV example packages when installed) plus any folders a user names. Photos are split by
file into ``train`` and ``holdout`` (every fifth photo, by a hash of its name), so that held-out evaluation never
sees a training photo. Crops are drawn by seed at several scales (each photo is downscaled by powers of
√2 with antialiasing, then cropped) and cached on disk as ``.npy`` keyed by everything that determines them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from modelprint.atomic import atomic_path
from modelprint.config import cache_dir
from modelprint.errors import DatasetError

SPLITS = ("train", "holdout", "all")

_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
)
_OPENCV_PHOTOS = (
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg",
    "butterfly.jpg", "fruits.jpg", "HappyFish.jpg", "home.jpg", "leuvenA.jpg", "leuvenB.jpg", "messi5.jpg",
    "orange.jpg", "squirrel_cls.jpg", "stuff.jpg", "basketball1.png", "rubberwhale1.png", "graf1.png",
)
_DEBIAN_PHOTO_DIRS = ("/usr/share/backgrounds", "/usr/share/backgrounds/mate/nature")
_OPENCV_DIR = "/usr/share/doc/opencv-doc/examples/data"


def package_photos() -> list[Path]:
    """Photographs shipped by installed packages (those that are present on this machine)."""
    found: list[Path] = []
    import matplotlib
    import skimage
    import sklearn

    sk_dir = Path(skimage.__file__).parent / "data"
    found += [sk_dir / n for n in _SKIMAGE_PHOTOS]
    found += [Path(sklearn.__file__).parent / "datasets" / "images" / n for n in ("china.jpg", "flower.jpg")]
    found.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    for d in _DEBIAN_PHOTO_DIRS:
        found += sorted(Path(d).glob("*.jpg"))
    found += [Path(_OPENCV_DIR) / n for n in _OPENCV_PHOTOS]
    return [p for p in found if p.is_file()]


def _split_of(path: Path) -> str:
    h = int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16)
    return "holdout" if h % 5 == 0 else "train"


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im) or im
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


@dataclass
class RealPool:
    """Real photographs and the crops drawn from them.

    Parameters
    ----------
    folders:
        Extra folders of the user's own photos (searched recursively), or single photo files.
    include_packages:
        Whether the package-shipped photographs are part of the pool.
    """

    folders: Sequence[str | Path] = ()
    include_packages: bool = True
    _photos: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)

    def sources(self, split: str = "all") -> list[Path]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        from modelprint.io.datasets import expand_paths

        paths = package_photos() if self.include_packages else []
        for folder in self.folders:
            if not Path(folder).exists():
                raise DatasetError(f"{folder}: pool folder (or photo) does not exist")
            paths += expand_paths([folder])
        paths = sorted(set(paths), key=lambda p: (p.name, str(p)))
        if split != "all":
            paths = [p for p in paths if _split_of(p) == split]
        if not paths:
            raise DatasetError("the real-image pool is empty: install the packages in the Makefile or add --pool-folder")
        return paths

    def _photo(self, path: Path) -> np.ndarray:
        if path not in self._photos:
            self._photos[path] = _load_rgb(path)
        return self._photos[path]

    def _key(self, sources: list[Path], n: int, size: int, seed: int, min_scale: float) -> str:
        desc = {
            "v": 1,
            "sources": [[p.name, p.stat().st_size] for p in sources],
            "n": n,
            "size": size,
            "seed": seed,
            "min_scale": min_scale,
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]

    def crops(
        self,
        n: int,
        size: int = 64,
        seed: int = 0,
        split: str = "train",
        min_scale: float = 0.125,
        cache: bool = True,
    ) -> np.ndarray:
        """``n`` random ``size``×``size`` RGB crops (uint8, shape (n, size, size, 3)), deterministic by ``seed``.

        Each crop picks a photo uniformly, a scale from {1, 1/√2, 1/2, …, ``min_scale``} (only scales at which
        the photo still covers ``size`` pixels), and a position uniformly.
        """
        sources = self.sources(split)
        key = self._key(sources, n, size, seed, min_scale)
        path = cache_dir() / "pool" / f"crops-{key}.npy"
        if cache and path.exists():
            return np.load(path)
        rng = np.random.default_rng(seed)
        out = np.empty((n, size, size, 3), dtype=np.uint8)
        choice = rng.integers(0, len(sources), size=n)
        order = np.argsort(choice, kind="stable")  # decode and rescale each photo once
        scales = [2 ** (-k / 2) for k in range(int(np.floor(-2 * np.log2(min_scale))) + 1)]
        current: Path | None = None
        pyramid: dict[float, np.ndarray] = {}
        draws = rng.random((n, 3))
        for i in order:
            src = sources[choice[i]]
            if src != current:
                current, pyramid = src, {}
                photo = self._photo(src)
                h, w = photo.shape[:2]
                for s in scales:
                    if min(h, w) * s >= size:
                        pyramid[s] = photo if s == 1 else np.asarray(
                            Image.fromarray(photo).resize(
                                (max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.LANCZOS
                            )
                        )
                if not pyramid:  # photo smaller than a crop: upscale it just enough
                    f = size / min(h, w)
                    pyramid[f] = np.asarray(
                        Image.fromarray(photo).resize((max(size, round(w * f)), max(size, round(h * f))), Image.Resampling.LANCZOS)
                    )
                levels = sorted(pyramid)
            img = pyramid[levels[int(draws[i, 0] * len(levels))]]
            y = int(draws[i, 1] * (img.shape[0] - size + 1))
            x = int(draws[i, 2] * (img.shape[1] - size + 1))
            out[i] = img[y : y + size, x : x + size]
        if cache:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, out)
        return out
