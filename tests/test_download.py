"""download.py over fetch.py and extract.py: fetch (file, folder, HTTP), verify and safely extract, on real files
and a real HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from handsigns import extract, fetch
from handsigns.download import materialise
from handsigns.errors import UserError
from handsigns.extract import Limits
from handsigns.files import sha256_file, sha256_tree
from handsigns.params import load
from handsigns.params.data import DataParams

from conftest import REPO, assert_user_error_exit, run_stage, write_image

FILES = {"pics/0_a.png": None, "pics/1_b.png": None, "pics/sub/2_c.png": None, "notes.txt": b"hello\n"}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.01)


@pytest.fixture
def payload(tmp_path) -> dict[str, bytes]:
    """The files every archive in these tests holds: three small images and a text file."""
    out = {}
    for seed, (name, data) in enumerate(FILES.items()):
        if data is None:
            data = write_image(tmp_path / "gen" / f"{seed}.png", seed, 40, kind="noise").read_bytes()
        out[name] = data
    return out


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


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


DEFAULT_LIMITS = Limits.of(DataParams(source="x"))  # params.yaml's


def run(
    source: str | Path,
    raw: Path,
    sha: str | None = None,
    *,
    retries: int = 0,
    dl: Path | None = None,
    timeout_s: float = 5,
    limits: Limits = DEFAULT_LIMITS,
) -> dict:
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
        run(tmp_path / name, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    return str(info.value)


# ------------------------------------------------------------------------------------- local sources


def test_zip_extracts_and_records_provenance(tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    record = run(archive, tmp_path / "raw", sha)
    assert tree(tmp_path / "raw") == payload
    assert record == {
        "source": str(archive),
        "source_kind": "file",
        "format": "zip",
        "sha256": sha,
        "sha256_pinned": True,
        "files": 4,
        "bytes": sum(map(len, payload.values())),
    }
    assert archive.exists()  # a local source is never deleted


@pytest.mark.parametrize("mode", ["w:gz", "w", "w:bz2", "w:xz"])
def test_tar_extracts_whatever_the_compression(tmp_path, payload, mode):
    archive = tmp_path / "data.bin"  # recognised by content, not by name
    archive.write_bytes(tar_bytes(payload, mode=mode))
    record = run(archive, tmp_path / "raw")
    assert tree(tmp_path / "raw") == payload
    assert (record["format"], record["files"]) == ("tar", 4)


def test_folder_is_copied_and_hashed_as_a_tree(tmp_path, payload):
    src = tmp_path / "src"
    for name, data in payload.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    record = run(src, tmp_path / "raw", sha256_tree(src))
    assert tree(tmp_path / "raw") == payload
    assert (record["source_kind"], record["format"], record["sha256"]) == ("directory", "directory", sha256_tree(src))
    (src / "notes.txt").write_bytes(b"changed\n")  # any change to the folder changes its hash
    assert sha256_tree(src) != record["sha256"]


def test_folder_with_a_link_leading_outside_is_refused(tmp_path, payload):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    (src / "escape").symlink_to("../../etc/passwd")
    with pytest.raises(UserError, match="escape"):
        run(src, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_file_url(tmp_path, payload):
    archive = tmp_path / "dir with space" / "data.zip"
    archive.parent.mkdir()
    archive.write_bytes(zip_bytes(payload))
    record = run(archive.as_uri(), tmp_path / "raw")
    assert record["source_kind"] == "file" and record["source"].startswith("file://")
    assert tree(tmp_path / "raw") == payload


def test_null_sha256_records_the_observed_hash(tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    record = run(archive, tmp_path / "raw", None)
    assert record["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert record["sha256_pinned"] is False


def test_checksum_mismatch_writes_nothing(tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    wrong = "0" * 64
    raw = tmp_path / "raw"
    with pytest.raises(UserError) as info:
        run(archive, raw, wrong)
    msg = str(info.value)
    assert "sha256 mismatch" in msg and wrong in msg and sha256_file(archive) in msg and "nothing" in msg
    assert not raw.exists()
    raw.mkdir()  # a previous good extraction is left untouched too
    (raw / "old.txt").write_text("old")
    with pytest.raises(UserError, match="sha256 mismatch"):
        run(archive, raw, wrong)
    assert tree(raw) == {"old.txt": b"old"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw")] == []


def test_success_replaces_the_previous_extraction_whole(tmp_path, payload):
    raw = tmp_path / "raw"
    (raw / "stale").mkdir(parents=True)
    (raw / "stale" / "old.png").write_bytes(b"old")
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    run(archive, raw)
    assert tree(raw) == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zip", "gen", "raw"]  # no temp leftovers


def test_missing_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "data.zip"
    with pytest.raises(UserError, match=r"no such file or folder") as info:
        run(missing, tmp_path / "raw")
    assert str(missing) in str(info.value)
    with pytest.raises(UserError, match="no such file or folder"):
        run(missing.as_uri(), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_unsupported_scheme(tmp_path):
    with pytest.raises(UserError, match="unsupported scheme 'ftp'"):
        run("ftp://example.com/data.zip", tmp_path / "raw")


def test_not_an_archive(tmp_path):
    refused(tmp_path, "data.zip", b"this is not an archive" * 100, "neither a zip nor a tar")


@pytest.mark.parametrize("where", [0.01, 0.5, 0.9])
def test_damaged_zip(tmp_path, where):
    content = np.random.default_rng(0).bytes(5000) + bytes(range(256)) * 400
    data = bytearray(zip_bytes({"big.bin": content}))
    offset = 40 + int(where * (len(data) - 200))  # inside the compressed data: CRC or inflate fails
    data[offset : offset + 10] = b"\xff" * 10
    refused(tmp_path, "data.zip", bytes(data), "damaged zip archive")


def test_damaged_tar_xz(tmp_path):
    rng = np.random.default_rng(0)
    data = bytearray(tar_bytes({"big.bin": rng.bytes(20_000) + bytes(range(256)) * 400}, mode="w:xz"))
    data[len(data) // 2 : len(data) // 2 + 10] = bytes(10)
    refused(tmp_path, "data.tar.xz", bytes(data), "damaged xz stream")


def test_truncated_tar_gz(tmp_path, payload):
    data = tar_bytes(payload)
    refused(tmp_path, "data.tar.gz", data[: len(data) // 2], "damaged gzip stream")


def test_tar_gz_with_a_bad_checksum_trailer_is_refused(tmp_path, payload):
    data = bytearray(tar_bytes(payload))
    data[-8] ^= 0xFF  # gzip's CRC32 of the whole stream: tarfile alone stops before reading it
    refused(tmp_path, "data.tar.gz", bytes(data), "damaged gzip stream")


def test_archive_without_files(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("only_a_folder/", b"")
    refused(tmp_path, "empty.zip", buf.getvalue(), "holds no files")


# -------------------------------------------------------------------------------- unsafe archives


@pytest.mark.parametrize("member", ["../evil.txt", "pics/../../evil.txt", "..\\evil.txt"])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, payload, member):
    archive = tmp_path / "in" / "data.zip"
    archive.parent.mkdir()
    archive.write_bytes(zip_bytes({**payload, member: b"pwned"}))
    raw = tmp_path / "out" / "raw"
    with pytest.raises(UserError) as info:
        run(archive, raw)
    assert repr(member) in str(info.value) and "'..'" in str(info.value)
    assert not raw.exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_zip_absolute_member_is_refused(tmp_path, payload):
    target = tmp_path / "abs_evil.txt"
    assert str(target) in refused(tmp_path, "data.zip", zip_bytes({**payload, str(target): b"pwned"}), "absolute path")
    assert not target.exists()


@pytest.mark.parametrize("member", ["/tmp/handsigns_abs_evil.txt", "../evil.txt", "a/../../evil.txt"])
def test_tar_escaping_member_is_refused(tmp_path, payload, member):
    assert repr(member) in refused(tmp_path, "data.tar.gz", tar_bytes({**payload, member: b"pwned"}))
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/handsigns_abs_evil.txt").exists()


@pytest.mark.parametrize(
    ("name", "target", "why"),
    [
        ("pics/link.png", "../../etc/passwd", "leads outside"),
        ("pics/link.png", "/etc/passwd", "absolute"),
        ("link.png", "../x", "leads outside"),
        ("pics/sub/link.png", "../../pics/../../x", "leads outside"),
    ],
)
def test_tar_symlink_leading_outside_is_refused(tmp_path, payload, name, target, why):
    message = refused(tmp_path, "data.tar.gz", tar_bytes(payload, extra=[link_info(name, target)]), why)
    assert repr(name) in message and repr(target) in message


def test_tar_hardlink_leading_outside_is_refused(tmp_path, payload):
    data = tar_bytes(payload, mode="w", extra=[link_info("pics/hard", "../../secret", tarfile.LNKTYPE)])
    refused(tmp_path, "data.tar", data, re.escape("'pics/hard': hard link to '../../secret' leads outside"))


def test_tar_hardlink_inside_the_tree_is_kept(tmp_path, payload):
    archive = tmp_path / "data.tar"
    archive.write_bytes(
        tar_bytes(payload, mode="w", extra=[link_info("pics/sub/hard.png", "pics/0_a.png", tarfile.LNKTYPE)])
    )
    record = run(archive, tmp_path / "raw")
    assert (tmp_path / "raw" / "pics" / "sub" / "hard.png").read_bytes() == payload["pics/0_a.png"]
    assert record["files"] == 5


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_tar_special_file_is_refused(tmp_path, payload, kind):
    info = tarfile.TarInfo("pics/device")
    info.type = kind
    refused(
        tmp_path, "data.tar", tar_bytes(payload, mode="w", extra=[info]), "'pics/device': not a file, folder or link"
    )


def test_tar_link_inside_the_tree_is_kept(tmp_path, payload):
    archive = tmp_path / "data.tar.gz"
    archive.write_bytes(tar_bytes(payload, extra=[link_info("pics/sub/link.png", "../0_a.png")]))
    record = run(archive, tmp_path / "raw")
    link = tmp_path / "raw" / "pics" / "sub" / "link.png"
    assert link.is_symlink() and link.read_bytes() == payload["pics/0_a.png"]
    assert record["files"] == 4  # links are not counted as files


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "../../../outside"])
def test_zip_symlink_leading_outside_is_refused(tmp_path, payload, target):
    message = refused(tmp_path, "data.zip", zip_bytes(payload, links={"pics/link.png": target}))
    assert "'pics/link.png'" in message and repr(target) in message


def test_zip_chain_of_harmless_looking_links_cannot_escape(tmp_path, payload):
    # Each target normalises to '.', yet p -> . , q -> p/.. , r -> q/.. climb out of the data folder.
    archive = tmp_path / "chain.zip"
    proj = tmp_path / "proj"
    proj.mkdir()
    # files are written before links, so a file under a link-to-be is refused as a clash ...
    archive.write_bytes(zip_bytes({**payload, "r/ESCAPED.txt": b"x"}, links={"p": ".", "q": "p/..", "r": "q/.."}))
    with pytest.raises(UserError, match="'r' appears twice or clashes with a link"):
        run(archive, proj / "data" / "raw")
    assert not list(tmp_path.rglob("ESCAPED.txt"))
    # ... and links alone are resolved on disk, all in place, before anything is accepted
    archive.write_bytes(zip_bytes(payload, links={"p": ".", "q": "p/..", "r": "q/.."}))
    with pytest.raises(UserError, match=r"'q': link to 'p/\.\.' leads outside"):
        run(archive, proj / "data" / "raw")
    assert not (proj / "data" / "raw").exists()


def test_folder_source_with_chained_links_is_refused(tmp_path, payload):
    src = tmp_path / "src"
    for name, data in payload.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    os.symlink(".", src / "p")
    os.symlink("p/..", src / "q")
    with pytest.raises(UserError, match="leads outside"):
        run(src, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_zip_with_a_member_twice_is_refused(tmp_path, payload):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a/x.jpg", b"one")
        zf.writestr("a/x.jpg", b"two")
    archive = tmp_path / "twice.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match=r"'a/x\.jpg' appears twice"):
        run(archive, tmp_path / "raw")


def test_zip_symlink_inside_the_tree_is_kept(tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload, links={"pics/sub/link.png": "../0_a.png"}))
    run(archive, tmp_path / "raw")
    link = tmp_path / "raw" / "pics" / "sub" / "link.png"
    assert link.is_symlink() and link.read_bytes() == payload["pics/0_a.png"]


# ----------------------------------------------------------------------------------------------- HTTP


@dataclass
class Seen:
    path: str
    range: str | None
    if_range: str | None


@dataclass
class Server:
    """What the test HTTP server serves; ``script`` is a queue of one-shot behaviours for the next requests."""

    body: bytes = b""
    etag: str = '"v1"'
    content_type: str = "application/zip"
    script: list[str] = field(default_factory=list)  # "cut", "404", "500", "html"
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


class Handler(http.server.BaseHTTPRequestHandler):
    state: Server

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        st = self.state
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        st.seen.append(Seen(self.path, rng, if_range))
        action = st.script.pop(0) if st.script else "ok"
        if action in ("404", "500"):
            self.send_error(int(action))
            return
        if action == "html":
            page = b"<html><body>Google Drive can't scan this file for viruses</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and (if_range is None or if_range == st.etag):
            start = int(m.group(1))
        body = st.body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(st.body) - 1}/{len(st.body)}")
        self.send_header("Content-Type", st.content_type)
        self.send_header("Content-Length", str(len(body)))  # the full length, even when we cut
        if st.etag:
            self.send_header("ETag", st.etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if action == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    state = Server()
    handler = type("StateHandler", (Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/download?id=abc&export=download"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_download(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    dl = tmp_path / "dl"
    record = run(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), dl=dl)
    assert tree(tmp_path / "raw") == payload
    assert (record["source_kind"], record["format"], record["source"]) == ("http", "zip", server.url)
    assert len(server.seen) == 1 and server.seen[0].range is None
    assert not list(dl.glob("*.done")) and not list(dl.glob("*.part"))  # the archive is gone once extracted


def test_http_download_resumes_across_a_cut(tmp_path, server, payload, capsys):
    server.body = zip_bytes(payload)
    half = len(server.body) // 2
    server.script = ["cut"]
    record = run(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), retries=2)
    assert record["sha256"] == hashlib.sha256(server.body).hexdigest()
    assert tree(tmp_path / "raw") == payload
    assert [(s.range, s.if_range) for s in server.seen] == [(None, None), (f"bytes={half}-", server.etag)]
    assert "retrying" in capsys.readouterr().out


def test_http_interrupted_run_is_resumed_by_the_next_run(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    sha = hashlib.sha256(server.body).hexdigest()
    server.script = ["cut"]
    raw = tmp_path / "raw"
    with pytest.raises(UserError, match="after 1 attempts"):
        run(server.url, raw, sha, retries=0)
    assert not raw.exists()
    run(server.url, raw, sha, retries=0)
    assert tree(raw) == payload
    assert server.seen[1].range == f"bytes={len(server.body) // 2}-"


def test_http_resume_restarts_when_the_file_changed(tmp_path, server, payload):
    """If-Range: a changed file (new ETag) is sent whole, not spliced onto the old half."""
    server.body = zip_bytes({"old.txt": b"o" * 5000})
    server.script = ["cut"]
    with pytest.raises(UserError):
        run(server.url, tmp_path / "raw", retries=0)
    server.body, server.etag = zip_bytes(payload), '"v2"'
    record = run(server.url, tmp_path / "raw", retries=0)
    assert server.seen[1].if_range == '"v1"'
    assert record["sha256"] == hashlib.sha256(server.body).hexdigest()
    assert tree(tmp_path / "raw") == payload


def test_http_without_a_validator_restarts_instead_of_resuming(tmp_path, server, payload):
    server.body, server.etag = zip_bytes(payload), ""  # no ETag, no Last-Modified: a range could splice files
    server.script = ["cut"]
    run(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), retries=1)
    assert [s.range for s in server.seen] == [None, None]
    assert tree(tmp_path / "raw") == payload


def test_http_unreachable_mentions_the_url_and_the_local_copy(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/64x64_SIGNS.zip"
    with pytest.raises(UserError) as info:
        run(url, tmp_path / "raw", retries=1, timeout_s=1)
    msg = str(info.value)
    assert url in msg and "local copy" in msg and "after 2 attempts" in msg
    assert not (tmp_path / "raw").exists()


def test_http_404_is_not_retried(tmp_path, server):
    server.script = ["404"]
    with pytest.raises(UserError, match="HTTP 404") as info:
        run(server.url, tmp_path / "raw", retries=3)
    assert server.url in str(info.value) and "local copy" in str(info.value)
    assert len(server.seen) == 1


def test_http_500_is_retried(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    server.script = ["500", "500"]
    run(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), retries=2)
    assert len(server.seen) == 3
    assert tree(tmp_path / "raw") == payload


def test_http_500_until_retries_run_out(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    server.script = ["500"] * 3
    with pytest.raises(UserError, match=r"after 2 attempts \(HTTP 500"):
        run(server.url, tmp_path / "raw", retries=1)
    assert len(server.seen) == 2


def test_http_html_page_is_a_clear_error(tmp_path, server):
    server.script = ["html"]
    with pytest.raises(UserError, match="HTML page") as info:
        run(server.url, tmp_path / "raw", retries=3)
    assert "local copy" in str(info.value)
    assert len(server.seen) == 1
    assert not (tmp_path / "raw").exists()


def test_http_checksum_mismatch_discards_the_download(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    dl = tmp_path / "dl"
    with pytest.raises(UserError, match="sha256 mismatch"):
        run(server.url, tmp_path / "raw", "1" * 64, dl=dl)
    assert not (tmp_path / "raw").exists()
    assert not list(dl.glob("*.done"))  # a bad download is not reused by the next run
    run(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), dl=dl)
    assert len(server.seen) == 2 and server.seen[1].range is None


def test_http_archive_refused_at_extraction_is_not_reused(tmp_path, server, payload):
    server.body = zip_bytes({**payload, "../evil.txt": b"x"})
    dl = tmp_path / "dl"
    with pytest.raises(UserError, match=r"evil\.txt"):
        run(server.url, tmp_path / "raw", None, dl=dl)
    assert not list(dl.glob("*.done"))  # once upstream is fixed, the next run fetches it anew
    server.body = zip_bytes(payload)
    run(server.url, tmp_path / "raw", None, dl=dl)
    assert tree(tmp_path / "raw") == payload and len(server.seen) == 2


# ----------------------------------------------------------------------------- decompression bombs

SMALL = Limits(max_bytes=1_000_000, max_members=10, max_ratio=100.0)  # 1 MB, 10 members: bombs a test can afford
ZEROS = bytes(2_000_000)  # deflates to ~2 KB, expands past SMALL


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("data.zip", zip_bytes({"a/ok.txt": b"ok", "a/zeros.bin": ZEROS})),
        ("data.tar.gz", tar_bytes({"a/ok.txt": b"ok", "a/zeros.bin": ZEROS})),
    ],
)
def test_an_archive_expanding_past_the_limit_is_refused_naming_the_member(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    assert len(data) < 20_000  # a bomb: a few KB that claim 2 MB
    with pytest.raises(
        UserError, match=r"member 'a/zeros.bin': the archive expands to more than data.max_extract_gb = 0.001 GB"
    ):
        run(tmp_path / name, tmp_path / "raw", limits=SMALL)
    assert not (tmp_path / "raw").exists()  # refused before anything was written
    # under the default 50 GB (and a data.max_compression_ratio above its ~1,000-fold) it extracts
    assert run(tmp_path / name, tmp_path / "raw", limits=replace(DEFAULT_LIMITS, max_ratio=5000))["files"] == 2


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_archive_with_too_many_members_is_refused_naming_the_first_past_the_limit(tmp_path, kind):
    members = {f"many/{i:02d}.txt": b"x" for i in range(11)}
    data = zip_bytes(members) if kind == "zip" else tar_bytes(members, mode="w")
    (tmp_path / "data").write_bytes(data)
    with pytest.raises(
        UserError, match=r"member 'many/10.txt': the archive holds more than data.max_archive_members = 10 "
    ):
        run(tmp_path / "data", tmp_path / "raw", limits=SMALL)
    assert not (tmp_path / "raw").exists()


def test_a_tar_bomb_is_refused_at_its_header_before_its_payload_is_inflated(tmp_path):
    """A gzip'd tar header claiming 100 GB, with no payload behind it: the default limit refuses it from the
    header alone. Inflating (or reading) on would have met the missing payload and said "damaged" instead."""
    info = tarfile.TarInfo("bomb/huge.bin")
    info.size = 100 * 10**9
    (tmp_path / "data.tar.gz").write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
    msg = refused(tmp_path, "data.tar.gz", (tmp_path / "data.tar.gz").read_bytes(), "member 'bomb/huge.bin'")
    assert "expands to more than data.max_extract_gb = 50 GB (100 GB up to this member" in msg


def test_data_hidden_after_the_end_of_a_compressed_tar_is_refused(tmp_path, payload):
    """A sound little tar, then 50 MB of zeros inside the same gzip stream (tarfile stops at the end-of-archive
    marker and would never see them; inflating them all is the bomb)."""
    inner = tar_bytes(payload, mode="w")
    data = gzip.compress(inner + bytes(50 * 2**20))
    assert len(data) < 100_000
    refused(tmp_path, "data.tar.gz", data, "its gzip stream expands past what its members declare")


def test_an_archive_larger_than_the_free_disk_space_is_refused_before_writing(tmp_path, monkeypatch, payload):
    (tmp_path / "data.zip").write_bytes(zip_bytes(payload))
    size = sum(len(v) for v in payload.values())
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda _: SimpleNamespace(free=size - 1))
    with pytest.raises(UserError, match=r"the archive expands to .* GB free; nothing was extracted: free some space"):
        run(tmp_path / "data.zip", tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------------ data.max_compression_ratio

BOMB = bytes(20 * 2**20)  # 20 MB of zeros: deflates ~1,000-fold, yet far under data.max_extract_gb
SIGNS_ZIP = REPO / "datasets" / "64x64_SIGNS.zip"
RATIO_MESSAGE = (
    r"refusing to extract archive member 'a/zeros\.bin': it expands 1,0\d\d-fold \(20,971,520 bytes from "
    r"[\d,]+ compressed\), more than data\.max_compression_ratio = 100 \(a decompression bomb\?\); nothing was "
    r"extracted\. If the archive is genuine, raise data\.max_compression_ratio in params\.yaml$"
)


def bomb_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:  # written to disk: no 20 MB archive in memory
        zf.writestr("a/ok.txt", b"ok")
        zf.writestr("a/zeros.bin", BOMB)
    return path


def test_a_zip_member_past_the_compression_ratio_is_refused_by_name_and_nothing_is_written(tmp_path):
    archive = bomb_zip(tmp_path / "bomb.zip")
    assert archive.stat().st_size < 100_000
    with pytest.raises(UserError, match=RATIO_MESSAGE):
        run(archive, tmp_path / "raw")
    assert [p.name for p in tmp_path.rglob("*")] == ["bomb.zip"]  # no data/raw, no temporary folder, no member
    raised = run(archive, tmp_path / "raw", limits=replace(DEFAULT_LIMITS, max_ratio=2000))  # a genuine archive
    assert raised["files"] == 2 and (tmp_path / "raw" / "a" / "zeros.bin").stat().st_size == len(BOMB)


def test_members_too_small_to_matter_are_exempt_from_the_ratio(tmp_path, payload):
    """An empty file, a sparse .DS_Store (192-fold) and 64 KB of zeros (840-fold) deflate past 100-fold, and
    write at most a few KB each: under 1 MB a member is exempt (the total limits still bind)."""
    ds_store = b"\0\0\0\1Bud1" + bytes(6140)
    small = {"empty.txt": b"", "pics/.DS_Store": ds_store, "zeros64k.bin": bytes(65536)}
    (tmp_path / "data.zip").write_bytes(zip_bytes({**payload, **small}))
    with zipfile.ZipFile(tmp_path / "data.zip") as zf:
        assert min(i.file_size / i.compress_size for i in zf.infolist() if i.filename in small and i.file_size) > 100
    record = run(tmp_path / "data.zip", tmp_path / "raw")
    assert tree(tmp_path / "raw") == {**payload, **small} and record["files"] == 7


def test_a_zip_of_many_exempt_members_is_held_to_the_ratio_as_a_whole(tmp_path):
    """Each member just under the 1 MB exemption, together 1,000-fold: refused at the member that crosses it."""
    members = {f"z/{i:02d}.bin": bytes(999_999) for i in range(30)}
    message = refused(tmp_path, "data.zip", zip_bytes(members))
    assert re.match(r"refusing to extract archive member 'z/\d\d\.bin': the archive's members up to it expand", message)


def test_a_tar_is_held_to_the_ratio_as_a_whole_at_the_member_that_crosses_it(tmp_path):
    """A tar member has no compressed size of its own: the members so far against the whole archive's bytes."""
    message = refused(tmp_path, "data.tar.gz", tar_bytes({"a/ok.txt": b"ok", "a/zeros.bin": BOMB}))
    assert re.fullmatch(
        r"refusing to extract archive member 'a/zeros\.bin': the archive's members up to it expand 1,0\d\d-fold "
        r"\(20,971,522 bytes from the archive's [\d,]+\), more than "
        r"data\.max_compression_ratio = 100 .* raise data\.max_compression_ratio in params\.yaml",
        message,
    )


def test_a_tar_past_the_ratio_is_refused_at_its_header_before_its_payload_is_inflated(tmp_path):
    """A gzip'd header claiming 20 MB with no payload behind it: inflating on would have said "damaged"."""
    info = tarfile.TarInfo("bomb/zeros.bin")
    info.size = len(BOMB)
    data = gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT))
    refused(
        tmp_path, "data.tar.gz", data, r"member 'bomb/zeros\.bin': the archive's members up to it expand [\d,]+-fold"
    )


def test_signs_zip_and_tar_gz_pass_the_ratio(tmp_path):
    """Measured: SIGNS' JPEGs deflate at most 1.3-fold in the shipped zip; the set as one tar.gz 2.0-fold (the
    files share JPEG headers): far under 100."""
    with zipfile.ZipFile(SIGNS_ZIP) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        assert max(i.file_size / i.compress_size for i in infos) < 1.5
        members = {i.filename: zf.read(i) for i in infos}
    assert run(SIGNS_ZIP, tmp_path / "zip")["files"] == 1200
    (tmp_path / "signs.tar.gz").write_bytes(tar_bytes(members))
    assert sum(map(len, members.values())) / (tmp_path / "signs.tar.gz").stat().st_size < 2.5
    assert run(tmp_path / "signs.tar.gz", tmp_path / "tar")["files"] == 1200


@pytest.mark.parametrize("value", [0, -1])
def test_the_ratio_param_must_be_positive(value):
    with pytest.raises(UserError, match=rf"data\.max_compression_ratio = {value}.*out of range.*> 0"):
        load(DataParams, raw={"data": {"source": "x", "max_compression_ratio": value}})


# ------------------------------------------------------------------------------ the download stage


def test_stage_downloads_and_writes_provenance(stage_project, payload):
    project = stage_project({"source": "data.zip"})  # relative to the project root, as in params.yaml
    archive = project / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    proc = run_stage(project, "download")
    assert proc.returncode == 0, proc.stderr
    assert tree(project / "data" / "raw") == payload
    record = json.loads((project / "data" / "provenance.json").read_text())
    assert record["sha256"] == sha256_file(archive) and record["files"] == 4 and record["sha256_pinned"] is False
    assert "pin it in params.yaml" in proc.stdout


def test_stage_checksum_mismatch_exits_2_with_one_error_line(stage_project, tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    project = stage_project({"source": str(archive), "sha256": "ab" * 32})
    proc = run_stage(project, "download")
    assert_user_error_exit(proc, "sha256 mismatch", "ab" * 32, sha256_file(archive))
    assert not (project / "data" / "raw").exists() and not (project / "data" / "provenance.json").exists()


def test_stage_zip_slip_exits_2_with_one_error_line(stage_project, tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes({**payload, "../../evil.txt": b"pwned"}))
    project = stage_project({"source": str(archive), "sha256": None})
    proc = run_stage(project, "download")
    assert_user_error_exit(proc, "'../../evil.txt'")
    assert not (project / "data" / "raw").exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_stage_refuses_a_bomb_with_one_error_line_and_writes_nothing(stage_project, tmp_path):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes({"a/ok.txt": b"ok", "a/zeros.bin": ZEROS}))
    project = stage_project({"source": str(archive), "sha256": None, "max_extract_gb": 0.001})
    line = assert_user_error_exit(run_stage(project, "download"), "'a/zeros.bin'", "data.max_extract_gb = 0.001 GB")
    print(f"\n{line}")
    assert not (project / "data" / "raw").exists() and not (project / "data" / "provenance.json").exists()


def test_stage_refuses_a_zip_member_past_the_compression_ratio_with_one_error_line(stage_project, tmp_path):
    archive = bomb_zip(tmp_path / "bomb.zip")
    project = stage_project({"source": str(archive), "sha256": None})
    proc = run_stage(project, "download")
    line = assert_user_error_exit(proc, "'a/zeros.bin'", "data.max_compression_ratio = 100")
    assert re.fullmatch(RATIO_MESSAGE, line.removeprefix("error: "))
    print(f"\n{line}")
    assert not (project / "data" / "raw").exists() and not (project / "data" / "provenance.json").exists()
    assert not list(tmp_path.rglob("zeros.bin")) and not list(tmp_path.rglob(".raw*"))


def test_stage_bad_params_exit_2(stage_project, tmp_path):
    project = stage_project({"source": str(tmp_path / "x.zip"), "download_retries": "many"})
    assert_user_error_exit(run_stage(project, "download"), "data.download_retries", "'many'")
