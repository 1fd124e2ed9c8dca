"""`fssam2 prepare coco`: COCO-20i label maps from COCO's instance annotations.

`render_coco_labels` writes `<root>/COCO2014/annotations/<split>/<image>.png` (category ids mapped
to 1..80 in ascending id order, later annotations painted over earlier ones), skipping files that
exist, writing each through a temporary file so an interrupted run resumes cleanly.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fssam2.benchmarks import write_png
from fssam2.errors import InputError

HELP = "render COCO2014/annotations/{train2014,val2014}/*.png from instances_*.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--splits", nargs="+", default=["train2014", "val2014"])


def run(opts: argparse.Namespace) -> None:
    written = render_coco_labels(opts.root, opts.splits)
    print(f"wrote {written} label maps under {Path(opts.root).expanduser() / 'COCO2014' / 'annotations'}")


def _load_coco(path: Path):  # noqa: ANN202 - pycocotools.coco.COCO
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


def render_coco_labels(
    root: str | Path, splits: Sequence[str] = ("train2014", "val2014"), progress: bool = True
) -> int:
    """Render COCO-20i label maps; returns how many were written (existing ones are kept)."""
    base = Path(root).expanduser() / "COCO2014"
    written = 0
    for split in splits:
        coco = _load_coco(base / "annotations" / f"instances_{split}.json")
        value = {cat: i + 1 for i, cat in enumerate(sorted(coco.getCatIds()))}
        out_dir = base / "annotations" / split
        out_dir.mkdir(parents=True, exist_ok=True)
        for image_id in tqdm(sorted(coco.getImgIds()), desc=f"COCO {split} label maps", disable=not progress):
            info = coco.loadImgs(image_id)[0]
            target = out_dir / f"{Path(info['file_name']).stem}.png"
            if target.exists():
                continue
            label = np.zeros((info["height"], info["width"]), np.uint8)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)):
                label[coco.annToMask(ann) > 0] = value[ann["category_id"]]
            write_png(label, target)
            written += 1
    return written
