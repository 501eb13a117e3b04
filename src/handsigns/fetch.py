"""Fetch and verify: ``data.source`` (or a pretrained-weights URL) made a local file or folder, its sha256 checked.

``data.source`` is an http(s) URL, a ``file://`` URL or a local path.

- HTTP downloads go to ``data/.downloads/`` (outside the stage's output, so an interrupted download is
  resumed by the next run with a ``Range`` request guarded by ``If-Range``), show a progress bar and retry
  transient failures with back-off.
- ``sha256`` is checked before anything is extracted; a mismatch is an error and writes nothing.

What is done with the file next (safe extraction) is :mod:`handsigns.extract`; the two are composed by
:mod:`handsigns.download`. :mod:`handsigns.pretrained` uses this half alone.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from handsigns import __version__
from handsigns.errors import UserError
from handsigns.files import CHUNK, sha256_file, sha256_tree, write_text
from handsigns.paths import DOWNLOADS

BACKOFF_S = 0.5  # first retry delay; doubles each attempt, capped at 30 s
LOCAL_COPY_HINT = (
    "to use a local copy instead, set data.source in params.yaml to its path (`make repro SOURCE=path/to/copy`)"
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
    """One attempt: resume ``part`` where the server allows, else start it over; a transient failure raises
    ``_TransientError`` (retried), a permanent one ``UserError``."""
    have, headers = _resume_request(part, meta_path)
    resp = _open(url, headers, part, timeout_s)
    with resp:
        have, mode = _resume_point(resp, part, have)
        if resp.headers.get("Content-Type", "").startswith("text/html"):
            raise UserError(
                f"{url} answered with an HTML page, not a data archive (a login or "
                f"confirmation page?); {LOCAL_COPY_HINT}"
            )
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        _save_validators(meta_path, url, resp)
        got = _receive(resp, part, mode, have, total)
    if total is not None and got != total:
        raise _TransientError(f"transfer cut after {got} of {total} bytes")


def _resume_request(part: Path, meta_path: Path) -> tuple[int, dict[str, str]]:
    """The bytes already held and the request headers: a ``Range`` from there, guarded by ``If-Range`` with the
    validator the server gave; without a validator a range could splice two versions, so start over."""
    have = part.stat().st_size if part.exists() else 0
    meta = _read_meta(meta_path) if have else {}
    validator = meta.get("etag") or meta.get("last_modified")
    headers = {"User-Agent": f"handsigns/{__version__}"}
    if have and validator:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = validator
    else:
        have = 0
    return have, headers


def _open(url: str, headers: dict[str, str], part: Path, timeout_s: float) -> Any:
    """The response to the request; HTTP errors sorted into transient (retried) and permanent ones."""
    try:
        return urlopen(Request(url, headers=headers), timeout=timeout_s)
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


def _resume_point(resp: Any, part: Path, have: int) -> tuple[int, str]:
    """Where the body starts and how ``part`` is opened: appended to on a 206 for our range, else rewritten."""
    if resp.status == 206:
        match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != have:
            part.unlink(missing_ok=True)
            raise _TransientError("server answered a different range, restarting")
        return have, "ab"
    return 0, "wb"  # 200: the whole file (server ignored the range, or the file changed since)


def _save_validators(meta_path: Path, url: str, resp: Any) -> None:
    """The ETag / Last-Modified a later run's ``If-Range`` sends, written before the body."""
    write_text(
        meta_path,
        json.dumps({"url": url, "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}),
    )


def _receive(resp: Any, part: Path, mode: str, have: int, total: int | None) -> int:
    """Stream the body into ``part`` with a progress bar; return the bytes ``part`` then holds."""
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
        return fh.tell()


# --------------------------------------------------------------------------------------------- verify


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
