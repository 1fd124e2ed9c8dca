"""`fssam2 prepare fss1000`: FSS-1000 from fewshot_data.zip, checked, laid out for FSS1000DataModule.

    <root>/downloads/fewshot_data.zip          (downloaded by hand, or put in an --archives folder)
    <root>/FSS-1000/<category>/<n>.jpg, <n>.png (n = 1..10)
    <root>/FSS-1000/.fssam2-prepared.json       (written once verified)

The only source is a Google Drive file (linked from HSNet's README) that needs a browser, so when
the archive is not found the command prints the manual step and exits with status 2; `--mirror`
fetches it from a host of your own. The archive is checked against a pinned SHA-256 before it is
extracted (through a staging folder a restart removes). Its nesting is not relied on: the folder
holding the most category folders (each with 1.jpg and 1.png) is moved to `<root>/FSS-1000`.
Verified: every category of the split lists (`<splits-dir>/fss/{trn,val,test}.txt`, when present;
else every category folder) has its 10 image/mask pairs, and the pinned archive gives 1000
categories. A folder FSS-1000/ that is already there (an existing copy) is verified as it is.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from fssam2.benchmarks import FSS_NUMBERS, FSS_SPLIT_FILES, read_data_list
from fssam2.downloads import Archive, extract, fetch_archive
from fssam2.errors import InputError
from fssam2.prepare.marker import MARKER, check_free_space, read_marker, write_marker

HELP = "FSS-1000: check and extract fewshot_data.zip (downloaded by hand from Google Drive), verify"
DRIVE_URL = "https://drive.google.com/file/d/16TgqOeI_0P41Eh3jWQlxlRXG9KIqtMgI/view"
# The SHA-256 below was found in a public repository's notes (a third party's record of its copy
# of this file), not measured by fssam2's authors; `--sha256 HEX` overrides it explicitly.
PINNED_SHA256 = "4e49282322891eae4511153f1b63f6274042702ecd2b6da4bff949e106ac20e0"
ARCHIVE = Archive("fewshot_data.zip", DRIVE_URL, f"sha256:{PINNED_SHA256}", 1000)  # size: an upper guess
CATEGORIES = 1000  # in the published archive: 520 / 240 / 240 train / val / test


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sha256",
        metavar="HEX",
        help="accept fewshot_data.zip with this SHA-256 instead of the pinned one (a third party's; check your copy first)",
    )
    parser.add_argument(
        "--splits-dir",
        help="verify the categories of <splits-dir>/fss/{trn,val,test}.txt (default <root>/splits, when present)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(opts: argparse.Namespace) -> None:
    root = Path(opts.root).expanduser()
    base = root / "FSS-1000"
    marker = read_marker(base)
    if marker is not None:
        print(f"{base} is already prepared ({base / MARKER}, {marker.get('date', '?')}): nothing to do")
        return
    splits_dir = Path(opts.splits_dir).expanduser() if opts.splits_dir else root / "splits"
    archive_info = None
    if base.is_dir():
        print(f"{base} already exists (an existing copy): verifying it, downloading and extracting nothing")
    else:
        archive = ARCHIVE._replace(digest=f"sha256:{opts.sha256.lower()}") if opts.sha256 else ARCHIVE
        path = locate(archive, root, [Path(d).expanduser() for d in opts.archives], opts.mirror, not opts.quiet)
        check_free_space(root, 1.2 * path.stat().st_size, "extracting FSS-1000")
        print(f"extracting {path} into {base}")
        staging = extract(path, root, "FSS-1000")
        found = category_parent(staging)
        if found is None:
            shutil.rmtree(staging)
            raise InputError(
                f"{path} holds no folder of category folders (<category>/1.jpg and 1.png): is it FSS-1000's "
                f"fewshot_data.zip from {DRIVE_URL}?"
            )
        for entry in found.iterdir():  # stray files and macOS metadata beside the categories
            if entry.name.startswith(".") or entry.name == "__MACOSX" or not entry.is_dir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        os.replace(found, base)  # the staging folder itself when the categories are the zip's top level
        if staging.exists():
            shutil.rmtree(staging)
        archive_info = {
            "file": archive.filename,
            "digest": archive.digest,
            "pinned_by": "--sha256" if opts.sha256 else "fssam2 (a third party's digest)",
        }
    pinned = archive_info is not None and archive_info["digest"] == f"sha256:{PINNED_SHA256}"
    counts = verify_fss(base, splits_dir, expect_all=pinned)
    path = write_marker(
        base,
        {
            "dataset": "FSS-1000",
            **counts,
            "archive": archive_info,
            "source": "extracted" if archive_info else "existing copy",
        },
    )
    print(
        f"FSS-1000 ready in {base}: {counts['categories']} categories, {counts['checked']} checked against "
        f"{counts['checked_against']} (10 image/mask pairs each); marker {path}"
    )


def manual_step(root: Path) -> str:
    return (
        f"FSS-1000 has no direct download: open {DRIVE_URL} in a browser (Google Drive, linked from HSNet's README), "
        f"download fewshot_data.zip and put it in {root / 'downloads'} (or pass --archives DIR, the folder holding "
        f"it), then run `fssam2 prepare fss1000 --root {root}` again (or give --mirror URL, a host of your own "
        "serving fewshot_data.zip)."
    )


def refusal(path: Path | str, actual: str, archive: Archive, downloaded: bool) -> str:
    what = f"The download {path} was not kept: it has" if downloaded else f"{path} has"
    if archive.digest == ARCHIVE.digest:
        return (
            f"{what} {actual}, not the pinned {archive.digest}. That pinned digest is a third party's (found in a "
            "public repository's notes, not measured by fssam2): if your copy comes from "
            f"{DRIVE_URL} and you have checked it (it unzips to 1000 category folders of 10 images and masks), run "
            f"again with --sha256 {actual.split(':', 1)[1]}; otherwise {'fix the mirror' if downloaded else 'delete it'} "
            "and download it again."
        )
    return f"{what} {actual}, not the {archive.digest} given with --sha256: {'fix the mirror' if downloaded else 'delete it'} or give its digest."


def locate(archive: Archive, root: Path, local_dirs: list[Path], mirror: str | None, progress: bool) -> Path:
    """The checked archive: in <root>/downloads, in a folder of archives, or downloaded from the mirror
    (its official URL needs a browser: without a mirror, the manual step)."""
    downloads = root / "downloads"
    if not any(p.is_file() for p in (downloads / archive.filename, *(d / archive.filename for d in local_dirs))):
        if not mirror:
            raise InputError(manual_step(root))
        check_free_space(root, archive.size_mb * 1e6 * 2.2, "FSS-1000 (fewshot_data.zip and its extraction)")
    return fetch_archive(
        archive,
        downloads,
        mirror=mirror,
        local_dirs=local_dirs,
        progress=progress,
        refusal=lambda where, actual, downloaded: refusal(where, actual, archive, downloaded),
    )


def _is_category(folder: Path) -> bool:
    return (folder / "1.jpg").is_file() and (folder / "1.png").is_file()


def category_parent(staging: Path) -> Path | None:
    """The folder holding the most category folders (the deepest of equals), None if there is none."""
    best, best_key = None, (0, 0)
    for folder, dirs, _ in os.walk(staging):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
        count = sum(_is_category(Path(folder) / d) for d in dirs)
        key = (count, len(Path(folder).relative_to(staging).parts))
        if count and key > best_key:
            best, best_key = Path(folder), key
    return best


def verify_fss(base: Path, splits_dir: Path, expect_all: bool) -> dict:
    """Check the categories the split lists name (else every category folder) for their 10 pairs;
    with `expect_all` (the pinned archive), also that there are the published 1000 categories."""
    folders = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    lists = [splits_dir / "fss" / f for f in FSS_SPLIT_FILES.values() if (splits_dir / "fss" / f).is_file()]
    if lists:
        wanted = sorted({c for path in lists for c in read_data_list(path)})
        against = f"the split lists in {splits_dir / 'fss'}"
        absent = [c for c in wanted if not (base / c).is_dir()]
        if absent:
            raise InputError(
                f"{len(absent)} categories listed in {splits_dir / 'fss'} have no folder in {base}, e.g. {absent[:3]}: "
                f"the extraction is incomplete or the lists belong to another dataset; delete {base} and run again."
            )
    else:
        wanted, against = folders, "every category folder (no split lists found)"
    incomplete = {}
    for category in wanted:
        absent = [
            f"{n}{ext}"
            for n in FSS_NUMBERS
            for ext in (".jpg", ".png")
            if not (base / category / f"{n}{ext}").is_file()
        ]
        if absent:
            incomplete[category] = absent
    if incomplete:
        first = next(iter(incomplete))
        raise InputError(
            f"{len(incomplete)} category folders in {base} lack some of 1..10.jpg / .png, e.g. {first} lacks "
            f"{incomplete[first][:4]}: delete {base} and run again to extract it anew."
        )
    if expect_all and len(folders) != CATEGORIES:
        raise InputError(
            f"{base} holds {len(folders)} category folders, not the {CATEGORIES} of FSS-1000: the archive is another "
            f"file than the published one; delete {base} and check fewshot_data.zip."
        )
    return {"categories": len(folders), "checked": len(wanted), "checked_against": against}
