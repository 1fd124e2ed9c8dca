"""Shapes and textures for the synthetic world: what an object looks like, drawn with no files.

A `Figure` is one object: an outline (a named shape or a random star-shaped polygon) filled with
a pattern of two colours. Patterns are drawn in the object's own frame, so they turn and move with
it. The shape and texture families of the synthetic benchmark take their classes from the named
shapes and patterns; the pretraining world (`fssam2.synthetic.VariedVideo`) draws from all of them
with random parameters and random colours.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Outline = list[tuple[np.ndarray, bool]]  # (polygon [n, 2] in unit coordinates, True = fill / False = cut)


def _ngon(n: int, ratio: float = 1.0, phase: float = 0.0) -> np.ndarray:
    a = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(a), ratio * np.sin(a)], axis=1)


def _star(points: int, inner: float) -> np.ndarray:
    a = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, np.float64)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y - 2.5], axis=1) / 16.5


_W = 0.33  # half width of a cross's bars
# Named outlines, radius about 1. The shape family's 20 classes are the first 20 (in this order).
SHAPE_OUTLINES: dict[str, Outline] = {
    "disc": [(_ngon(40), True)],
    "ellipse": [(_ngon(40, 0.5), True)],
    "square": [(_ngon(4, phase=np.pi / 4), True)],
    "bar": [(_poly((-1, -0.35), (1, -0.35), (1, 0.35), (-1, 0.35)), True)],
    "triangle": [(_ngon(3, phase=-np.pi / 2), True)],
    "diamond": [(_ngon(4, 0.6), True)],
    "pentagon": [(_ngon(5, phase=-np.pi / 2), True)],
    "hexagon": [(_ngon(6), True)],
    "star5": [(_star(5, 0.42), True)],
    "star4": [(_star(4, 0.35), True)],
    "gear": [(_star(8, 0.72), True)],
    "cross": [
        (
            _poly(
                (-_W, -1),
                (_W, -1),
                (_W, -_W),
                (1, -_W),
                (1, _W),
                (_W, _W),
                (_W, 1),
                (-_W, 1),
                (-_W, _W),
                (-1, _W),
                (-1, -_W),
                (-_W, -_W),
            ),
            True,
        )
    ],  # fmt: skip
    "ring": [(_ngon(40), True), (_ngon(40) * 0.55, False)],
    "crescent": [(_ngon(40), True), (_ngon(40) * 0.85 + (0.45, 0.0), False)],
    "semicircle": [(np.concatenate([_ngon(40)[:21] - (0, 0.4)]), True)],
    "arrow": [(_poly((-1, -0.3), (0.2, -0.3), (0.2, -0.75), (1, 0), (0.2, 0.75), (0.2, 0.3), (-1, 0.3)), True)],
    "ell": [(_poly((-0.8, -0.9), (-0.25, -0.9), (-0.25, 0.4), (0.8, 0.4), (0.8, 0.9), (-0.8, 0.9)), True)],
    "tee": [
        (
            _poly(
                (-0.9, -0.9),
                (0.9, -0.9),
                (0.9, -0.4),
                (0.25, -0.4),
                (0.25, 0.9),
                (-0.25, 0.9),
                (-0.25, -0.4),
                (-0.9, -0.4),
            ),
            True,
        )
    ],  # fmt: skip
    "heart": [(_heart(), True)],
    "frame": [(_ngon(4, phase=np.pi / 4), True), (_ngon(4, phase=np.pi / 4) * 0.5, False)],
    "hourglass": [(_poly((-0.8, -1), (0.8, -1), (0.12, 0), (0.8, 1), (-0.8, 1), (-0.12, 0)), True)],
    "trefoil": [(_ngon(24) * 0.52 + 0.48 * np.array([np.cos(a), np.sin(a)]), True) for a in (0.0, 2.094, 4.189)],
    "trapezoid": [(_poly((-1, 0.6), (1, 0.6), (0.45, -0.6), (-0.45, -0.6)), True)],
    "chevron": [(_poly((-1, -0.2), (0, -0.9), (1, -0.2), (1, 0.4), (0, -0.3), (-1, 0.4)), True)],
}


def random_outline(rng: np.random.Generator) -> Outline:
    """A random star-shaped polygon of 5-9 corners (radii 0.45-1), never one of the named shapes."""
    n = int(rng.integers(5, 10))
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.45, 1.0, n)
    return [(np.stack([r * np.cos(a), r * np.sin(a)], axis=1), True)]


def any_shape(rng: np.random.Generator) -> str:
    """The name of a named outline, drawn uniformly."""
    return list(SHAPE_OUTLINES)[int(rng.integers(len(SHAPE_OUTLINES)))]


def any_outline(rng: np.random.Generator, random_share: float) -> Outline:
    """A random polygon with probability `random_share`, else a named outline drawn uniformly."""
    return random_outline(rng) if rng.random() < random_share else SHAPE_OUTLINES[any_shape(rng)]


# A pattern maps local coordinates (u, v in pixels, centred on the object and turned with it; radius
# r of the object) and its parameters to the weight of the first colour, in [0, 1].
Pattern = Callable[[np.ndarray, np.ndarray, float, np.ndarray], np.ndarray]


def _stripes(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (np.floor(u / p[0]) % 2).astype(np.float32)


def _checker(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return ((np.floor(u / p[0]) + np.floor(v / p[0])) % 2).astype(np.float32)


def _dots(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    du, dv = (u / p[0]) % 1 - 0.5, (v / p[0]) % 1 - 0.5
    return (np.hypot(du, dv) < 0.3).astype(np.float32)


def _grid(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (((u % p[0]) < 1.5) | ((v % p[0]) < 1.5)).astype(np.float32)


def _rings(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (np.floor(np.hypot(u, v) / p[0]) % 2).astype(np.float32)


def _sectors(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (np.floor((np.arctan2(v, u) + np.pi) / (2 * np.pi) * 2 * round(float(p[1]))) % 2).astype(np.float32)


def _zigzag(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    tri = np.abs((u / p[0]) % 2 - 1) * p[0]
    return (np.floor((v + tri) / p[0]) % 2).astype(np.float32)


def _waves(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (np.sin(2 * np.pi * u / p[0] + 2.0 * np.sin(2 * np.pi * v / (3 * p[0]))) > 0).astype(np.float32)


def _hatch(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    a, b = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
    return (((a % p[0]) < 1.5) | ((b % p[0]) < 1.5)).astype(np.float32)


def _ramp(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return np.clip(0.5 + u / (2 * r), 0, 1).astype(np.float32)


def _glow(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return np.clip(1 - np.hypot(u, v) / r, 0, 1).astype(np.float32)


def _halves(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (u > 0).astype(np.float32)


def _bricks(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    row = np.floor(v / p[0])
    shifted = u + (row % 2) * p[0]
    return (((v % p[0]) < 1.3) | ((shifted % (2 * p[0])) < 1.3)).astype(np.float32)


def _squares(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (np.floor(np.maximum(np.abs(u), np.abs(v)) / p[0]) % 2).astype(np.float32)


def _spiral(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    turn = (np.arctan2(v, u) + np.pi) / (2 * np.pi)
    return (np.floor(np.hypot(u, v) / p[0] + turn) % 2).astype(np.float32)


def _band(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (np.abs(v) < 0.25 * r).astype(np.float32)


def _rim(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return (np.hypot(u, v) < 0.55 * r).astype(np.float32)


def _plaid(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return 0.5 * ((np.floor(u / p[0]) % 2) + (np.floor(v / (1.7 * p[0])) % 2)).astype(np.float32)


def _solid(u: np.ndarray, v: np.ndarray, r: float, p: np.ndarray) -> np.ndarray:
    return np.ones_like(u, np.float32)


# name -> (pattern, range of its period in pixels, range of its second parameter). The texture
# family's 20 classes are the first 20 (in this order).
PATTERNS: dict[str, tuple[Pattern, tuple[float, float], tuple[float, float]]] = {
    "stripes": (_stripes, (3.5, 5.0), (0, 0)),
    "wide_stripes": (_stripes, (7.0, 9.0), (0, 0)),
    "checker": (_checker, (3.5, 5.0), (0, 0)),
    "dots": (_dots, (5.5, 7.0), (0, 0)),
    "grid": (_grid, (5.0, 6.5), (0, 0)),
    "rings": (_rings, (3.5, 5.0), (0, 0)),
    "sectors": (_sectors, (1, 1), (3, 5)),
    "zigzag": (_zigzag, (4.0, 5.5), (0, 0)),
    "waves": (_waves, (5.0, 6.5), (0, 0)),
    "hatch": (_hatch, (4.5, 6.0), (0, 0)),
    "ramp": (_ramp, (1, 1), (0, 0)),
    "glow": (_glow, (1, 1), (0, 0)),
    "halves": (_halves, (1, 1), (0, 0)),
    "bricks": (_bricks, (5.0, 6.5), (0, 0)),
    "squares": (_squares, (3.5, 5.0), (0, 0)),
    "spiral": (_spiral, (5.0, 6.5), (0, 0)),
    "band": (_band, (1, 1), (0, 0)),
    "rim": (_rim, (1, 1), (0, 0)),
    "plaid": (_plaid, (4.0, 5.5), (0, 0)),
    "solid": (_solid, (1, 1), (0, 0)),
}


def any_pattern(rng: np.random.Generator) -> str:
    """The name of a pattern, drawn uniformly."""
    return list(PATTERNS)[int(rng.integers(len(PATTERNS)))]


def random_params(rng: np.random.Generator, pattern: str) -> tuple[float, float]:
    _, period, second = PATTERNS[pattern]
    return float(rng.uniform(*period)), float(rng.uniform(*second))


def random_colors(rng: np.random.Generator) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Two colours of a pattern: any hue; the second is a darker or lighter shade of the first, or
    another hue."""
    hue = rng.uniform(0, 1)
    first = hsv(hue, rng.uniform(0.35, 1.0), rng.uniform(0.55, 1.0))
    if rng.random() < 0.5:
        second = hsv(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.35, 1.0), rng.uniform(0.15, 0.45))
    else:
        second = hsv(rng.uniform(0, 1), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    return first, second


def hsv(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    """(R, G, B) in 0..255 of a colour given in HSV (hue taken modulo 1)."""
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return red * 255, green * 255, blue * 255


@dataclass(frozen=True)
class Figure:
    """One drawn object of the varied world: an outline filled with a two-colour pattern."""

    label: int  # value written in the label map (0: clutter, part of the background)
    outline: tuple[tuple[tuple[tuple[float, float], ...], bool], ...]  # polygons in unit coordinates, fill / cut
    center: tuple[float, float]  # (x, y) in pixels
    radius: float  # pixels
    angle: float  # radians
    stretch: float  # squash of the minor axis
    pattern: str  # a key of PATTERNS
    params: tuple[float, float]  # the pattern's period (pixels) and second parameter
    colors: tuple[tuple[float, float, float], tuple[float, float, float]]  # first and second colour, RGB 0..255

    @staticmethod
    def frozen(outline: Outline) -> tuple[tuple[tuple[tuple[float, float], ...], bool], ...]:
        """An outline as nested tuples (hashable, so a Figure stays a frozen value)."""
        return tuple((tuple((float(x), float(y)) for x, y in poly), fill) for poly, fill in outline)

    def _rotation(self) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.array([[c, -s], [s, c]])

    def mask(self, size: int) -> np.ndarray:
        canvas = np.zeros((size, size), np.uint8)
        scale = np.array([self.radius, self.radius * self.stretch])
        for poly, fill in self.outline:
            points = (np.array(poly) * scale) @ self._rotation().T + self.center
            cv2.fillPoly(canvas, [points.round().astype(np.int32)], 1 if fill else 0)
        return canvas.astype(bool)

    def pixels(self, xx: np.ndarray, yy: np.ndarray, noise: np.random.Generator) -> np.ndarray:
        """Colours [n, 3] of the pixels at (xx, yy), [n] each."""
        dx, dy = xx - self.center[0], yy - self.center[1]
        c, s = np.cos(self.angle), np.sin(self.angle)
        u, v = dx * c + dy * s, -dx * s + dy * c
        pattern = PATTERNS[self.pattern][0]
        weight = pattern(u, v, self.radius, np.array(self.params))[:, None]
        first, second = (np.array(color, np.float32) for color in self.colors)
        return weight * first + (1 - weight) * second + noise.normal(0, 6, (len(xx), 3))
