"""`fssam2 prepare splits`: split lists, fetched as published or derived with the published rule.

With no `--benchmark`, the lists behind the paper's numbers are fetched from the FS-SAM2
repository at a pinned commit (`PUBLISHED_LISTS`: each file's SHA-256) into `<out>` (default
`<root>/splits`), the layout `--data.splits_dir` reads: `pascal/fss_list/...`, `coco/fss_list/...`,
`fss/{trn,val,test}.txt`. Each file is downloaded into `<name>.part`, checked, then renamed; a file
already in `<out>` with the right digest is kept, one with another digest is refused (never
overwritten). `--mirror BASE` replaces the base URL; `--archives DIR` may name a local copy of
the lists folder (its files are used when their digests match).

With `--benchmark pascal|coco`, `derive_split_lists` applies the published construction rule
(PFENet / BAM) to label maps on disk: an (image, class) pair is listed when the class covers at
least `min_pixels` (2*32*32) pixels of the label map; a training list drops every image that
shows any pixel of a held-out class.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fssam2.benchmarks import LabelMapReader, check_layout, read_data_list, read_label
from fssam2.downloads import fetch_url, file_digest
from fssam2.episodes import coco_classes, pascal_classes
from fssam2.errors import InputError
from fssam2.files import create, exists

MIN_PIXELS = 2 * 32 * 32
HELP = "fetch the published split lists (checked), or derive PASCAL-5i / COCO-20i lists with the published rule"

# The lists folder of the FS-SAM2 repository at a pinned commit. Three large COCO files of that
# folder (full image/label pair lists) are not needed and not fetched.
BASE_URL = "https://raw.githubusercontent.com/fornib/FS-SAM2/699cdf3e58bfc423457fe3d9ea8b43903d7edf4f/data/splits/lists"
# {path under the lists folder: SHA-256}, computed from a copy byte-identical to BASE_URL's files.
PUBLISHED_LISTS = {
    "coco/fss_list/train/data_list_0.txt": "60f4724a2702f63664c29f8d5146d05fa3f05ca283f60c454361a6ed2e5b03ab",
    "coco/fss_list/train/data_list_1.txt": "a55709eed29dcf0243f7ae7702b4c2e88acdda11d9df58ac6d208600a9deba8f",
    "coco/fss_list/train/data_list_2.txt": "0244f906a938e846d80c6e077de67f5da7389520823e5a76dfb8ce1f3f60d8ae",
    "coco/fss_list/train/data_list_3.txt": "8aa07d7cd466a775a977aa7008775d94f4668cf7a6069b16fa29828cc5dfe3cc",
    "coco/fss_list/train/sub_class_file_list_0.txt": "80e7251bfe9783f5f2e8cbe3e75601b58510add6a6d27700be4525f32383846c",
    "coco/fss_list/train/sub_class_file_list_1.txt": "65d9cbc52ef6975412bcfef06fa06d03f77423b85cdca8aded06c547fe786cac",
    "coco/fss_list/train/sub_class_file_list_2.txt": "bfbdf4af9618a26642a929360c6ad836b8b84f6fef12ace3810a36297c41a5dd",
    "coco/fss_list/train/sub_class_file_list_3.txt": "ea226560ec1e94ff54ec3660e778cabc52cd2eef704cc67dd2f02379ae208d20",
    "coco/fss_list/val/data_list_0.txt": "27f42514b73f1e7d8c1bf0cec98fcfcf01eecc41db1bb4263b0ebdb3ceb7c242",
    "coco/fss_list/val/data_list_1.txt": "ec584b11326c49b23cfee981a4dc723630674f69b53ed796c29060bdb4c54895",
    "coco/fss_list/val/data_list_2.txt": "93e896da25a17c3706268980c3ba4e0f6bf8d82c74136c7dd9ae3bd43f4f431c",
    "coco/fss_list/val/data_list_3.txt": "9ad4cfa54e7b1231f43d62580fadc90370a8bc4a40208e1236a8dda27d84e78a",
    "coco/fss_list/val/sub_class_file_list_0.txt": "52326ffcaa32ac74f570b7b5f558cf45c59b42fcd330879b4726d183a7fff4ca",
    "coco/fss_list/val/sub_class_file_list_1.txt": "a337d20a25bb7bdcb13bc27eba045ce4e033e11ba1df655854ec067c7e9c2c4f",
    "coco/fss_list/val/sub_class_file_list_2.txt": "a2d23beee14a1349099d451f4e3001958f52d376a168b267b0a89893fee2a25e",
    "coco/fss_list/val/sub_class_file_list_3.txt": "2a572bea8e5e5e92b27eb3876ab8399e78dae0ade6fbdc59475300dd66c1d424",
    "coco/val.txt": "732d1ef26deb382b1dba4b4601056e3102330fb2b7f8d3855624432d8d51a1ae",
    "fss/test.txt": "26f1b9e9dd0c4a58c01db306aeb5bccb5de361d544ec1b15f219efc4b74c0bf1",
    "fss/trn.txt": "815bce03f2502719ba3bd9c1f79111b74ec8ab63e6111830ff7312de49b1cf17",
    "fss/val.txt": "9cac02c58602f2789b4e6393200e450e3ba1edae6673d6a87ae2063d0c547aee",
    "pascal/fss_list/train/data_list_0.txt": "dda8b99fd9d1acbabb5d36dee35f7092e5195746d1f6c940bd91146671e967bc",
    "pascal/fss_list/train/data_list_1.txt": "897f8285d9cf3667095d83991ee1b8f41259327f2ebd98b55ddc6cbcac38d273",
    "pascal/fss_list/train/data_list_2.txt": "84ec6b5bf1aa432831c410cab4b13a71690807cab79d8b8c18181cba616596e9",
    "pascal/fss_list/train/data_list_3.txt": "fdade8fc72ad4ed9fcb062313b64fdd7cf12fb0c1f02d6177b22cadd43869924",
    "pascal/fss_list/train/sub_class_file_list_0.txt": "21956014c84146143817b00626cce777bf34cfdd5850d53b75a4cee443314c86",
    "pascal/fss_list/train/sub_class_file_list_1.txt": "1647029db65dbb004265cf97fe4366675d71a3e4a4edaf7505bce70b0bac66b3",
    "pascal/fss_list/train/sub_class_file_list_2.txt": "f55b31be14eff13d587dad3a35e63a9cc1eb82a0b4339bc7d3d2ad3c0fcde5a7",
    "pascal/fss_list/train/sub_class_file_list_3.txt": "2abaddf320bde122e44622dbb54ebeea5317341447d9b5fc5f80e7ab5b505dc4",
    "pascal/fss_list/val/data_list_0.txt": "50680860a55e2f37ed89671332bb788f279c35b862429d0db2ee1a67a8dcfb1d",
    "pascal/fss_list/val/data_list_1.txt": "dfaea1c044b5ffeb9e93923ab552a4de1f57ce01db8c0a3cb1f72a43ca31bdb6",
    "pascal/fss_list/val/data_list_10.txt": "14e406ce9eb5b35935f24779a40830814936e356ce9a2cc7b16acef6298237dc",
    "pascal/fss_list/val/data_list_11.txt": "2a8de7bcb103462b805064ddb691eb663bf33486d0c594c5c3e1ea17b7a91eb2",
    "pascal/fss_list/val/data_list_12.txt": "222ac3a07552053feccad2c160724df4b6378682dd0717ce685b2de83a258803",
    "pascal/fss_list/val/data_list_13.txt": "b41da4a0d4cda89a762f03cf4e4e0aaea6688ff629db82e8a94c124808d94037",
    "pascal/fss_list/val/data_list_2.txt": "ec3113ecf34619858bb4f5a8a118ce7e68e6792e8d579a78e0afc0e843aa1151",
    "pascal/fss_list/val/data_list_3.txt": "2a31e3a4965a2e1ce5dd0b9a941c3fbc76d9111c83730ef62a31afe9e92eaa53",
    "pascal/fss_list/val/sub_class_file_list_0.txt": "b87b46462df092da104aca48233f8ab793ebac3bffd8bf58827b21d726d8b443",
    "pascal/fss_list/val/sub_class_file_list_1.txt": "96452639b30cd123e5fe2e6d25d2a3eabffc48393e5d5bcfdcf2c0bb0e099096",
    "pascal/fss_list/val/sub_class_file_list_10.txt": "b5e6e78002aae6dd34bc4d41e30213b7b67479f28b7ed08ef331134faa844a8f",
    "pascal/fss_list/val/sub_class_file_list_11.txt": "398b6a0f45939f07a7a517a39235694da1dc81b95ef6b487b39821ff5601b23a",
    "pascal/fss_list/val/sub_class_file_list_12.txt": "dc3d6c329869c0a45c89543ee7878da4047f26245f03a56a1beee0503f888b27",
    "pascal/fss_list/val/sub_class_file_list_13.txt": "76eff0f76a91f30f62c4a60f68a6a488646b240bd27414b2eb7d167cf3f6321e",
    "pascal/fss_list/val/sub_class_file_list_2.txt": "e80b40b68409c0151657d5529243a0a76dbe5bfa5c7e7b762aaefa22c1eabe5a",
    "pascal/fss_list/val/sub_class_file_list_3.txt": "ee170cdbdf51525265a6c6d7a6107450b87364e22da5d9f89de30b8d470c00c9",
    "pascal/sbd_data.txt": "da815450986311495e949117cfe30af961f7dcf01fb44af1d3235236e8d453c9",
    "pascal/train.txt": "87578cffe141c681b15bf0b07a4cc79019ed7af02335b5ca614ccd044827fc0b",
    "pascal/val.txt": "25cdf9026986ab18d9c235d458f2b39bc44a29b801f3371624a22011bcee980c",
    "pascal/voc_original_train.txt": "8f1a904b0405e6d340af64292ab237d10791182ee23fa6a518b26d474ff0f99e",
    "pascal/voc_sbd_merge.txt": "29810afd761b4fbd23a95de996e51bac3c5c8ad5da520b1d920e057aff2a5744",
    "pascal/voc_sbd_merge_noduplicate.txt": "87578cffe141c681b15bf0b07a4cc79019ed7af02335b5ca614ccd044827fc0b",
}
BENCHMARK_FOLDERS = ("pascal", "coco", "fss")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--benchmark",
        choices=["pascal", "coco"],
        help="derive this benchmark's lists from the label maps under --root (default: fetch the published lists)",
    )
    parser.add_argument("--out", help="splits folder to write (<out>/<benchmark>/...); default <root>/splits")
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARK_FOLDERS, help="fetch only these benchmarks' published lists"
    )
    parser.add_argument("--train-ids", help="--benchmark pascal: file of training image ids, one a line")
    parser.add_argument("--val-ids", help="--benchmark pascal: file of validation image ids, one a line")
    parser.add_argument("--min-pixels", type=int, default=MIN_PIXELS, help="--benchmark: the rule's pixel threshold")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(opts: argparse.Namespace) -> None:
    out = Path(opts.out or Path(opts.root) / "splits").expanduser()
    if opts.benchmark is None:
        if opts.train_ids or opts.val_ids:
            raise InputError("--train-ids and --val-ids derive lists: give --benchmark pascal with them.")
        local_dirs = [Path(d).expanduser() for d in opts.archives]
        counts = fetch_published(out, opts.only, opts.mirror, local_dirs, progress=not opts.quiet)
        copied = f", {counts['copied']} copied from --archives" if counts["copied"] else ""
        print(
            f"published split lists in {out}: {counts['fetched']} fetched{copied}, "
            f"{counts['there']} already there ({counts['total']} files)"
        )
        return
    if opts.only:
        raise InputError("--only picks published lists to fetch; with --benchmark the lists are derived.")
    derive(opts, out)


def fetch_published(
    out: Path,
    only: Iterable[str] | None = None,
    mirror: str | None = None,
    local_dirs: Iterable[Path] = (),
    progress: bool = True,
) -> dict[str, int]:
    """Fetch `PUBLISHED_LISTS` (those of the `only` benchmarks) into `out`, each checked; returns
    how many were fetched, copied from `local_dirs`, already there, and wanted in all."""
    wanted = {p: d for p, d in PUBLISHED_LISTS.items() if not only or p.split("/", 1)[0] in only}
    there, differ = set(), []
    for rel, digest in wanted.items():
        if (out / rel).is_file():
            actual = file_digest(out / rel, "sha256")
            if actual == digest:
                there.add(rel)
            else:
                differ.append((out / rel, actual, digest))
    if differ:
        path, actual, digest = differ[0]
        more = f" (and {len(differ) - 1} more files there differ)" if len(differ) > 1 else ""
        raise InputError(
            f"{path} has sha256:{actual}, not the published sha256:{digest}{more}: it is your own or an older copy "
            "and is left as it is; move it away (or pass --out another folder) and run again."
        )
    base = (mirror or BASE_URL).rstrip("/")
    fetched = copied = 0
    for rel, digest in tqdm(wanted.items(), desc="split lists", unit="file", disable=not progress):
        if rel in there:
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        local = [d / rel for d in local_dirs if (d / rel).is_file()]
        good = [path for path in local if file_digest(path, "sha256") == digest]
        if good:
            shutil.copyfile(good[0], part)
            copied += 1
        else:
            url = f"{base}/{rel}"
            fetch_url(url, part, target, progress=False)
            actual = file_digest(part, "sha256")
            if actual != digest:
                part.unlink()
                raise InputError(
                    f"Download of {url} has sha256:{actual}, expected sha256:{digest}: it was not kept; check the "
                    f"mirror{' (and the copy in ' + str(local[0]) + ', which differs too)' if local else ''} and run again."
                )
            fetched += 1
        os.replace(part, target)
    return {"fetched": fetched, "copied": copied, "there": len(there), "total": len(wanted)}


def derive(opts: argparse.Namespace, out: Path) -> None:
    """`--benchmark pascal|coco`: derive the lists from the label maps under --root."""
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
        progress=not opts.quiet,
        **extra,
    )
    print(f"wrote {opts.benchmark} split lists under {out / opts.benchmark / 'fss_list'}")


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
            images: list[str] = []
            by_class: dict[int, list[str]] = {c: [] for c in classes}
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
    texts: dict[Path, str] = {}
    for (folder, fold), (images, by_class) in lists.items():
        texts[folder / f"data_list_{fold}.txt"] = "".join(f"{i}\n" for i in images)
        texts[folder / f"sub_class_file_list_{fold}.txt"] = repr(by_class)
    # A list already there is kept when it says the same, and refused before any is written when not.
    differ = [path for path, text in texts.items() if exists(path) and (not path.is_file() or path.read_text() != text)]
    if differ:
        more = f" (and {len(differ) - 1} more files there)" if len(differ) > 1 else ""
        raise InputError(
            f"{differ[0]} exists and differs from the list derived here{more}: it is left as it is; pass --out "
            "another folder, or move it away, and run again."
        )
    for path, text in texts.items():
        if not exists(path):
            create(path, partial(Path.write_text, data=text), "--out")


def pascal_held_out(fold: int) -> list[int]:
    return pascal_classes("test", fold)


def coco_held_out(fold: int) -> list[int]:
    return coco_classes("test", fold)
