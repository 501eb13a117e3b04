"""Section ``ci`` of params.yaml: the metric regression gate (``handsigns gate``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from handsigns.params import Section, knob


@dataclass(frozen=True)
class CIParams(Section):
    SECTION: ClassVar[str] = "ci"

    max_accuracy_drop: float = knob(0.01, lo=0, hi=1)
    significance: float = knob(0.01, lo=0, hi=1, lo_open=True)
