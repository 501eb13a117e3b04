"""Fetch, verify and safely extract the raw data set.

``data.source`` is an http(s) URL, a ``file://`` URL or a local path, naming a zip, a tar (plain, gz, bz2,
xz) or a folder. Archives are recognised by their bytes, not their names (a Google Drive URL has no
extension).

- HTTP downloads go to ``data/.downloads/`` (outside the stage's output, so an interrupted download is
  resumed by the next run with a ``Range`` request guarded by ``If-Range``), show a progress bar and retry
  transient failures with back-off.
- ``sha256`` is checked before anything is extracted; a mismatch is an error and writes nothing.
- Extraction refuses members with absolute paths, ``..`` components, links that lead outside, and special
  files, naming the member. It happens in a temporary folder renamed into place, so a killed run never
  leaves a half-written ``data/raw``.
- Decompression bombs: before anything is written, an archive whose members' declared sizes add up to more
  than ``data.max_extract_gb``, or that holds more than ``data.max_archive_members`` members, is refused
  naming the member that crossed the limit, and one that would not fit on the disk is refused too. The
  declared sizes bind: zipfile never inflates a member past its declared size, and a tar's headers are its
  sizes. A compressed tar is read header by header, so the refusal comes before the bomb's payload is inflated.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import json
import lzma
import math
import os
import posixpath
import re
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from handsigns import __version__
from handsigns.errors import UserError
from handsigns.files import CHUNK, atomic_dir, sha256_file, sha256_tree, write_text
from handsigns.paths import DOWNLOADS

BACKOFF_S = 0.5  # first retry delay; doubles each attempt, capped at 30 s
LOCAL_COPY_HINT = (
    "to use a local copy instead, set data.source in params.yaml to its path (`make repro SOURCE=path/to/copy`)"
)


@dataclass(frozen=True)
class Limits:
    """What an archive may expand to (``data.max_extract_gb``, ``data.max_archive_members``)."""

    max_bytes: float
    max_members: int

    @classmethod
    def of(cls, data_params: Any) -> Limits:
        return cls(data_params.max_extract_gb * 1e9, data_params.max_archive_members)


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


@dataclass(frozen=True)
class Fetched:
    path: Path  # a local archive file or folder
    kind: str  # "http", "file" or "directory"


class _TransientError(Exception):
    pass


# --------------------------------------------------------------------------------------------- locate


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def local_path(source: str) -> Path:
    """The filesystem path of a ``file://`` URL or a plain path.

    A relative path is relative to the project root: ``$DVC_ROOT``, which DVC sets to the project's own root
    even for queued and ``--temp`` experiments that run in a copy under ``.dvc/tmp/exps/`` (else the cwd).
    """
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(url2pathname(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise UserError(
            f"data.source {source!r}: unsupported scheme {parsed.scheme!r}; use http(s)://, file:// or a local path"
        )
    path = Path(source).expanduser()
    return path if path.is_absolute() else Path(os.environ.get("DVC_ROOT") or ".") / path


def fetch(source: str, *, retries: int, timeout_s: float, download_dir: Path = DOWNLOADS) -> Fetched:
    if is_url(source):
        return Fetched(download(source, download_dir, retries=retries, timeout_s=timeout_s), "http")
    path = local_path(source)
    if path.is_dir():
        return Fetched(path, "directory")
    if path.is_file():
        return Fetched(path, "file")
    raise UserError(
        f"data.source {source!r}: no such file or folder ({path.resolve()}); put the data set "
        "there, or set data.source in params.yaml to another copy or a URL (`make repro "
        "SOURCE=path-or-url`; docs/data.md)"
    )


# ------------------------------------------------------------------------------------------- download


def _read_meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or cut short by a kill: treat as unknown
        return {}


def _part_paths(url: str, download_dir: Path) -> tuple[Path, Path]:
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return download_dir / f"{key}.part", download_dir / f"{key}.json"


def download(url: str, download_dir: Path, *, retries: int, timeout_s: float) -> Path:
    """Download ``url`` into ``download_dir`` and return the finished file; resumes a previous partial one."""
    download_dir.mkdir(parents=True, exist_ok=True)
    part, meta_path = _part_paths(url, download_dir)
    done = part.with_suffix(".done")
    if done.exists() and _read_meta(meta_path).get("complete"):
        return done
    last_error = ""
    for attempt in range(retries + 1):
        if attempt:
            delay = min(BACKOFF_S * 2 ** (attempt - 1), 30.0)
            print(f"download: retrying in {delay:g} s ({last_error})", flush=True)
            time.sleep(delay)
        try:
            _download_once(url, part, meta_path, timeout_s)
        except _TransientError as exc:
            last_error = str(exc)
            continue
        os.replace(part, done)
        write_text(meta_path, json.dumps({"url": url, "complete": True}))
        return done
    raise UserError(f"cannot download {url} after {retries + 1} attempts ({last_error}); {LOCAL_COPY_HINT}")


def _download_once(url: str, part: Path, meta_path: Path, timeout_s: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    meta = _read_meta(meta_path) if have else {}
    validator = meta.get("etag") or meta.get("last_modified")
    headers = {"User-Agent": f"handsigns/{__version__}"}
    if have and validator:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = validator
    else:
        have = 0
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout_s)
    except HTTPError as exc:
        if exc.code == 416:  # our range no longer fits the file: start over
            part.unlink(missing_ok=True)
            raise _TransientError("HTTP 416, restarting from the beginning") from None
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from None
        raise UserError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {LOCAL_COPY_HINT}") from None
    except (URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _TransientError(f"{type(exc).__name__}: {reason}") from None

    with resp:
        if resp.status == 206:
            match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink(missing_ok=True)
                raise _TransientError("server answered a different range, restarting")
            mode = "ab"
        else:  # 200: the whole file (server ignored the range, or the file changed since)
            have, mode = 0, "wb"
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("text/html"):
            raise UserError(
                f"{url} answered with an HTML page, not a data archive (a login or "
                f"confirmation page?); {LOCAL_COPY_HINT}"
            )
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        write_text(
            meta_path,
            json.dumps(
                {"url": url, "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}
            ),
        )
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="download",
                mininterval=0.5,
                disable=None,
            ) as bar,
        ):
            try:
                while chunk := resp.read(CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                raise _TransientError(f"transfer cut after {fh.tell()} bytes: {type(exc).__name__}") from None
            got = fh.tell()
    if total is not None and got != total:
        raise _TransientError(f"transfer cut after {got} of {total} bytes")


def verify(fetched: Fetched, expected: str | None, source: str) -> str:
    observed = sha256_tree(fetched.path) if fetched.kind == "directory" else sha256_file(fetched.path)
    if expected is not None and observed != expected:
        if fetched.kind == "http":  # a bad download must not be resumed or reused
            fetched.path.unlink(missing_ok=True)
        raise UserError(
            f"sha256 mismatch for {source}: expected {expected}, got {observed}; nothing was "
            "extracted. If the source changed on purpose, set data.sha256 to the new value "
            "(or null)"
        )
    return observed


# ------------------------------------------------------------------------------------------ extraction


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


def _extract_zip(archive: Path, dest: Path, limits: Limits) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        plan, tally = [], _Tally(limits)
        for info in infos:  # validate everything before writing anything
            tally.add(info.filename, info.file_size)
            name = _safe_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "replace")
                _check_link(name, target)
                plan.append((info, name, target))
            else:
                plan.append((info, name, None))
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


def _extract_tar(archive: Path, dest: Path, limits: Limits) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members, tally = [], _Tally(limits)
        for m in tf:  # header by header: a bomb is refused at its first oversized header, not after inflating it
            tally.add(m.name, m.size)
            members.append(m)
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
                    raise UserError(f"refusing to extract {path}: its {name} stream expands past what its members "
                                    "declare (data after the end of the archive: a decompression bomb?); nothing "
                                    "was extracted")  # fmt: skip
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
