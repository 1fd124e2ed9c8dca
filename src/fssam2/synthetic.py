"""Procedurally generated data needing no files: a few-shot benchmark laid out like PASCAL-5i,
and synthetic videos for pretraining a tracker (`SyntheticVideo`, hue-coded blobs; `VariedVideo`,
the varied world).

Each benchmark image shows 2-3 objects of distinct classes on a textured grey background, with a
label map (0 = background, 1..C = class, 255 = a thin ignored boundary, as in SegmentationClassAug).
What a class is depends on the family (FAMILIES). In the hue family a class is a hue band, a shape
and a fill (solid or striped); its instances vary in hue within the band, saturation, brightness,
size, elongation, stripe period and angle, and hues are spread so that every fold's held-out classes
sit between training hues. In the shape family a class is an outline, in the texture family a
pattern (`fssam2.looks`), each in random colours over small unlabelled clutter. Either way matching
a support instance pixel for pixel does not decide the class: a model must learn what it keeps.
Objects of other classes stay in the query as distractors, so the support decides what to segment.
Images are rendered on demand from (seed, split, index); lists follow PASCAL-5i's construction
rule (an image is listed for a class it shows with enough pixels; training lists drop images
holding any held-out class).
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fssam2.errors import InputError
from fssam2.looks import (
    PATTERNS,
    SHAPE_OUTLINES,
    Figure,
    Outline,
    any_outline,
    any_pattern,
    any_shape,
    random_colors,
    random_params,
)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# What defines a class of the benchmark: a hue band (with a shape and a fill), a shape (any colour
# and fill), or a texture (any colour and shape).
FAMILIES = ("hue", "shape", "texture")
FAMILY_CLASSES = 20  # the shape and texture families each have 20 classes
FILLS = ("solid", "stripes", "checker", "dots", "ramp", "glow")  # fills of the shape family's objects
RANDOM_OUTLINE_SHARE = 0.45  # share of the varied world's outlines that are random polygons, not named shapes
SHAPES = ("disc", "square", "triangle", "diamond", "cross")
BOUNDARY = 255
# Corners and minor/major axis ratio of each shape; a cross is two bars.
_OUTLINES = {"disc": (32, 1.0), "square": (4, 1.0), "triangle": (3, 1.0), "diamond": (4, 0.6)}


@dataclass(frozen=True)
class Blob:
    """One drawn object: its label value, outline and look."""

    label: int  # value written in the label map
    shape: str  # one of SHAPES
    center: tuple[float, float]  # (x, y) in pixels
    radius: float  # pixels, centre to corner
    angle: float  # radians
    stretch: float  # extra squash of the minor axis, 1 = the shape's own proportions
    color: tuple[float, float, float]  # RGB in 0..255
    stripes: tuple[float, float, float] | None  # (period px, angle rad, shade) of a striped fill; None = solid

    def polygons(self) -> list[np.ndarray]:
        """Outline polygons [n, 2] in (x, y) pixels."""
        (cx, cy), r = self.center, self.radius
        rot = np.array([[np.cos(self.angle), -np.sin(self.angle)], [np.sin(self.angle), np.cos(self.angle)]])
        if self.shape == "cross":
            bar = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64) * (r, r / 3 * self.stretch)
            return [(bar @ turn.T @ rot.T) + (cx, cy) for turn in (np.eye(2), np.array([[0, -1], [1, 0]]))]
        corners, ratio = _OUTLINES[self.shape]
        a = np.arange(corners) * 2 * np.pi / corners
        local = np.stack([r * np.cos(a), r * ratio * self.stretch * np.sin(a)], axis=1)
        return [local @ rot.T + (cx, cy)]

    def pixels(self, xx: np.ndarray, yy: np.ndarray, noise: np.random.Generator) -> np.ndarray:
        """Colours [n, 3] of the pixels at (xx, yy), [n] each."""
        shade: float | np.ndarray = 1.0
        if self.stripes is not None:
            period, angle, dark = self.stripes
            phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
            shade = np.where(np.floor(phase) % 2 == 0, 1.0, dark)[:, None]
        return np.array(self.color) * shade + noise.normal(0, 6, (len(xx), 3))

    def mask(self, size: int) -> np.ndarray:
        canvas = np.zeros((size, size), np.uint8)
        for polygon in self.polygons():  # one call each: fillPoly would XOR overlapping polygons
            cv2.fillPoly(canvas, [polygon.round().astype(np.int32)], 1)
        return canvas.astype(bool)


def paint(
    background: tuple[float, float, float], blobs: Sequence[Blob | Figure], size: int, noise: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image [S, S, 3] uint8 of `blobs` drawn in order over a gradient (level, x slope, y slope),
    and each blob's visible mask (later blobs cover earlier ones)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    level, gx, gy = background
    image = np.repeat((level + (gx * xx + gy * yy) / size)[..., None], 3, axis=2) + noise.normal(0, 12, (size, size, 3))
    masks = [blob.mask(size) for blob in blobs]
    for blob, mask in zip(blobs, masks, strict=True):
        image[mask] = blob.pixels(xx[mask], yy[mask], noise)
    visible = []
    for i, mask in enumerate(masks):
        covered = np.zeros_like(mask)
        for later in masks[i + 1 :]:
            covered |= later
        visible.append(mask & ~covered)
    return np.clip(image, 0, 255).astype(np.uint8), visible


def label_map(blobs: Sequence[Blob | Figure], size: int) -> np.ndarray:
    """[S, S] uint8: each blob's label where it is visible, 255 on the boundaries between regions."""
    label = np.zeros((size, size), np.uint8)
    for blob in blobs:
        label[blob.mask(size)] = blob.label
    edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    label[edges & (label > 0)] = BOUNDARY
    return label


def random_background(rng: np.random.Generator) -> tuple[float, float, float]:
    return rng.uniform(70, 150), rng.uniform(-40, 40), rng.uniform(-40, 40)


def random_color(rng: np.random.Generator, hue: float) -> tuple[float, float, float]:
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0))
    return as_rgb(float(v) * 255 for v in rgb)


def as_rgb(values: Iterable[float]) -> tuple[float, float, float]:
    """Three channel values as an (R, G, B) tuple."""
    red, green, blue = values
    return red, green, blue


def random_stripes(rng: np.random.Generator) -> tuple[float, float, float]:
    return rng.uniform(3.0, 6.0), rng.uniform(0, np.pi), rng.uniform(0.45, 0.65)


def figure(
    rng: np.random.Generator, label: int, shape: str | Outline, pattern: str, radius: float, size: int
) -> Figure:
    """A Figure of a named shape (or an outline) and pattern, placed, turned, squashed and coloured at random."""
    outline = SHAPE_OUTLINES[shape] if isinstance(shape, str) else shape
    low = min(radius, size / 2)  # a region larger than the image is centred anywhere in it
    return Figure(
        label=label,
        outline=Figure.frozen(outline),
        center=(float(rng.uniform(low, size - low)), float(rng.uniform(low, size - low))),
        radius=float(radius),
        angle=float(rng.uniform(0, 2 * np.pi)),
        stretch=float(rng.uniform(0.8, 1.0)),
        pattern=pattern,
        params=random_params(rng, pattern),
        colors=random_colors(rng),
    )


def clutter(rng: np.random.Generator, size: int) -> Figure:
    """A small unlabelled object (label 0: background) of any look."""
    shape = any_outline(rng, 0.5)
    return figure(rng, 0, shape, any_pattern(rng), rng.uniform(0.04, 0.08) * size, size)


@dataclass(frozen=True)
class SyntheticBenchmark:
    """The generator; identical arguments give identical images, lists and episodes."""

    num_classes: int = 20  # classes 1..num_classes, split into folds like PASCAL-5i
    num_folds: int = 4  # fold f holds out classes f*n+1..(f+1)*n, n = num_classes / num_folds
    image_size: int = 128  # side of the square rendered images
    pool_sizes: tuple[int, int, int] = (1200, 240, 480)  # images rendered for train / val / test
    min_pixels: int = 48  # a class counts as present with at least this many pixels
    seed: int = 0  # seed of the rendered images
    family: str = "hue"  # what defines a class: one of FAMILIES

    def __post_init__(self) -> None:
        if self.num_classes % self.num_folds:
            raise InputError(f"num_classes={self.num_classes} must be divisible by num_folds={self.num_folds}.")
        if self.family not in FAMILIES:
            raise InputError(f"family={self.family!r} is not a class family: use one of {', '.join(FAMILIES)}.")
        if self.family != "hue" and self.num_classes > FAMILY_CLASSES:
            raise InputError(
                f"num_classes={self.num_classes} is more than the {self.family} family's {FAMILY_CLASSES} classes: "
                f"use at most {FAMILY_CLASSES}, or family='hue'."
            )

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
        background, blobs = self._layout(split, index, top_class)
        noise = np.random.default_rng((self.seed, SPLIT_CODES[split], index, 1))
        image, _ = paint(background, blobs, self.image_size, noise)
        return image, label_map(blobs, self.image_size)

    def _layout(self, split: str, index: int, top_class: int | None = None) -> tuple[tuple[float, float, float], list]:
        """Background gradient and the objects, in drawing order."""
        rng = np.random.default_rng((self.seed, SPLIT_CODES[split], index))
        background = random_background(rng)
        classes = rng.choice(np.arange(1, self.num_classes + 1), int(rng.integers(2, 4)), replace=False).tolist()
        if top_class is not None:
            classes = [c for c in classes if c != top_class][: len(classes) - 1] + [top_class]
        objects: list[Blob | Figure] = [self.instance(rng, int(c)) for c in classes]
        if self.family != "hue":  # small unlabelled clutter under the objects
            scatter: list[Blob | Figure] = [clutter(rng, self.image_size) for _ in range(int(rng.integers(0, 3)))]
            objects = scatter + objects
        return background, objects

    def instance(self, rng: np.random.Generator, class_id: int) -> Blob | Figure:
        """One object of a class: the class fixes the hue band, shape and fill (hue family), the
        shape (shape family) or the pattern (texture family); the rest varies."""
        s = self.image_size
        if self.family == "shape":
            fill = FILLS[int(rng.integers(len(FILLS)))]
            return figure(rng, class_id, list(SHAPE_OUTLINES)[class_id - 1], fill, rng.uniform(0.12, 0.26) * s, s)
        if self.family == "texture":
            return figure(rng, class_id, any_shape(rng), list(PATTERNS)[class_id - 1], rng.uniform(0.14, 0.26) * s, s)
        hue, shape, striped = self.appearance(class_id)
        r = rng.uniform(0.10, 0.26) * s
        return Blob(
            label=class_id,
            shape=shape,
            center=tuple(rng.uniform(r, s - r, 2)),
            radius=r,
            angle=rng.uniform(0, 2 * np.pi),
            stretch=rng.uniform(0.75, 1.0),
            color=random_color(rng, hue + rng.uniform(-0.03, 0.03)),
            stripes=random_stripes(rng) if striped else None,
        )

    # lists, in the published format's terms
    @cached_property
    def _presence(self) -> dict[str, list[dict[int, int]]]:
        """Per split, per image: 1-based class -> pixel count."""
        out = {}
        for split, size in zip(SPLIT_CODES, self.pool_sizes, strict=True):
            counts = []
            for i in range(size):
                label = label_map(self._layout(split, i)[1], self.image_size)
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
        images: list[str] = []
        by_class: dict[int, list[str]] = {c: [] for c in classes}
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


@dataclass(frozen=True)
class SyntheticVideo:
    """Synthetic clips for pretraining a tracker: 2-4 objects of random looks move, grow or
    shrink, turn and pass over each other. A training pair is frame 0 with one object's mask (the
    memory) and a later frame in which that object is to be found again. Distractors often copy
    the object's shape and fill in a nearby hue, or its hue in another shape, so that only the
    memory tells which object it is. Looks are drawn from the whole hue circle, not from the
    benchmark's classes. Identical arguments give identical clips.
    """

    image_size: int = 128  # side of the square frames
    seed: int = 0  # seed of the clips; pretraining and its evaluation use different seeds

    def pair(self, index: int, motion: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Clip `index`: (frame 0 [S, S, 3] uint8, the object's mask in it [S, S] bool, a later
        frame, the object's visible mask there). `motion` in [0, 1] scales how far the objects
        move, scale and turn between the two frames (0: the same layout, fresh noise)."""
        rng = np.random.default_rng((self.seed, index))
        s = self.image_size
        background = random_background(rng)
        count = int(rng.integers(2, 5))
        looks = [self._look(rng) for _ in range(count)]  # looks[0] is the tracked object
        hue, shape, stripes = looks[0]
        if count > 1 and rng.random() < 0.5:  # same shape and fill, nearby hue
            looks[1] = (hue + rng.choice([-1, 1]) * rng.uniform(0.05, 0.15), shape, stripes)
        if count > 2 and rng.random() < 0.3:  # same hue, another shape
            looks[2] = (hue + rng.uniform(-0.01, 0.01), SHAPES[(SHAPES.index(shape) + rng.integers(1, 5)) % 5], None)
        starts, ends = [], []
        for label, (hue, shape, stripes) in enumerate(looks, start=1):
            r = rng.uniform(0.10, 0.24) * s
            start = Blob(
                label=label,
                shape=shape,
                center=tuple(rng.uniform(r, s - r, 2)),
                radius=r,
                angle=rng.uniform(0, 2 * np.pi),
                stretch=rng.uniform(0.75, 1.0),
                color=random_color(rng, hue),
                stripes=stripes,
            )
            radius = r * float(np.exp(motion * rng.uniform(-0.35, 0.35)))
            shift = motion * rng.uniform(-0.35, 0.35, 2) * s
            center = tuple(np.clip(np.array(start.center) + shift, radius * 0.5, s - radius * 0.5))
            end = Blob(
                label=label,
                shape=shape,
                center=center,
                radius=radius,
                angle=start.angle + motion * rng.uniform(-0.8, 0.8),
                stretch=start.stretch,
                color=as_rgb(float(np.clip(c * (1 + motion * rng.uniform(-0.08, 0.08)), 0, 255)) for c in start.color),
                stripes=start.stripes,
            )
            starts.append(start)
            ends.append(end)
        first = starts[1:] + starts[:1]  # the tracked object whole in the memory frame
        later = [ends[i] for i in rng.permutation(count)]  # any drawing order: it may be covered
        image0, visible0 = paint(background, first, s, np.random.default_rng((self.seed, index, 1)))
        image1, visible1 = paint(background, later, s, np.random.default_rng((self.seed, index, 2)))
        mask1 = next(m for blob, m in zip(later, visible1, strict=True) if blob.label == 1)
        return image0, visible0[-1], image1, mask1

    @staticmethod
    def _look(rng: np.random.Generator) -> tuple[float, str, tuple[float, float, float] | None]:
        """(hue, shape, stripes or None) of an object."""
        return (
            rng.uniform(0, 1),
            SHAPES[int(rng.integers(len(SHAPES)))],
            random_stripes(rng) if rng.random() < 0.5 else None,
        )


@dataclass(frozen=True)
class VariedVideo:
    """Clips of a varied world for pretraining a tracker that matches more than colour: 2-5 objects,
    each a named shape or a random polygon, filled with any of the patterns in any colours, over
    clutter and, half the time, a large low-contrast region. Distractors often share the tracked
    object's shape (in another fill), or its fill and colours (in another shape). Between the two
    frames objects move, scale, turn and cover each other, and in 40% of the clips every object
    takes new colours (15%: a new pattern too, and then no distractor shares the tracked object's
    shape), so colour alone never identifies an instance. With `relocate`, that share of the clips
    also lays the objects out anew in the later frame, so where an object was tells nothing of where
    it is and only its looks can find it. Identical arguments give identical clips.
    """

    image_size: int = 128  # side of the square frames
    seed: int = 0  # seed of the clips; pretraining and its evaluation use different seeds
    relocate: float = 0.0  # share of clips whose objects move anywhere (0: the shipped tracker's world)

    def pair(self, index: int, motion: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Clip `index`: (frame 0 [S, S, 3] uint8, the object's mask in it [S, S] bool, a later
        frame, the object's visible mask there). `motion` in [0, 1] scales how far the objects
        move, scale and turn between the two frames, and how likely their looks change."""
        rng = np.random.default_rng((self.seed, index, 7))
        s = self.image_size
        background = random_background(rng)
        count = int(rng.integers(2, 6))
        shapes = [any_outline(rng, RANDOM_OUTLINE_SHARE) for _ in range(count)]
        patterns = [list(PATTERNS)[int(i)] for i in rng.integers(len(PATTERNS), size=count)]
        colors = [random_colors(rng) for _ in range(count)]
        if count > 1 and rng.random() < 0.4:  # a distractor of the same shape, another fill
            shapes[1] = shapes[0]
        if count > 2 and rng.random() < 0.4:  # a distractor of the same fill and colours, another shape
            patterns[2], colors[2] = patterns[0], colors[0]
        change = rng.random() / max(motion, 1e-6)
        recolor, repattern = change < 0.4, change < 0.15
        if repattern:
            shapes[1:] = [
                any_outline(rng, RANDOM_OUTLINE_SHARE) if shape is shapes[0] else shape for shape in shapes[1:]
            ]
        starts, ends = [], []
        for label in range(1, count + 1):
            start = figure(rng, label, shapes[label - 1], patterns[label - 1], rng.uniform(0.10, 0.24) * s, s)
            radius = start.radius * float(np.exp(motion * rng.uniform(-0.35, 0.35)))
            shift = motion * rng.uniform(-0.35, 0.35, 2) * s
            center = np.clip(np.array(start.center) + shift, radius * 0.5, s - radius * 0.5)
            pattern = any_pattern(rng) if repattern else start.pattern
            jitter = 1 + motion * rng.uniform(-0.08, 0.08)
            look = (
                random_colors(rng)
                if recolor
                else tuple(as_rgb(np.clip(np.array(c) * jitter, 0, 255)) for c in start.colors)
            )
            end = replace(
                start,
                center=(float(center[0]), float(center[1])),
                radius=radius,
                angle=start.angle + motion * float(rng.uniform(-0.8, 0.8)),
                pattern=pattern,
                params=random_params(rng, pattern) if repattern else start.params,
                colors=look,  # type: ignore[arg-type]
            )
            starts.append(start)
            ends.append(end)
        moved = np.random.default_rng((self.seed, index, 10))  # its own stream: relocate=0 draws as before
        if moved.random() < self.relocate * motion:
            ends = [
                replace(end, center=(float(c[0]), float(c[1])))
                for end in ends
                for c in [moved.uniform(end.radius * 0.5, s - end.radius * 0.5, 2)]
            ]
        scenery: list[Figure] = []
        if rng.random() < 0.5:  # a large low-contrast region of the background
            region = figure(rng, 0, any_outline(rng, RANDOM_OUTLINE_SHARE), "solid", rng.uniform(0.4, 0.7) * s, s)
            grey = float(rng.uniform(60, 170))
            tint = [grey + float(rng.uniform(-25, 25)) for _ in range(3)]
            scenery.append(replace(region, colors=(as_rgb(tint), as_rgb(tint))))
        scenery += [clutter(rng, s) for _ in range(int(rng.integers(0, 4)))]
        first = scenery + starts[1:] + starts[:1]  # the tracked object whole in the memory frame
        later = scenery + [ends[i] for i in rng.permutation(count)]  # any drawing order: it may be covered
        image0, visible0 = paint(background, first, s, np.random.default_rng((self.seed, index, 8)))
        image1, visible1 = paint(background, later, s, np.random.default_rng((self.seed, index, 9)))
        mask1 = next(m for obj, m in zip(later, visible1, strict=True) if obj.label == 1)
        return image0, visible0[-1], image1, mask1


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
