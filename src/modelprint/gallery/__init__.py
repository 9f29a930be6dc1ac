"""The attribution gallery: enrolled embeddings, per-model prototypes and calibrated thresholds in SQLite."""

from modelprint.gallery.store import (
    SCHEMA_VERSION,
    UNKNOWN,
    Calibration,
    EnrollResult,
    Gallery,
    Identification,
    ModelInfo,
    OpenSetThreshold,
    Verification,
    calibrate,
)

__all__ = [
    "SCHEMA_VERSION",
    "UNKNOWN",
    "Calibration",
    "EnrollResult",
    "Gallery",
    "Identification",
    "ModelInfo",
    "OpenSetThreshold",
    "Verification",
    "calibrate",
]
