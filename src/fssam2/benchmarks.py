"""The real benchmarks, read from the on-disk layouts of the common few-shot preparation guides.

    PASCAL-5i  <root>/VOC2012/JPEGImages/<id>.jpg, <root>/VOC2012/SegmentationClassAug/<id>.png
    COCO-20i   <root>/COCO2014/{train2014,val2014}/<id>.jpg,
               <root>/COCO2014/annotations/{train2014,val2014}/<id>.png (values 1..80)
    FSS-1000   <root>/FSS-1000/<category>/<n>.jpg and <n>.png (pixel >= 128 is foreground)

Both default to the data home (`fssam2.hub.data_dir()`: `$FSSAM2_DATA`, else a folder under the
user's cache), where `fssam2 prepare` writes: `--data.root` defaults to it and `--data.splits_dir`
to `<root>/splits`.

Split lists come from `splits_dir` in the published format (see ../shared/data/splits/README.md
in the development tree): `<benchmark>/fss_list/{train,val}/data_list_<fold>.txt` (one image id a
line) and `sub_class_file_list_<fold>.txt` (a dict literal, parsed with ast.literal_eval), and
`fss/{trn,val,test}.txt` for FSS-1000.
"""

from __future__ import annotations

import ast
import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from fssam2.data import FewShotDataModule, ImageReader
from fssam2.episodes import (
    PASCAL_DOMAIN_SHIFT,
    ClassFirstEpisodes,
    FolderEpisodes,
    QueryCycleEpisodes,
    coco_classes,
    pascal_classes,
)
from fssam2.errors import InputError
from fssam2.files import create
from fssam2.hub import data_dir

FSS_NUMBERS = tuple(range(1, 11))
FSS_SPLIT_FILES = {"train": "trn.txt", "val": "val.txt", "test": "test.txt"}
# Written by `fssam2 prepare` into a dataset's folder (and a benchmark's split-list folder) once
# it has checked what it wrote; `fssam2 doctor` reports "verified" where it is.
PREPARED_MARKER = ".fssam2-prepared.json"


@dataclass(frozen=True)
class Benchmark:
    """What a benchmark needs on disk, and the command that prepares it."""

    name: str  # as in messages: "PASCAL-5i"
    folder: str  # the dataset's folder under the root (holds PREPARED_MARKER)
    folders: tuple[str, ...]  # folders under the root that must exist
    lists: str  # its folder under the split-list folder
    prepare: str  # `fssam2 prepare <prepare>` writes the dataset


BENCHMARKS = {
    "pascal": Benchmark(
        "PASCAL-5i", "VOC2012", ("VOC2012/JPEGImages", "VOC2012/SegmentationClassAug"), "pascal", "pascal"
    ),
    "coco": Benchmark(
        "COCO-20i",
        "COCO2014",
        ("COCO2014/train2014", "COCO2014/val2014", "COCO2014/annotations/train2014", "COCO2014/annotations/val2014"),
        "coco",
        "coco",
    ),
    "fss": Benchmark("FSS-1000", "FSS-1000", ("FSS-1000",), "fss", "fss1000"),
}


def split_list_files(
    benchmark: str, folds: Sequence[int] | None = None, splits: Sequence[str] = ("train", "val")
) -> list[str]:
    """The split-list files (relative to the split-list folder) a benchmark's folds and splits read;
    folds None = every published fold. "val" stands for test episodes too (they read the val lists)."""
    if benchmark == "fss":
        wanted = {"train": ["train"], "val": ["val", "test"]}
        return [f"fss/{FSS_SPLIT_FILES[s]}" for split in splits for s in wanted[split]]
    if folds is None:
        folds = (0, 1, 2, 3, *PASCAL_DOMAIN_SHIFT) if benchmark == "pascal" else (0, 1, 2, 3)
    files = []
    for split in splits:
        for fold in folds:
            if split == "train" and fold in PASCAL_DOMAIN_SHIFT:
                continue  # the COCO->PASCAL folds are test folds
            files += [
                f"{benchmark}/fss_list/{split}/{name}_{fold}.txt" for name in ("data_list", "sub_class_file_list")
            ]
    return files


@dataclass(frozen=True)
class DataPlace:
    """Where a benchmark's files are read: the dataset root and the split-list folder, each as the
    user gave it or, when not given, the data home (`fssam2.hub.data_dir()`) and `<root>/splits`
    (where `fssam2 prepare` writes them). Errors about missing files name the command that writes them."""

    root: Path
    splits_dir: Path
    root_given: bool
    splits_given: bool

    @classmethod
    def locate(cls, root: str | Path | None, splits_dir: str | Path | None) -> DataPlace:
        base = Path(root).expanduser() if root is not None else data_dir()
        splits = Path(splits_dir).expanduser() if splits_dir is not None else base / "splits"
        return cls(base, splits, root is not None, splits_dir is not None)

    def check(self, benchmark: str, folders: Sequence[str] | None = None) -> Path:
        """The root, once `folders` (default: all the benchmark's) exist under it; else one line naming
        the first missing folder and `fssam2 prepare <benchmark>`."""
        spec = BENCHMARKS[benchmark]
        return check_layout(self.root, list(folders or spec.folders), spec.name, spec.prepare, self.root_given)

    def missing_list(self, benchmark: str) -> Callable[[Path], str] | None:
        """The message for a missing split list when its folder was not given (None: the default one,
        naming --data.splits_dir)."""
        if self.splits_given:
            return None
        name = BENCHMARKS[benchmark].name
        command = "fssam2 prepare splits" + (f" --root {self.root}" if self.root_given else "")
        return lambda path: (
            f"{name} split lists are not prepared: {path} is missing; run `{command}` (or give --data.splits_dir)."
        )


# split lists
def read_data_list(path: Path, missing: Callable[[Path], str] | None = None) -> list[str]:
    """Image ids of a data list, in file order, empty lines dropped; an empty list is refused.
    `missing` makes the message for an absent file (see `_read_text`)."""
    lines = _read_text(path, missing).splitlines()
    ids = [line.strip() for line in lines if line.strip()]
    if not ids:
        raise InputError(
            f"Split list {path} lists no image: regenerate it (`fssam2 prepare splits`) from label maps that show the split's classes."
        )
    return ids


def read_class_file(path: Path, missing: Callable[[Path], str] | None = None) -> dict[int, list[str]]:
    """The class-file dict {1-based class: [image id, ...]} of a sub_class_file_list."""
    try:
        data = ast.literal_eval(_read_text(path, missing))
    except (ValueError, SyntaxError) as err:
        raise InputError(
            f"Split file {path} is not a Python dict literal ({err}): regenerate it with `fssam2 prepare splits`."
        ) from err
    if not isinstance(data, dict) or not all(isinstance(k, int) and isinstance(v, list) for k, v in data.items()):
        raise InputError(
            f"Split file {path} must map class numbers to lists of image ids: regenerate it with `fssam2 prepare splits`."
        )
    return {k: [str(x) for x in v] for k, v in data.items()}


def _read_text(path: Path, missing: Callable[[Path], str] | None = None) -> str:
    """The text of a split-list file; an absent one is an InputError, `missing(path)` when given."""
    if not path.is_file():
        if missing is not None:
            raise InputError(missing(path))
        raise InputError(
            f"Split list {path} is missing: point --data.splits_dir at a folder with the published lists "
            "(pascal/, coco/, fss/), or create them with `fssam2 prepare splits`."
        )
    return path.read_text()


def fold_lists(
    splits_dir: str | Path, benchmark: str, split: str, fold: int, missing: Callable[[Path], str] | None = None
) -> tuple[list[str], dict[int, list[str]]]:
    """Data list and class-file dict of a PASCAL-5i or COCO-20i split and fold."""
    folder = Path(splits_dir).expanduser() / benchmark / "fss_list" / ("train" if split == "train" else "val")
    return (
        read_data_list(folder / f"data_list_{fold}.txt", missing),
        read_class_file(folder / f"sub_class_file_list_{fold}.txt", missing),
    )


# readers
def read_image(path: Path) -> np.ndarray:
    """RGB uint8 [H, W, 3], a new writable array. 16-bit images keep their high byte (a 16-bit
    grey image as Pillow reads 16-bit colour ones; converting would clip it to white); 32-bit
    integer images with 16-bit values likewise, float images in [0, 1] are scaled by 255. Other
    32-bit images, and an unreadable or truncated file, are an InputError naming it."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I") or im.mode == "F":
                return np.repeat(_wide_to_uint8(np.asarray(im), path)[..., None], 3, axis=2)
            return np.array(im.convert("RGB"))
    except FileNotFoundError as err:
        raise InputError(f"Image {path} does not exist: check --data.root and the dataset layout.") from err
    except OSError as err:
        raise InputError(f"Image {path} is unreadable or truncated ({err}): download or extract it again.") from err


def _wide_to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """A single-channel 16-bit, 32-bit integer or float image as uint8 (see `read_image`)."""
    if array.dtype.kind == "f":
        low, high = float(array.min()), float(array.max())
        if not (0.0 <= low and high <= 1.0):
            raise InputError(
                f"Image {path} holds float values in [{low:.4g}, {high:.4g}], not [0, 1]: save it as an 8- or 16-bit image."
            )
        return np.rint(array * 255.0).astype(np.uint8)
    if int(array.min()) < 0 or int(array.max()) > 65535:
        raise InputError(
            f"Image {path} holds 32-bit values in [{int(array.min())}, {int(array.max())}]: save it as an 8- or 16-bit image."
        )
    return (array.astype(np.uint32) >> 8).astype(np.uint8)


def binary_mask(array: np.ndarray, mode: str = "") -> np.ndarray:
    """bool [H, W] object mask of a decoded mask array, by the one rule for binary masks (see
    `mask_levels`)."""
    return mask_levels(array, mode)[0]


def mask_levels(array: np.ndarray, mode: str = "") -> tuple[np.ndarray, int]:
    """(bool [H, W] object mask, how many distinct values it was thresholded from; 0 when not)
    of a decoded mask array.

    The rule: any non-zero value is the object (any colour channel; a palette PNG's index != 0, so
    0/1, 0/255, VOC-palette and coloured masks all read as drawn). With an alpha channel (mode
    "RGBA", "LA", or a 4- or 2-channel array) that varies over the image, the alpha decides (alpha
    != 0: cut-outs on a transparent background); a constant alpha is ignored and the colour
    decides. A mask whose deciding values (grey level, alpha, or brightest colour channel) take
    more than two values, as JPEG-compressed or anti-aliased masks do, is thresholded instead: the
    object is where the value reaches half the mask's largest. Palette indices are labels, never
    thresholded."""
    if array.ndim == 2:
        values = array
    else:
        has_alpha = mode in ("RGBA", "LA") or (not mode and array.shape[2] in (2, 4))
        alpha = array[..., -1]
        if has_alpha and alpha.min() != alpha.max():
            values = alpha
        else:
            values = (array[..., :-1] if has_alpha else array).max(axis=2)
    if mode == "P":
        return values != 0, 0
    if values.dtype == np.uint8:
        levels = int(np.count_nonzero(np.bincount(values.ravel(), minlength=256)))
    else:
        levels = len(np.unique(values))
    if levels <= 2:
        return values != 0, 0
    return (values > 0) & (values >= values.max() / 2), levels


def graded_mask_note(path: Path | str, levels: int) -> str:
    """The warning for a mask of more than two values (see `mask_levels`)."""
    return (
        f"Mask {path} holds {levels} distinct values, not two (JPEG-compressed or anti-aliased?): pixels at or above "
        "half its largest value are taken as the object; save masks as two-valued PNGs to decide it yourself."
    )


def decode_mask(path: Path) -> tuple[np.ndarray, int]:
    """(object mask, values it was thresholded from or 0) of a mask file by `mask_levels`; a missing or unreadable
    file is an InputError naming it."""
    try:
        with Image.open(path) as file:
            im: Image.Image = file
            if im.mode not in ("1", "L", "P", "I", "I;16", "F", "RGB", "RGBA", "LA"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            return mask_levels(np.asarray(im), im.mode)
    except FileNotFoundError as err:
        raise InputError(f"Mask {path} does not exist: put <name>.png beside each image.") from err
    except OSError as err:
        raise InputError(f"Mask {path} is unreadable or truncated ({err}): save it again as a PNG.") from err


def read_binary_mask(path: Path) -> np.ndarray:
    """The object mask bool [H, W] of a mask file, by `mask_levels`'s rule (used by the folder
    dataset and `fssam2 segment`; FSS-1000's own files keep their published >= 128 rule). A mask
    of more than two values is thresholded, with a warning naming the file."""
    mask, levels = decode_mask(path)
    if levels:
        warnings.warn(graded_mask_note(path, levels), stacklevel=2)
    return mask


def read_label(path: Path) -> np.ndarray:
    """Label map [H, W] uint8 (palette PNGs give their indices, as in VOC)."""
    try:
        with Image.open(path) as im:
            label = np.asarray(im)
    except FileNotFoundError as err:
        raise InputError(f"Label map {path} does not exist: check --data.root and the dataset layout.") from err
    except OSError as err:
        raise InputError(f"Label map {path} is unreadable or truncated ({err}): download or extract it again.") from err
    if label.ndim != 2:
        raise InputError(
            f"Label map {path} has {label.shape[2]} channels; expected a single-channel (or palette) PNG of class values."
        )
    return label.astype(np.uint8)


def write_png(array: np.ndarray, path: Path, option: str = "output folder") -> None:
    """uint8 [H, W] or RGB [H, W, 3] as a new PNG file, written whole (`fssam2.files.create`); a
    file at `path` is not written over: an InputError says to choose another `option`."""

    def save(tmp: Path) -> None:
        try:
            Image.fromarray(array).save(tmp, format="PNG")
        except OSError as err:
            raise InputError(f"Could not write {path} ({err}): check the output folder.") from err

    create(path, save, option)


@lru_cache(maxsize=65536)
def _label_values(path: str) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unique(read_label(Path(path))))


@dataclass(frozen=True)
class LabelMapReader:
    """Reads an image and its label map of class values (PASCAL-5i and COCO-20i layouts)."""

    root: str  # dataset root (the folder holding VOC2012/ or COCO2014/)
    layout: str  # "pascal" or "coco"

    def paths(self, image_id: str) -> tuple[Path, Path]:
        root = Path(self.root).expanduser()
        if self.layout == "pascal":
            voc = root / "VOC2012"
            return voc / "JPEGImages" / f"{image_id}.jpg", voc / "SegmentationClassAug" / f"{image_id}.png"
        sub = "train2014" if "train2014" in image_id else "val2014"
        return root / "COCO2014" / sub / f"{image_id}.jpg", root / "COCO2014" / "annotations" / sub / f"{image_id}.png"

    def __call__(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.paths(image_id)
        image, label = read_image(image_path), read_label(label_path)
        if image.shape[:2] != label.shape:
            raise InputError(
                f"Label map {label_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}: they must be the same size; regenerate the label map."
            )
        return image, label

    def present(self, image_id: str) -> list[int]:
        """Label values found in the image's label map (the PASCAL rule samples among them)."""
        return list(_label_values(str(self.paths(image_id)[1])))


@dataclass(frozen=True)
class FSS1000Reader:
    """Reads `<root>/FSS-1000/<category>/<n>.jpg` and its mask `<n>.png`; the label map holds the
    category's class number where the mask is >= 128."""

    root: str
    class_of: dict[str, int] = field(hash=False)  # category -> 1-based class of the split

    def __call__(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        category, number = image_id.rsplit("/", 1)
        folder = Path(self.root).expanduser() / "FSS-1000" / category
        image = read_image(folder / f"{number}.jpg")
        mask_path = folder / f"{number}.png"
        mask = read_image(mask_path)[..., 0]
        if image.shape[:2] != mask.shape:
            raise InputError(
                f"Mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}: they must match."
            )
        return image, np.where(mask >= 128, self.class_of[category], 0).astype(np.uint8)


def check_layout(
    root: str | Path, folders: list[str], benchmark: str, prepare: str | None = None, root_given: bool = True
) -> Path:
    """Fail early, naming the folder, when the dataset root is missing or laid out differently.
    `prepare` names the `fssam2 prepare` command that writes the dataset; a root not given by the
    user (`root_given` False: the data home) is reported as not prepared."""
    path = Path(root).expanduser()
    if not root_given:
        for folder in folders:
            if not (path / folder).is_dir():
                raise InputError(
                    f"{benchmark} is not prepared: {path / folder} is missing; run `fssam2 prepare {prepare}` "
                    "(or give --data.root)."
                )
        return path
    also = f", or run `fssam2 prepare {prepare} --root {path}`" if prepare else ""
    if not path.is_dir():
        raise InputError(
            f"{benchmark} root {path} does not exist: pass the folder holding {folders[0]} as --data.root{also}."
        )
    for folder in folders:
        if not (path / folder).is_dir():
            raise InputError(
                f"{benchmark} root {path} has no folder {folder}: expected {', '.join(folders)} under --data.root "
                f"(see docs/datasets.md){also}."
            )
    return path


def check_ids_on_disk(ids: list[str], paths: Callable[[str], Sequence[Path]], what: str) -> None:
    """Every listed id must have its files on disk; name the first few that do not."""
    missing = [i for i in ids if not all(p.is_file() for p in paths(i))]
    if missing:
        raise InputError(
            f"{len(missing)} image ids listed in the {what} split lists are absent on disk, e.g. {missing[:3]} "
            f"(looked for {', '.join(str(p) for p in paths(missing[0]))}): complete the dataset or use matching lists."
        )


class OnDiskDataModule(FewShotDataModule):
    """A benchmark read from disk (`benchmark`, a key of BENCHMARKS): its root and split-list
    folder, as given or defaulted to the data home (see `DataPlace`), are resolved when the
    DataModule is made, and recorded in its hyperparameters (checkpoints, the W&B config)."""

    benchmark = ""

    def _locate(self, root: str | None, splits_dir: str | None) -> None:
        self.place = DataPlace.locate(root, splits_dir)
        self.root, self.splits_dir = str(self.place.root), str(self.place.splits_dir)
        self.save_hyperparameters({"root": self.root, "splits_dir": self.splits_dir})

    def folders(self, split: str) -> list[str] | None:
        """The folders under the root that `split` reads; None = all of the benchmark's."""
        return None

    def check_prepared(self, splits: Sequence[str]) -> None:
        """The dataset's folders and the split lists `splits` read exist; else one line naming the
        first missing one and the command that prepares it. Cheap: the CLI runs it before the model
        is built, so a missing dataset is said before SAM2's weights are downloaded."""
        for split in splits:
            self.place.check(self.benchmark, self.folders(split))
        lists = sorted({"train" if split == "train" else "val" for split in splits})
        folds = None if self.benchmark == "fss" else [self.fold]
        for name in split_list_files(self.benchmark, folds, lists):
            _read_text(self.place.splits_dir / name, self.place.missing_list(self.benchmark))

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        given = "" if self.place.root_given else " (the data home)"
        rank_zero_info(f"{BENCHMARKS[self.benchmark].name} data: {self.root}{given}, split lists {self.splits_dir}")


class PascalDataModule(OnDiskDataModule):
    """PASCAL-5i: 20 classes, folds 0-3 hold out classes 5f+1..5f+5; folds 10-13 are the
    COCO->PASCAL domain-shift test folds (test and validation only).

    Args:
        root: the folder holding VOC2012/ (JPEGImages, SegmentationClassAug); None = the data
            home (`$FSSAM2_DATA`, else `~/.cache/fssam2/data`), where `fssam2 prepare pascal` writes.
        splits_dir: the folder holding pascal/fss_list/; None = `<root>/splits`.
        **kwargs: see `FewShotDataModule`.
    """

    full_label_maps = True
    benchmark = "pascal"

    def __init__(self, root: str | None = None, splits_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.fold not in (0, 1, 2, 3, *PASCAL_DOMAIN_SHIFT):
            raise InputError(f"data.fold={self.fold}: PASCAL-5i folds are 0-3, and 10-13 for COCO->PASCAL testing.")
        self._locate(root, splits_dir)
        self.reader = LabelMapReader(self.root, "pascal")

    def class_ids(self, split: str) -> list[int]:
        if self.fold in PASCAL_DOMAIN_SHIFT:
            if split == "train":
                raise InputError(
                    f"data.fold={self.fold} is a COCO->PASCAL test fold: train on COCO-20i fold {self.fold - 10}."
                )
        return pascal_classes(split, self.fold)

    def episodes(self, split: str) -> QueryCycleEpisodes:
        self.place.check("pascal")
        images, by_class = fold_lists(self.splits_dir, "pascal", split, self.fold, self.place.missing_list("pascal"))
        check_ids_on_disk(images, self.reader.paths, f"PASCAL-5i fold {self.fold} {split}")
        length = {"train": None, "val": self.val_episodes, "test": self.test_episodes}[split]
        return QueryCycleEpisodes(
            images,
            by_class,
            self.reader.present,
            self.class_ids(split),
            self.split_shot(split),
            self.split_seed(split),
            length,
        )

    def image_reader(self, split: str) -> ImageReader:
        return self.reader


class CocoDataModule(OnDiskDataModule):
    """COCO-20i: 80 classes, fold f holds out classes f + 4v + 1 (v = 0..19).

    Args:
        root: the folder holding COCO2014/ (train2014, val2014, annotations/{train2014,val2014});
            None = the data home (`$FSSAM2_DATA`, else `~/.cache/fssam2/data`), where
            `fssam2 prepare coco` writes.
        splits_dir: the folder holding coco/fss_list/; None = `<root>/splits`.
        **kwargs: see `FewShotDataModule`.
    """

    full_label_maps = True
    benchmark = "coco"

    def __init__(self, root: str | None = None, splits_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.fold not in (0, 1, 2, 3):
            raise InputError(f"data.fold={self.fold}: COCO-20i folds are 0-3.")
        self._locate(root, splits_dir)
        self.reader = LabelMapReader(self.root, "coco")

    def class_ids(self, split: str) -> list[int]:
        return sorted(coco_classes(split, self.fold))

    def folders(self, split: str) -> list[str]:
        sub = "train2014" if split == "train" else "val2014"  # test episodes read the val images
        return [f"COCO2014/{sub}", f"COCO2014/annotations/{sub}"]

    def episodes(self, split: str) -> ClassFirstEpisodes:
        self.place.check("coco", self.folders(split))
        images, by_class = fold_lists(self.splits_dir, "coco", split, self.fold, self.place.missing_list("coco"))
        check_ids_on_disk(images, self.reader.paths, f"COCO-20i fold {self.fold} {split}")
        length = {"train": len(images), "val": self.val_episodes, "test": self.test_episodes}[split]
        return ClassFirstEpisodes(
            by_class, coco_classes(split, self.fold), self.split_shot(split), self.split_seed(split), length
        )

    def image_reader(self, split: str) -> ImageReader:
        return self.reader


class FSS1000DataModule(OnDiskDataModule):
    """FSS-1000: 520 / 240 / 240 categories for train / val / test, no folds; a test run scores
    every test image once (2400 episodes), whatever `test_episodes` says.

    Args:
        root: the folder holding FSS-1000/<category>/; None = the data home (`$FSSAM2_DATA`,
            else `~/.cache/fssam2/data`), where `fssam2 prepare fss1000` writes.
        splits_dir: the folder holding fss/{trn,val,test}.txt; None = `<root>/splits`.
        **kwargs: see `FewShotDataModule`.
    """

    benchmark = "fss"

    def __init__(self, root: str | None = None, splits_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._locate(root, splits_dir)

    def categories(self, split: str) -> list[str]:
        self.place.check("fss")  # the dataset before its lists: a missing dataset names its own command
        path = Path(self.splits_dir) / "fss" / FSS_SPLIT_FILES[split]
        return sorted(read_data_list(path, self.place.missing_list("fss")))

    def class_ids(self, split: str) -> list[int]:
        return list(range(1, len(self.categories(split)) + 1))

    def class_names(self, split: str) -> dict[int, str]:
        """The category folders' names, by class id."""
        return {i + 1: category for i, category in enumerate(self.categories(split))}

    def episodes(self, split: str) -> FolderEpisodes:
        root = self.place.check("fss")
        categories = self.categories(split)
        ids = [f"{c}/{n}" for c in categories for n in FSS_NUMBERS]
        check_ids_on_disk(
            ids, lambda i: [root / "FSS-1000" / f"{i}.jpg", root / "FSS-1000" / f"{i}.png"], f"FSS-1000 {split}"
        )
        numbers = [str(n) for n in FSS_NUMBERS]
        return FolderEpisodes({c: numbers for c in categories}, self.split_shot(split), self.split_seed(split))

    def image_reader(self, split: str) -> ImageReader:
        return FSS1000Reader(self.root, {c: i + 1 for i, c in enumerate(self.categories(split))})


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # any letter case
MASK_EXTENSION = ".png"  # any letter case
PROMPT_EXTENSION = ".json"  # a support's prompt file (`fssam2 segment`), any letter case


class Pair(NamedTuple):
    """An image of a folder dataset and its mask: file names in their class folder."""

    image: str
    mask: str


def is_hidden(name: str) -> bool:
    """`.name` files and folders, and macOS archives' `__MACOSX` folder, are not part of a dataset."""
    return name.startswith(".") or name == "__MACOSX"


def visible_files(folder: Path) -> list[Path]:
    """The files of `folder`, hidden ones (`.name`, e.g. macOS `._photo.jpg` resource forks) left out."""
    return [f for f in folder.iterdir() if not is_hidden(f.name) and f.is_file()]


def scan_folder(folder: Path, prompts: bool = False) -> dict[str, Pair]:
    """{name: (image file, mask file)} of `<folder>/<name>.<image ext>` files, each with its mask
    `<name>.png`; extensions match in any letter case (`0.JPG` + `0.PNG`), hidden files are
    skipped. Two images or two masks of one name (`0.jpg` and `0.tif`, `0.png` and `0.PNG`) are
    an InputError naming them. With `prompts` (`fssam2 segment`'s support folders), a prompt file
    `<name>.json` stands for the mask, and `<name>.png` beside it is then the image; a mask and a
    prompt file for one image are an InputError naming both."""
    images: dict[str, list[str]] = {}
    masks: dict[str, list[str]] = {}
    prompt_files: dict[str, list[str]] = {}
    for f in visible_files(folder):
        suffix = f.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            images.setdefault(f.stem, []).append(f.name)
        elif suffix == MASK_EXTENSION:
            masks.setdefault(f.stem, []).append(f.name)
        elif prompts and suffix == PROMPT_EXTENSION:
            prompt_files.setdefault(f.stem, []).append(f.name)
    for kind, found in (("images", images), ("masks", masks), ("prompt files", prompt_files)):
        twice = sorted(name for name, files in found.items() if len(files) > 1)
        if twice:
            raise InputError(
                f"{folder} holds {len(found[twice[0]])} {kind} named {twice[0]} ({', '.join(sorted(found[twice[0]]))}): "
                "which one belongs to the pair is ambiguous; keep one and rename or remove the others."
            )
    for name, (prompt,) in sorted(prompt_files.items()):
        if name in images and name in masks:
            raise InputError(
                f"{folder} holds both the mask {masks[name][0]} and the prompt file {prompt} of {images[name][0]}: "
                "which one shows the support is ambiguous; keep one and rename or remove the other."
            )
        if name in masks:  # <name>.png beside <name>.json, with no other image of that name, is the image
            images[name] = masks.pop(name)
        masks[name] = [prompt]
    prompt = " or <name>.json (a prompt)" if prompts else ""
    if images.keys() - masks.keys():
        raise InputError(
            f"Images in {folder} have no mask{' or prompt file' if prompts else ''}, e.g. "
            f"{sorted(images.keys() - masks.keys())[:3]}: put <name>.png (non-zero pixels are the object){prompt} "
            "beside each image."
        )
    if masks.keys() - images.keys():
        raise InputError(
            f"Masks{' or prompt files' if prompts else ''} in {folder} have no image, e.g. {sorted(masks.keys() - images.keys())[:3]}: images must be "
            f"{'/'.join(IMAGE_EXTENSIONS)} files named like their mask (<name>.png is the mask)."
        )
    return {name: Pair(files[0], masks[name][0]) for name, files in images.items()}


def empty_mask_error(path: Path) -> InputError:
    return InputError(
        f"Mask {path} has no object pixel (every value 0): mark the object with non-zero pixels, "
        "or remove the image and its mask."
    )


def scan_class_folders(root: str | Path, check_masks: bool = True) -> dict[str, dict[str, Pair]]:
    """`<root>/<class>/<name>.<image ext>` with its mask `<name>.png` -> {class: {name: pair}}.

    Hidden folders and files are skipped; a folder inside a class folder is refused, naming it
    (its images would be left out). With `check_masks`, every mask is read once here (one decode
    per mask, in the process that scans): a mask with no object pixel is refused, naming it, since
    training or testing on empty targets would report a meaningless mIoU; masks of more than two
    values (see `mask_levels`) get one warning naming the first."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise InputError(
            f"Dataset root {path} does not exist: pass the folder holding one sub-folder per class as --data.root."
        )
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not is_hidden(p.name))
    for folder in folders:
        nested = sorted(p.name for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))
        if nested:
            raise InputError(
                f"Class folder {folder} holds the folder {nested[0]}: a folder dataset is one level deep "
                "(<root>/<class>/<name>.jpg and <name>.png); move its images into a class folder of their own "
                "under --data.root, or point --data.root at the folder of class folders."
            )
    found = {folder.name: scan_folder(folder) for folder in folders}
    found = {name: images for name, images in found.items() if images}
    if not found:
        raise InputError(
            f"Dataset root {path} has no class folder with images: expected <root>/<class>/<name>.jpg and <name>.png."
        )
    if check_masks:
        graded: list[tuple[Path, int]] = []
        for category, images in found.items():
            for name in sorted(images):
                mask_path = path / category / images[name].mask
                mask, levels = decode_mask(mask_path)
                if not mask.any():
                    raise empty_mask_error(mask_path)
                if levels:
                    graded.append((mask_path, levels))
        if graded:
            more = f" ({len(graded) - 1} more masks under {path} likewise)" if len(graded) > 1 else ""
            warnings.warn(graded_mask_note(*graded[0]) + more, stacklevel=2)
    return found


@dataclass(frozen=True)
class FolderReader:
    """Reads `<root>/<class>/<image file>` and its mask file (`mask_levels`: any non-zero value is
    the object; masks of more than two values thresholded, `scan_class_folders` warns of them);
    the label map holds the class's number where the mask is set. A mask with no object pixel is
    refused, naming the mask file."""

    root: str
    files: dict[str, dict[str, Pair]] = field(hash=False)  # class -> name -> (image file, mask file)
    class_of: dict[str, int] = field(hash=False)  # class -> 1-based class of the split

    def __call__(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        category, name = image_id.split("/", 1)
        folder = Path(self.root).expanduser() / category
        pair = self.files[category][name]
        image = read_image(folder / pair.image)
        mask_path = folder / pair.mask
        mask, _ = decode_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise InputError(
                f"Mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}: they must match."
            )
        if not mask.any():
            raise empty_mask_error(mask_path)
        return image, np.where(mask, self.class_of[category], 0).astype(np.uint8)


class FolderDataModule(FewShotDataModule):
    """Your own data: `<root>/<class name>/<name>.<jpg|jpeg|bmp|tif|tiff|webp>` with the binary mask
    `<name>.png` beside each image (extensions in any letter case; any non-zero value is the
    object: 0/1, 0/255, palette and coloured masks alike, masks of more than two values
    thresholded at half their largest, see `mask_levels`; hidden files are skipped; class folders
    hold no folders). Every mask is read once when the folders are scanned, and one with no object
    pixel is refused, naming it.

    Splits: classes are held out for testing by name (`test_classes`) or, when that is not given,
    in `num_folds` contiguous groups of the sorted class names (`fold` picks one); test episodes
    walk every image of the held-out classes, as FSS-1000 does. Validation (which picks
    best.ckpt) never sees a held-out class: of each training class's n images, ceil(val_fraction
    * n), but no more than leave K + 1 for training (K: data.shot, or data.train_shots' high end),
    are held out of training (drawn with the seed and the class name, so the same every run);
    validation episodes walk them, with supports from the class's other images. Training draws
    from the rest. val_fraction 0 holds out none: fit trains without validation.

    Args:
        root: the folder of class folders.
        test_classes: class names to hold out; None = fold `fold` of `num_folds`.
        num_folds: number of class groups when test_classes is None.
        val_fraction: share of each training class's images held out of training for validation;
            0: none, and fit runs no validation (best.ckpt is then the latest state).
        **kwargs: see `FewShotDataModule`.
    """

    def __init__(
        self,
        root: str,
        test_classes: list[str] | None = None,
        num_folds: int = 4,
        val_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.test_classes, self.num_folds = root, test_classes, num_folds
        if test_classes is None and not 0 <= self.fold < num_folds:
            raise InputError(
                f"data.fold={self.fold} is out of range: use 0..{num_folds - 1} (data.num_folds={num_folds})."
            )
        if not 0 <= val_fraction < 1:
            raise InputError(
                f"data.val_fraction={val_fraction} must be in [0, 1): e.g. 0.2 (the default), 0 for no validation."
            )
        self.val_fraction = val_fraction

    @property
    def validates(self) -> bool:
        """val_fraction 0 holds out no image: fit runs no validation."""
        return self.val_fraction > 0

    @cached_property
    def files(self) -> dict[str, dict[str, Pair]]:
        """{class: {name: (image file, mask file)}}, scanned once."""
        return scan_class_folders(self.root)

    def _held_out(self) -> list[str]:
        names = sorted(self.files)
        if self.test_classes is not None:
            unknown = sorted(set(self.test_classes) - set(names))
            if unknown:
                raise InputError(
                    f"data.test_classes {unknown} have no folder under {self.root}: use some of {names[:10]}."
                )
            return sorted(self.test_classes)
        return [n for i, n in enumerate(names) if i * self.num_folds // len(names) == self.fold]

    @cached_property
    def val_images(self) -> dict[str, list[str]]:
        """{training class: names of its images held out of training for validation}; classes
        that can spare none are left out."""
        held_out = self._held_out()
        out = {}
        for category in sorted(set(self.files) - set(held_out)):
            names = sorted(self.files[category])
            count = min(math.ceil(self.val_fraction * len(names)), len(names) - self.split_shot("train") - 1)
            if count > 0:
                rng = np.random.default_rng((self.split_seed("val"), zlib.crc32(category.encode())))
                out[category] = sorted(str(n) for n in rng.choice(names, count, replace=False))
        return out

    def _split_names(self, split: str) -> list[str]:
        held_out = self._held_out()
        if split == "test":
            return held_out
        training = [n for n in sorted(self.files) if n not in held_out]
        if split == "train":
            return training
        if not self.validates:
            raise InputError(
                f"data.val_fraction=0 holds out no image of {self.root} for validation: set it above 0 (e.g. 0.2) "
                "to validate."
            )
        if training and not self.val_images:
            shot = self.split_shot("train")
            trained = f"data.train_shots={list(self.train_shots)}" if self.train_shots else f"data.shot={shot}"
            largest = max(len(self.files[c]) for c in training)
            raise InputError(
                f"No training class of {self.root} can spare an image for validation: training episodes take "
                f"{shot} supports and a query ({trained}), so a class needs {shot + 2} images, and the largest has "
                f"{largest}: add images, or set data.val_fraction=0 to fit without validation."
            )
        return sorted(self.val_images)

    def class_ids(self, split: str) -> list[int]:
        return list(range(1, len(self._split_names(split)) + 1))

    def class_names(self, split: str) -> dict[int, str]:
        """The class folders' names, by class id."""
        return {i + 1: name for i, name in enumerate(self._split_names(split))}

    def episodes(self, split: str) -> FolderEpisodes:
        names = self._split_names(split)
        if split == "val":
            members = {c: sorted(self.files[c]) for c in names}
            return FolderEpisodes(members, self.shot, self.split_seed(split), queries=self.val_images)
        held = self.val_images if split == "train" else {}
        members = {c: [n for n in sorted(self.files[c]) if n not in held.get(c, ())] for c in names}
        return FolderEpisodes(members, self.split_shot(split), self.split_seed(split))

    def image_reader(self, split: str) -> ImageReader:
        return FolderReader(self.root, self.files, {name: i for i, name in self.class_names(split).items()})
