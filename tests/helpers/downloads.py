"""The download stage's library (``download.materialise``) run as the stage runs it, and its refusals asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from handsigns.download import materialise
from handsigns.errors import UserError
from handsigns.extract import Limits
from handsigns.params.data import DataParams

DEFAULT_LIMITS = Limits.of(DataParams(source="x"))  # params.yaml's
# What refusing helpers.archives.bomb_zip says, whole: the stage prints it as its one error line.
RATIO_MESSAGE = (
    r"refusing to extract archive member 'a/zeros\.bin': it expands 1,0\d\d-fold \(20,971,520 bytes from "
    r"[\d,]+ compressed\), more than data\.max_compression_ratio = 100 \(a decompression bomb\?\); nothing was "
    r"extracted\. If the archive is genuine, raise data\.max_compression_ratio in params\.yaml$"
)


def download(
    source: str | Path,
    raw: Path,
    sha: str | None = None,
    *,
    retries: int = 0,
    dl: Path | None = None,
    timeout_s: float = 5,
    limits: Limits = DEFAULT_LIMITS,
) -> dict:
    """``source`` fetched, checked against ``sha`` and extracted into ``raw``; the provenance record."""
    return materialise(
        str(source),
        sha,
        raw,
        retries=retries,
        timeout_s=timeout_s,
        limits=limits,
        download_dir=dl or raw.parent / "downloads",
    )


def refused(tmp_path: Path, name: str, data: bytes, match: str | None = None) -> str:
    """Extracting archive ``name`` holding ``data`` is one UserError matching ``match`` and leaves no data/raw;
    returns the message."""
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UserError, match=match) as info:
        download(tmp_path / name, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    return str(info.value)
