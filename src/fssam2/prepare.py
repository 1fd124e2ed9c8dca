"""Dataset preparation: COCO label maps from instance annotations, and split lists.

`render_coco_labels` writes `<root>/COCO2014/annotations/<split>/<image>.png` (category ids mapped
to 1..80 in ascending id order, later annotations painted over earlier ones), skipping files that
exist, writing each through a temporary file so an interrupted run resumes cleanly.

`derive_split_lists` applies the published construction rule (PFENet / BAM): an (image, class)
pair is listed when the class covers at least `min_pixels` (2*32*32) pixels of the label map; a
training list drops every image that shows any pixel of a held-out class.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fssam2.benchmarks import PASCAL_DOMAIN_SHIFT, read_label, write_png
from fssam2.episodes import coco_classes
from fssam2.errors import InputError

MIN_PIXELS = 2 * 32 * 32


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


def derive_split_lists(
    ids: dict[str, list[str]],
    label_path: Callable[[str], Path],
    out_dir: str | Path,
    benchmark: str,
    held_out: Callable[[int], list[int]],
    num_classes: int,
    folds: Iterable[int] = (0, 1, 2, 3),
    val_only_folds: Iterable[int] = (),
    min_pixels: int = MIN_PIXELS,
    progress: bool = True,
) -> None:
    """Write `<out_dir>/<benchmark>/fss_list/{train,val}/` lists for each fold.

    ids: {"train": [...], "val": [...]} image ids; label_path: id -> its label map;
    held_out: fold -> 1-based held-out classes; val_only_folds get no training list
    (PASCAL's COCO->PASCAL folds 10-13).
    """
    counts: dict[str, dict[str, dict[int, int]]] = {}
    for split, split_ids in ids.items():
        counts[split] = {}
        for image_id in tqdm(split_ids, desc=f"{benchmark} {split} label maps", disable=not progress):
            values, freq = np.unique(read_label(label_path(image_id)), return_counts=True)
            counts[split][image_id] = {
                int(v): int(n) for v, n in zip(values, freq, strict=True) if 0 < v <= num_classes
            }
    lists: dict[tuple[Path, int], tuple[list[str], dict[int, list[str]]]] = {}  # written once all are non-empty
    for fold in folds:
        test_classes = set(held_out(fold))
        for split, per_image in counts.items():
            if split == "train" and fold in val_only_folds:
                continue
            classes = (
                sorted(test_classes)
                if split == "val"
                else [c for c in range(1, num_classes + 1) if c not in test_classes]
            )
            images, by_class = [], {c: [] for c in classes}
            for image_id, found in per_image.items():
                if split == "train" and test_classes & set(found):
                    continue
                listed = [c for c in classes if found.get(c, 0) >= min_pixels]
                if listed:
                    images.append(image_id)
                    for c in listed:
                        by_class[c].append(image_id)
            folder = Path(out_dir).expanduser() / benchmark / "fss_list" / split
            if not images:
                raise InputError(
                    f"No {split} image of fold {fold} shows one of its classes {classes} with >= {min_pixels} "
                    f"pixels among its {len(per_image)} label maps, so "
                    f"{folder / f'data_list_{fold}.txt'} would be empty; nothing was written: check the label maps' values."
                )
            lists[folder, fold] = (images, by_class)
    for (folder, fold), (images, by_class) in lists.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"data_list_{fold}.txt").write_text("".join(f"{i}\n" for i in images))
        (folder / f"sub_class_file_list_{fold}.txt").write_text(repr(by_class))


def pascal_held_out(fold: int) -> list[int]:
    if fold in PASCAL_DOMAIN_SHIFT:
        return sorted(c + 1 for c in PASCAL_DOMAIN_SHIFT[fold])
    return list(range(5 * fold + 1, 5 * fold + 6))


def coco_held_out(fold: int) -> list[int]:
    return coco_classes("test", fold)
