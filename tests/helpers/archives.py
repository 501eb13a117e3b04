"""Archives made in memory (zip, tar in every compression, with links, special files or bombs), and the tree of
files an extraction left."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

ZEROS = bytes(2_000_000)  # deflates to ~2 KB: past a 1 MB limit, a bomb a test can afford
BOMB = bytes(20 * 2**20)  # 20 MB of zeros: deflates ~1,000-fold, yet far under data.max_extract_gb


def zip_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so external_attr carries the mode
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], *, mode: str = "w:gz", extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def link_info(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def bomb_zip(path: Path) -> Path:
    """A zip of a small file and :data:`BOMB` at ``path``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:  # written to disk: no 20 MB archive in memory
        zf.writestr("a/ok.txt", b"ok")
        zf.writestr("a/zeros.bin", BOMB)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``: its POSIX path relative to ``root``, and its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
