"""handsigns: a reproducible DVC + PyTorch pipeline for the SIGNS hand-sign classifier.

The library is split by concern; each DVC stage in ``stages/`` is a thin script over it:

- ``params``   typed, validated view of ``params.yaml``
- ``sources``  fetch (HTTP/file/dir), verify and safely extract the raw data
- ``imaging``  image decoding and perceptual hashing (no torch import)
- ``index``    split-indexing, duplicate and leak detection
"""

__version__ = "0.1.0"
