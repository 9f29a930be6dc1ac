"""The attribution gallery: enrolled embeddings, per-model prototypes and calibrated thresholds in SQLite.

The ground floor of the attribution side: it stores and compares embeddings and imports nothing above
:mod:`modelprint.io` (path-level enrolment and identification, which embed images, are :class:`modelprint.Gallery`).
"""

from modelprint.gallery.calibration import calibrate
from modelprint.gallery.index import IndexParams, IndexStatus
from modelprint.gallery.results import (
    UNKNOWN,
    Calibration,
    EnrollResult,
    Identification,
    ModelInfo,
    Neighbour,
    OpenSetThreshold,
    Verification,
)
from modelprint.gallery.store import Gallery, verify
from modelprint.gallery.tables import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "UNKNOWN",
    "Calibration",
    "EnrollResult",
    "Gallery",
    "Identification",
    "IndexParams",
    "IndexStatus",
    "ModelInfo",
    "Neighbour",
    "OpenSetThreshold",
    "Verification",
    "calibrate",
    "verify",
]
