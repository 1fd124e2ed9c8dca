"""A procedurally generated few-shot benchmark laid out like PASCAL-5i, needing no files.

Each image shows 2-3 objects of distinct classes on a textured grey background, with a label map
(0 = background, 1..C = class, 255 = a thin ignored boundary, as in SegmentationClassAug). A class
is an appearance: a hue, a shape and a fill pattern. Hues are spread so that every fold's held-out
classes sit between training hues: a model must learn to match the support, not memorise colours.
Objects of other classes stay in the query as distractors, so the support decides what to segment.
Images are rendered on demand from (seed, split, index); lists follow PASCAL-5i's construction
rule (an image is listed for a class it shows with enough pixels; training lists drop images
holding any held-out class).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fssam2.errors import InputError

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SHAPES = ("disc", "square", "triangle", "diamond", "cross")
BOUNDARY = 255


@dataclass(frozen=True)
class SyntheticBenchmark:
    """The generator; identical arguments give identical images, lists and episodes."""

    num_classes: int = 20  # classes 1..num_classes, split into folds like PASCAL-5i
    num_folds: int = 4  # fold f holds out classes f*n+1..(f+1)*n, n = num_classes / num_folds
    image_size: int = 128  # side of the square rendered images
    pool_sizes: tuple[int, int, int] = (1200, 240, 480)  # images rendered for train / val / test
    min_pixels: int = 48  # a class counts as present with at least this many pixels
    seed: int = 0  # seed of the rendered images

    def __post_init__(self) -> None:
        if self.num_classes % self.num_folds:
            raise InputError(f"num_classes={self.num_classes} must be divisible by num_folds={self.num_folds}.")

    # classes and folds
    def fold_classes(self, fold: int) -> list[int]:
        """The 1-based classes held out in `fold`."""
        if not 0 <= fold < self.num_folds:
            raise InputError(f"data.fold={fold} is out of range: use 0..{self.num_folds - 1}.")
        n = self.num_classes // self.num_folds
        return list(range(fold * n + 1, fold * n + n + 1))

    def split_classes(self, split: str, fold: int) -> list[int]:
        held_out = self.fold_classes(fold)
        if split == "train":
            return [c for c in range(1, self.num_classes + 1) if c not in held_out]
        return held_out

    def appearance(self, class_id: int) -> tuple[float, str, int]:
        """(hue in [0, 1), shape, pattern) of a class; golden-ratio hues interleave the folds."""
        hue = ((class_id - 1) * 0.61803398875) % 1.0
        return hue, SHAPES[(class_id - 1) % len(SHAPES)], (class_id - 1) // len(SHAPES) % 2

    # rendering
    def render(self, split: str, index: int, top_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Image [S, S, 3] uint8 RGB and label map [S, S] uint8 of image `index` of `split`;
        `top_class` makes the object drawn last (never occluded) of that class."""
        background, objects = self._layout(split, index, top_class)
        s = self.image_size
        noise = np.random.default_rng((self.seed, SPLIT_CODES[split], index, 1))
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        level, gx, gy = background
        image = np.repeat((level + gx * xx + gy * yy)[..., None], 3, axis=2) + noise.normal(0, 12, (s, s, 3))
        stripes = (((xx + yy) * s).astype(int) // 4) % 2 == 0
        for (class_id, _, color), mask in zip(objects, self._masks(objects), strict=True):
            shade = np.where(stripes[mask], 1.0, 0.55)[:, None] if self.appearance(class_id)[2] else 1.0
            image[mask] = color * shade + noise.normal(0, 6, (int(mask.sum()), 3))
        return np.clip(image, 0, 255).astype(np.uint8), self._label(objects)

    def _layout(self, split: str, index: int, top_class: int | None = None) -> tuple[tuple[float, float, float], list]:
        """Background gradient and, per object, (class, polygon(s), RGB colour)."""
        rng = np.random.default_rng((self.seed, SPLIT_CODES[split], index))
        background = (rng.uniform(70, 150), rng.uniform(-40, 40), rng.uniform(-40, 40))
        objects = []
        classes = rng.choice(np.arange(1, self.num_classes + 1), int(rng.integers(2, 4)), replace=False).tolist()
        if top_class is not None:
            classes = [c for c in classes if c != top_class][: len(classes) - 1] + [top_class]
        for class_id in classes:
            hue, shape, _ = self.appearance(int(class_id))
            polygons = self._polygons(rng, shape)
            hue = (hue + rng.uniform(-0.015, 0.015)) % 1.0
            color = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))) * 255
            objects.append((int(class_id), polygons, color))
        return background, objects

    def _polygons(self, rng: np.random.Generator, shape: str) -> list[np.ndarray]:
        s = self.image_size
        r = rng.uniform(0.12, 0.25) * s
        cx, cy = rng.uniform(r, s - r, 2)
        angle = rng.uniform(0, 2 * np.pi)
        if shape == "cross":
            bars = []
            for a in (angle, angle + np.pi / 2):
                d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
                corners = ((-1, -1), (1, -1), (1, 1), (-1, 1))
                bars.append(np.array([(cx, cy) + u * r * d + v * r / 3 * n for u, v in corners]))
            return bars
        corners, stretch = {"disc": (32, 1.0), "square": (4, 1.0), "triangle": (3, 1.0), "diamond": (4, 0.6)}[shape]
        a = angle + np.arange(corners) * 2 * np.pi / corners
        return [np.stack([cx + r * np.cos(a), cy + r * stretch * np.sin(a)], axis=1)]

    def _masks(self, objects: list) -> list[np.ndarray]:
        masks = []
        for _, polygons, _ in objects:
            canvas = np.zeros((self.image_size, self.image_size), np.uint8)
            for polygon in polygons:  # one call each: fillPoly would XOR overlapping polygons
                cv2.fillPoly(canvas, [polygon.round().astype(np.int32)], 1)
            masks.append(canvas.astype(bool))
        return masks

    def _label(self, objects: list) -> np.ndarray:
        label = np.zeros((self.image_size, self.image_size), np.uint8)
        for (class_id, _, _), mask in zip(objects, self._masks(objects), strict=True):
            label[mask] = class_id
        edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        label[edges & (label > 0)] = BOUNDARY
        return label

    # lists, in the published format's terms
    @cached_property
    def _presence(self) -> dict[str, list[dict[int, int]]]:
        """Per split, per image: 1-based class -> pixel count."""
        out = {}
        for split, size in zip(SPLIT_CODES, self.pool_sizes, strict=True):
            counts = []
            for i in range(size):
                label = self._label(self._layout(split, i)[1])
                values, freq = np.unique(label, return_counts=True)
                counts.append({int(v): int(n) for v, n in zip(values, freq, strict=True) if 0 < v < BOUNDARY})
            out[split] = counts
        return out

    def image_id(self, split: str, index: int) -> str:
        return f"{split}_{index:05d}"

    def parse_id(self, image_id: str) -> tuple[str, int]:
        split, _, index = image_id.rpartition("_")
        return split, int(index)

    def read(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Image and label map of an image id, as a dataset reader returns them."""
        return self.render(*self.parse_id(image_id))

    def present(self, image_id: str) -> list[int]:
        """1-based classes with at least `min_pixels` pixels in the image."""
        split, index = self.parse_id(image_id)
        return sorted(c for c, n in self._presence[split][index].items() if n >= self.min_pixels)

    def lists(self, split: str, fold: int) -> tuple[list[str], dict[int, list[str]]]:
        """The split's data list and class-file dict (1-based class -> image ids)."""
        classes = self.split_classes(split, fold)
        held_out = set(self.fold_classes(fold))
        images, by_class = [], {c: [] for c in classes}
        for index in range(len(self._presence[split])):
            image_id = self.image_id(split, index)
            present = self.present(image_id)
            if split == "train" and held_out & set(self._presence[split][index]):
                continue
            listed = [c for c in present if c in by_class]
            if listed:
                images.append(image_id)
                for c in listed:
                    by_class[c].append(image_id)
        return images, by_class


# The benchmark written in the on-disk layouts of the real ones (for tests and `make reproduce` smoke runs).
def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_pascal_layout(root: str | Path, bench: SyntheticBenchmark) -> dict[str, list[str]]:
    """VOC2012/JPEGImages/<id>.jpg and VOC2012/SegmentationClassAug/<id>.png (0..20, 255 boundary);
    returns the train / val image ids. Needs a 20-class benchmark."""
    voc = Path(root) / "VOC2012"
    ids: dict[str, list[str]] = {}
    for split, code in (("train", "train"), ("val", "test")):
        ids[split] = [f"{2007 + SPLIT_CODES[code]}_{i:06d}" for i in range(bench.pool_sizes[SPLIT_CODES[code]])]
        for i, image_id in enumerate(ids[split]):
            image, label = bench.render(code, i)
            _save(image, voc / "JPEGImages" / f"{image_id}.jpg")
            _save(label, voc / "SegmentationClassAug" / f"{image_id}.png")
    return ids


def write_coco_layout(root: str | Path, bench: SyntheticBenchmark) -> dict[str, list[str]]:
    """COCO2014/{train2014,val2014}/<id>.jpg and COCO2014/annotations/{train2014,val2014}/<id>.png
    (values 1..80, no boundary); returns the train / val image ids. Needs an 80-class benchmark."""
    base = Path(root) / "COCO2014"
    ids: dict[str, list[str]] = {}
    for split, code in (("train", "train"), ("val", "test")):
        sub = f"{split}2014"
        ids[split] = [f"COCO_{sub}_{i:012d}" for i in range(bench.pool_sizes[SPLIT_CODES[code]])]
        for i, image_id in enumerate(ids[split]):
            image, label = bench.render(code, i)
            label[label == BOUNDARY] = 0
            _save(image, base / sub / f"{image_id}.jpg")
            _save(label, base / "annotations" / sub / f"{image_id}.png")
    return ids


def write_fss_layout(root: str | Path, bench: SyntheticBenchmark, categories: dict[str, list[str]]) -> None:
    """FSS-1000/<category>/<n>.jpg and <n>.png (255 = foreground), n = 1..10, for the categories
    of each split ({"train": [...], "val": [...], "test": [...]}); a category is a class."""
    for split, names in categories.items():
        for k, name in enumerate(names):
            class_id = k % bench.num_classes + 1
            for n in range(1, 11):
                image, label = bench.render(split, k * 10 + n, top_class=class_id)
                _save(image, Path(root) / "FSS-1000" / name / f"{n}.jpg")
                _save(np.where(label == class_id, 255, 0).astype(np.uint8), Path(root) / "FSS-1000" / name / f"{n}.png")
