"""Files by URL: resumable download, checksum, extraction; one downloader for the whole package.

`fetch_url` downloads into `<target>.part`, resuming it with an HTTP Range request. `fetch_archive`
finds an archive (already in the download folder, in a folder of archives the user keeps, or at a
mirror or its official URL), checks it against its pinned MD5 or SHA-256 before it gets its final
name, and refuses a file that does not match (a downloaded one is deleted, a user's is left as is).
`extract` unpacks into a hidden staging folder that a restart removes, then moves the result into
place, so an interrupted extraction never leaves a half-extracted folder under its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from fssam2.errors import InputError

CHUNK = 1 << 20


class Archive(NamedTuple):
    """A published file and its pinned digest."""

    filename: str  # its name in the download folder (and in a folder of archives or on a mirror)
    url: str  # the official URL
    digest: str  # "md5:<hex>" or "sha256:<hex>", pinned here
    size_mb: int  # about how large it is, for messages and the README


class Unreachable(InputError):
    """No bytes came from the URL (no connection, or an HTTP error status); `reason` says why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def matches(path: Path, digest: str) -> tuple[bool, str]:
    """(whether the file has the pinned digest, its actual digest in the same algorithm)."""
    algorithm, expected = digest.split(":", 1)
    actual = file_digest(path, algorithm)
    return actual == expected.lower(), f"{algorithm}:{actual}"


def mirror_url(archive: Archive, mirror: str | None) -> str:
    """The official URL, or `<mirror>/<filename>` (a folder of the same files served over HTTP)."""
    return f"{mirror.rstrip('/')}/{archive.filename}" if mirror else archive.url


def fetch_archive(
    archive: Archive,
    folder: Path,
    *,
    mirror: str | None = None,
    local_dirs: Sequence[Path] = (),
    progress: bool = True,
    timeout: float = 60.0,
    refusal: Callable[[str, str, bool], str] | None = None,
) -> Path:
    """The verified archive's path: `<folder>/<filename>` if already there, else a copy kept in one of
    `local_dirs` (used in place, not copied), else downloaded from `mirror` or the official URL.
    `refusal(file or URL, its actual digest, downloaded)` words the error for a file that does not match."""
    target = folder / archive.filename
    candidates = [target, *(Path(d).expanduser() / archive.filename for d in local_dirs)]
    for path in candidates:
        if path.is_file():
            ok, actual = matches(path, archive.digest)
            if not ok:
                raise InputError(
                    refusal(str(path), actual, False)
                    if refusal
                    else f"{path} has {actual}, expected {archive.digest}: it is another or a damaged copy of "
                    f"{archive.url}; delete or replace it and run again."
                )
            return path
    folder.mkdir(parents=True, exist_ok=True)
    url = mirror_url(archive, mirror)
    part = target.with_name(target.name + ".part")
    fetch_url(url, part, target, progress=progress, timeout=timeout)
    ok, actual = matches(part, archive.digest)
    if not ok:
        part.unlink()
        raise InputError(
            refusal(url, actual, True)
            if refusal
            else f"Download of {url} has {actual}, expected {archive.digest}: it was not kept; check the mirror "
            f"or put a good copy of {archive.filename} in {folder}."
        )
    os.replace(part, target)
    return target


def fetch_url(url: str, part: Path, final: Path, *, progress: bool = True, timeout: float = 60.0) -> None:
    """Download `url` into `part`, resuming what is there; `final` is named in errors only (the
    caller verifies `part` and renames it)."""
    offset = part.stat().st_size if part.is_file() else 0
    if urllib.parse.urlparse(url).scheme == "file":
        return _copy_local(urllib.parse.unquote(urllib.parse.urlparse(url).path), part, final)
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - https by default, any URL by choice
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the partial file is already whole
            return
        raise Unreachable(
            f"Downloading {url} failed: the server answered {err.code} {err.reason}; try again later, or put the "
            f"file at {final}.",
            f"it answered {err.code} {err.reason}",
        ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Unreachable(
            f"Cannot reach {url} ({reason}): fetch it where the network is reachable and put it at {final}, "
            "or give a mirror or a folder of downloaded files.",
            str(reason),
        ) from err
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header: start again
        total = response.headers.get("Content-Length")
        total = int(total) + offset if total is not None else None
        with (
            open(part, "ab" if offset else "wb") as f,
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=final.name, disable=not progress) as bar,
        ):
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, OSError) as err:
                raise InputError(
                    f"Download of {url} was interrupted ({err}): run the same command again to resume."
                ) from err
    if total is not None and part.stat().st_size < total:
        raise InputError(
            f"Download of {url} ended early ({part.stat().st_size} of {total} bytes): run the same command again to resume."
        )


def _copy_local(source: str, part: Path, final: Path) -> None:
    if not Path(source).is_file():
        raise InputError(f"{source} does not exist: put the file at {final}, or give another mirror.")
    shutil.copyfile(source, part)


def extract(archive: Path, dest: Path, name: str) -> Path:
    """Unpack `archive` (tar, tgz, zip) into `<dest>/.extracting-<name>`, which a restart removes
    first, and return that staging folder; the caller moves what it needs into place and removes it."""
    from torchvision.datasets.utils import extract_archive

    staging = dest / f".extracting-{name}"
    if staging.exists():
        shutil.rmtree(staging)  # an earlier extraction was interrupted: start it again
    staging.mkdir(parents=True)
    try:
        extract_archive(archive, staging)
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(
            f"{archive} cannot be extracted ({err}): delete it and run again to download it anew."
        ) from err
    return staging
