"""`fssam2 serve`: a local web page (Gradio) that segments your own images from a few examples.

    fssam2 serve                                    # the packaged tiny SAM2 + hue adapter, examples preloaded
    fssam2 serve --adapter pascal_fold0.safetensors # any method's adapter file from `fssam2 export`
    fssam2 serve --method fssam2.methods.GFSAM --sam2 sam2.1_hiera_l   # a training-free method

Supports are given on the page by a brush mask, a dragged box, object / background clicks or an
uploaded mask or prompt file; queries are uploaded images. Every mask comes from
`fssam2.Segmenter` (`set_support`, then `predict` per query), the same calls `fssam2 segment`
makes, so the page's masks equal the command's bit for bit; the zip the page offers holds them with
the supports as given and the `fssam2 segment` command that reproduces them.

`Service` is the page without the page: it reads the uploads (sizes checked before decoding),
turns what was drawn or clicked into a support, segments and packs the results; `build_page`
wires it to Gradio, which is imported only there (the optional extra `fssam2[serve]`). Safe by
default: the server binds 127.0.0.1, makes no share link unless `--share`, limits uploads,
reads no path typed into the page (only uploaded files) and runs one request at a time on its model.
"""

from __future__ import annotations

import argparse
import copy
import csv
import functools
import inspect
import io
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from fssam2.adapters import read_adapter
from fssam2.benchmarks import read_image
from fssam2.errors import InputError
from fssam2.segment import (
    ModelChoice,
    Prompt,
    Segmenter,
    choose_model,
    mark_prompt,
    overlay,
    parse_method_args,
    read_mask,
    read_prompt,
    support_prompt,
)
from fssam2.synthetic import SyntheticBenchmark

DEFAULT_ADAPTER = "fssam2_tiny_hue"  # hub.PACKAGED_ADAPTERS: served when no model is named
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_FILE_MB = 25  # per uploaded file
MAX_MEGAPIXELS = 40.0  # per image, checked from its header before it is decoded
MAX_SUPPORTS = 8
MAX_QUERIES = 32
KEEP_ZIPS = 8  # the newest zips kept in the server's folder (Gradio serves its own copy of each)
MODES = ("brush", "box", "clicks", "file")  # how the support being added is given
PAINT_AS = ("the mask", "a box around it")  # what the strokes in the editor give
EXAMPLE_CLASSES = (1, 2, 3, 4, 5)  # the hue family's classes held out of fold 0: the adapter never trained on them
EXAMPLE_QUERIES = 3
# Clicks are read on the support image enlarged to about this side: Gradio maps a click to the
# image's pixels only when it is shown no larger than its own size.
CLICK_VIEW_SIDE = 512


@dataclass
class Support:
    """One annotated example as the page holds it."""

    name: str  # the uploaded file's name, made safe (`safe_name`)
    image: np.ndarray  # uint8 RGB [H, W, 3], as `read_image` read it
    note: np.ndarray | Prompt  # bool mask [H, W], or a prompt (points and / or a box, the image's pixels)
    how: str  # how it was given, in words
    source: Path | None = None  # the uploaded file, copied into the zip as it came
    seen: np.ndarray | None = None  # the mask the memory encodes (decoded from a prompt)


@dataclass
class Result:
    """One segmented query."""

    name: str
    mask: np.ndarray  # bool [H, W] at the query's size
    overlay: np.ndarray
    seconds: float  # reading the file, the model's pass and the resize to the query's size


@dataclass
class Limits:
    """What one request may bring."""

    max_file_mb: float = MAX_FILE_MB
    max_megapixels: float = MAX_MEGAPIXELS
    max_supports: int = MAX_SUPPORTS
    max_queries: int = MAX_QUERIES


def safe_name(name: str, fallback: str = "image") -> str:
    """A file name without folders, of letters, digits, '.', '_' and '-' only, not hidden."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(name)).name).lstrip(".")[:100]
    return stem or fallback


def unique_names(names: Sequence[str]) -> list[str]:
    """`names` with a `_2`, `_3`, ... added to the stem of a repeated one (compared ignoring case)."""
    seen: set[str] = set()
    out = []
    for name in names:
        stem, suffix = os.path.splitext(name)
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{stem}_{n}{suffix}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def layers_mask(editor: dict[str, Any] | None, width: int, height: int) -> np.ndarray:
    """bool [height, width]: where any layer of a Gradio ImageEditor value was painted (alpha > 0),
    resized (nearest) to the image when the canvas was another size."""
    layers = [np.asarray(layer) for layer in (editor or {}).get("layers") or [] if layer is not None]
    painted = np.zeros((height, width), bool)
    for layer in layers:
        alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(layer.shape[:2])
        drawn: np.ndarray = (alpha > 0).astype(np.uint8)
        if drawn.shape != (height, width):
            drawn = cv2.resize(drawn, (width, height), interpolation=cv2.INTER_NEAREST)
        painted |= drawn > 0
    return painted


def stroke_box(painted: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1], the box around the painted pixels (x1, y1 one past the last)."""
    ys, xs = np.nonzero(painted)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 [H, W] or RGB [H, W, 3] as PNG, as `fssam2.benchmarks.write_png` writes it."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def support_view(support: Support) -> np.ndarray:
    """The support with the mask its memory saw, and the clicks and box it was given, drawn on it."""
    mask = support.seen if support.seen is not None else support.note
    shown = overlay(support.image, np.asarray(mask, bool))
    if isinstance(support.note, dict):
        coords, labels = support_prompt(support.note, support.image.shape[1], support.image.shape[0])
        shown = mark_prompt(shown, coords, labels)
    return shown


def describe_model(choice: ModelChoice, adapter: str | None) -> str:
    """One line naming the served model: SAM2 config, weights, the method and its options or its
    adapter and what the adapter's metadata says."""
    weights = "random weights" if choice.checkpoint is None else f"weights {Path(str(choice.checkpoint)).name}"
    text = f"SAM2 {choice.sam2} ({weights})"
    if adapter is None:
        if choice.method is None:
            return f"{text}, no adapter (SAM2's memory alone)"
        options = f", method_args {json.dumps(choice.options)}" if choice.options else ""
        return f"{text} + {choice.method.__name__} (training-free{options}), no adapter"
    _, meta = read_adapter(adapter)
    facts = [meta.get("method", "FS-SAM2").rpartition(".")[2]]
    facts += [f"{key} {meta[key]}" for key in ("dataset", "fold", "shot") if meta.get(key) not in (None, "unknown")]
    if meta.get("best_val_miou") not in (None, "unknown"):
        facts.append(f"best val mIoU {float(meta['best_val_miou']):.1f}")
    return f"{text} + adapter {Path(str(adapter)).name} ({', '.join(facts)})"


def names_no_model(*options: object) -> bool:
    """Whether `fssam2 serve` was given none of its model options: it serves `DEFAULT_ADAPTER` then."""
    return all(option is None for option in options)


def example_episodes(family: str = "hue") -> dict[str, tuple[Support, list[tuple[str, np.ndarray]]]]:
    """A few episodes of the synthetic benchmark's held-out classes of fold 0, by label: a support
    (its image and mask) and query images, each query showing the support's class on top."""
    bench = SyntheticBenchmark(family=family)
    episodes = {}
    for index, class_id in enumerate(EXAMPLE_CLASSES):
        first = index * (EXAMPLE_QUERIES + 1)
        image, label = bench.render("test", first, top_class=class_id)
        support = Support(f"{family}{class_id}_support.png", image, label == class_id, "example mask")
        queries = [
            (f"{family}{class_id}_query{q + 1}.png", bench.render("test", first + 1 + q, top_class=class_id)[0])
            for q in range(EXAMPLE_QUERIES)
        ]
        episodes[f"{family} family, held-out class {class_id}"] = (support, queries)
    return episodes


class Service:
    """What the page does, on uploaded files and on what was drawn, through one `Segmenter`.

    Requests take the model one at a time (a lock; the page also queues them). Files it writes (the
    zips, the examples) go to its own folder, removed by `close`."""

    def __init__(
        self,
        segmenter: Segmenter,
        model_text: str,
        base: tuple[str, str | Path | None],
        command: Sequence[str] = (),
        limits: Limits | None = None,
        device: str = "cpu",
    ) -> None:
        self.segmenter = segmenter
        self.model_text = model_text
        self.base = base  # (SAM2 config, checkpoint): adapters uploaded on the page must be trained on it
        self.command = list(command)  # the model options of the `fssam2 segment` that gives the same masks
        self.limits = limits or Limits()
        self.device = device
        self.lock = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="fssam2-serve-"))
        self._zips: list[Path] = []  # the newest KEEP_ZIPS written
        self._archives = 0  # written in all, numbering their names

    @classmethod
    def from_options(
        cls,
        sam2: str | None = None,
        adapter: str | None = None,
        sam2_checkpoint: str | None = None,
        image_size: int | None = None,
        device: str = "cpu",
        threshold: float = 0.0,
        limits: Limits | None = None,
        *,
        method: str | None = None,
        method_args: dict[str, Any] | None = None,
    ) -> Service:
        """The model `fssam2 segment` builds from the same options (`fssam2.segment.choose_model`,
        as `Segmenter.from_pretrained`); with none, the packaged tiny SAM2 with the packaged hue
        adapter (`DEFAULT_ADAPTER`)."""
        if names_no_model(sam2, adapter, sam2_checkpoint, method, method_args):
            adapter = DEFAULT_ADAPTER
        choice = choose_model(sam2, adapter, method=method, method_args=method_args,
                              sam2_checkpoint=sam2_checkpoint, image_size=image_size)  # fmt: skip
        seg = Segmenter(choice.build(), device=device, threshold=threshold)
        given = (("sam2", sam2), ("sam2-checkpoint", sam2_checkpoint), ("adapter", adapter), ("method", method),
                 ("method-args", None if method_args is None else json.dumps(method_args)), ("image-size", image_size))  # fmt: skip
        command = [f"--{k} {shlex.quote(str(v))}" for k, v in given if v is not None]
        if threshold:
            command.append(f"--threshold {threshold}")
        return cls(seg, describe_model(choice, adapter), (choice.sam2, choice.checkpoint), command, limits, device)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # reading uploads
    def read_upload(self, path: str | Path | None, what: str) -> np.ndarray:
        """An uploaded image, uint8 RGB, after checking its size on disk and in pixels (read from its
        header, before it is decoded); anything unreadable is an InputError naming `what`."""
        if path is None:
            raise InputError(f"No {what} was uploaded: upload an image file.")
        path = Path(path)
        self.check_size(path, what)
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (OSError, Image.DecompressionBombError) as err:
            raise InputError(
                f"{what} {safe_name(path.name)} is not an image this page can read: upload a PNG, JPEG, BMP, TIFF or WebP file."
            ) from err
        if width * height > self.limits.max_megapixels * 1e6:
            raise InputError(
                f"{what} {safe_name(path.name)} is {width}x{height} pixels, more than this page's "
                f"{self.limits.max_megapixels:g} megapixels: resize it, or start the server with a larger --max-megapixels."
            )
        try:
            return read_image(path)
        except InputError as err:
            raise InputError(f"{what} {safe_name(path.name)} is unreadable or truncated: upload it again.") from err

    def check_size(self, path: Path, what: str) -> None:
        size = path.stat().st_size
        if size > self.limits.max_file_mb * 1e6:
            raise InputError(
                f"{what} {safe_name(path.name)} is {size / 1e6:.1f} MB, more than this page's {self.limits.max_file_mb:g} MB: "
                "upload a smaller file, or start the server with a larger --max-file-mb."
            )

    # supports
    def annotation(
        self,
        image: np.ndarray,
        mode: str,
        brush: dict[str, Any] | None = None,
        box: dict[str, Any] | None = None,
        clicks: Sequence[Sequence[int]] = (),
        mask_file: str | Path | None = None,
    ) -> tuple[np.ndarray | Prompt, str]:
        """The note of a support (bool mask or prompt) from how `mode` says it was given, and those words."""
        height, width = image.shape[:2]
        if mode == "brush":
            painted = layers_mask(brush, width, height)
            if not painted.any():
                raise InputError(
                    "The brush mask is empty: paint over the object in the Brush tab, or choose another tab."
                )
            return painted, "brush mask"
        if mode == "box":
            painted = layers_mask(box, width, height)
            if not painted.any():
                raise InputError("No box was drawn: drag across the object in the Box tab (the box is what you cover).")
            prompt: Prompt = {"box": stroke_box(painted)}
            support_prompt(prompt, width, height, "The box")
            return prompt, "dragged box"
        if mode == "clicks":
            points = [[int(x), int(y), int(label)] for x, y, label in clicks]
            if not any(label == 1 for _, _, label in points):
                raise InputError("No object click: click on the object in the Clicks tab (with 'object' chosen).")
            prompt = {"points": points}
            support_prompt(prompt, width, height, "The clicks")
            positive = sum(label for _, _, label in points)
            return prompt, f"clicks ({positive} object, {len(points) - positive} background)"
        if mode == "file":
            if mask_file is None:
                raise InputError(
                    "No mask file was uploaded: upload a mask (PNG) or a prompt file (.json) in the Mask file tab."
                )
            path = Path(mask_file)
            self.check_size(path, "Mask file")
            if path.suffix.lower() == ".json":
                try:
                    prompt = read_prompt(path)
                except InputError as err:
                    raise InputError(
                        f'Prompt file {safe_name(path.name)} is not JSON: write {{"points": ..., "box": ...}}.'
                    ) from err
                support_prompt(prompt, width, height, f"Prompt file {safe_name(path.name)}")
                return prompt, "prompt file"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a graded mask is thresholded, as `fssam2 segment` does
                    note = read_mask(path)
            except InputError as err:
                raise InputError(f"Mask file {safe_name(path.name)}: {str(err).replace(str(path), 'it')}") from err
            return note, "mask file"
        raise InputError(f"Unknown way to give a support {mode!r}: use one of {', '.join(MODES)}.")

    def add_support(self, supports: Sequence[Support], support: Support) -> list[Support]:
        """`supports` with `support` added, after checking it as `set_support` does and recording the
        mask its memory sees (for a prompt, the mask SAM2 decodes from it)."""
        if len(supports) >= self.limits.max_supports:
            raise InputError(
                f"This page takes at most {self.limits.max_supports} supports: remove some, or start the server with "
                "a larger --max-supports."
            )
        with self.lock:
            self.segmenter.set_support([support.image], [support.note], names=[support.name])
            seen = self.segmenter.support_masks[0]
        return [*supports, replace(support, seen=seen)]

    # queries
    def segment(self, supports: Sequence[Support], queries: Sequence[str | Path]) -> tuple[list[Result], list[Support]]:
        """Each query's mask, given all `supports` at once; and the supports with the masks their memory
        saw in this call. Unreadable queries are an InputError naming them, before any is segmented."""
        if not supports:
            raise InputError("No support yet: add at least one annotated example (left) before segmenting.")
        if not queries:
            raise InputError("No query image: upload one or more images to segment.")
        if len(queries) > self.limits.max_queries:
            raise InputError(
                f"{len(queries)} query images, more than this page's {self.limits.max_queries} per request: "
                "segment them in parts, or start the server with a larger --max-queries."
            )
        images = []
        for path in queries:
            start = time.perf_counter()
            images.append((self.read_upload(path, "Query"), time.perf_counter() - start))
        names = unique_names([safe_name(Path(p).name) for p in queries])
        results = []
        with self.lock:
            self.segmenter.set_support(
                [s.image for s in supports], [s.note for s in supports], [s.name for s in supports]
            )
            seen = list(self.segmenter.support_masks)
            for name, (image, read_seconds) in zip(names, images, strict=True):
                start = time.perf_counter()
                mask = self.segmenter.predict(image)
                seconds = read_seconds + time.perf_counter() - start
                results.append(Result(name, mask, overlay(image, mask), seconds))
        return results, [replace(s, seen=m) for s, m in zip(supports, seen, strict=True)]

    def archive(self, supports: Sequence[Support], results: Sequence[Result]) -> Path:
        """A zip of the results, laid out as `fssam2 segment` writes them (`<name>.png` 0 / 255 at the
        query's size, `<name>_overlay.png`), with the supports as given (image, mask or prompt, and
        what the memory saw), the times, and the command that gives the same masks."""
        support_args = []
        stems = unique_names([f"{i + 1}_{Path(s.name).stem}" for i, s in enumerate(supports)])
        self._archives += 1
        path = self.folder / f"fssam2_masks_{time.strftime('%Y%m%d-%H%M%S')}_{self._archives}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
            for stem, support in zip(stems, supports, strict=True):
                suffix = Path(support.name).suffix.lower() or ".png"
                image_name = f"supports/{stem}{suffix if support.source is not None else '.png'}"
                if support.source is not None and support.source.is_file():
                    out.write(support.source, image_name)
                else:
                    out.writestr(image_name, png_bytes(support.image))
                if isinstance(support.note, dict):
                    note_name = f"supports/{stem}_prompt.json"
                    out.writestr(note_name, json.dumps(support.note) + "\n")
                else:
                    note_name = f"supports/{stem}_mask.png"
                    out.writestr(note_name, png_bytes(np.asarray(support.note, np.uint8) * 255))
                out.writestr(f"supports/{stem}_support_overlay.png", png_bytes(support_view(support)))
                support_args.append(f"--support {image_name} {note_name}")
            table = io.StringIO()
            writer = csv.writer(table)
            writer.writerow(["query", "width", "height", "foreground_pixels", "seconds"])
            for result in results:
                stem = Path(result.name).stem
                out.writestr(f"masks/{stem}.png", png_bytes(result.mask.astype(np.uint8) * 255))
                out.writestr(f"masks/{stem}_overlay.png", png_bytes(result.overlay))
                h, w = result.mask.shape
                writer.writerow([result.name, w, h, int(result.mask.sum()), f"{result.seconds:.3f}"])
            out.writestr("timings.csv", table.getvalue())
            command = [
                "fssam2 segment",
                *support_args,
                "--query YOUR_QUERY_IMAGES",
                "--output masks_again",
                *self.command,
            ]
            out.writestr(
                "README.txt",
                f"Masks by fssam2 serve, model: {self.model_text}\n\n"
                "masks/: <name>.png (0 / 255, at the query's size) and <name>_overlay.png per query.\n"
                "supports/: each support image, its mask or prompt as given on the page, and the mask its memory saw.\n\n"
                "The same masks from the command line:\n  " + " \\\n    ".join(command) + "\n",
            )
        self._zips.append(path)
        while len(self._zips) > KEEP_ZIPS:
            self._zips.pop(0).unlink(missing_ok=True)
        return path

    # the model
    def load_adapter(self, path: str | Path | None) -> str:
        """Serve the uploaded adapter file (any method's, from `fssam2 export`) on this server's base
        SAM2, in place of what was served (a training-free method too), as `fssam2 serve --sam2 BASE
        --adapter FILE` would; the uploaded file names no other file that is read. Returns the new
        model's line."""
        if path is None:
            raise InputError("No adapter file was uploaded: upload a .safetensors file from `fssam2 export`.")
        path = Path(path)
        self.check_size(path, "Adapter")
        shown = safe_name(path.name)
        try:
            _, metadata = read_adapter(path)
        except InputError as err:
            raise InputError(
                f"{shown} is not an fssam2 adapter file: export one with `fssam2 export CKPT --output FILE`."
            ) from err
        sam2, checkpoint = self.base
        if metadata.get("base_model") != sam2:
            raise InputError(
                f"Adapter {shown} was trained on {metadata.get('base_model')}, but this server runs {sam2}: "
                f"start `fssam2 serve --adapter {shown}` to serve it."
            )
        try:
            choice = choose_model(sam2, path, sam2_checkpoint=checkpoint)
            seg = Segmenter(choice.build(), device=self.device, threshold=self.segmenter.threshold)
        except InputError as err:
            raise InputError(str(err).replace(str(path), shown)) from err
        # The adapter's method, options and input size replace the server's: its base and threshold stay.
        kept = [c for c in self.command if c.split()[0] in ("--sam2", "--sam2-checkpoint", "--threshold")]
        with self.lock:
            self.segmenter = seg
            self.model_text = describe_model(choice, str(path)).replace(str(path), shown)
            self.command = [*kept, f"--adapter {shown}"]
        return self.model_text


@dataclass
class Picked:
    """The support image being annotated."""

    name: str
    path: Path
    image: np.ndarray
    clicks: list[list[int]] = field(default_factory=list)  # [x, y, label] in the image's pixels
    scale: int = 1  # the click view shows the image this many times larger


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


def _message(err: BaseException) -> str:
    if isinstance(err, InputError):
        return f"**Error:** {err}"
    traceback.print_exc()  # on the server's terminal: a bug, not the user's input
    return f"**Error:** fssam2 failed on this request ({type(err).__name__}: {err}); the server goes on serving."


def build_page(
    service: Service, examples: dict[str, tuple[Support, list[tuple[str, np.ndarray]]]] | None = None
) -> Any:
    """The Gradio page of `service` (a `gradio.Blocks`); `examples` (label -> support, queries) are
    offered in a menu, the first preloaded."""
    import gradio as gr

    examples = examples or {}
    example_files: dict[str, tuple[Support, list[str]]] = {}
    for label, (support, queries) in examples.items():
        paths = []
        for name, image in queries:
            target = service.folder / "examples" / name
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(png_bytes(image))
            paths.append(str(target))
        example_files[label] = (service.add_support([], support)[0], paths)
    first = next(iter(example_files.values()), None)

    def guarded(fn: Callable[..., tuple], outputs: int) -> Callable[..., tuple]:
        """`fn` whose errors become the status message (its last output), the other outputs unchanged."""

        @functools.wraps(fn)  # Gradio reads the signature: an event's data is passed to a SelectData argument
        def run(*args: Any) -> tuple:
            try:
                return fn(*args)
            except Exception as err:  # noqa: BLE001 - shown on the page; the server keeps serving
                return (*[gr.skip()] * (outputs - 1), _message(err))

        return run

    def gallery(supports: Sequence[Support]) -> list[tuple[np.ndarray, str]]:
        return [(support_view(s), f"{i + 1}: {s.name}, {s.how}") for i, s in enumerate(supports)]

    def editor_value(image: np.ndarray | None) -> dict[str, Any] | None:
        return None if image is None else {"background": image, "layers": [], "composite": image}

    def click_view(picked: Picked | None) -> np.ndarray | None:
        """The support image enlarged `picked.scale` times (nearest), its clicks drawn."""
        if picked is None:
            return None
        view = np.repeat(np.repeat(picked.image, picked.scale, axis=0), picked.scale, axis=1)
        if not picked.clicks:
            return view
        coords = (np.array([c[:2] for c in picked.clicks], np.float32) + 0.5) * picked.scale
        return mark_prompt(view, coords, np.array([c[2] for c in picked.clicks]))

    def pick(file: str | None) -> tuple:
        if file is None:  # removed, or cleared after a support was added
            return None, None, None, gr.skip()
        path = Path(file)
        try:
            image = service.read_upload(path, "Support image")
        except InputError as err:  # the image picked before is dropped too: Add support must not add it
            return None, None, None, _message(err)
        picked = Picked(safe_name(path.name), path, image, scale=max(1, -(-CLICK_VIEW_SIDE // max(image.shape[:2]))))
        return (picked, editor_value(picked.image), click_view(picked),
                f"Support image {picked.name} ({picked.image.shape[1]}x{picked.image.shape[0]}): give the object "
                "by a brush mask, a box, clicks or a mask file, then **Add support**.")  # fmt: skip

    def click(picked: Picked | None, label: str, evt: gr.SelectData) -> tuple:
        if picked is None:
            raise InputError("Upload a support image first, then click on it.")
        x, y = (
            min(int(v) // picked.scale, side - 1) for v, side in zip(evt.index, picked.image.shape[1::-1], strict=True)
        )
        picked.clicks.append([x, y, 1 if label.startswith("object") else 0])
        return picked, click_view(picked), f"Clicks: {json.dumps(picked.clicks)}"

    click.__annotations__["evt"] = gr.SelectData  # the class itself: annotations are strings in this module

    def undo(picked: Picked | None) -> tuple:
        if picked is not None and picked.clicks:
            picked.clicks.pop()
        return picked, click_view(picked), f"Clicks: {json.dumps(picked.clicks if picked else [])}"

    def add(
        supports: list[Support], picked: Picked | None, tab: str, paint_as: str, painted: Any, mask_file: str | None
    ) -> tuple:
        if picked is None:
            raise InputError("No support image: upload one (Support image) before adding it.")
        mode = ("box" if paint_as == PAINT_AS[1] else "brush") if tab == "paint" else tab
        note, how = service.annotation(picked.image, mode, painted, painted, picked.clicks, mask_file)
        support = Support(picked.name, picked.image, note, how, source=picked.path)
        supports = service.add_support(supports, support)
        added = supports[-1]
        words = f"Support {len(supports)} added ({how}); its memory sees {int(np.count_nonzero(np.asarray(added.seen)))} object pixels."
        return supports, gallery(supports), None, None, None, None, None, words

    def clear(_: Any) -> tuple:
        return [], [], "Supports removed: add at least one before segmenting."

    def run(supports: list[Support], files: list[str] | None) -> tuple:
        results, supports = service.segment(supports, [Path(f) for f in files or []])
        path = service.archive(supports, results)
        rows = "\n".join(
            f"| {r.name} | {r.mask.shape[1]}x{r.mask.shape[0]} | {100 * r.mask.mean():.1f}% | {r.seconds:.2f} |"
            for r in results
        )
        table = "| query | size | object | seconds |\n|---|---|---|---|\n" + rows
        overlays = [(r.overlay, f"{r.name}: {r.seconds:.2f} s") for r in results]
        masks = [(r.mask.astype(np.uint8) * 255, Path(r.name).stem + ".png") for r in results]
        total = sum(r.seconds for r in results)
        words = (
            f"Segmented {plural(len(results), 'query', 'queries')} with {plural(len(supports), 'support')} in "
            f"{total:.2f} s: the zip holds every mask."
        )
        return supports, gallery(supports), overlays, masks, str(path), table, words

    def load_example(label: str | None) -> tuple:
        if label not in example_files:
            return gr.skip(), gr.skip(), gr.skip(), ""
        support, paths = example_files[label]
        supports = [copy.deepcopy(support)]
        return supports, gallery(supports), paths, f"Example loaded: {label}. Press **Segment**."

    def load_model(file: str | None) -> tuple:
        text = service.load_adapter(file)
        return f"**Model:** {text}", f"Adapter loaded: {text}"

    brush = gr.Brush(colors=["rgba(255, 40, 40, 0.7)"], color_mode="fixed", default_size="auto")
    editor_options: dict[str, Any] = dict(
        type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False, brush=brush, format="png", height=360
    )
    with gr.Blocks(title="fssam2", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        supports = gr.State(copy.deepcopy([first[0]]) if first else [])
        picked = gr.State(None)
        mode = gr.State("paint")  # the tab open: paint (brush or box), clicks or file
        gr.Markdown("# fssam2: segment your images from a few examples")
        model_line = gr.Markdown(f"**Model:** {service.model_text}", elem_id="fssam2-model")
        status = gr.Markdown(
            "Example preloaded: press **Segment**."
            if first
            else "Add a support (left), upload queries (right), press **Segment**.",
            elem_id="fssam2-status",
        )
        with gr.Row():
            with gr.Column():
                gr.Markdown(f"## Supports (1 to {service.limits.max_supports})")
                support_file = gr.File(label="Support image", file_count="single", elem_id="support-file")
                with gr.Tabs():
                    with gr.Tab("Brush or box", id="paint") as paint_tab:
                        paint_as = gr.Radio(list(PAINT_AS), value=PAINT_AS[0], label="What you paint is",
                                            elem_id="paint-as")  # fmt: skip
                        editor = gr.ImageEditor(
                            label="Paint over the object, or drag across it for a box (choose the brush first)",
                            elem_id="brush-editor",
                            **editor_options,
                        )
                    with gr.Tab("Clicks", id="clicks") as clicks_tab:
                        click_label = gr.Radio(["object", "background"], value="object", label="A click marks",
                                               elem_id="click-label")  # fmt: skip
                        clicks = gr.Image(label="Click on the image", interactive=False, type="numpy", format="png",
                                          height=360, elem_id="click-view")  # fmt: skip
                        undo_button = gr.Button("Undo last click", size="sm")
                    with gr.Tab("Mask file", id="file") as file_tab:
                        mask_file = gr.File(label="Mask (PNG: non-zero is the object) or prompt file (.json)",
                                            file_count="single", elem_id="mask-file")  # fmt: skip
                with gr.Row():
                    add_button = gr.Button("Add support", variant="secondary", elem_id="add-support")
                    clear_button = gr.Button("Remove all supports", elem_id="clear-supports")
                support_gallery = gr.Gallery(
                    gallery([first[0]]) if first else None, label="Supports, as their memory sees them",
                    format="png", columns=4, height=220, object_fit="contain", allow_preview=False, elem_id="support-gallery",
                )  # fmt: skip
            with gr.Column():
                gr.Markdown(f"## Queries (up to {service.limits.max_queries})")
                query_files = gr.File(first[1] if first else None, label="Query images", file_count="multiple",
                                      elem_id="query-files")  # fmt: skip
                run_button = gr.Button("Segment", variant="primary", elem_id="segment")
                overlays = gr.Gallery(label="Overlays", format="png", columns=3, height=300, elem_id="overlays")
                masks = gr.Gallery(label="Masks (0 / 255 at the query's size)", format="png", columns=3, height=220,
                                   elem_id="masks")  # fmt: skip
                download = gr.File(
                    label="All masks, overlays and supports (zip)", interactive=False, elem_id="download"
                )
                timings = gr.Markdown(elem_id="timings")
        with gr.Accordion("Examples and model", open=False):
            example_menu = gr.Dropdown(list(example_files), label="Load an example from the synthetic benchmark",
                                       value=None, elem_id="examples")  # fmt: skip
            adapter_file = gr.File(label=f"Serve another adapter (.safetensors from `fssam2 export`, on {service.base[0]})",
                                   file_count="single", elem_id="adapter-file")  # fmt: skip

        model_events: dict[str, Any] = dict(concurrency_id="model", concurrency_limit=1)
        for tab, name in ((paint_tab, "paint"), (clicks_tab, "clicks"), (file_tab, "file")):
            tab.select(lambda name=name: name, None, mode)
        support_file.change(guarded(pick, 4), support_file, [picked, editor, clicks, status])
        clicks.select(guarded(click, 3), [picked, click_label], [picked, clicks, status])
        undo_button.click(guarded(undo, 3), picked, [picked, clicks, status])
        add_button.click(
            guarded(add, 8), [supports, picked, mode, paint_as, editor, mask_file],
            [supports, support_gallery, picked, support_file, editor, clicks, mask_file, status],
            **model_events,
        )  # fmt: skip
        clear_button.click(guarded(clear, 3), supports, [supports, support_gallery, status])
        run_button.click(
            guarded(run, 7), [supports, query_files], [supports, support_gallery, overlays, masks, download, timings, status],
            api_name="segment", **model_events,
        )  # fmt: skip
        example_menu.change(guarded(load_example, 4), example_menu, [supports, support_gallery, query_files, status])
        adapter_file.upload(guarded(load_model, 2), adapter_file, [model_line, status], **model_events)
    page.queue(default_concurrency_limit=1, max_size=64)
    return page


def theme() -> Any:
    """Gradio's default look with the system's fonts: the page loads nothing from outside."""
    import gradio as gr

    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


# Gradio lays a gallery of n items out in n columns (at most `columns`): supports stay thumbnails.
CSS = "#support-gallery .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }"


def launch(page: Any, host: str, port: int, share: bool, max_file_mb: float, block: bool = True) -> Any:
    """Start serving `page`; with `block`, until Ctrl-C."""
    # No run history (Gradio 6.x has it from some minor release on): nothing kept in the browser, no bucket to connect.
    history = {"run_history": False} if "run_history" in inspect.signature(page.launch).parameters else {}
    return page.launch(
        server_name=host, server_port=port, share=share, max_file_size=f"{max_file_mb}mb", theme=theme(), css=CSS,
        prevent_thread_lock=not block, ssr_mode=False, mcp_server=False, inbrowser=False, quiet=not block,
        footer_links=[], **history,
    )  # fmt: skip


def check_port(host: str, port: int) -> None:
    """InputError unless `port` on `host` can be listened on now."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as err:
        raise InputError(f"Cannot serve on {host}:{port} ({err.strerror}): choose another --port or --host.") from err


def serve_command(args: list[str]) -> None:
    """`fssam2 serve`: a local web page to segment your own images from a few examples."""
    parser = argparse.ArgumentParser(prog="fssam2 serve", description=serve_command.__doc__)
    parser.add_argument(
        "--adapter", help=f"adapter file from `fssam2 export` (default, with no --sam2: the packaged {DEFAULT_ADAPTER})"
    )
    parser.add_argument("--method", metavar="CLASS_PATH",
                        help="a training-free method by class path, e.g. fssam2.methods.GFSAM (as `fssam2 segment`)")  # fmt: skip
    parser.add_argument("--method-args", metavar="JSON", help="the method's own options as a JSON object "
                        """(as `fssam2 segment`), e.g. '{"encoder": "sam2"}'""")  # fmt: skip
    parser.add_argument("--sam2", help="SAM2 config name or yaml (default: the adapter's base, else sam2.1_hiera_b+; "
                                       "configs/gfsam run GF-SAM on sam2.1_hiera_l)")  # fmt: skip
    parser.add_argument("--sam2-checkpoint", help="SAM2 checkpoint path or downloaded name (as `fssam2 segment`)")
    parser.add_argument("--image-size", type=int, help="model input size (default: the adapter's, else the config's)")
    parser.add_argument("--threshold", type=float, default=0.0, help="logit threshold (0 = probability 0.5)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", help="also make a public link through Gradio's share service")
    parser.add_argument("--max-file-mb", type=float, default=MAX_FILE_MB, help="largest upload, per file")
    parser.add_argument("--max-megapixels", type=float, default=MAX_MEGAPIXELS, help="largest image, in pixels")
    parser.add_argument("--max-supports", type=int, default=MAX_SUPPORTS)
    parser.add_argument("--max-queries", type=int, default=MAX_QUERIES, help="query images per request")
    parser.add_argument("--examples", action=argparse.BooleanOptionalAction, default=None,
                        help="preload examples from the synthetic benchmark (default: only for the default model)")  # fmt: skip
    opts = parser.parse_args(args)
    method_args = parse_method_args(opts.method_args)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise InputError("fssam2 serve needs Gradio: pip install 'fssam2[serve]' (or `make install`).") from err
    limits = Limits(opts.max_file_mb, opts.max_megapixels, opts.max_supports, opts.max_queries)
    for name, value in vars(opts).items():
        if name.startswith("max_") and value <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {value}.")
    check_port(opts.host, opts.port)  # before the model is built
    service = Service.from_options(opts.sam2, opts.adapter, opts.sam2_checkpoint, opts.image_size, opts.device,
                                   opts.threshold, limits, method=opts.method, method_args=method_args)  # fmt: skip
    default_model = names_no_model(opts.sam2, opts.adapter, opts.sam2_checkpoint, opts.method, method_args)
    wanted = default_model if opts.examples is None else opts.examples
    try:
        page = build_page(service, example_episodes() if wanted else None)
        if opts.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"fssam2 serve: binding {opts.host}: anyone who can reach this machine can use the page.",
                file=sys.stderr,
            )
        try:
            launch(page, opts.host, opts.port, opts.share, opts.max_file_mb)
        except OSError as err:
            raise InputError(f"Cannot serve on {opts.host}:{opts.port} ({err}): choose another --port.") from err
    finally:
        service.close()
