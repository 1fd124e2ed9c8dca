"""`fssam2 prepare coco`: COCO 2014 from its official URLs, checked, laid out for COCO-20i.

    <root>/downloads/{train2014,val2014,annotations_trainval2014}.zip   (kept; may be deleted after)
    <root>/COCO2014/{train2014,val2014}/<image>.jpg
    <root>/COCO2014/annotations/instances_{train2014,val2014}.json
    <root>/COCO2014/annotations/{train2014,val2014}/<image>.png        (label maps, values 0..80)
    <root>/COCO2014/.fssam2-prepared.json                               (written once verified)

Each archive is downloaded (resumably) unless its products are already in place, checked against
its pinned MD5, and extracted through a staging folder that a restart removes, so an interrupted
run is simply run again. When COCO2014/ already holds the images and instances_*.json (a lab's
existing copy), nothing is downloaded: the label maps are rendered and everything is verified
(every image of the annotation files on disk and nothing else, one label map per image, values
0..80) before the marker is written; a second run reads the marker and does nothing.

`render_coco_labels` writes `<root>/COCO2014/annotations/<split>/<image>.png` (category ids mapped
to 1..80 in ascending id order, later annotations painted over earlier ones), skipping files that
exist, writing each through a temporary file so an interrupted run resumes cleanly
(`--labels-only` runs just that, on instances_*.json already in place).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from fssam2.benchmarks import write_png
from fssam2.downloads import Archive, extract, fetch_archive
from fssam2.errors import InputError
from fssam2.prepare.marker import MARKER, check_free_space, read_marker, write_marker

if TYPE_CHECKING:
    from pycocotools.coco import COCO

HELP = "COCO 2014 (COCO-20i): download, check, extract, render the label maps, verify"
SPLITS = ("train2014", "val2014")

# The official files. The MD5s are the ones many public dataset loaders pin for these URLs; the
# annotations' one also equals the ETag S3 serves for that file (a single-part upload).
TRAIN2014 = Archive(
    "train2014.zip", "http://images.cocodataset.org/zips/train2014.zip", "md5:0da8c0bd3d6becc4dcb32757491aca88", 13511
)
VAL2014 = Archive(
    "val2014.zip", "http://images.cocodataset.org/zips/val2014.zip", "md5:a3d79f5ed8d289b7a7554ce06a5782b3", 6645
)
ANNOTATIONS = Archive(
    "annotations_trainval2014.zip",
    "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
    "md5:0a379cfc70b0e71301e0f377548639bd",
    253,  # 252,872,794 bytes
)
PUBLISHED_IMAGES = {"train2014": 82783, "val2014": 40504}  # images listed by the official instances_*.json
NUM_CLASSES = 80
# Disk needed beyond the download, per MB of archive: the images are already compressed; the
# annotations zip also holds captions and keypoints (kept only while extracting).
EXTRACTED_RATIO = {"annotations": 4.0, "train2014": 1.0, "val2014": 1.0}
LABEL_MAP_RATIO = 0.05  # label maps (mostly-zero PNGs), per MB of the split's images archive


def archives() -> dict[str, Archive]:
    """The parts of COCO 2014 by name, read at call time (tests point them at a local server)."""
    return {"annotations": ANNOTATIONS, "val2014": VAL2014, "train2014": TRAIN2014}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="which splits (default: both)"
    )
    parser.add_argument(
        "--labels-only",
        action="store_true",
        help="only render the label maps from COCO2014/annotations/instances_*.json already there "
        "(no download, no check)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(opts: argparse.Namespace) -> None:
    root = Path(opts.root).expanduser()
    base = root / "COCO2014"
    splits = [s for s in SPLITS if s in opts.splits]
    progress = not opts.quiet
    if opts.labels_only:
        written = render_coco_labels(root, splits, progress)
        print(f"wrote {written} label maps under {base / 'annotations'}")
        return
    marker = read_marker(base)
    if marker is not None and set(splits) <= set(marker.get("splits", [])):
        print(f"{base} is already prepared ({base / MARKER}, {marker.get('date', '?')}): nothing to do")
        return

    missing = [key for key in ("annotations", *splits) if not _in_place(base, key, splits)]
    downloads = root / "downloads"
    local_dirs = [Path(d).expanduser() for d in opts.archives]
    if not missing:
        print(
            f"{base} already holds {', '.join(f'{s}/' for s in splits)} and "
            f"{', '.join(f'instances_{s}.json' for s in splits)} (an existing copy): downloading nothing; "
            "rendering the label maps and verifying"
        )
    else:
        check_free_space(
            root, _bytes_needed(missing, splits, downloads, local_dirs), f"COCO 2014 ({', '.join(missing)})"
        )
    used = {}
    for key in missing:
        archive = archives()[key]
        path = fetch_archive(archive, downloads, mirror=opts.mirror, local_dirs=local_dirs, progress=progress)
        print(f"extracting {path} into {base}")
        staging = extract(path, base, key)
        _place(staging, base, key, path)
        shutil.rmtree(staging)
        used[archive.filename] = archive.digest

    image_ids = {}
    for split in splits:
        written, image_ids[split] = _render_split(base, split, progress)
        print(f"{split}: wrote {written} label maps under {base / 'annotations' / split}")
    counts = {split: verify_coco(base, split, image_ids[split], progress) for split in splits}
    path = write_marker(
        base,
        {
            "dataset": "COCO2014",
            "splits": splits,
            "images": counts,
            "label_maps": counts,
            "archives": used,  # extracted by this run; parts found in place are not listed
            "source": "downloaded" if missing else "existing copy",
        },
    )
    summary = ", ".join(f"{s} {counts[s]:,} images" for s in splits)
    published = ", ".join(f"{s} {PUBLISHED_IMAGES[s]:,}" for s in splits)
    note = "" if all(counts[s] == PUBLISHED_IMAGES[s] for s in splits) else f" (the official release: {published})"
    print(f"COCO 2014 ready in {base}: {summary}{note}, one label map each (values 0..{NUM_CLASSES}); marker {path}")
    if used:
        print(f"the archives in {downloads} are no longer needed and may be deleted")


def _in_place(base: Path, key: str, splits: Sequence[str]) -> bool:
    if key == "annotations":
        return all((base / "annotations" / f"instances_{s}.json").is_file() for s in splits)
    return (base / key).is_dir()


def _bytes_needed(missing: Sequence[str], splits: Sequence[str], downloads: Path, local_dirs: Sequence[Path]) -> float:
    total = 0.0
    for key in missing:
        archive = archives()[key]
        size = archive.size_mb * 1e6
        if not any((d / archive.filename).is_file() for d in (downloads, *local_dirs)):
            part = downloads / f"{archive.filename}.part"
            total += size - (part.stat().st_size if part.is_file() else 0)
        total += size * EXTRACTED_RATIO[key]
    return total + sum(archives()[s].size_mb * 1e6 * LABEL_MAP_RATIO for s in splits)


def _place(staging: Path, base: Path, key: str, archive: Path) -> None:
    """Move what the archive brings from its staging folder into place (a rename each)."""
    if key == "annotations":
        sources = [staging / "annotations" / f"instances_{s}.json" for s in SPLITS]
        absent = [p.relative_to(staging).as_posix() for p in sources if not p.is_file()]
        if absent:
            shutil.rmtree(staging)
            raise InputError(f"{archive} has no {', '.join(absent)}: is it COCO's annotations_trainval2014.zip?")
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        for source in sources:
            os.replace(source, base / "annotations" / source.name)
        return
    if not (staging / key).is_dir():
        shutil.rmtree(staging)
        raise InputError(f"{archive} has no folder {key}/: is it COCO's {key}.zip?")
    os.replace(staging / key, base / key)


def verify_coco(base: Path, split: str, image_ids: Sequence[str], progress: bool = True) -> int:
    """Check a split against its annotation file: every listed image on disk and no other, one
    label map per image, label values within 0..80; returns the number of images."""
    listed = set(image_ids)
    annotation = base / "annotations" / f"instances_{split}.json"
    folders = {"images": (base / split, ".jpg"), "label maps": (base / "annotations" / split, ".png")}
    for what, (folder, ext) in folders.items():
        found = {p.stem for p in folder.glob(f"*{ext}") if not p.name.startswith(".")}
        if listed - found:
            raise InputError(
                f"{len(listed - found)} of the {len(listed)} images listed in {annotation} have no {ext} in {folder}, "
                f"e.g. {sorted(listed - found)[:3]}: the {what} are incomplete; delete {folder} and run again."
            )
        if found - listed:
            raise InputError(
                f"{folder} holds {len(found - listed)} {what} that {annotation} does not list, e.g. "
                f"{sorted(found - listed)[:3]}: is it the 2014 release? Remove them (or the folder) and run again."
            )
    for image_id in tqdm(sorted(listed), desc=f"checking {split} label maps", disable=not progress):
        path = base / "annotations" / split / f"{image_id}.png"
        with Image.open(path) as im:
            mode, extrema = im.mode, im.getextrema()
        high = extrema[1] if mode in ("L", "P") and not isinstance(extrema[1], tuple) else None
        if high is None or high > NUM_CLASSES:
            raise InputError(
                f"Label map {path} is not a single-channel map of values 0..{NUM_CLASSES} (mode {mode}, "
                f"largest value {high}): delete it and run again to render it anew."
            )
    return len(listed)


def _load_coco(path: Path) -> COCO:
    from pycocotools.coco import COCO

    if not path.is_file():
        raise InputError(
            f"COCO annotation file {path} does not exist: download annotations_trainval2014.zip and unpack it there."
        )
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not JSON ({err}): pass COCO's instances_<split>2014.json.") from err
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise InputError(
            f"{path} is not a COCO instance annotation file (no images / annotations / categories): pass instances_<split>2014.json."
        )
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    return coco


def _render_split(base: Path, split: str, progress: bool = True) -> tuple[int, list[str]]:
    """Render one split's label maps; (how many were written, the image ids of the annotation file)."""
    coco = _load_coco(base / "annotations" / f"instances_{split}.json")
    value = {cat: i + 1 for i, cat in enumerate(sorted(coco.getCatIds()))}
    out_dir = base / "annotations" / split
    out_dir.mkdir(parents=True, exist_ok=True)
    written, ids = 0, []
    for image_id in tqdm(sorted(coco.getImgIds()), desc=f"COCO {split} label maps", disable=not progress):
        info = coco.loadImgs(image_id)[0]
        ids.append(Path(info["file_name"]).stem)
        target = out_dir / f"{ids[-1]}.png"
        if target.exists():
            continue
        label = np.zeros((info["height"], info["width"]), np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)):
            label[coco.annToMask(ann) > 0] = value[ann["category_id"]]
        write_png(label, target, "--root")
        written += 1
    return written, ids


def render_coco_labels(root: str | Path, splits: Sequence[str] = SPLITS, progress: bool = True) -> int:
    """Render COCO-20i label maps; returns how many were written (existing ones are kept)."""
    base = Path(root).expanduser() / "COCO2014"
    return sum(_render_split(base, split, progress)[0] for split in splits)
