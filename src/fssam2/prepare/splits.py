"""`fssam2 prepare splits`: split lists.

`derive_split_lists` applies the published construction rule (PFENet / BAM): an (image, class)
pair is listed when the class covers at least `min_pixels` (2*32*32) pixels of the label map; a
training list drops every image that shows any pixel of a held-out class.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fssam2.benchmarks import PASCAL_DOMAIN_SHIFT, LabelMapReader, check_layout, read_data_list, read_label
from fssam2.episodes import coco_classes
from fssam2.errors import InputError

MIN_PIXELS = 2 * 32 * 32
HELP = "derive PASCAL-5i / COCO-20i split lists with the published rule"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", choices=["pascal", "coco"], required=True)
    parser.add_argument("--out", help="splits folder to write (<out>/<benchmark>/fss_list/...); default <root>/splits")
    parser.add_argument("--train-ids", help="PASCAL: file of training image ids, one a line")
    parser.add_argument("--val-ids", help="PASCAL: file of validation image ids, one a line")
    parser.add_argument("--min-pixels", type=int, default=MIN_PIXELS)


def run(opts: argparse.Namespace) -> None:
    out = opts.out or str(Path(opts.root) / "splits")
    if opts.benchmark == "pascal":
        if not (opts.train_ids and opts.val_ids):
            raise InputError(
                "prepare splits --benchmark pascal needs --train-ids and --val-ids (files of VOC image ids)."
            )
        ids = {"train": read_data_list(Path(opts.train_ids)), "val": read_data_list(Path(opts.val_ids))}
        reader, held_out, num_classes = LabelMapReader(opts.root, "pascal"), pascal_held_out, 20
    else:
        base = check_layout(opts.root, ["COCO2014/annotations/train2014", "COCO2014/annotations/val2014"], "COCO-20i")
        ids = {
            split: sorted(p.stem for p in (base / "COCO2014" / "annotations" / f"{split}2014").glob("*.png"))
            for split in ("train", "val")
        }
        reader, held_out, num_classes = LabelMapReader(opts.root, "coco"), coco_held_out, 80
    extra = (
        {"folds": (0, 1, 2, 3, 10, 11, 12, 13), "val_only_folds": (10, 11, 12, 13)}
        if opts.benchmark == "pascal"
        else {}
    )
    derive_split_lists(
        ids,
        lambda i: reader.paths(i)[1],
        out,
        opts.benchmark,
        held_out,
        num_classes,
        min_pixels=opts.min_pixels,
        **extra,
    )
    print(f"wrote {opts.benchmark} split lists under {Path(out).expanduser() / opts.benchmark / 'fss_list'}")


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
