"""Residuals without learned weights: Gaussian high-pass and wavelet denoising."""

from __future__ import annotations

import numpy as np

from modelprint.residuals.base import RESIDUALS, Residual, as_image


@RESIDUALS.register("highpass")
class HighPassResidual(Residual):
    """The image minus its Gaussian blur (per channel, ``sigma`` in pixels, mirror-reflected borders).

    A constant image has an exactly-zero residual; so does any image that is constant near a border.
    """

    def __init__(self, sigma: float = 1.0, truncate: float = 4.0) -> None:
        if not sigma > 0:
            raise ValueError(f"highpass sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        self.truncate = float(truncate)

    @property
    def version(self) -> str:
        return f"v1-sigma{self.sigma:g}-trunc{self.truncate:g}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        img = as_image(image)
        blur = gaussian_filter(img, sigma=(self.sigma, self.sigma, 0.0), mode="reflect", truncate=self.truncate)
        return (img - blur).astype(np.float32, copy=False)


@RESIDUALS.register("wavelet")
class WaveletResidual(Residual):
    """The image minus its wavelet-denoised version (per RGB channel, no colour conversion).

    Denoising is :func:`skimage.restoration.denoise_wavelet`: the noise level of each channel is estimated from
    the finest diagonal sub-band (median absolute deviation), then detail coefficients are shrunk with a
    BayesShrink soft threshold per sub-band. ``levels=None`` uses scikit-image's default (3 fewer than the
    maximum for the image size, at least 1). Deterministic; float input is never clipped.
    """

    def __init__(self, wavelet: str = "db4", levels: int | None = None, method: str = "BayesShrink",
                 mode: str = "soft") -> None:
        import pywt

        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"unknown discrete wavelet {wavelet!r}")
        if method not in ("BayesShrink", "VisuShrink"):
            raise ValueError(f"method must be 'BayesShrink' or 'VisuShrink', got {method!r}")
        if mode not in ("soft", "hard"):
            raise ValueError(f"mode must be 'soft' or 'hard', got {mode!r}")
        if levels is not None and levels < 1:
            raise ValueError(f"levels must be >= 1 or None, got {levels}")
        self.wavelet = wavelet
        self.levels = levels
        self.method = method
        self.mode = mode

    @property
    def version(self) -> str:
        return f"v1-{self.wavelet}-L{self.levels or 'auto'}-{self.method}-{self.mode}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_wavelet

        img = as_image(image).astype(np.float64)
        levels = self.levels
        if levels is not None:  # never ask for more levels than the image supports
            import pywt

            levels = max(1, min(levels, pywt.dwt_max_level(min(img.shape[:2]), pywt.Wavelet(self.wavelet).dec_len)))
        den = denoise_wavelet(
            img,
            wavelet=self.wavelet,
            mode=self.mode,
            wavelet_levels=levels,
            method=self.method,
            rescale_sigma=True,
            channel_axis=-1,
        )
        return (img - den).astype(np.float32)
