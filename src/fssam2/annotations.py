"""Weak support annotations drawn from a support's mask: points, a box, a scribble.

Settings follow SANSA's evaluation (github ClaudiaCuttano/SANSA, util/promptable_utils.py):
- points: min(20, area) foreground pixels (training: 1 .. min(20, area) of them);
- box: the 4-connected components' boxes, each merged into the first earlier box it overlaps; the
  largest merged box, as SAM takes a box: two corner points labelled 2 and 3;
- scribble: free-form strokes (Yu et al., "Free-Form Image Inpainting with Gated Convolution",
  VRP-SAM's presets) started at foreground pixels, each stroke moved once, then cut to the mask;
  its pixels are positive points. Evaluation takes the preset and the stroke count SANSA's fixed
  seed gives (`random.Random(321)`); training draws both.
Every draw comes from the generator it is given: `annotation_rng` derives it from the episode
(seed, index, epoch, support position), so no worker count or process changes an annotation.
An empty mask gives no prompt at all: a method then takes the (empty) mask as it is.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from fssam2.errors import InputError

SupportAnnotation = Literal["mask", "points", "box", "scribble", "mixed"]
Kind = Literal["mask", "points", "box", "scribble"]  # what one support shows
KINDS: tuple[Kind, ...] = get_args(Kind)
MAX_POINTS = 20  # SANSA's points and strokes per support
BOX_LABELS = (2, 3)  # SAM's labels of a box's top-left and bottom-right corners
PAD_LABEL = -1  # SAM's label of a padding point
SCRIBBLE_EVAL_SEED = 321  # SANSA's seed of the evaluation preset and stroke count
ANNOTATION_STREAM = 7  # keeps annotation draws apart from the protocol's and augmentation's


@dataclass(frozen=True)
class StrokePreset:
    """How one free-form stroke is drawn, in pixels of the image it is drawn on."""

    vertices: tuple[int, int]  # number of vertices, drawn in [low, high)
    max_head_speed: float  # longest segment
    head_acceleration: tuple[float, float]  # largest change of (segment length, angle) per vertex
    brush_width: tuple[float, float]  # stroke width, drawn in [low, high)
    move_ratio: float  # share of vertices moved when the stroke is moved
    max_point_move: float  # how far each of those moves
    max_init_speed: float  # scale of the whole stroke's shift


STROKE_PRESETS: dict[str, StrokePreset] = {
    "rand_curve": StrokePreset((10, 30), 20, (15, 0.5), (3, 10), 0.5, 3, 6),
    "rand_curve_small": StrokePreset((6, 22), 12, (8, 0.5), (2.5, 5), 0.5, 1.5, 3),
}


def check_support_annotation(value: object, option: str = "data.support_annotation") -> None:
    """One-line InputError unless `value` is one of SupportAnnotation."""
    if value not in get_args(SupportAnnotation):
        raise InputError(
            f"{option}={value!r} is not one of {', '.join(get_args(SupportAnnotation))}: pick one of those."
        )


def annotation_rng(seed: int, index: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of the annotation of support `position` of episode `index` in `epoch`."""
    return np.random.default_rng([ANNOTATION_STREAM, seed, index, epoch + 1, position])  # evaluation epoch is -1


def support_kind(annotation: SupportAnnotation, rng: np.random.Generator) -> Kind:
    """What a support shows under `annotation`: itself, or (mixed) one kind drawn uniformly."""
    if annotation == "mixed":
        return KINDS[int(rng.integers(len(KINDS)))]
    return annotation


def sample_points(mask: np.ndarray, rng: np.random.Generator, train: bool) -> np.ndarray:
    """Distinct foreground pixels of `mask` [H, W] bool as (x, y) rows [P, 2]: min(20, area) of
    them, or in training 1 .. min(20, area) (drawn)."""
    ys, xs = np.nonzero(mask)
    cap = min(MAX_POINTS, len(xs))
    if cap == 0:
        return np.zeros((0, 2), np.float32)
    n = int(rng.integers(1, cap + 1)) if train else cap
    pick = np.sort(rng.choice(len(xs), size=n, replace=False))
    return np.stack([xs[pick], ys[pick]], 1).astype(np.float32)


def _overlap(a: list[int], b: list[int]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def box_of(mask: np.ndarray) -> np.ndarray | None:
    """The box [x0, y0, x1, y1] (x1, y1 one past the last pixel) SANSA prompts with: the
    4-connected components' boxes in raster order, each merged into the first earlier box it
    overlaps, the largest of those by area (the first on a tie). None for an empty mask."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    merged: list[list[int]] = []
    for x, y, w, h, _area in stats[1:n].tolist():  # label 0 is the background
        box = [x, y, x + w, y + h]
        for i, held in enumerate(merged):
            if _overlap(box, held):
                merged[i] = [min(box[0], held[0]), min(box[1], held[1]), max(box[2], held[2]), max(box[3], held[3])]
                break
        else:
            merged.append(box)
    if not merged:
        return None
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in merged]
    return np.asarray(merged[int(np.argmax(areas))], np.float32)


def _stroke(start: np.ndarray, preset: StrokePreset, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One stroke's vertices [V, 2] (x, y), already moved once, and its brush width."""
    width = int(rng.integers(math.floor(preset.brush_width[0]), math.ceil(preset.brush_width[1])))
    vertices = [start.astype(np.float64)]
    angle, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0, preset.max_head_speed)
    for _ in range(int(rng.integers(*preset.vertices))):
        speed = float(np.clip(speed + rng.uniform(-1, 1) * preset.head_acceleration[0], 0, preset.max_head_speed))
        angle += rng.uniform(-1, 1) * preset.head_acceleration[1]
        vertices.append(vertices[-1] + speed * np.array([math.sin(angle), math.cos(angle)]))
    path = np.stack(vertices)
    shift, heading = abs(rng.normal(0, preset.max_init_speed / 2)), rng.uniform(0, 2 * math.pi)
    path += np.array([int(shift * math.cos(heading)), int(shift * math.sin(heading))])
    moved = rng.permutation(len(path))[: int(len(path) * preset.move_ratio)]
    step = math.floor(preset.max_point_move)
    if step > 0:
        path[moved] += rng.integers(-step, step, size=(len(moved), 2))
    return path, width


def scribble_of(mask: np.ndarray, rng: np.random.Generator, train: bool) -> np.ndarray:
    """A scribble on `mask` [H, W] bool as its foreground pixels (x, y) [P, 2]: strokes started at
    distinct foreground pixels, drawn with round joints, cut to the mask. When the moved strokes
    miss the mask altogether, their start pixels stand in (they are foreground)."""
    area = int(mask.sum())
    if area == 0:
        return np.zeros((0, 2), np.float32)
    names = list(STROKE_PRESETS)
    if train:
        name, strokes = names[int(rng.integers(len(names)))], int(rng.integers(1, min(MAX_POINTS, area) + 1))
    else:
        name = random.Random(SCRIBBLE_EVAL_SEED).choices(names, weights=[0.5, 0.5], k=1)[0]
        strokes = random.Random(SCRIBBLE_EVAL_SEED).randint(1, min(MAX_POINTS, area))
    starts = sample_points(mask, rng, train=False)[:strokes]
    h, w = mask.shape
    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for start in starts:
        path, width = _stroke(start, STROKE_PRESETS[name], rng)
        draw.line([tuple(p) for p in path.tolist()], fill=1, width=width)
        r = width // 2 - 1
        for x, y in path.tolist():
            draw.ellipse((x - r, y - r, x + r, y + r), fill=1)
    ys, xs = np.nonzero(np.asarray(canvas, dtype=bool) & mask)
    if len(xs) == 0:
        return starts
    return np.stack([xs, ys], 1).astype(np.float32)


def annotate(mask: np.ndarray, kind: Kind, rng: np.random.Generator, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The prompt a support of `kind` shows for `mask` [H, W] bool: points (x, y) [P, 2] float32
    in the mask's pixels and their labels [P] int64 (1 foreground, 2 / 3 box corners). "mask" and
    an empty mask give P = 0: the mask itself is the annotation."""
    if kind == "mask" or not mask.any():
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    if kind == "box":
        box = box_of(mask)
        assert box is not None, "a non-empty mask has a component"
        return box.reshape(2, 2), np.asarray(BOX_LABELS, np.int64)
    points = sample_points(mask, rng, train) if kind == "points" else scribble_of(mask, rng, train)
    return points, np.ones(len(points), np.int64)


def pad_prompts(coords: list[np.ndarray], labels: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """N prompts of P_i points -> coords [N, P, 2] float32 and labels [N, P] int64, P = max P_i,
    padded with PAD_LABEL points at (0, 0)."""
    p = max([len(c) for c in coords] + [0])
    out_coords = torch.zeros(len(coords), p, 2)
    out_labels = torch.full((len(coords), p), PAD_LABEL, dtype=torch.int64)
    for i, (c, lab) in enumerate(zip(coords, labels, strict=True)):
        out_coords[i, : len(c)] = torch.as_tensor(c)
        out_labels[i, : len(lab)] = torch.as_tensor(lab)
    return out_coords, out_labels
