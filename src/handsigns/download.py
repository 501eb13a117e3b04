"""The download stage's library: fetch, verify and safely extract the raw data set into ``data/raw``.

The halves are their own modules: :mod:`handsigns.fetch` makes ``data.source`` (an http(s) URL with resume and
retries, a ``file://`` URL or a local path) a local file or folder and checks its sha256;
:mod:`handsigns.extract` extracts a zip, a tar or a folder safely (paths, links, decompression-bomb limits).
This module composes them: the sha256 is checked before anything is extracted, and extraction happens in a
temporary folder renamed into place, so a killed run never leaves a half-written ``data/raw``.
"""

from __future__ import annotations

from pathlib import Path

from handsigns.errors import UserError
from handsigns.extract import Limits, extract, tree_stats
from handsigns.fetch import fetch, verify
from handsigns.files import atomic_dir
from handsigns.paths import DOWNLOADS


def materialise(
    source: str,
    expected_sha256: str | None,
    raw_dir: Path,
    *,
    retries: int,
    timeout_s: float,
    limits: Limits,
    download_dir: Path = DOWNLOADS,
) -> dict:
    """Fetch, verify and extract ``source`` into ``raw_dir`` atomically; return the provenance record."""
    fetched = fetch(source, retries=retries, timeout_s=timeout_s, download_dir=download_dir)
    observed = verify(fetched, expected_sha256, source)
    try:
        with atomic_dir(raw_dir) as tmp:
            fmt = extract(fetched.path, tmp, limits)
            files, nbytes = tree_stats(tmp)
            if files == 0:
                raise UserError(f"{source} holds no files; point data.source at the data set")
    finally:  # extracted or refused, a downloaded archive is not kept: a fixed upstream is fetched anew
        if fetched.kind == "http":
            fetched.path.unlink(missing_ok=True)
    return {
        "source": source,
        "source_kind": fetched.kind,
        "format": fmt,
        "sha256": observed,
        "sha256_pinned": expected_sha256 is not None,
        "files": files,
        "bytes": nbytes,
    }
