"""What an evaluation plan will cost, before it runs: `simulate` replays a plan (`fssam2.plan`)
through the feature cache's policy without tensors, giving the encoder passes and the peak cache
bytes a run will have; `describe` is what `--model.feature_cache.plan_only true` prints. It measures
the cache's entry sizes with one small encoder pass, so it sits above the data layer.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fssam2.build import build_sam2
from fssam2.cache import Residency
from fssam2.data import FewShotDataModule
from fssam2.errors import InputError
from fssam2.meters import FLOAT32, Precision, parse_precision
from fssam2.methods import DEFAULT_METHOD, FewShotSAM2, method_class
from fssam2.methods.features import SAM2Method
from fssam2.plan import EvalPlan, ImageKey, Shown, batch_keys, support_kinds, trace, unplanned_batches


@dataclass(frozen=True)
class Simulation:
    passes: int  # image-encoder passes (images encoded)
    memory_passes: int  # memory-encoder passes (support memories computed)
    peak_bytes: int  # the most bytes the cache held at once


def simulate(
    batches: Sequence[Sequence[Shown]], image_bytes: int, memory_bytes: int, budget_bytes: int, planned: bool = True
) -> Simulation:
    """Replay one process's `batches` through the feature cache's policy (`Residency`) as
    `FSSAM2Module` and the methods ask for entries: the weak supports' images first (their
    prompts are decoded from them); then memories; then, in one encoder call, the images of
    the memories not held (a weak support's from its decode) and the queries; then the new images
    are kept, then the new memories.
    planned: Belady's rule by `trace(batches)`; else least recently used."""
    residency = Residency(budget_bytes)
    if planned:
        residency.plan(trace(batches, "", 0))
    passes = memory_passes = 0
    for step, batch in enumerate(batches):
        residency.clock = step
        supports, memories, queries = batch_keys(batch, "", 0)
        kinds = support_kinds(batch)
        decoded = list(dict.fromkeys(k for k, kind in zip(supports, kinds, strict=True) if kind != "mask"))
        fresh = [k for k in decoded if not residency.touch(("image", k))]  # kept with the batch's other new images
        missing: dict[Hashable, ImageKey] = {}
        for i, (image, memory, kind) in enumerate(zip(supports, memories, kinds, strict=True)):
            # A weak support's memory is its prompt's: a box's is the same wherever its mask is, another
            # prompt is drawn anew (so no plan asks for it again; least recently used may keep it).
            key: Hashable = memory if kind == "mask" else (memory, "box") if kind == "box" else (memory, step, i)
            if not residency.touch(("memory", key)):
                missing.setdefault(key, image)
        images = [k for k in [*missing.values(), *queries] if k not in decoded]
        encode = fresh + list(dict.fromkeys(k for k in images if not residency.touch(("image", k))))
        passes += len(encode)
        memory_passes += len(missing)
        for k in encode:
            residency.admit(("image", k), image_bytes)
        for held in missing:
            residency.admit(("memory", held), memory_bytes)
    return Simulation(passes, memory_passes, residency.peak)


def distinct_images(episodes: Sequence[Shown]) -> int:
    """The floor: each image the episodes show, encoded once."""
    return len({e.query for e in episodes} | {s for e in episodes for s in e.supports})


PROBE_SIZE = 64  # input side of the one small forward pass that measures entry shapes and dtypes


def entry_bytes(
    model: SAM2Method, image_size: int, precision: Precision = FLOAT32, half: bool = False
) -> tuple[int, int]:
    """Bytes the feature cache keeps for one image's features and for one support's memory when
    SAM2 runs at `image_size`, as a run at `precision` keeps them: measured by one forward of the
    float32 image and memory encoders at PROBE_SIZE px (under autocast for a mixed precision; every
    cached map [C, h, w] is at S/4, S/8 or S/16, so its size scales with the area; a vector such as
    SANSA's object pointer does not), floats counted at the model's dtype for a "-true" precision,
    then narrowed as feature_cache.half does."""
    if image_size % PROBE_SIZE:
        raise InputError(f"model.image_size={image_size} must be a multiple of {PROBE_SIZE} for the plan report.")
    area = (image_size // PROBE_SIZE) ** 2

    def element(t: torch.Tensor) -> int:
        weights = precision.weights
        size = weights.itemsize if weights is not None and t.is_floating_point() else t.element_size()
        return 2 if half and size > 2 and t.is_floating_point() else size

    def nbytes(tensors: Sequence[torch.Tensor]) -> int:
        return sum(t.numel() * element(t) * (area if t.dim() >= 3 else 1) for t in tensors)

    device = next(model.parameters()).device
    with torch.inference_mode(), precision.autocast(device.type):
        feats = model._encode(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device))
        (memory,) = model.cached_memories(feats, torch.zeros(1, PROBE_SIZE, PROBE_SIZE, device=device))
    return nbytes(feats.per_image(0)), nbytes(memory)


@dataclass(frozen=True)
class PlanReport:
    episodes: int
    floor: int  # distinct images
    planned: Simulation  # all processes together (passes summed, peak the largest)
    unplanned: Simulation  # index order, least recently used (fssam2 before planning)
    image_bytes: int
    memory_bytes: int
    budget_bytes: int
    world_size: int


def report(
    plan: EvalPlan, batch_size: int, image_bytes: int, memory_bytes: int, budget_bytes: int, world_size: int = 1
) -> PlanReport:
    """Planned and unplanned encoder passes of `plan` over `world_size` processes."""

    def total(runs: list[Simulation]) -> Simulation:
        return Simulation(
            sum(r.passes for r in runs), sum(r.memory_passes for r in runs), max(r.peak_bytes for r in runs)
        )

    planned = total(
        [simulate(plan.rank_batches(r, world_size), image_bytes, memory_bytes, budget_bytes) for r in range(world_size)]
    )
    unplanned = total(
        [
            simulate(
                unplanned_batches(plan, batch_size, r, world_size),
                image_bytes,
                memory_bytes,
                budget_bytes,
                planned=False,
            )
            for r in range(world_size)
        ]
    )
    return PlanReport(
        len(plan.episodes),
        distinct_images([*plan.episodes, *plan.gap]),
        planned,
        unplanned,
        image_bytes,
        memory_bytes,
        budget_bytes,
        world_size,
    )


REPORT_HEADER = (
    "| episodes | distinct images (floor) | planned encoder passes | x floor | peak cache MB "
    "| unplanned (index order, LRU) passes | x floor |"
)


def report_row(r: PlanReport) -> str:
    mb = 2**20
    return (
        f"| {r.episodes} | {r.floor} | {r.planned.passes} | {r.planned.passes / max(r.floor, 1):.3f} "
        f"| {r.planned.peak_bytes / mb:.4g} | {r.unplanned.passes} | {r.unplanned.passes / max(r.floor, 1):.3f} |"
    )


def format_report(r: PlanReport, title: str) -> str:
    mb = 2**20
    lines = [
        title,
        f"entries: {r.image_bytes / mb:.3g} MB an image's features, {r.memory_bytes / mb:.3g} MB a support memory; "
        f"budget {r.budget_bytes / mb:.4g} MB; {r.world_size} process{'es' if r.world_size > 1 else ''}",
        "",
        REPORT_HEADER,
        "|---:|---:|---:|---:|---:|---:|---:|",
        report_row(r),
    ]
    return "\n".join(lines)


def describe(
    datamodule: FewShotDataModule,
    split: str,
    sam2_config: str,
    image_size: int | None,
    precision: str | int | None,
    max_megabytes: float,
    half: bool = False,
    world_size: int = 1,
    method: str = DEFAULT_METHOD,
    method_args: dict[str, Any] | None = None,
) -> str:
    """The plan report `--model.feature_cache.plan_only true` prints: the split's episodes, the
    floor, planned encoder passes and peak cache bytes under the budget, and the unplanned figure
    beside them. The SAM2 model is built (random weights) for its structure only; nothing runs."""
    plan = datamodule.plan(split)
    kind = method_class(method)
    model: SAM2Method
    if issubclass(kind, FewShotSAM2):  # LoRA changes no cached shape
        model = FewShotSAM2(build_sam2(sam2_config, None, image_size=image_size))
    else:
        options = {k: v for k, v in (method_args or {}).items() if k != "adapters"}  # a weights file: no shape
        options = kind.sizing_options(options)
        built = kind.build(sam2_config, None, image_size, **options)
        if not isinstance(built, SAM2Method):
            raise InputError(f"model.method={method} keeps no SAM2 features: the plan report cannot size its cache.")
        model = built
    size = int(model.sam2.image_size)
    image_bytes, memory_bytes = entry_bytes(model, size, parse_precision(precision), half)
    found = report(plan, datamodule.batch_size, image_bytes, memory_bytes, int(max_megabytes * 2**20), world_size)
    title = (
        f"{type(datamodule).__name__} fold {getattr(datamodule, 'fold', '-')}, {split} split, "
        f"{datamodule.shot}-shot, batch {datamodule.batch_size}; {sam2_config} at {size} px, "
        f"precision {precision or '32-true'}{', half' if half else ''}"
        f"{f'; and {len(plan.gap)} support-gap episodes (swapped supports)' if plan.gap else ''}"
    )
    return format_report(found, title)
