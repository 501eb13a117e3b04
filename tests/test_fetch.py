"""fetch.py, through the download stage's library: a file, a folder or a file:// URL as the source, the sha256
check, and HTTP (resume across cuts and runs, retries, clear errors) against a real HTTP server."""

from __future__ import annotations

import hashlib

import pytest

from handsigns import fetch
from handsigns.errors import UserError
from handsigns.files import sha256_file, sha256_tree

from helpers.archives import tree, zip_bytes
from helpers.downloads import download
from helpers.servers import free_port, scripted_http_server


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.01)


@pytest.fixture
def server():
    with scripted_http_server() as state:
        yield state


# ------------------------------------------------------------------------------------- local sources


def test_file_url(tmp_path, payload):
    archive = tmp_path / "dir with space" / "data.zip"
    archive.parent.mkdir()
    archive.write_bytes(zip_bytes(payload))
    record = download(archive.as_uri(), tmp_path / "raw")
    assert record["source_kind"] == "file" and record["source"].startswith("file://")
    assert tree(tmp_path / "raw") == payload


def test_folder_is_copied_and_hashed_as_a_tree(tmp_path, payload):
    src = tmp_path / "src"
    for name, data in payload.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    record = download(src, tmp_path / "raw", sha256_tree(src))
    assert tree(tmp_path / "raw") == payload
    assert (record["source_kind"], record["format"], record["sha256"]) == ("directory", "directory", sha256_tree(src))
    (src / "notes.txt").write_bytes(b"changed\n")  # any change to the folder changes its hash
    assert sha256_tree(src) != record["sha256"]


def test_missing_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "data.zip"
    with pytest.raises(UserError, match=r"no such file or folder") as info:
        download(missing, tmp_path / "raw")
    assert str(missing) in str(info.value)
    with pytest.raises(UserError, match="no such file or folder"):
        download(missing.as_uri(), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_unsupported_scheme(tmp_path):
    with pytest.raises(UserError, match="unsupported scheme 'ftp'"):
        download("ftp://example.com/data.zip", tmp_path / "raw")


# -------------------------------------------------------------------------------------------- sha256


def test_null_sha256_records_the_observed_hash(tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    record = download(archive, tmp_path / "raw", None)
    assert record["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert record["sha256_pinned"] is False


def test_checksum_mismatch_writes_nothing(tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    wrong = "0" * 64
    raw = tmp_path / "raw"
    with pytest.raises(UserError) as info:
        download(archive, raw, wrong)
    msg = str(info.value)
    assert "sha256 mismatch" in msg and wrong in msg and sha256_file(archive) in msg and "nothing" in msg
    assert not raw.exists()
    raw.mkdir()  # a previous good extraction is left untouched too
    (raw / "old.txt").write_text("old")
    with pytest.raises(UserError, match="sha256 mismatch"):
        download(archive, raw, wrong)
    assert tree(raw) == {"old.txt": b"old"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw")] == []


# ---------------------------------------------------------------------------------------------- HTTP


def test_http_download(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    dl = tmp_path / "dl"
    record = download(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), dl=dl)
    assert tree(tmp_path / "raw") == payload
    assert (record["source_kind"], record["format"], record["source"]) == ("http", "zip", server.url)
    assert len(server.seen) == 1 and server.seen[0].range is None
    assert not list(dl.glob("*.done")) and not list(dl.glob("*.part"))  # the archive is gone once extracted


def test_http_download_resumes_across_a_cut(tmp_path, server, payload, capsys):
    server.body = zip_bytes(payload)
    half = len(server.body) // 2
    server.script = ["cut"]
    record = download(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), retries=2)
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
        download(server.url, raw, sha, retries=0)
    assert not raw.exists()
    download(server.url, raw, sha, retries=0)
    assert tree(raw) == payload
    assert server.seen[1].range == f"bytes={len(server.body) // 2}-"


def test_http_resume_restarts_when_the_file_changed(tmp_path, server, payload):
    """If-Range: a changed file (new ETag) is sent whole, not spliced onto the old half."""
    server.body = zip_bytes({"old.txt": b"o" * 5000})
    server.script = ["cut"]
    with pytest.raises(UserError):
        download(server.url, tmp_path / "raw", retries=0)
    server.body, server.etag = zip_bytes(payload), '"v2"'
    record = download(server.url, tmp_path / "raw", retries=0)
    assert server.seen[1].if_range == '"v1"'
    assert record["sha256"] == hashlib.sha256(server.body).hexdigest()
    assert tree(tmp_path / "raw") == payload


def test_http_without_a_validator_restarts_instead_of_resuming(tmp_path, server, payload):
    server.body, server.etag = zip_bytes(payload), ""  # no ETag, no Last-Modified: a range could splice files
    server.script = ["cut"]
    download(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), retries=1)
    assert [s.range for s in server.seen] == [None, None]
    assert tree(tmp_path / "raw") == payload


def test_http_unreachable_mentions_the_url_and_the_local_copy(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/64x64_SIGNS.zip"
    with pytest.raises(UserError) as info:
        download(url, tmp_path / "raw", retries=1, timeout_s=1)
    msg = str(info.value)
    assert url in msg and "local copy" in msg and "after 2 attempts" in msg
    assert not (tmp_path / "raw").exists()


def test_http_404_is_not_retried(tmp_path, server):
    server.script = ["404"]
    with pytest.raises(UserError, match="HTTP 404") as info:
        download(server.url, tmp_path / "raw", retries=3)
    assert server.url in str(info.value) and "local copy" in str(info.value)
    assert len(server.seen) == 1


def test_http_500_is_retried(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    server.script = ["500", "500"]
    download(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), retries=2)
    assert len(server.seen) == 3
    assert tree(tmp_path / "raw") == payload


def test_http_500_until_retries_run_out(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    server.script = ["500"] * 3
    with pytest.raises(UserError, match=r"after 2 attempts \(HTTP 500"):
        download(server.url, tmp_path / "raw", retries=1)
    assert len(server.seen) == 2


def test_http_html_page_is_a_clear_error(tmp_path, server):
    server.script = ["html"]
    with pytest.raises(UserError, match="HTML page") as info:
        download(server.url, tmp_path / "raw", retries=3)
    assert "local copy" in str(info.value)
    assert len(server.seen) == 1
    assert not (tmp_path / "raw").exists()


def test_http_checksum_mismatch_discards_the_download(tmp_path, server, payload):
    server.body = zip_bytes(payload)
    dl = tmp_path / "dl"
    with pytest.raises(UserError, match="sha256 mismatch"):
        download(server.url, tmp_path / "raw", "1" * 64, dl=dl)
    assert not (tmp_path / "raw").exists()
    assert not list(dl.glob("*.done"))  # a bad download is not reused by the next run
    download(server.url, tmp_path / "raw", hashlib.sha256(server.body).hexdigest(), dl=dl)
    assert len(server.seen) == 2 and server.seen[1].range is None


def test_http_archive_refused_at_extraction_is_not_reused(tmp_path, server, payload):
    server.body = zip_bytes({**payload, "../evil.txt": b"x"})
    dl = tmp_path / "dl"
    with pytest.raises(UserError, match=r"evil\.txt"):
        download(server.url, tmp_path / "raw", None, dl=dl)
    assert not list(dl.glob("*.done"))  # once upstream is fixed, the next run fetches it anew
    server.body = zip_bytes(payload)
    download(server.url, tmp_path / "raw", None, dl=dl)
    assert tree(tmp_path / "raw") == payload and len(server.seen) == 2
