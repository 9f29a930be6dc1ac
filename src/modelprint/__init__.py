"""modelprint: which generative model made this image?

The public API is imported lazily, so ``import modelprint`` (and ``modelprint --help``) stays fast::

    import modelprint
    with modelprint.Gallery("models.sqlite") as g:
        g.enroll("my-gan", ["samples/"])
        print(g.identify(["query.png"]).to_dict())
    result = modelprint.evaluate("dataset/", method="spectral", support=5, seed=0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Gallery": "modelprint.api",
    "load_method": "modelprint.methods",
    "load_image": "modelprint.io",
    "Dataset": "modelprint.io",
    "RealPool": "modelprint.io",
    "enroll": "modelprint.api",
    "identify": "modelprint.api",
    "verify": "modelprint.api",
    "evaluate": "modelprint.api",
    "ModelprintError": "modelprint.errors",
    "ImageError": "modelprint.errors",
}
_ALIASES = {"verify": "verify_pair", "evaluate": "evaluate_dataset"}

if TYPE_CHECKING:
    from modelprint.api import Gallery, enroll, identify
    from modelprint.api import evaluate_dataset as evaluate
    from modelprint.api import verify_pair as verify
    from modelprint.errors import ImageError, ModelprintError
    from modelprint.io import Dataset, RealPool, load_image
    from modelprint.methods import load_method


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modelprint' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), _ALIASES.get(name, name))


__all__ = sorted(_EXPORTS)
