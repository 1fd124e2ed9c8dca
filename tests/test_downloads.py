"""fssam2.downloads against a loopback HTTP server: resume, checksums, mirrors, local copies,
interrupted extraction."""

import hashlib
import io
import socket
import tarfile

import pytest

from fssam2.downloads import Archive, extract, fetch_archive
from fssam2.errors import InputError
from loopback import serve

BODY = bytes(range(256)) * 4096  # 1 MiB


def archive_for(url: str, body: bytes, algorithm: str = "md5", name: str = "data.bin") -> Archive:
    return Archive(name, url, f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}", 1)


def test_download_verifies_and_names_the_file_only_when_whole(tmp_path):
    with serve({"/data.bin": BODY}) as served:
        path = fetch_archive(archive_for(served.url("/data.bin"), BODY, "sha256"), tmp_path, progress=False)
    assert path == tmp_path / "data.bin" and path.read_bytes() == BODY
    assert not (tmp_path / "data.bin.part").exists()


def test_truncated_download_resumes_where_it_stopped(tmp_path):
    with serve({"/data.bin": BODY}) as served:
        archive = archive_for(served.url("/data.bin"), BODY)
        served.truncate.add("/data.bin")
        with pytest.raises(InputError, match="run the same command again to resume"):
            fetch_archive(archive, tmp_path, progress=False)
        assert not (tmp_path / "data.bin").exists()  # never the final name while incomplete
        assert 0 < (tmp_path / "data.bin.part").stat().st_size < len(BODY)
        path = fetch_archive(archive, tmp_path, progress=False)
        ranges = [r for p, r in served.requests if p == "/data.bin"]
    assert path.read_bytes() == BODY
    assert ranges[0] is None and ranges[1] == f"bytes={len(BODY) // 2}-"


def test_wrong_checksum_is_refused_and_not_kept(tmp_path):
    with serve({"/data.bin": BODY}) as served:
        wrong = archive_for(served.url("/data.bin"), b"other bytes")
        with pytest.raises(InputError, match=r"has md5:.*expected md5:.*it was not kept"):
            fetch_archive(wrong, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_changed_file_under_the_final_name_is_refused_not_deleted(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"user's file")
    with pytest.raises(InputError, match="delete or replace it"):
        fetch_archive(archive_for("http://127.0.0.1:9/data.bin", BODY), tmp_path, progress=False)
    assert (tmp_path / "data.bin").read_bytes() == b"user's file"


def test_local_folder_of_archives_is_used_in_place(tmp_path):
    keep = tmp_path / "archives"
    keep.mkdir()
    (keep / "data.bin").write_bytes(BODY)
    closed = archive_for("http://127.0.0.1:9/data.bin", BODY)  # nothing listens there
    assert fetch_archive(closed, tmp_path / "dl", local_dirs=[keep], progress=False) == keep / "data.bin"


def test_mirror_replaces_the_official_host(tmp_path):
    with serve({"/mirror/data.bin": BODY}) as served:
        archive = archive_for("http://127.0.0.1:9/official/data.bin", BODY)
        path = fetch_archive(archive, tmp_path, mirror=served.url("/mirror/"), progress=False)
    assert path.read_bytes() == BODY


def test_offline_error_names_url_and_target(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/data.bin"
    with pytest.raises(InputError, match=f"Cannot reach {url} .*put it at {tmp_path / 'data.bin'}"):
        fetch_archive(archive_for(url, BODY), tmp_path, progress=False)


def test_interrupted_extraction_restarts_clean(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("top/a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    archive = tmp_path / "x.tgz"
    archive.write_bytes(buffer.getvalue())
    stale = tmp_path / ".extracting-x" / "top" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by a killed run")
    staging = extract(archive, tmp_path, "x")
    assert sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")) == ["top", "top/a.txt"]
    archive.write_bytes(buffer.getvalue()[:40])  # truncated
    with pytest.raises(InputError, match="cannot be extracted"):
        extract(archive, tmp_path, "x")
    assert not staging.exists()
