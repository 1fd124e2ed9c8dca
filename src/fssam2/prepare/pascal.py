"""`fssam2 prepare pascal`: PASCAL-5i from the published VOC2012 trainval and SBD archives.

Downloads (through `fssam2.downloads`: resumed, checked against the MD5s torchvision pins, or
taken from `--archives` folders or a `--mirror`) into `<root>/downloads/`, then lays out

    <root>/VOC2012/JPEGImages/<id>.jpg                 VOC2012's images (its other folders too)
    <root>/VOC2012/SegmentationClassAug/<id>.png       label maps 0..20, 255 = VOC's boundary
    <root>/VOC2012/ImageSets/Segmentation/{train,val}.txt      VOC2012's own lists
    <root>/VOC2012/ImageSets/SegmentationAug/{train_aug,val}.txt  the lists PASCAL-5i derives from

SegmentationClassAug is the union of SBD's class maps (`benchmark_RELEASE/dataset/cls/<id>.mat`,
read as torchvision's SBDataset reads them, no boundaries) and VOC2012's own
`SegmentationClass/<id>.png` (palette indices), VOC's taking precedence where both exist: 12,031
label maps with the real archives (SBD's 11,355 and VOC's 2,913). train_aug is (SBD train + SBD
val + VOC train) minus VOC val, 10,582 ids; val is VOC val, 1,449 ids.

Label maps are built into `VOC2012/.SegmentationClassAug.partial/` (each file written whole, so an
interrupted run resumes), checked file by file, then renamed into place; only then is the marker
`VOC2012/.fssam2-prepared.json` written, and a run that finds it valid does nothing. An existing
SegmentationClassAug without the marker (e.g. one a user downloaded) is checked, never replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets.sbd import SBDataset
from torchvision.datasets.voc import DATASET_YEAR_DICT
from tqdm import tqdm

from fssam2.benchmarks import read_label, write_png
from fssam2.downloads import Archive, extract, fetch_archive
from fssam2.errors import InputError
from fssam2.files import PARTIAL_GLOB
from fssam2.hub import existing_ancestor
from fssam2.prepare.marker import MARKER
from fssam2.prepare.marker import write_marker as write_marker_file

HELP = "PASCAL-5i: download VOC2012 trainval + SBD, build and check VOC2012/SegmentationClassAug"

# The published archives, with the URLs and MD5s torchvision pins (sizes: about, in MB).
_VOC2012 = DATASET_YEAR_DICT["2012"]
VOC_ARCHIVE = Archive(_VOC2012["filename"], _VOC2012["url"], f"md5:{_VOC2012['md5']}", 2000)
SBD_ARCHIVE = Archive(SBDataset.filename, SBDataset.url, f"md5:{SBDataset.md5}", 1420)
VOC_BASE = _VOC2012["base_dir"]  # VOCdevkit/VOC2012: the tar's folder
SBD_BASE = "benchmark_RELEASE/dataset"  # cls/, img/, inst/, train.txt, val.txt
# Extracted size / archive size (VOC's is a plain tar; SBD's .tgz holds JPEGs and compressed .mat files).
EXPANSION = {VOC_ARCHIVE.filename: 1.0, SBD_ARCHIVE.filename: 1.2}
LABEL_MAPS_MB = 100  # the built SegmentationClassAug, about
PUBLISHED_COUNTS = {"sbd": 11355, "voc": 2913, "union": 12031, "train_aug": 10582, "val": 1449}

EXTRACTED = ".fssam2-extracted.json"  # archives already extracted into place, across interrupted runs
PARTIAL = ".SegmentationClassAug.partial"
SBD_WORK = ".pascal-sbd"  # <root>/.pascal-sbd: SBD's dataset folder while building, removed at the end
ALLOWED = np.zeros(256, bool)
ALLOWED[:21] = ALLOWED[255] = True  # background, 20 classes, VOC's boundary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-archives",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the downloaded archives in <root>/downloads after success (default: keep them, the proof of "
        "what was built; --no-keep-archives deletes them then; archives in --archives folders are never deleted)",
    )


def run(opts: argparse.Namespace) -> None:
    prepare_pascal(
        Path(opts.root).expanduser(),
        mirror=opts.mirror,
        local_dirs=[Path(d) for d in opts.archives],
        keep_archives=opts.keep_archives,
    )


def prepare_pascal(
    root: Path,
    *,
    mirror: str | None = None,
    local_dirs: Iterable[Path] = (),
    keep_archives: bool = True,
    progress: bool = True,
) -> None:
    voc = root / "VOC2012"
    local_dirs = list(local_dirs)
    marker = read_marker(voc)
    if marker is not None:
        _cleanup(root, voc)
        print(
            f"PASCAL-5i already prepared in {voc} ({marker['label_maps']:,} label maps, {marker['date']}); "
            f"nothing to do (delete {voc / MARKER} to check it again)."
        )
        return
    labels = voc / "SegmentationClassAug"
    existing = labels.is_dir()
    if existing:
        print(
            f"{labels} exists without fssam2's marker: checking it instead of building one (nothing in it is replaced)."
        )
    need_voc = bool(_voc_missing(voc, class_maps=not existing))
    need_sbd = not existing and not (root / SBD_WORK).is_dir()
    check_space(root, need_voc, need_sbd, not existing, local_dirs)

    if need_voc:
        _unpack_voc(
            fetch_archive(VOC_ARCHIVE, root / "downloads", mirror=mirror, local_dirs=local_dirs, progress=progress),
            root,
        )
    missing = _voc_missing(voc, class_maps=not existing)
    if missing:
        raise InputError(
            f"{voc} lacks {', '.join(missing)}, which {VOC_ARCHIVE.filename} provides: move the incomplete "
            f"folders away (nothing there is replaced) and run again to extract them from the archive."
        )
    voc_train = _read_ids(voc / "ImageSets" / "Segmentation" / "train.txt")
    voc_val = _read_ids(voc / "ImageSets" / "Segmentation" / "val.txt")

    if existing:
        found = label_ids(labels)
        lists = {"train_aug": sorted(found - set(voc_val)), "val": sorted(voc_val)}
        print(
            f"found {len(found):,} label maps (the published SegmentationClassAug has {PUBLISHED_COUNTS['union']:,}); "
            "checking each against its image"
        )
        verify(
            voc, labels, lists, None, progress=progress,
            fix=f"it is not a consistent SegmentationClassAug; fix it, or move {labels} away and run again to build one",
        )  # fmt: skip
        for name, ids in lists.items():
            write_list(voc / "ImageSets" / "SegmentationAug" / f"{name}.txt", ids)
        built = "an existing SegmentationClassAug, checked (not built here)"
    else:
        if need_sbd:
            _unpack_sbd(
                fetch_archive(SBD_ARCHIVE, root / "downloads", mirror=mirror, local_dirs=local_dirs, progress=progress),
                root,
            )
        sbd = root / SBD_WORK
        sbd_ids = _read_ids(sbd / "train.txt") + _read_ids(sbd / "val.txt")
        voc_ids = set(voc_train) | set(voc_val)
        union = voc_ids | set(sbd_ids)
        lists = {"train_aug": sorted(union - set(voc_val)), "val": sorted(voc_val)}
        print(
            f"{len(union):,} label maps to build: SBD's {len(set(sbd_ids)):,} and VOC2012's {len(voc_ids):,}, "
            f"{len(voc_ids & set(sbd_ids)):,} in both (VOC's own map kept there); the real archives give "
            f"{PUBLISHED_COUNTS['sbd']:,} and {PUBLISHED_COUNTS['voc']:,}, {PUBLISHED_COUNTS['union']:,} in all"
        )
        partial = voc / PARTIAL
        build_labels(voc, sbd, partial, sorted(union), voc_ids, progress=progress)
        verify(
            voc, partial, lists, union, progress=progress,
            fix=f"the archives' contents are not as expected; delete {partial} and run again",
        )  # fmt: skip
        for name, ids in lists.items():  # before the rename: a rerun finding SegmentationClassAug derives the same
            write_list(voc / "ImageSets" / "SegmentationAug" / f"{name}.txt", ids)
        os.replace(partial, labels)
        built = "SBD's cls/*.mat class maps and VOC2012's SegmentationClass/*.png (VOC's where both exist)"
    record = write_marker(voc, labels, lists, built)
    _cleanup(root, voc)
    if not keep_archives:
        for archive in (VOC_ARCHIVE, SBD_ARCHIVE):
            (root / "downloads" / archive.filename).unlink(missing_ok=True)  # never a file in --archives folders
    aug = voc / "ImageSets" / "SegmentationAug"
    print(
        f"PASCAL-5i ready in {voc}: {record['label_maps']:,} label maps in SegmentationClassAug, "
        f"{len(lists['train_aug']):,} train_aug and {len(lists['val']):,} val ids in {aug}.\n"
        f"next: fssam2 prepare splits --benchmark pascal --root {root} "
        f"--train-ids {aug / 'train_aug.txt'} --val-ids {aug / 'val.txt'}"
    )


# the marker
def read_marker(voc: Path) -> dict | None:
    """The marker's record if it is there and still matches the folder; an invalid one is removed
    (it is fssam2's own file) and None returned."""
    path = voc / MARKER
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        counts = {
            "label maps": (record["label_maps"], len(label_ids(voc / "SegmentationClassAug"))),
            **{
                f"{name}.txt ids": (n, _count_lines(voc / "ImageSets" / "SegmentationAug" / f"{name}.txt"))
                for name, n in record["lists"].items()
            },
        }
        wrong = [
            f"{what}: {found} on disk, {expected} recorded"
            for what, (expected, found) in counts.items()
            if expected != found
        ]
        if not (voc / "JPEGImages").is_dir():
            wrong.append("JPEGImages is missing")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        wrong = [f"unreadable ({err})"]
    if not wrong:
        return record
    print(f"{path} no longer matches the folder ({'; '.join(wrong)}): removing it and checking again.")
    path.unlink()
    return None


def write_marker(voc: Path, labels: Path, lists: dict[str, list[str]], built: str) -> dict:
    """Write the marker, the proof that `labels` is complete and checked; returns its record."""
    extracted = voc / EXTRACTED
    archives = json.loads(extracted.read_text()) if extracted.is_file() else {}
    record = {
        "benchmark": "pascal-5i",
        "label_maps_from": built,
        "label_maps": len(label_ids(labels)),
        "lists": {name: len(ids) for name, ids in lists.items()},
        "checked": "every label map: single-channel, values in 0..20 and 255, its image there and of its size",
        "archives": archives,  # filename -> {"url", "digest"} of the archives extracted into place
    }
    path = write_marker_file(voc, record)  # adds fssam2's version and the date
    extracted.unlink(missing_ok=True)
    return json.loads(path.read_text())


# disk space
def check_space(root: Path, need_voc: bool, need_sbd: bool, build: bool, local_dirs: list[Path]) -> None:
    """Print what the step needs and refuse early when the disk holding `root` has less free."""
    parts, total = [], 0.0
    for archive, needed in ((VOC_ARCHIVE, need_voc), (SBD_ARCHIVE, need_sbd)):
        if not needed:
            continue
        have = [root / "downloads" / archive.filename, *(Path(d).expanduser() / archive.filename for d in local_dirs)]
        if not any(p.is_file() for p in have):
            part = root / "downloads" / f"{archive.filename}.part"
            download = archive.size_mb - (part.stat().st_size / 1e6 if part.is_file() else 0)
            parts.append(f"{archive.filename} {download / 1000:.1f} GB")
            total += download
        unpacked = archive.size_mb * EXPANSION[archive.filename]
        kept = "" if archive.filename == VOC_ARCHIVE.filename else ", removed at the end"
        parts.append(f"extracted ~{unpacked / 1000:.1f} GB{kept}")
        total += unpacked
    if build:
        parts.append(f"label maps ~{LABEL_MAPS_MB / 1000:.1f} GB")
        total += LABEL_MAPS_MB
    if not parts:
        return
    existing = existing_ancestor(root)
    free = shutil.disk_usage(existing).free / 1e6
    print(
        f"PASCAL-5i needs about {total / 1000:.1f} GB free in {root} ({', '.join(parts)}); {free / 1000:.1f} GB are free"
    )
    if free < total:
        raise InputError(
            f"Not enough space for PASCAL-5i in {root}: it needs about {total / 1000:.1f} GB ({', '.join(parts)}) but "
            f"{free / 1000:.1f} GB are free; free some space or pass another --root."
        )


# extraction
def _voc_missing(voc: Path, class_maps: bool) -> list[str]:
    needed = ["JPEGImages", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt"]
    return [n for n in needed + ["SegmentationClass"] * class_maps if not (voc / n).exists()]


def _unpack_voc(archive: Path, root: Path) -> None:
    staging = extract(archive, root, "voc2012")
    source = staging / VOC_BASE
    if not source.is_dir():
        shutil.rmtree(staging)
        raise InputError(f"{archive} has no {VOC_BASE}/: it is not VOC2012 trainval; delete it and run again.")
    merge(source, root / "VOC2012")
    _note_extracted(root / "VOC2012", VOC_ARCHIVE)
    shutil.rmtree(staging)


def _unpack_sbd(archive: Path, root: Path) -> None:
    staging = extract(archive, root, "sbd")
    source = staging / SBD_BASE
    if not all((source / n).exists() for n in ("cls", "train.txt", "val.txt")):
        shutil.rmtree(staging)
        raise InputError(
            f"{archive} has no {SBD_BASE}/cls, train.txt, val.txt: it is not SBD's benchmark.tgz; delete it and run again."
        )
    os.replace(source, root / SBD_WORK)
    (root / "VOC2012").mkdir(parents=True, exist_ok=True)
    _note_extracted(root / "VOC2012", SBD_ARCHIVE)
    shutil.rmtree(staging)


def merge(source: Path, dest: Path) -> None:
    """Move into `dest` what `source` has and `dest` lacks, folder by folder; nothing in `dest` is
    replaced. Each move is a rename, so an interrupted merge is completed by the next one."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
    elif dest.is_dir() and source.is_dir():
        for child in source.iterdir():
            merge(child, dest / child.name)


def _note_extracted(voc: Path, archive: Archive) -> None:
    path = voc / EXTRACTED
    record = json.loads(path.read_text()) if path.is_file() else {}
    record[archive.filename] = {"url": archive.url, "digest": archive.digest}
    _write_text(path, json.dumps(record, indent=2) + "\n")


def _cleanup(root: Path, voc: Path) -> None:
    """Remove the working folders of a finished preparation (also those an interruption left)."""
    for path in (root / SBD_WORK, root / ".extracting-voc2012", root / ".extracting-sbd", voc / PARTIAL):
        if path.exists():
            shutil.rmtree(path)


# label maps
def sbd_label(path: Path) -> np.ndarray:
    """SBD's class map [H, W] uint8 (0..20, no boundary), read as torchvision's SBDataset reads it."""
    from scipy.io import loadmat

    try:
        segmentation = np.asarray(loadmat(path)["GTcls"][0]["Segmentation"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise InputError(f"{path} is not an SBD class map ({err}): delete {path.parent.parent} and run again.") from err
    if segmentation.ndim != 2 or segmentation.dtype.kind not in "ui" or segmentation.size == 0:
        raise InputError(f"{path} holds a {segmentation.dtype} {segmentation.shape} array, not a class map.")
    if segmentation.max() > 255:
        raise InputError(f"{path} holds class values up to {segmentation.max()}, expected 0..20.")
    return segmentation.astype(np.uint8)


def build_labels(voc: Path, sbd: Path, out: Path, ids: list[str], voc_ids: set[str], progress: bool = True) -> None:
    """Write `<out>/<id>.png` for every id: VOC's SegmentationClass indices when VOC has the id,
    else SBD's class map. Files already there are complete (written through a temporary file) and
    kept, so an interrupted build resumes."""
    sources = {i: voc / "SegmentationClass" / f"{i}.png" if i in voc_ids else sbd / "cls" / f"{i}.mat" for i in ids}
    missing = [p for p in sources.values() if not p.is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} listed class maps are missing, e.g. {missing[0]}: the extracted archives are incomplete; "
            f"delete {missing[0].parent} and run again."
        )
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(PARTIAL_GLOB):
        stale.unlink()  # an interrupted write
    done = label_ids(out)
    for image_id in tqdm(ids, desc="SegmentationClassAug", disable=not progress):
        if image_id in done:
            continue
        source = sources[image_id]
        write_png(
            read_label(source) if source.suffix == ".png" else sbd_label(source), out / f"{image_id}.png", "--root"
        )


def label_ids(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {e.name[:-4] for e in os.scandir(folder) if e.name.endswith(".png") and not e.name.startswith(".")}


def verify(
    voc: Path,
    labels: Path,
    lists: dict[str, list[str]],
    expected: set[str] | None,
    *,
    fix: str,
    progress: bool = True,
) -> None:
    """Every listed id has its image and label map; the label maps are exactly `expected` (when
    given); each is single-channel, of values in 0..20 and 255, and of its image's size."""
    found = label_ids(labels)
    if expected is not None and found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise InputError(
            f"{labels} has {len(found)} label maps, expected {len(expected)} ({len(missing)} missing, e.g. "
            f"{missing[:3]}; {len(extra)} unexpected, e.g. {extra[:3]}): {fix}."
        )
    for name, ids in lists.items():
        absent = [i for i in ids if i not in found]
        if absent:
            raise InputError(
                f"{len(absent)} ids of {name}.txt have no label map in {labels}, e.g. {absent[:3]}: {fix}."
            )
    images = voc / "JPEGImages"
    for image_id in tqdm(sorted(found), desc=f"checking {labels.name}", disable=not progress):
        image_path, label_path = images / f"{image_id}.jpg", labels / f"{image_id}.png"
        try:
            with Image.open(image_path) as im:
                size = im.size
        except FileNotFoundError:
            raise InputError(f"{image_path} is missing for label map {label_path}: {fix}.") from None
        except OSError as err:
            raise InputError(f"{image_path} is unreadable ({err}): {fix}.") from err
        try:
            with Image.open(label_path) as im:
                mode, label = im.mode, np.asarray(im)
        except OSError as err:
            raise InputError(f"{label_path} is unreadable ({err}): {fix}.") from err
        if mode not in ("L", "P"):
            raise InputError(f"{label_path} is a {mode} image, not a single-channel map of class values: {fix}.")
        if label.shape != (size[1], size[0]):
            raise InputError(
                f"{label_path} is {label.shape[1]}x{label.shape[0]} but {image_path} is {size[0]}x{size[1]}: {fix}."
            )
        bad = np.flatnonzero(np.bincount(label.ravel(), minlength=256)[~ALLOWED])
        if bad.size:
            raise InputError(
                f"{label_path} holds values {np.flatnonzero(~ALLOWED)[bad][:5].tolist()}, outside 0..20 and 255: {fix}."
            )


# lists
def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path} is missing: delete {path.parent} and run again to extract it anew.")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def write_list(path: Path, ids: list[str]) -> None:
    """Write an id list, one a line; an existing file with other content is the user's and refused."""
    text = "".join(f"{i}\n" for i in ids)
    if path.is_file():
        if path.read_text() == text:
            return
        raise InputError(
            f"{path} exists and lists other ids than the {len(ids)} fssam2 derives: move it away and run again."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, text)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
