"""Section ``ci`` of params.yaml: the metric regression gate (``handsigns gate``)."""

from __future__ import annotations

from dataclasses import dataclass

from handsigns.params import knob


@dataclass(frozen=True)
class CIParams:
    max_accuracy_drop: float = knob(0.01, lo=0, hi=1, doc="largest allowed drop of val or test accuracy")
