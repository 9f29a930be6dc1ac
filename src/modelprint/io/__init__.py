"""Image input: decoding by content, labelled datasets, and the real-image pool."""

from modelprint.io.datasets import Dataset, Sample, expand_paths
from modelprint.io.images import (
    ImageBytes,
    ImageLimits,
    LoadedImage,
    decode_image,
    load_image,
    load_image_file,
    save_png,
)
from modelprint.io.pool import RealPool, cache_dir

__all__ = [
    "Dataset",
    "ImageBytes",
    "ImageLimits",
    "LoadedImage",
    "RealPool",
    "Sample",
    "cache_dir",
    "decode_image",
    "expand_paths",
    "load_image",
    "load_image_file",
    "save_png",
]
