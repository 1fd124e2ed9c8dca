"""Segment your own images with any few-shot method: a few annotated supports, any number of queries.

    seg = Segmenter.from_pretrained("sam2.1_hiera_b+", adapter="pascal_fold0.safetensors")
    seg.set_support([image1, image2], [mask1, mask2])   # uint8 RGB [H, W, 3], masks [H, W]
    mask = seg.predict(query)                            # bool [H, W] at the query's size

The model is plain SAM2 with its memory, an adapter file's method (`fssam2 export`), or a
training-free method by class path (`method="fssam2.methods.GFSAM"`, `method_args`); `choose_model`
checks the combination. A support may be shown by points and / or a box instead of a mask
(`support_prompt`):
    seg.set_support([image1], [{"points": [[120, 80, 1], [40, 30, 0]], "box": [100, 50, 220, 160]}])

The supports are encoded once (the method's `encode_support`); each query then costs one
`segment` call (for SAM2: an image-encoder pass, memory attention and the mask decoder).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fssam2.adapters import adapter_base_checkpoint, adapter_method, check_base, read_adapter
from fssam2.annotations import BOX_LABELS, pad_prompts
from fssam2.benchmarks import (
    IMAGE_EXTENSIONS,
    PROMPT_EXTENSION,
    binary_mask,
    read_binary_mask,
    read_image,
    scan_folder,
    visible_files,
    write_png,
)
from fssam2.build import build_sam2
from fssam2.data import to_input
from fssam2.errors import InputError, is_number
from fssam2.files import check_new
from fssam2.methods import FewShotMethod, FewShotSAM2, method_class

DEFAULT_SAM2 = "sam2.1_hiera_b+"
ImageLike = np.ndarray | torch.Tensor  # also anything np.asarray reads, e.g. a PIL image


def _as_numpy(array: object, what: str) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor (any device) or an array-like."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    out = np.asarray(array)
    if out.dtype == object or out.dtype.kind in "USV":
        raise InputError(f"{what} is a {type(array).__name__}, not an image array: pass a numpy array or a tensor.")
    return out


def rgb_image(image: ImageLike, what: str = "Image") -> np.ndarray:
    """uint8 RGB [H, W, 3] of an image as users hold one, or an InputError saying why not.

    Accepted: [H, W] and [H, W, 1] (greyscale), [H, W, 2] (greyscale and alpha), [H, W, 3] (RGB)
    and [H, W, 4] (RGBA); an alpha is dropped, as `read_image` drops it. Tensors may also be
    channels first ([C, H, W]) when only the first axis can be the channels. Values: uint8 (or
    any integer type) holding 0..255, or float in [0, 1] (rounded to the nearest of the 256
    levels, so that a uint8 image divided by 255 gives the same mask as the image itself). uint16,
    bool, int8, floats outside [0, 1] and NaN are ambiguous and refused."""
    array = _as_numpy(image, what)
    if isinstance(image, torch.Tensor) and array.ndim == 3 and array.shape[0] in (1, 2, 3, 4):
        if array.shape[2] in (1, 2, 3, 4):
            raise InputError(
                f"{what} has shape {tuple(array.shape)}: both its first and last axis could be the channels; "
                "pass it channels last, [H, W, 3]."
            )
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        array = array[..., :1].repeat(3, axis=2) if array.shape[2] < 3 else array[..., :3]
    elif array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    else:
        raise InputError(
            f"{what} has shape {tuple(array.shape)}: pass one image, channels last: [H, W, 3] RGB, [H, W, 4] RGBA "
            "or [H, W] greyscale."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{what} is empty ({array.shape[1]}x{array.shape[0]} pixels).")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError(f"{what} holds NaN or infinite values: pass float in [0, 1] or uint8 in [0, 255].")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise InputError(
                f"{what} is {array.dtype} with values in [{low:g}, {high:g}]: pass float in [0, 1] or uint8 in "
                "[0, 255] (e.g. image.astype(np.uint8) for 0..255 values)."
            )
        return np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize > 1 and array.dtype != np.uint16:
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        raise InputError(
            f"{what} is {array.dtype} with values in [{low}, {high}]: pass uint8 in [0, 255] or float in [0, 1]."
        )
    raise InputError(
        f"{what} is {array.dtype}, whose value range is ambiguous: pass uint8 in [0, 255] or float in [0, 1] "
        "(e.g. (image / 65535).astype(np.float32) for 16-bit images)."
    )


Prompt = dict[str, Any]  # {"points": [[x, y] or [x, y, label], ...], "box": [x0, y0, x1, y1]}, original pixels


def _plain(value: object) -> object:
    """A prompt's points or box as plain Python lists and numbers: numpy arrays and tensors (any
    device) become nested lists, numpy and tensor scalars (e.g. from `np.nonzero`) numbers; other
    values are kept as they are, for the caller to check."""
    if isinstance(value, np.ndarray | np.generic | torch.Tensor):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def support_prompt(prompt: Prompt, width: int, height: int, what: str = "Prompt") -> tuple[np.ndarray, np.ndarray]:
    """SAM's points (x, y) [P, 2] and labels [P] of a support shown by points and / or a box in
    its image's pixels (width x height): "points" [[x, y, label], ...] (label 1 the object, 0 not
    it; [x, y] is 1), each inside the image; "box" [x0, y0, x1, y1] with x0 < x1, y0 < y1, inside
    it, as corner points labelled 2 and 3 before the points (SAM2's order). Lists, numpy arrays
    and tensors alike (points as a [P, 2] or [P, 3] array), with numbers of any numeric type. At
    least one object point or a box; anything else is an InputError of one line."""
    if not isinstance(prompt, dict) or not prompt or set(prompt) - {"points", "box"}:
        keys = sorted(prompt) if isinstance(prompt, dict) else type(prompt).__name__
        raise InputError(
            f'{what} is {keys}: give a mask, or a prompt {{"points": [[x, y, 1], ...], "box": [x0, y0, x1, y1]}}.'
        )
    coords: list[list[float]] = []
    labels: list[int] = []
    box = _plain(prompt.get("box"))
    if box is not None:
        if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
            raise InputError(f"{what}: box {box!r} is not [x0, y0, x1, y1] of four finite numbers.")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x0 < x1 and y0 < y1):
            raise InputError(f"{what}: box {box} is empty: x0 < x1 and y0 < y1 are needed.")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise InputError(f"{what}: box {box} reaches outside the {width}x{height} image.")
        coords += [[x0, y0], [x1, y1]]
        labels += list(BOX_LABELS)
    points = _plain(prompt.get("points"))
    if not isinstance(points, list | None):
        raise InputError(f"{what}: points {points!r} are not a list [[x, y, label], ...], one row a point.")
    for point in points or []:
        ok = isinstance(point, list) and len(point) in (2, 3) and all(is_number(v) for v in point)
        if not ok or (len(point) == 3 and point[2] not in (0, 1)):
            raise InputError(
                f"{what}: point {point!r} is not [x, y] or [x, y, label] with label 1 or 0, of finite numbers "
                "(points: [[x, y, label], ...], one row a point)."
            )
        x, y = float(point[0]), float(point[1])
        if not (0 <= x < width and 0 <= y < height):
            raise InputError(f"{what}: point ({x:g}, {y:g}) lies outside the {width}x{height} image.")
        coords.append([x, y])
        labels.append(int(point[2]) if len(point) == 3 else 1)
    if box is None and 1 not in labels:
        raise InputError(f"{what} has no object point and no box: mark the object with a [x, y, 1] point or a box.")
    return np.asarray(coords, np.float32), np.asarray(labels, np.int64)


def read_prompt(path: Path) -> Prompt:
    """A support's prompt file (JSON, `support_prompt`'s shape), or an InputError naming it."""
    try:
        prompt = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"Prompt file {path} does not exist.") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f'Prompt file {path} is not JSON ({err}): write {{"points": ..., "box": ...}}.') from err
    if not isinstance(prompt, dict):
        raise InputError(f'Prompt file {path} holds a {type(prompt).__name__}, not {{"points": ..., "box": ...}}.')
    return prompt


def support_mask(mask: ImageLike, what: str = "Mask") -> np.ndarray:
    """bool [H, W] object mask of a binary mask as users hold one, or an InputError saying why not.

    Accepted: [H, W], [H, W, 1] or [1, H, W], and [H, W, C] by `fssam2.benchmarks.binary_mask`'s
    rule (any channel; a varying alpha is the mask), of bool or numbers holding at most two values,
    0 and one other (0/1, 0/255, 0/1.0, a palette index): that value is the object. Any other set
    of values (a label map of several classes, a soft or JPEG-compressed mask) is refused."""
    array = _as_numpy(mask, what)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[2]):
        array = array[0] if array.shape[0] == 1 else array[..., 0]
    if array.ndim == 2:
        deciding = array
    elif array.ndim == 3 and array.shape[2] in (2, 3, 4):
        alpha = array[..., -1]
        varying_alpha = array.shape[2] in (2, 4) and alpha.min() != alpha.max()
        deciding = alpha if varying_alpha else (array[..., :-1] if array.shape[2] in (2, 4) else array)
    else:
        raise InputError(f"{what} has shape {tuple(array.shape)}: pass one mask, [H, W] (non-zero on the object).")
    if array.dtype != np.bool_:
        values = np.unique(deciding)
        if len(values) > 2 or (len(values) == 2 and values[0] != 0) or not np.isfinite(values.astype(np.float64)).all():
            shown = ", ".join(f"{v:g}" for v in values[:5].astype(np.float64)) + (", ..." if len(values) > 5 else "")
            raise InputError(
                f"{what} holds {len(values)} values ({shown}): pass a binary mask (bool, 0/1 or 0/255), e.g. "
                "label == class_id for a label map."
            )
    return binary_mask(array)


# build's own arguments, which come from segment's options, never from --method-args
BUILD_ARGUMENTS = {"sam2_config": "--sam2", "sam2_checkpoint": "--sam2-checkpoint", "image_size": "--image-size"}


def parse_method_args(text: str | None) -> dict[str, Any] | None:
    """--method-args: a JSON object of the method's own options (None when not given)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f'--method-args {text!r} is not JSON ({err}): give an object, e.g. \'{{"encoder": "sam2"}}\'.'
        ) from err
    if not isinstance(value, dict):
        raise InputError(
            f"--method-args {text!r} is a {type(value).__name__}, not a JSON object: give "
            "'{\"option\": value, ...}', as a config's model.method_args."
        )
    return value


@dataclass
class ModelChoice:
    """The model `Segmenter.from_pretrained` builds, its options checked (`choose_model`)."""

    sam2: str  # SAM2 config name or yaml
    checkpoint: str | Path | None  # its weights (None: random initialisation)
    image_size: int | None  # None: the config's
    method: type[FewShotMethod] | None  # None: plain SAM2 with its memory
    options: dict[str, Any]  # `method.build`'s own options
    adapter: dict[str, torch.Tensor] | None  # the adapter file's weights

    def build(self) -> FewShotMethod:
        if self.method is None:
            return FewShotSAM2(build_sam2(self.sam2, self.checkpoint, image_size=self.image_size))
        checkpoint = None if self.checkpoint is None else str(self.checkpoint)
        model = self.method.build(self.sam2, checkpoint, self.image_size, **self.options)
        if self.adapter is not None:
            model.load_adapter_state(self.adapter)
        return model


def choose_model(
    sam2: str | None = None,
    adapter: str | Path | None = None,
    *,
    method: str | None = None,
    method_args: dict[str, Any] | None = None,
    sam2_checkpoint: str | Path | None = None,
    image_size: int | None = None,
) -> ModelChoice:
    """What `Segmenter.from_pretrained` builds from its options (see there), or an InputError of one
    line naming the options that do not go together. Nothing is built; an adapter is read."""
    from fssam2.hub import CHECKPOINT_URLS

    kind = None if method is None else method_class(method, "--method")
    if method_args is not None and not isinstance(method_args, dict):
        raise InputError(f"--method-args is a {type(method_args).__name__}: give a dict of the method's options.")
    if kind is not None and not kind.TRAINS and adapter is not None:
        raise InputError(f"{kind.__name__} has no adapters (nothing in it trains): drop --adapter {adapter}.")
    tensors, metadata = read_adapter(adapter) if adapter is not None else (None, None)
    if metadata is not None:
        recorded, options = adapter_method(metadata)
        if kind is not None and kind is not recorded:
            raise InputError(
                f"--method {method} but --adapter {adapter} holds {recorded.__name__}'s adapters: drop --method "
                "(an adapter records its method), or give that method's --adapter."
            )
        if method_args:
            raise InputError(
                f"--method-args with --adapter {adapter}: the adapter records its method's options; drop --method-args."
            )
    checkpoint: str | Path | None
    if adapter is not None and metadata is not None and sam2 is None:  # the adapter's recorded base
        sam2 = metadata["base_model"]
        checkpoint = sam2_checkpoint if sam2_checkpoint is not None else adapter_base_checkpoint(metadata, adapter)
    else:
        sam2 = sam2 or DEFAULT_SAM2
        checkpoint = sam2_checkpoint if sam2_checkpoint is not None else (sam2 if sam2 in CHECKPOINT_URLS else None)
    if adapter is not None and metadata is not None:
        check_base(metadata, adapter, sam2, checkpoint)
        if image_size is None and metadata.get("image_size") not in (None, "None"):
            image_size = int(metadata["image_size"])
        return ModelChoice(sam2, checkpoint, image_size, recorded, options, tensors)
    if kind is None or issubclass(kind, FewShotSAM2):  # plain SAM2
        if method_args:
            raise InputError(
                "--method-args needs --method: plain SAM2 takes no options (e.g. --method fssam2.methods.GFSAM "
                '--method-args \'{"encoder": "sam2"}\').'
                if kind is None
                else f"{kind.__name__} takes no --method-args: its options (LoRA) come from its adapter file "
                "(--adapter); without one it is plain SAM2."
            )
        return ModelChoice(sam2, checkpoint, image_size, None, {}, None)
    if kind.TRAINS:
        raise InputError(
            f"{kind.__name__}'s adapters are trained: pass --adapter FILE, exported from a {kind.__name__} run "
            "by `fssam2 export`."
        )
    clash = sorted(set(method_args or {}) & set(BUILD_ARGUMENTS))
    if clash:
        raise InputError(f"--method-args {clash[0]}: give it as {BUILD_ARGUMENTS[clash[0]]}, not in --method-args.")
    return ModelChoice(sam2, checkpoint, image_size, kind, dict(method_args or {}), None)


class Segmenter:
    """Few-shot inference on arbitrary images, by any method (`fssam2.methods`).

    Images may be numpy arrays or torch tensors: uint8 RGB [H, W, 3], float in [0, 1], greyscale
    [H, W] or RGBA [H, W, 4] all give the mask of the same uint8 RGB image (`rgb_image`); masks are
    binary (bool, 0/1 or 0/255; `support_mask`). Anything ambiguous is an InputError of one line.

    Args:
        model: a few-shot method (`fssam2.methods`: FewShotSAM2 with or without LoRA, SANSA, GFSAM, ...).
        device: where to run.
        threshold: logit threshold of the masks (0 = probability 0.5).
    """

    def __init__(self, model: FewShotMethod, device: str | torch.device = "cpu", threshold: float = 0.0) -> None:
        self.model = model.to(device).eval()
        self.model.start_evaluation()  # inference only: weights fixed (FS-SAM2: LoRA merged, one matmul per layer)
        self.device = torch.device(device)
        self.threshold = threshold
        self._memory: Any = None  # the method's `encode_support` output
        # The supports' masks as their memories saw them (decoded from a prompt), bool [H, W] each.
        self.support_masks: list[np.ndarray] = []

    @classmethod
    def from_pretrained(
        cls,
        sam2: str | None = None,
        adapter: str | Path | None = None,
        *,
        method: str | None = None,
        method_args: dict[str, Any] | None = None,
        sam2_checkpoint: str | Path | None = None,
        image_size: int | None = None,
        device: str = "cpu",
        threshold: float = 0.0,
    ) -> Segmenter:
        """SAM2 `sam2` (a packaged config name or yaml) with weights from `sam2_checkpoint` (a path or
        a downloaded name; default: the downloaded checkpoint of `sam2`, none for fssam2_tiny), and:
        - an adapter file from `fssam2 export`: its recorded method and options on its recorded base
          (its config, and its checkpoint unless `sam2_checkpoint` is given) unless `sam2` is given;
        - or `method`, a class path as a config's `model.method` (e.g. "fssam2.methods.GFSAM"), with
          its own options `method_args` (as `model.method_args`): a training-free method;
        - neither: plain SAM2 with its memory (FewShotSAM2 without LoRA).
        Without `sam2` and an adapter, sam2.1_hiera_b+. A method with an adapter must be the
        adapter's; `method_args` come with a training-free method only (`choose_model`)."""
        choice = choose_model(sam2, adapter, method=method, method_args=method_args,
                              sam2_checkpoint=sam2_checkpoint, image_size=image_size)  # fmt: skip
        return cls(choice.build(), device=device, threshold=threshold)

    def _input(self, image: np.ndarray) -> torch.Tensor:
        return to_input(image, self.model.image_size)[None].to(self.device)

    @torch.inference_mode()
    def set_support(
        self,
        images: Sequence[ImageLike] | ImageLike,
        masks: Sequence[ImageLike | Prompt] | ImageLike,
        names: Sequence[str] | None = None,
    ) -> None:
        """Encode K >= 1 annotated examples once: a list of images (or a [K, ...] batch) and, per
        image, a binary mask [H, W], non-zero where the object is (`support_mask`), or a prompt
        (`support_prompt`: points and / or a box in the image's pixels), which SAM2 decodes into
        the support's mask without memory, as its video predictor takes a prompted frame
        (`support_masks` then holds the decoded masks)."""
        for given, what, ndim in ((images, "images", 4), (masks, "masks", 3)):
            if isinstance(given, np.ndarray | torch.Tensor) and given.ndim < ndim:
                raise InputError(
                    f"set_support takes a list of {what} (or a batch with the example first), got one array of "
                    f"shape {tuple(given.shape)}: wrap a single example in a list."
                )
        if len(images) == 0 or len(images) != len(masks):
            raise InputError(
                f"Give one mask per support image, at least one pair ({len(images)} images, {len(masks)} masks)."
            )
        names = list(names) if names is not None else [f"support {i}" for i in range(len(images))]
        if len(names) != len(images):
            raise InputError(f"Give one name per support image ({len(images)} images, {len(names)} names).")
        size = self.model.image_size
        rgb: list[np.ndarray] = []
        binary: list[np.ndarray] = []
        prompts: list[tuple[np.ndarray, np.ndarray]] = []
        own_masks: list[np.ndarray | None] = []  # each mask support's own mask
        for image, mask, name in zip(images, masks, names, strict=True):
            image = rgb_image(image, f"Image of {name}")
            h, w = image.shape[:2]
            if isinstance(mask, dict):
                coords, labels = support_prompt(mask, w, h, f"Prompt of {name}")
                prompts.append((coords * np.array([size / w, size / h], np.float32), labels))  # input pixels
                rgb.append(image)
                binary.append(np.zeros((size, size), np.uint8))
                own_masks.append(None)
                continue
            prompts.append((np.zeros((0, 2), np.float32), np.zeros(0, np.int64)))
            fg = support_mask(mask, f"Mask of {name}")
            if fg.shape != image.shape[:2]:
                raise InputError(
                    f"Mask of {name} is {fg.shape[1]}x{fg.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}: they must match."
                )
            if not fg.any():
                raise InputError(f"Mask of {name} has no foreground: mark the object with non-zero pixels.")
            rgb.append(image)
            own_masks.append(fg)
            binary.append(cv2.resize(fg.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST))
        batch = torch.cat([self._input(im) for im in rgb])  # [K, 3, S, S]
        masks_t = torch.from_numpy(np.stack(binary)).float().to(self.device)  # [K, S, S]
        weak: tuple[torch.Tensor, torch.Tensor] | None = None
        if any(len(labels) for _, labels in prompts):
            coords_t, labels_t = pad_prompts([c for c, _ in prompts], [lab for _, lab in prompts])
            weak = (coords_t.to(self.device), labels_t.to(self.device))
            masks_t = self.model.support_masks_from_prompts(batch, masks_t, *weak)
            empty = [name for name, m in zip(names, masks_t, strict=True) if not m.any()]
            if empty:
                raise InputError(
                    f"The prompt of {empty[0]} decodes to an empty mask: add object points or a tighter box, or give a mask."
                )
        self.support_masks = [
            fg
            if fg is not None
            else cv2.resize(m.cpu().numpy().astype(np.uint8), im.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
            for fg, m, im in zip(own_masks, masks_t, rgb, strict=True)
        ]
        self._memory = self.model.encode_support(
            batch[None], masks_t[None], None if weak is None else (weak[0][None], weak[1][None])
        )

    @torch.inference_mode()
    def _logits(self, image: np.ndarray) -> torch.Tensor:
        if self._memory is None:
            raise InputError("Call set_support(images, masks) before predict().")
        return self.model.segment(self._input(image), self._memory)[0, 0]

    def logits(self, image: ImageLike) -> torch.Tensor:
        """Query logits [S, S] at the model's input size."""
        return self._logits(rgb_image(image, "Query image"))

    def predict(self, image: ImageLike) -> np.ndarray:
        """Boolean mask [H, W] at the query's size (bilinear, align_corners=True, then threshold)."""
        rgb = rgb_image(image, "Query image")
        logits = self._logits(rgb)
        h, w = rgb.shape[:2]
        resized = F.interpolate(logits[None, None].float(), size=(h, w), mode="bilinear", align_corners=True)[0, 0]
        return (resized > self.threshold).cpu().numpy()


def tint(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB image with `color` blended into the pixels where `mask` is set."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array(color, np.float32)
    return out.astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the mask tinted red and outlined in yellow."""
    out = tint(image, mask, (255, 40, 40), alpha=0.45)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 230, 0), max(1, round(max(image.shape[:2]) / 300)))
    return out


def mark_prompt(image: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image with a support's prompt drawn on it: foreground points green, background points
    red, a box (labels 2, 3) as a yellow rectangle. coords [P, 2] (x, y) in the image's pixels;
    padding points (label -1) are not drawn."""
    out = np.ascontiguousarray(image.copy())
    radius = max(1, round(max(image.shape[:2]) / 150))
    box = [tuple(int(round(v)) for v in c) for c, lab in zip(coords, labels, strict=True) if lab in BOX_LABELS]
    if len(box) == 2:
        cv2.rectangle(out, box[0], box[1], (255, 230, 0), radius)
    for (x, y), lab in zip(coords.tolist(), labels.tolist(), strict=True):
        if lab in (0, 1):
            color = (40, 230, 40) if lab == 1 else (255, 40, 40)
            cv2.circle(out, (int(round(x)), int(round(y))), radius, color, -1)
    return out


def image_files(paths: Sequence[str | Path], what: str) -> list[Path]:
    """Expand folders into their image files (sorted); a folder with none is an error.

    In a folder, hidden files are skipped, and `<name>.png` beside `<name>.<jpg|jpeg|...>` is that
    image's mask, not an image to segment. Files named one by one are taken as given."""
    files: list[Path] = []
    for p in map(lambda x: Path(x).expanduser(), paths):
        if p.is_dir():
            found = [f for f in visible_files(p) if f.suffix.lower() in (*IMAGE_EXTENSIONS, ".png")]
            photos = {f.stem for f in found if f.suffix.lower() in IMAGE_EXTENSIONS}
            found = sorted(f for f in found if not (f.suffix.lower() == ".png" and f.stem in photos))
            if not found:
                raise InputError(f"{what} folder {p} holds no image ({', '.join((*IMAGE_EXTENSIONS, '.png'))}).")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{what} {p} does not exist.")
    return files


def support_pairs(args: Sequence[Sequence[str]]) -> list[tuple[Path, Path]]:
    """--support IMAGE MASK pairs (MASK may be a prompt file, `<name>.json`: see `support_prompt`),
    or --support FOLDER holding <name>.<ext> + <name>.png pairs, or <name>.<ext> + <name>.json
    (a prompt file; the image may then be a png), one or the other for an image (`scan_folder`)."""
    pairs: list[tuple[Path, Path]] = []
    for values in args:
        if len(values) == 2:
            pairs.append((Path(values[0]).expanduser(), Path(values[1]).expanduser()))
        elif len(values) == 1 and Path(values[0]).is_dir():
            folder = Path(values[0]).expanduser()
            files = scan_folder(folder, prompts=True)
            if not files:
                raise InputError(
                    f"Support folder {folder} holds no <name>.jpg + <name>.png pair (or <name>.json prompt file)."
                )
            pairs += [(folder / files[n].image, folder / files[n].mask) for n in sorted(files)]
        else:
            raise InputError(
                f"--support takes IMAGE MASK (or IMAGE PROMPT.json) or a FOLDER of pairs, got {list(values)}."
            )
    return pairs


def is_prompt_file(path: Path) -> bool:
    """A support annotation given as a prompt file (JSON), not a mask."""
    return path.suffix.lower() == PROMPT_EXTENSION


def support_overlay_path(output: Path, image: Path) -> Path:
    """Where `fssam2 segment` draws a prompted support: its decoded mask and its points / box."""
    return output / f"{image.stem}_support_overlay.png"


def read_mask(path: Path) -> np.ndarray:
    """A support mask, bool [H, W] (`fssam2.benchmarks.read_binary_mask`: any non-zero value is
    the object); one with no object pixel is an InputError naming the file."""
    mask = read_binary_mask(path)
    if not mask.any():
        raise InputError(f"Mask {path} has no foreground (every value 0): mark the object with non-zero pixels.")
    return mask


def output_plan(
    pairs: Sequence[tuple[Path, Path]], queries: Sequence[Path], output: Path
) -> list[tuple[Path, Path, Path]]:
    """(query, mask file, overlay file) for each query: `<output>/<stem>.png` and
    `<stem>_overlay.png`. Refuses, before anything is written, an output that would replace an
    input (a query, a support image or mask), that two queries would share, or that exists already
    (e.g. the annotation `<stem>.png` beside a query, or an earlier run's output: nothing is written
    over), and an --output folder that holds an input: the masks written there would sit among the
    images and be read as images or masks by a later run. A file given twice (a folder and a file in
    it) is segmented once. A support shown by a prompt file also gets `<stem>_support_overlay.png`
    (`support_overlay_path`), checked alike."""
    inputs = {p.resolve(): p for pair in pairs for p in pair}
    inputs.update({q.resolve(): q for q in queries})
    plan: list[tuple[Path, Path, Path]] = []
    written_by: dict[Path, Path] = {}
    seen: set[tuple[int, Path]] = set()
    existing: list[tuple[Path, Path]] = []
    prompted = [(image, (support_overlay_path(output, image),)) for image, note in pairs if is_prompt_file(note)]
    queried = [(query, (output / f"{query.stem}.png", output / f"{query.stem}_overlay.png")) for query in queries]
    for query, targets in prompted + queried:
        if (len(targets), query.resolve()) in seen:
            continue
        seen.add((len(targets), query.resolve()))
        for target in targets:
            key = target.resolve()
            if key in inputs:
                raise InputError(
                    f"The output {target} of {'query' if len(targets) == 2 else 'support'} {query} would overwrite the input {inputs[key]}: "
                    "choose an --output folder that holds none of the inputs."
                )
            if key in written_by:
                both = "Queries" if len(targets) == 2 and written_by[key] in queries else "Images"
                raise InputError(
                    f"{both} {written_by[key]} and {query} would both be written to {target}: rename one, "
                    "or segment them in separate runs with different --output folders."
                )
            written_by[key] = query
            if target.exists() or target.is_symlink():
                existing.append((target, query))
        if len(targets) == 2:
            plan.append((query, *targets))
    if existing:
        target, query = existing[0]
        raise InputError(
            f"{len(existing)} of the {len(written_by)} outputs exist already, e.g. {target} (for "
            f"{'query' if query in queries else 'support'} {query}), an "
            "annotation or an earlier run's output: nothing is written over; choose a new --output folder."
        )
    folder = output.resolve()
    held = next((inputs[key] for key in inputs if key.parent == folder), None)
    if held is not None:
        raise InputError(
            f"--output {output} holds the input {held}: masks written there would be read as images or masks "
            f"by a later run; choose a folder that holds none of the inputs, e.g. {output / 'masks'}."
        )
    return plan


def write_masks(seg: Segmenter, plan: Sequence[tuple[Path, Path, Path]], log: TextIO | None = None) -> int:
    """Segment each query of `output_plan` and write its mask (0 / 255) and overlay; returns how
    many were written. A query that is not a readable image is skipped with one line on `log`
    (stderr), the rest are written, and then an InputError names the skipped ones."""
    log = log or sys.stderr
    skipped: list[Path] = []
    for query, mask_path, overlay_path in tqdm(plan, desc="segmenting", unit="image"):
        try:
            image = read_image(query)
        except InputError as err:
            skipped.append(query)
            tqdm.write(f"fssam2: skipped query {query}: {err}", file=log)  # above the progress bar
            continue
        mask = seg.predict(image)
        for path in (mask_path, overlay_path):  # one that appeared meanwhile (another run?): neither is written
            check_new(path, "--output")
        write_png((mask * 255).astype(np.uint8), mask_path, "--output")
        write_png(overlay(image, mask), overlay_path, "--output")
    written = len(plan) - len(skipped)
    if skipped:
        output = plan[0][1].parent
        raise InputError(
            f"{len(skipped)} of {len(plan)} queries are not readable images and were skipped "
            f"({', '.join(map(str, skipped[:3]))}{', ...' if len(skipped) > 3 else ''}); the other {written} masks "
            f"are in {output}: convert or remove the skipped files."
        )
    return written
