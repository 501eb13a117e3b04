"""extract.py, through the download stage's library on real files: zip and tar recognised by their bytes,
damaged archives, unsafe members and links, and decompression bombs (data.max_extract_gb,
data.max_archive_members, data.max_compression_ratio)."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from handsigns import extract
from handsigns.errors import UserError
from handsigns.extract import Limits
from handsigns.params import load
from handsigns.params.data import DataParams

from conftest import SIGNS_ZIP
from helpers.archives import BOMB, ZEROS, bomb_zip, link_info, tar_bytes, tree, zip_bytes
from helpers.downloads import DEFAULT_LIMITS, RATIO_MESSAGE, download, refused

# ------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("mode", ["w:gz", "w", "w:bz2", "w:xz"])
def test_tar_extracts_whatever_the_compression(tmp_path, payload, mode):
    archive = tmp_path / "data.bin"  # recognised by content, not by name
    archive.write_bytes(tar_bytes(payload, mode=mode))
    record = download(archive, tmp_path / "raw")
    assert tree(tmp_path / "raw") == payload
    assert (record["format"], record["files"]) == ("tar", 4)


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


# ----------------------------------------------------------------------------------- unsafe archives


@pytest.mark.parametrize("member", ["../evil.txt", "pics/../../evil.txt", "..\\evil.txt"])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, payload, member):
    archive = tmp_path / "in" / "data.zip"
    archive.parent.mkdir()
    archive.write_bytes(zip_bytes({**payload, member: b"pwned"}))
    raw = tmp_path / "out" / "raw"
    with pytest.raises(UserError) as info:
        download(archive, raw)
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
    record = download(archive, tmp_path / "raw")
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
    record = download(archive, tmp_path / "raw")
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
        download(archive, proj / "data" / "raw")
    assert not list(tmp_path.rglob("ESCAPED.txt"))
    # ... and links alone are resolved on disk, all in place, before anything is accepted
    archive.write_bytes(zip_bytes(payload, links={"p": ".", "q": "p/..", "r": "q/.."}))
    with pytest.raises(UserError, match=r"'q': link to 'p/\.\.' leads outside"):
        download(archive, proj / "data" / "raw")
    assert not (proj / "data" / "raw").exists()


def test_zip_with_a_member_twice_is_refused(tmp_path, payload):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a/x.jpg", b"one")
        zf.writestr("a/x.jpg", b"two")
    archive = tmp_path / "twice.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match=r"'a/x\.jpg' appears twice"):
        download(archive, tmp_path / "raw")


def test_zip_symlink_inside_the_tree_is_kept(tmp_path, payload):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes(payload, links={"pics/sub/link.png": "../0_a.png"}))
    download(archive, tmp_path / "raw")
    link = tmp_path / "raw" / "pics" / "sub" / "link.png"
    assert link.is_symlink() and link.read_bytes() == payload["pics/0_a.png"]


def test_folder_with_a_link_leading_outside_is_refused(tmp_path, payload):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    (src / "escape").symlink_to("../../etc/passwd")
    with pytest.raises(UserError, match="escape"):
        download(src, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_folder_source_with_chained_links_is_refused(tmp_path, payload):
    src = tmp_path / "src"
    for name, data in payload.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    os.symlink(".", src / "p")
    os.symlink("p/..", src / "q")
    with pytest.raises(UserError, match="leads outside"):
        download(src, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------------- decompression bombs


SMALL = Limits(max_bytes=1_000_000, max_members=10, max_ratio=100.0)  # 1 MB, 10 members: bombs a test can afford


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
        download(tmp_path / name, tmp_path / "raw", limits=SMALL)
    assert not (tmp_path / "raw").exists()  # refused before anything was written
    # under the default 50 GB (and a data.max_compression_ratio above its ~1,000-fold) it extracts
    assert download(tmp_path / name, tmp_path / "raw", limits=replace(DEFAULT_LIMITS, max_ratio=5000))["files"] == 2


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_archive_with_too_many_members_is_refused_naming_the_first_past_the_limit(tmp_path, kind):
    members = {f"many/{i:02d}.txt": b"x" for i in range(11)}
    data = zip_bytes(members) if kind == "zip" else tar_bytes(members, mode="w")
    (tmp_path / "data").write_bytes(data)
    with pytest.raises(
        UserError, match=r"member 'many/10.txt': the archive holds more than data.max_archive_members = 10 "
    ):
        download(tmp_path / "data", tmp_path / "raw", limits=SMALL)
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
        download(tmp_path / "data.zip", tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------ data.max_compression_ratio


def test_a_zip_member_past_the_compression_ratio_is_refused_by_name_and_nothing_is_written(tmp_path):
    archive = bomb_zip(tmp_path / "bomb.zip")
    assert archive.stat().st_size < 100_000
    with pytest.raises(UserError, match=RATIO_MESSAGE):
        download(archive, tmp_path / "raw")
    assert [p.name for p in tmp_path.rglob("*")] == ["bomb.zip"]  # no data/raw, no temporary folder, no member
    raised = download(archive, tmp_path / "raw", limits=replace(DEFAULT_LIMITS, max_ratio=2000))  # a genuine archive
    assert raised["files"] == 2 and (tmp_path / "raw" / "a" / "zeros.bin").stat().st_size == len(BOMB)


def test_members_too_small_to_matter_are_exempt_from_the_ratio(tmp_path, payload):
    """An empty file, a sparse .DS_Store (192-fold) and 64 KB of zeros (840-fold) deflate past 100-fold, and
    write at most a few KB each: under 1 MB a member is exempt (the total limits still bind)."""
    ds_store = b"\0\0\0\1Bud1" + bytes(6140)
    small = {"empty.txt": b"", "pics/.DS_Store": ds_store, "zeros64k.bin": bytes(65536)}
    (tmp_path / "data.zip").write_bytes(zip_bytes({**payload, **small}))
    with zipfile.ZipFile(tmp_path / "data.zip") as zf:
        assert min(i.file_size / i.compress_size for i in zf.infolist() if i.filename in small and i.file_size) > 100
    record = download(tmp_path / "data.zip", tmp_path / "raw")
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
    assert download(SIGNS_ZIP, tmp_path / "zip")["files"] == 1200
    (tmp_path / "signs.tar.gz").write_bytes(tar_bytes(members))
    assert sum(map(len, members.values())) / (tmp_path / "signs.tar.gz").stat().st_size < 2.5
    assert download(tmp_path / "signs.tar.gz", tmp_path / "tar")["files"] == 1200


@pytest.mark.parametrize("value", [0, -1])
def test_the_ratio_param_must_be_positive(value):
    with pytest.raises(UserError, match=rf"data\.max_compression_ratio = {value}.*out of range.*> 0"):
        load(DataParams, raw={"data": {"source": "x", "max_compression_ratio": value}})
