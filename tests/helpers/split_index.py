"""build_index()'s result checked and queried: the invariants every index keeps, and its rows by split or
exclusion reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

from handsigns.params.data import DataParams
from handsigns.split import INDEX_COLUMNS, SPLITS

from .raw_trees import on_disk


def P(**kw) -> DataParams:
    """The data params with a placeholder source and ``kw``."""
    return DataParams(source="x", **kw)


def check(raw: Path, res) -> None:
    """The invariants of every index: each file under raw is listed exactly once in train, val, test or
    excluded, and the table columns are right."""
    listed = [*res.tables["train"].path, *res.tables["val"].path, *res.tables["test"].path, *res.excluded.path]
    assert sorted(listed) == on_disk(raw)
    assert res.metrics["files_scanned"] == len(listed)
    assert sum(res.metrics["excluded"].values()) == len(res.excluded)
    for split in SPLITS:
        df = res.tables[split]
        assert list(df.columns) == INDEX_COLUMNS
        assert res.metrics["images"][split] == len(df)
        for row in df.itertuples():
            assert res.classes[row.label] == row._3  # "class"
            assert row.sha256 == hashlib.sha256((raw / row.path).read_bytes()).hexdigest()
            assert row.width > 0 and row.height > 0


def rows(res, split: str) -> set[str]:
    return set(res.tables[split].path)


def excluded(res, reason: str | None = None) -> dict[str, str]:
    df = res.excluded if reason is None else res.excluded[res.excluded.reason == reason]
    return dict(zip(df.path, df.detail, strict=True))
