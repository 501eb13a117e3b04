"""Section ``data`` of params.yaml: the knobs of the download and split stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from handsigns.errors import UserError
from handsigns.params import Section, knob


@dataclass(frozen=True)
class DataParams(Section):
    SECTION: ClassVar[str] = "data"

    source: str = knob("")
    sha256: str | None = knob(None)
    download_retries: int = knob(4, lo=0, hi=100)
    download_timeout_s: float = knob(60.0, lo=0, lo_open=True)
    split_seed: int = knob(230, lo=0)
    val_fraction: float = knob(0.2, lo=0, hi=1, lo_open=True)
    test_fraction: float = knob(0.1, lo=0, hi=1, lo_open=True)
    dedupe: str = knob("drop", choices=("drop", "report"))
    near_duplicate_max_difference: float = knob(0.03, lo=0, hi=1)
    on_bad_file: str = knob("error", choices=("error", "skip"))
    max_extract_gb: float = knob(50.0, lo=0, lo_open=True)
    max_archive_members: int = knob(1_000_000, lo=1)
    max_compression_ratio: float = knob(100.0, lo=0, lo_open=True)
    max_image_megapixels: float = knob(50.0, lo=0, lo_open=True)  # = imaging.MAX_MEGAPIXELS (tested)

    def __post_init__(self) -> None:
        if not self.source:
            raise UserError("params.yaml: data.source is empty; set it to a URL, a file:// URL or a local path")
        if self.sha256 is not None:
            h = self.sha256.strip().lower()
            if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
                raise UserError(
                    f"params.yaml: data.sha256 = {self.sha256!r} is not 64 hex digits; "
                    "set it to the archive's sha256 or to null"
                )
            object.__setattr__(self, "sha256", h)
