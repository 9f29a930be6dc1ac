"""Post-processing that real images suffer: JPEG re-encoding, resizing, blur, noise (for augmentation and
robustness tests), and the named augmentation policies the extractor is trained with (:data:`AUGMENTATIONS`)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: PIL resampling kernels by name (``resize``'s ``kernel``); all but ``nearest`` are antialiased when shrinking.
KERNELS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode a uint8 RGB image as JPEG at ``quality`` (4:2:0, as most encoders do) and decode it."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(buf).convert("RGB"))


def resize(image: np.ndarray, scale: float, kernel: str = "bicubic") -> np.ndarray:
    """Resize a uint8 RGB image by ``scale`` with a :data:`KERNELS` kernel (at least 1 px per side)."""
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, KERNELS[kernel], reducing_gap=None))


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a uint8 RGB image (σ in px, spatial axes only), rounded back to uint8."""
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0), mode="reflect")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` (0–255 scale) to a uint8 RGB image, rounded and clipped to uint8."""
    out = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[y : y + size, x : x + size]


def random_degrade(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    out_size: int,
    p_jpeg: float = 0.3,
    quality: tuple[int, int] = (60, 100),
    p_resize: float = 0.3,
    scale: tuple[float, float] = (0.8, 1.25),
) -> np.ndarray:
    """Randomly resize then JPEG-compress, then centre-crop to ``out_size`` (the input must be large enough)."""
    if rng.random() < p_resize:
        image = resize(image, float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1])))))
    if rng.random() < p_jpeg:
        image = jpeg(image, int(rng.integers(quality[0], quality[1] + 1)))
    if min(image.shape[:2]) < out_size:  # upscaled back only when a downscale left too few pixels
        image = resize(image, out_size / min(image.shape[:2]))
    return centre_crop(image, out_size)


@dataclass(frozen=True)
class RobustDegrade:
    """What an image goes through on the way to a user, drawn at random: a crop, a resize (log-uniform scale, one of
    :data:`KERNELS`), a slight Gaussian blur, slight noise, JPEG (and sometimes a second JPEG after a small shift,
    whose blocks then do not align with the first), then a crop of at most ``out_size`` at a random position.

    A downscale is not undone: the result is ``out_size``² unless the image became smaller, then its own side,
    but never below ``min_size`` (upscaled back, bicubic, only then). ``trace``, when given, receives one
    ``(op, parameters)`` per operation applied, in order.
    """

    p_crop: float = 0.3
    crop: tuple[float, float] = (0.6, 1.0)  # kept side as a share of the side
    p_resize: float = 0.5
    scale: tuple[float, float] = (0.25, 2.0)
    p_blur: float = 0.15
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    p_noise: float = 0.15
    noise_sigma: tuple[float, float] = (0.5, 3.0)
    p_jpeg: float = 0.6
    quality: tuple[int, int] = (30, 100)
    p_double: float = 0.3  # of a JPEG-compressed image, to be compressed again
    min_size: int = 32

    def __call__(self, image: np.ndarray, rng: np.random.Generator, *, out_size: int,
                 trace: list[tuple[str, dict]] | None = None) -> np.ndarray:
        log = trace if trace is not None else []
        if rng.random() < self.p_crop:
            side = max(1, round(min(image.shape[:2]) * rng.uniform(*self.crop)))
            image = _random_crop(image, side, rng)
            log.append(("crop", {"side": side}))
        if rng.random() < self.p_resize:
            s = float(np.exp(rng.uniform(np.log(self.scale[0]), np.log(self.scale[1]))))
            kernel = str(rng.choice(list(KERNELS)))
            image = resize(image, s, kernel)
            log.append(("resize", {"scale": s, "kernel": kernel}))
        if rng.random() < self.p_blur:
            sigma = float(rng.uniform(*self.blur_sigma))
            image = blur(image, sigma)
            log.append(("blur", {"sigma": sigma}))
        if rng.random() < self.p_noise:
            sigma = float(rng.uniform(*self.noise_sigma))
            image = add_noise(image, sigma, rng)
            log.append(("noise", {"sigma": sigma}))
        if rng.random() < self.p_jpeg:
            q = int(rng.integers(self.quality[0], self.quality[1] + 1))
            image = jpeg(image, q)
            log.append(("jpeg", {"quality": q}))
            if rng.random() < self.p_double:
                shift = int(rng.integers(1, 8))
                q2 = int(rng.integers(self.quality[0], self.quality[1] + 1))
                image = jpeg(image[shift:, shift:], q2)
                log.append(("jpeg", {"quality": q2, "shift": shift}))
        if min(image.shape[:2]) < self.min_size:
            image = resize(image, self.min_size / min(image.shape[:2]))
            log.append(("upscale", {"side": self.min_size}))
        return _random_crop(image, min(out_size, *image.shape[:2]), rng)


@dataclass(frozen=True)
class MixedDegrade:
    """One of several policies, drawn per image with the given weights: e.g. half the images mildly degraded
    (the shipped extractor's policy) and half through :class:`RobustDegrade`, so the training set keeps clean-looking
    images beside the degraded ones."""

    policies: tuple[tuple[Callable[..., np.ndarray], float], ...]

    def __call__(self, image: np.ndarray, rng: np.random.Generator, *, out_size: int) -> np.ndarray:
        weights = np.array([w for _, w in self.policies], dtype=np.float64)
        pick = int(rng.choice(len(self.policies), p=weights / weights.sum()))
        return self.policies[pick][0](image, rng, out_size=out_size)


def _random_crop(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side``² crop of ``image`` at a uniformly drawn position."""
    h, w = image.shape[:2]
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return image[y : y + side, x : x + side]


@dataclass(frozen=True)
class Augmentation:
    """A named training augmentation: ``degrade(image, rng, out_size=...)`` (``None``: centre crop only) applied
    to generator outputs of side ``input_side(out_size)``."""

    name: str
    degrade: Callable[..., np.ndarray] | None
    margin: float = 0.25  # generator output side = out_size + floor(out_size * margin)

    def input_side(self, out_size: int) -> int:
        return out_size + int(out_size * self.margin)

    def __call__(self, image: np.ndarray, rng: np.random.Generator, *, out_size: int) -> np.ndarray:
        return self.degrade(image, rng, out_size=out_size) if self.degrade else centre_crop(image, out_size)


#: The extractor's training augmentations by name: ``none``; ``standard`` (the shipped extractor's: resize p 0.3
#: ×0.8–1.25, JPEG p 0.3 q60–100, output always ``out_size``²); ``robust`` (:class:`RobustDegrade`); ``mixed``
#: (each image ``standard`` or ``robust`` with equal probability).
AUGMENTATIONS: dict[str, Augmentation] = {
    "none": Augmentation("none", None),
    "standard": Augmentation("standard", random_degrade),
    "robust": Augmentation("robust", RobustDegrade()),
    "mixed": Augmentation("mixed", MixedDegrade(((random_degrade, 0.5), (RobustDegrade(), 0.5)))),
}


def get_augmentation(name: str) -> Augmentation:
    """The :data:`AUGMENTATIONS` entry ``name`` (``ValueError`` naming the choices otherwise)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
