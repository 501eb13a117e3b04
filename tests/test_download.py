"""download.py and the download stage: fetch, verify, then extract into a temporary folder renamed into place;
the provenance record; and the stage's one error line for each refusal."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

from handsigns.files import sha256_file

from conftest import assert_user_error_exit, run_stage
from helpers.archives import ZEROS, bomb_zip, tree, zip_bytes
from helpers.downloads import RATIO_MESSAGE, download, refused

# --------------------------------------------------------------------------------------- the library


def test_zip_extracts_and_records_provenance(tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    record = download(archive, tmp_path / "raw", sha)
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


def test_success_replaces_the_previous_extraction_whole(tmp_path, payload):
    raw = tmp_path / "raw"
    (raw / "stale").mkdir(parents=True)
    (raw / "stale" / "old.png").write_bytes(b"old")
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload))
    download(archive, raw)
    assert tree(raw) == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zip", "gen", "raw"]  # no temp leftovers


def test_archive_without_files(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("only_a_folder/", b"")
    refused(tmp_path, "empty.zip", buf.getvalue(), "holds no files")


# -------------------------------------------------------------------------------- the download stage


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
