"""Residual extractors: the high-frequency noise residual where model fingerprints live.

``get_residual(name, **params)`` builds one: ``highpass`` (image minus Gaussian blur), ``wavelet`` (image minus
wavelet-denoised image) or ``dncnn`` (default: the noise modelprint's own DnCNN predicts). Importing this package
does not import torch; the DnCNN loads it when built.
"""

from modelprint.residuals.base import RESIDUALS, Residual, get_residual
from modelprint.residuals.classical import HighPassResidual, WaveletResidual
from modelprint.residuals.dncnn import DnCNNResidual, default_weights_path, load_dncnn

__all__ = [
    "RESIDUALS",
    "DnCNNResidual",
    "HighPassResidual",
    "Residual",
    "WaveletResidual",
    "default_weights_path",
    "get_residual",
    "load_dncnn",
    "train_denoiser",
]


def __getattr__(name: str):  # noqa: ANN202
    if name == "train_denoiser":  # imported on first use (pulls in the training loop, still lazy about torch)
        from modelprint.residuals.training import train_denoiser

        return train_denoiser
    raise AttributeError(f"module 'modelprint.residuals' has no attribute {name!r}")
