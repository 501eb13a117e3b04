"""handsigns: a reproducible DVC + PyTorch pipeline for the SIGNS hand-sign classifier.

Each DVC stage in ``stages/`` is a thin script over the module of the same name; the map of every module is
``docs/architecture.md``.
"""

__version__ = "0.1.0"
