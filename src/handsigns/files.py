"""Files: atomic outputs and content hashes.

Outputs are written into a temporary sibling, then renamed into place: a killed run leaves either the previous
output or none, never a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from handsigns.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(UserError):
    pass


@contextlib.contextmanager
def no_space_is_one_error(path: Path) -> Iterator[None]:
    """A full disk (or quota) while writing ``path`` becomes one UserError naming it (the outermost output,
    when writes nest: a file inside a folder output); the caller's cleanup has removed the partial write, so
    the previous complete version is what remains."""
    try:
        yield
    except (OSError, NoSpaceError) as exc:
        if isinstance(exc, OSError) and exc.errno not in NO_SPACE:
            raise
        reason = exc.strerror if isinstance(exc, OSError) else "No space left on device"
        unchanged = f"the previous {path.name}, if any, is unchanged"
        raise NoSpaceError(
            f"no space left on the device while writing {path} ({reason}); free some space and re-run: " + unchanged
        ) from None


def leftovers(path: Path) -> list[Path]:
    """The temporary siblings of ``path`` that writers killed mid-write left behind (named as below)."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success it replaces ``path``."""
    path = Path(path)
    with no_space_is_one_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with no_space_is_one_error(path):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 (and writers may replace the file)
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
            _fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Stable JSON (sorted keys, fixed indent, trailing newline) so identical runs give identical bytes."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    with no_space_is_one_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with no_space_is_one_error(path):
            yield tmp
            old = None
            if path.exists() or path.is_symlink():
                old = path.with_name(f".{path.name}.old.{os.getpid()}")
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                if old is not None:
                    os.replace(old, path)  # the previous version goes back
                raise
            _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(root: Path) -> str:
    """A folder's hash: sha256 over its sorted relative paths and their files' sha256."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()
