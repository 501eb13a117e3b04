"""Section ``memory`` of params.yaml: how much the train, evaluate and export stages may hold decoded.

Its own section (not ``data``, not the recipe): it decides where batches come from, never the results
(tests/test_streaming.py holds the bytes equal), so no stage declares it and changing it re-runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from handsigns.params import Section, knob


@dataclass(frozen=True)
class MemoryParams(Section):
    SECTION: ClassVar[str] = "memory"

    budget_gb: float = knob(2.0, lo=0)
