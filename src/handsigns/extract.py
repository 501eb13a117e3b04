"""Safely extract a zip, a tar (plain, gz, bz2, xz) or a folder, recognised by its bytes, not its name (a Google
Drive URL has no extension).

- Extraction refuses members with absolute paths, ``..`` components, links that lead outside, and special
  files, naming the member.
- Decompression bombs: before anything is written, an archive whose members' declared sizes add up to more
  than ``data.max_extract_gb``, or that holds more than ``data.max_archive_members`` members, is refused
  naming the member that crossed the limit, and one that would not fit on the disk is refused too. The
  declared sizes bind: zipfile never inflates a member past its declared size, and a tar's headers are its
  sizes. A compressed tar is read header by header, so the refusal comes before the bomb's payload is inflated.
- ``data.max_compression_ratio``, before anything is written too: a zip member that declares more than that
  many times its compressed bytes is refused by name, and any archive is held to it as a whole: refused at the
  member whose declared size takes the total past that many times the archive's bytes (all a tar has: a tar
  member has no compressed size of its own). Under ``RATIO_EXEMPT_BYTES`` (a member, or the total) is exempt.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from handsigns.errors import UserError
from handsigns.files import CHUNK

# An empty file or a few KB of text compress arbitrarily well (a 6 KB .DS_Store of mostly zeros deflates
# 192-fold, 64 KB of zeros 840-fold), yet written out they harm nothing: a member under 1 MB is exempt from
# data.max_compression_ratio, and many of them together are still bound by data.max_extract_gb and
# data.max_archive_members. Real image members never come near the ratio: SIGNS' JPEGs deflate at most
# 1.3-fold, and the whole set as a tar.gz, bz2 or xz 2.0 to 2.1-fold (tests/test_extract.py).
RATIO_EXEMPT_BYTES = 1_000_000


@dataclass(frozen=True)
class Limits:
    """What an archive may expand to (``data.max_extract_gb``, ``data.max_archive_members``,
    ``data.max_compression_ratio``)."""

    max_bytes: float
    max_members: int
    max_ratio: float

    @classmethod
    def of(cls, data_params: Any) -> Limits:
        return cls(data_params.max_extract_gb * 1e9, data_params.max_archive_members, data_params.max_compression_ratio)


class _Tally:
    """Counts members and declared bytes as an archive is read; refuses, naming the member, past a limit."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.members, self.bytes = limits, 0, 0

    def add(self, name: str, size: int) -> None:
        self.members += 1
        self.bytes += size
        if self.members > self.limits.max_members:
            raise UserError(
                f"refusing to extract archive member {name!r}: the archive holds more than "
                f"data.max_archive_members = {self.limits.max_members:,} members (a decompression bomb?); nothing "
                "was extracted. If the data set really has that many files, raise it in params.yaml"
            )
        if self.bytes > self.limits.max_bytes:
            raise UserError(
                f"refusing to extract archive member {name!r}: the archive expands to more than data.max_extract_gb"
                f" = {self.limits.max_bytes / 1e9:g} GB ({self.bytes / 1e9:.3g} GB up to this member; a "
                "decompression bomb?); nothing was extracted. If the data set really is that large, raise it in "
                "params.yaml"
            )

    def check_space(self, dest: Path) -> None:
        free = shutil.disk_usage(dest).free
        if self.bytes > free:
            raise UserError(
                f"the archive expands to {self.bytes / 1e9:.3g} GB but {dest.parent} has {free / 1e9:.3g} GB free;"
                " nothing was extracted: free some space and re-run"
            )


def _check_ratio(name: str, expanded: int, packed: int, limits: Limits, *, whole: bool = False) -> None:
    """Refuse member ``name`` when ``expanded`` declared bytes come from more than ``data.max_compression_ratio``
    times ``packed`` bytes: a zip member's own compressed size, or (``whole``) the declared bytes of the members
    up to this one against the whole archive's. That total only grows, so an archive refused at this member
    would be over the ratio at its end too, and is refused before this member's payload is inflated. The whole
    archive is what binds a tar (a tar member has no compressed size of its own), and it catches a zip of many
    members each just under ``RATIO_EXEMPT_BYTES``."""
    if expanded < RATIO_EXEMPT_BYTES or expanded <= limits.max_ratio * packed:
        return
    fold = f"{expanded / packed:,.0f}-fold" if packed else "from nothing"
    what = (
        f"the archive's members up to it expand {fold} ({expanded:,} bytes from the archive's {packed:,})"
        if whole
        else f"it expands {fold} ({expanded:,} bytes from {packed:,} compressed)"
    )
    raise UserError(
        f"refusing to extract archive member {name!r}: {what}, more than data.max_compression_ratio = "
        f"{limits.max_ratio:g} (a decompression bomb?); nothing was extracted. If the archive is genuine, raise "
        "data.max_compression_ratio in params.yaml"
    )


# --------------------------------------------------------------------------------------------- checks


def _safe_name(name: str) -> str:
    """The member's relative POSIX path, or a UserError naming it when it could escape the target."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UserError(f"refusing to extract archive member {name!r}: absolute path")
    parts = [p for p in PurePosixPath(norm).parts if p not in ("", ".")]
    if ".." in parts:
        raise UserError(f"refusing to extract archive member {name!r}: '..' leads outside the data folder")
    if not parts:
        raise UserError(f"refusing to extract archive member {name!r}: empty name")
    return "/".join(parts)


def _check_link(name: str, target: str) -> None:
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise UserError(f"refusing to extract archive member {name!r}: link to absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UserError(
            f"refusing to extract archive member {name!r}: link to {target!r} leads outside the data folder"
        )


def check_links_inside(dest: Path) -> None:
    """Refuse the extraction if any link, resolved on disk with every other link in place, leads outside.

    Checking each link's text alone is not enough: ``p -> .``, ``q -> p/..`` each look harmless, together
    they climb out. Links are created last, so nothing was written through them before this check.
    """
    root = os.path.realpath(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if real != root and not real.startswith(root + os.sep):
                    member = os.path.relpath(path, dest)
                    raise UserError(
                        f"refusing to extract archive member {member!r}: link to "
                        f"{os.readlink(path)!r} leads outside the data folder"
                    )


# ------------------------------------------------------------------------------------------ extraction


def _plan_zip(
    zf: zipfile.ZipFile, packed: int, limits: Limits
) -> tuple[list[tuple[zipfile.ZipInfo, str, str | None]], _Tally]:
    """Every member of ``zf`` (``packed`` bytes on disk) checked before anything is written: (info, safe name,
    link target or None) each."""
    plan: list[tuple[zipfile.ZipInfo, str, str | None]] = []
    tally = _Tally(limits)
    for info in zf.infolist():
        tally.add(info.filename, info.file_size)
        _check_ratio(info.filename, info.file_size, info.compress_size, limits)  # before a link's text is read
        _check_ratio(info.filename, tally.bytes, packed, limits, whole=True)
        name = _safe_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", "replace")
            _check_link(name, target)
            plan.append((info, name, target))
        else:
            plan.append((info, name, None))
    return plan, tally


def _extract_zip(archive: Path, dest: Path, limits: Limits) -> None:
    with zipfile.ZipFile(archive) as zf:
        plan, tally = _plan_zip(zf, archive.stat().st_size, limits)
        tally.check_space(dest)
        # Files and folders first, links last: nothing is ever written through a link of the archive's own.
        plan.sort(key=lambda entry: entry[2] is not None)
        for info, name, link in tqdm(plan, desc="extract", unit="file", mininterval=0.5, disable=None):
            out = dest / name
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            if link is not None:
                os.symlink(link, out)
                continue
            with zf.open(info) as src, open(out, "xb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)


def _check_tar_member(m: tarfile.TarInfo) -> None:
    name = _safe_name(m.name)
    if m.issym():
        _check_link(name, m.linkname)
    elif m.islnk():  # a hard link's target is relative to the archive's root
        try:
            _safe_name(m.linkname)
        except UserError:
            raise UserError(
                f"refusing to extract archive member {m.name!r}: hard link to "
                f"{m.linkname!r} leads outside the data folder"
            ) from None
    elif not (m.isfile() or m.isdir()):
        raise UserError(f"refusing to extract archive member {m.name!r}: not a file, folder or link")


def _extract_tar(archive: Path, dest: Path, limits: Limits) -> None:
    packed = archive.stat().st_size
    with tarfile.open(archive, "r:*") as tf:
        members, tally = [], _Tally(limits)
        for m in tf:  # header by header: a bomb is refused at its first oversized header, not after inflating it
            tally.add(m.name, m.size)
            _check_ratio(m.name, tally.bytes, packed, limits, whole=True)
            members.append(m)
            _check_tar_member(m)
        tally.check_space(dest)
        compression = _compression(archive)
        if compression is not None:  # the headers were sound; now the stream's own checksum, within bounds
            slack = 1024 * tally.members + 10 * 2**20  # a header and padding per member, end blocks, records
            _check_stream(archive, *compression, limit=tally.bytes + slack)
        # The 'data' filter re-checks all of the above inside tarfile itself (defence in depth).
        for m in tqdm(members, desc="extract", unit="file", mininterval=0.5, disable=None):
            tf.extract(m, dest, filter="data")


def _copy_dir(src: Path, dest: Path, limits: Limits) -> None:  # a folder is no bomb: no limits
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink():
                _check_link((rel / name).as_posix(), os.readlink(p))
    shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)


_COMPRESSED = {b"\x1f\x8b": ("gzip", gzip.open), b"BZh": ("bzip2", bz2.open), b"\xfd7zXZ\x00": ("xz", lzma.open)}


def _compression(path: Path) -> tuple[str, Any] | None:
    with open(path, "rb") as fh:
        head = fh.read(6)
    return next((v for magic, v in _COMPRESSED.items() if head.startswith(magic)), None)


def _check_stream(path: Path, name: str, opener: Any, head_only: bool = False, limit: float = math.inf) -> None:
    """Decompress to the end once: the trailer's checksum is what tells a damaged stream, and tarfile stops
    reading at the end-of-archive marker, before the trailer. ``head_only``: its first chunk, enough to tell
    a stream that is not a tar (inflating a bomb to its end would be the attack itself). Past ``limit`` bytes
    (what the tar's members declare, with room for headers) the stream is refused: data hidden after the
    end-of-archive marker is a bomb too."""
    seen = 0
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                seen += len(chunk)
                if head_only:
                    break
                if seen > limit:
                    raise UserError(
                        f"refusing to extract {path}: its {name} stream expands past what its members "
                        "declare (data after the end of the archive: a decompression bomb?); nothing "
                        "was extracted"
                    )
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise UserError(f"{path} is a damaged {name} stream ({exc}); fetch it again") from None


def archive_format(path: Path) -> str:
    if path.is_dir():
        return "directory"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):  # a compressed one's stream is checked after its headers passed the limits
        return "tar"
    compression = _compression(path)
    if compression is not None:
        _check_stream(path, *compression, head_only=True)
    what = f"a {compression[0]} file but not a tar inside" if compression else "neither a zip nor a tar archive"
    raise UserError(
        f"{path} is {what} (checked by content); data.source must name a zip, a tar(.gz/.bz2/.xz) or a folder"
    )


def extract(path: Path, dest: Path, limits: Limits) -> str:
    """Extract ``path`` (archive or folder) into the empty folder ``dest``; return its format."""
    fmt = archive_format(path)
    try:
        {"zip": _extract_zip, "tar": _extract_tar, "directory": _copy_dir}[fmt](path, dest, limits)
        check_links_inside(dest)
    except FileExistsError as exc:
        clash = exc.filename2 or exc.filename  # os.symlink(target, path) names the path second
        member = os.path.relpath(clash, dest) if clash else "?"
        raise UserError(f"refusing to extract {path}: member {member!r} appears twice or clashes with a link") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise UserError(f"refusing to extract {path}: {exc}") from None
        compression = _compression(path) if fmt == "tar" and not isinstance(exc, tarfile.TarError) else None
        what = f"{compression[0]} stream" if compression else f"{fmt} archive"  # the stream broke, not the tar
        raise UserError(f"{path} is a damaged {what} ({exc}); fetch it again") from None
    return fmt


def tree_stats(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)
