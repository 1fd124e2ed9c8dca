"""Segment your own images: a few annotated supports, any number of queries.

    seg = Segmenter.from_pretrained("sam2.1_hiera_b+", adapter="pascal_fold0.safetensors")
    seg.set_support([image1, image2], [mask1, mask2])   # uint8 RGB [H, W, 3], masks [H, W]
    mask = seg.predict(query)                            # bool [H, W] at the query's size

The supports are encoded once (image encoder and memory encoder); each query then costs one
image-encoder pass, memory attention and the mask decoder.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fssam2.adapters import adapter_lora_config, check_base, read_adapter
from fssam2.benchmarks import (
    IMAGE_EXTENSIONS,
    binary_mask,
    read_binary_mask,
    read_image,
    scan_folder,
    visible_files,
    write_png,
)
from fssam2.build import build_sam2
from fssam2.data import to_input
from fssam2.errors import InputError
from fssam2.lora import load_lora_state_dict, merge_lora_
from fssam2.model import FewShotSAM2


class Segmenter:
    """FS-SAM2 inference on arbitrary images.

    Args:
        model: a FewShotSAM2 (with or without LoRA).
        device: where to run.
        threshold: logit threshold of the masks (0 = probability 0.5).
    """

    def __init__(self, model: FewShotSAM2, device: str | torch.device = "cpu", threshold: float = 0.0) -> None:
        self.model = model.to(device).eval()
        merge_lora_(self.model)  # inference only: one matmul per adapted layer
        self.device = torch.device(device)
        self.threshold = threshold
        self._memory: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_pretrained(
        cls,
        sam2: str = "sam2.1_hiera_b+",
        adapter: str | Path | None = None,
        *,
        sam2_checkpoint: str | Path | None = None,
        image_size: int | None = None,
        device: str = "cpu",
        threshold: float = 0.0,
    ) -> Segmenter:
        """SAM2 `sam2` (a packaged config name) with weights from `sam2_checkpoint` (a path or a
        downloaded name; default: the downloaded checkpoint of `sam2`, none for fssam2_tiny), plus
        an optional adapter file from `fssam2 export`."""
        from fssam2.hub import CHECKPOINT_URLS

        checkpoint = sam2_checkpoint if sam2_checkpoint is not None else (sam2 if sam2 in CHECKPOINT_URLS else None)
        lora, tensors = None, None
        if adapter is not None:
            tensors, metadata = read_adapter(adapter)
            check_base(metadata, adapter, sam2, checkpoint)
            lora = adapter_lora_config(metadata)
            if image_size is None and metadata.get("image_size") not in (None, "None"):
                image_size = int(metadata["image_size"])
        model = FewShotSAM2(build_sam2(sam2, checkpoint, image_size=image_size), lora)
        if tensors is not None:
            load_lora_state_dict(model, tensors)
        return cls(model, device=device, threshold=threshold)

    def _input(self, image: np.ndarray) -> torch.Tensor:
        return to_input(image, self.model.image_size)[None].to(self.device)

    @torch.inference_mode()
    def set_support(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> None:
        """Encode K >= 1 annotated examples once; masks [H, W] or [H, W, C] are non-zero where the
        object is (`fssam2.benchmarks.binary_mask`: any channel, or a varying alpha)."""
        names = names or [f"support {i}" for i in range(len(images))]
        if not images or len(images) != len(masks):
            raise InputError(
                f"Give one mask per support image, at least one pair ({len(images)} images, {len(masks)} masks)."
            )
        size = self.model.image_size
        binary = []
        for image, mask, name in zip(images, masks, names, strict=True):
            if mask.shape[:2] != image.shape[:2]:
                raise InputError(
                    f"Mask of {name} is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}: they must match."
                )
            fg = binary_mask(np.asarray(mask))
            if not fg.any():
                raise InputError(f"Mask of {name} has no foreground: mark the object with non-zero pixels.")
            binary.append(cv2.resize(fg.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST))
        batch = torch.cat([self._input(im) for im in images])  # [K, 3, S, S]
        feats = self.model.encode_images(batch)
        masks_t = torch.from_numpy(np.stack(binary)).float().to(self.device)  # [K, S, S]
        self._memory = self.model.encode_memory(feats, masks_t, batch=1)

    @torch.inference_mode()
    def logits(self, image: np.ndarray) -> torch.Tensor:
        """Query logits [S, S] at the model's input size."""
        if self._memory is None:
            raise InputError("Call set_support(images, masks) before predict().")
        feats = self.model.encode_images(self._input(image))
        return self.model.decode(feats, *self._memory)[0, 0]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Boolean mask [H, W] at the query's size (bilinear, align_corners=True, then threshold)."""
        logits = self.logits(image)
        h, w = image.shape[:2]
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
    """--support IMAGE MASK pairs, or --support FOLDER holding <name>.<ext> + <name>.png pairs."""
    pairs: list[tuple[Path, Path]] = []
    for values in args:
        if len(values) == 2:
            pairs.append((Path(values[0]).expanduser(), Path(values[1]).expanduser()))
        elif len(values) == 1 and Path(values[0]).is_dir():
            folder = Path(values[0]).expanduser()
            files = scan_folder(folder)
            if not files:
                raise InputError(f"Support folder {folder} holds no <name>.jpg + <name>.png pair.")
            pairs += [(folder / files[n], folder / f"{n}.png") for n in sorted(files)]
        else:
            raise InputError(f"--support takes IMAGE MASK or a FOLDER of pairs, got {list(values)}.")
    return pairs


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
    `<stem>_overlay.png`. Refuses, before anything is written, any output that would replace an
    input (a query, a support image or mask) or that two queries would share. A file given twice
    (a folder and a file in it) is segmented once."""
    inputs = {p.resolve(): p for pair in pairs for p in pair}
    inputs.update({q.resolve(): q for q in queries})
    plan: list[tuple[Path, Path, Path]] = []
    written_by: dict[Path, Path] = {}
    seen: set[Path] = set()
    for query in queries:
        if query.resolve() in seen:
            continue
        seen.add(query.resolve())
        targets = (output / f"{query.stem}.png", output / f"{query.stem}_overlay.png")
        for target in targets:
            key = target.resolve()
            if key in inputs:
                raise InputError(
                    f"The output {target} of query {query} would overwrite the input {inputs[key]}: "
                    "choose an --output folder that holds none of the inputs."
                )
            if key in written_by:
                raise InputError(
                    f"Queries {written_by[key]} and {query} would both be written to {target}: rename one, "
                    "or segment them in separate runs with different --output folders."
                )
            written_by[key] = query
        plan.append((query, *targets))
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
        write_png((mask * 255).astype(np.uint8), mask_path)
        write_png(overlay(image, mask), overlay_path)
    written = len(plan) - len(skipped)
    if skipped:
        output = plan[0][1].parent
        raise InputError(
            f"{len(skipped)} of {len(plan)} queries are not readable images and were skipped "
            f"({', '.join(map(str, skipped[:3]))}{', ...' if len(skipped) > 3 else ''}); the other {written} masks "
            f"are in {output}: convert or remove the skipped files."
        )
    return written
