"""handsigns: a reproducible DVC + PyTorch pipeline for the SIGNS hand-sign classifier.

Each DVC stage in ``stages/`` is a thin script over the module of the same name; the map of every module is
``docs/architecture.md``. The Python API: ``Predictor("models/model.onnx").predict("foto.jpg")``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    """``from handsigns import Predictor``: imported on first use (PEP 562), so the stages, which import this
    package, load neither ONNX Runtime nor the predict module."""
    if name in ("Predictor", "Prediction"):
        return getattr(importlib.import_module("handsigns.predict"), name)
    raise AttributeError(f"module 'handsigns' has no attribute {name!r}")
