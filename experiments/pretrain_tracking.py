"""Pretrain the tiny SAM2 on synthetic clips: video object tracking, and prompts as SAM2 takes them.

FS-SAM2 starts from a SAM2 pretrained for tracking. The tiny SAM2 has no released weights, so this
gives it the same start: every parameter the FS-SAM2 forward pass uses, and the IoU head, trains on pairs (frame 0
with one object's mask as the memory, a later frame in which to find that object again), through
the same forward pass as few-shot episodes (`fssam2.FewShotSAM2`, K = 1). With `--prompt-weight`
(default 1), the later frame is also decoded without memory from a point, points or a box drawn
from the object's mask, then once more with a corrective click, as SAM2 trains its prompt path.

Worlds: `varied` (the default, `fssam2.synthetic.VariedVideo`: many shapes and patterns in random
colours, looks that change between frames, so colour alone never identifies an object); `hue`
(`SyntheticVideo`, hue-coded blobs) made the first tracker, `fssam2_tiny_tracking`. With
`--pointer-weight` (default 1) the same pairs also go through SANSA's forward, which reads object
pointers. The defaults made `fssam2_tiny_pointers`, the tiny SAM2 every demo starts from:

    python experiments/pretrain_tracking.py                # writes src/fssam2/checkpoints/fssam2_tiny_pointers.pt
    python experiments/pretrain_tracking.py --pointer-weight 0 \
        --out src/fssam2/checkpoints/fssam2_tiny_varied.pt                        # FS-SAM2's forward only
    python experiments/pretrain_tracking.py --world hue --prompt-weight 0 --pointer-weight 0 --steps 4000 \
        --out src/fssam2/checkpoints/fssam2_tiny_tracking.pt                       # the first tracker
    python experiments/pretrain_tracking.py --steps 600 --out /tmp/probe.pt --lr 2e-3   # a probe

Recipe (see docs/synthetic.md, "The tracker the demo starts from", for the measurements behind it):
AdamW, linear warm-up then cosine decay, and a motion curriculum that starts with nearly still
clips (the memory only has to be copied into place) and reaches full motion a fifth of the way in.
The rate decides whether the memory path opens: every run first segments every object whatever
the memory shows; at 5e-4 the memory is then read, at 2e-3 it never is. This script's evaluation
prints the IoU with the true memory beside another clip's memory and an empty mask, so that
failure is visible, and the prompted-mask IoU from one click, three clicks and the box.

Seeded: the same arguments on the same machine and torch build give the same weights (on a GPU,
up to its kernels' own nondeterminism). It runs on one CPU thread by default (`--threads`);
`--device cuda` runs it on a GPU, in float32 as on a CPU (no TF32), and `--workers N` draws the
clips in N processes (each step's clips are a function of the step alone: the same batches).

A time budget, `--minutes M`: the recipe's schedules (warm-up then cosine, the motion curriculum)
are laid out over the run's step count, so the run first fixes that count. It times a throwaway
copy of the run on this machine (a few untimed steps, then up to 20 timed, and two evaluations of a
few clips, the first drawing them, scaled to `--eval-clips`), prints what a step and an evaluation
cost, and then runs the recipe for the most steps whose training, evaluations and final evaluation
fit what is left of the minutes, counted from the script's start (at most `--steps` when given). The run itself is then `--steps N` with the printed N: on a CPU the
same arguments with `--steps N` in place of `--minutes` give the same weights. Should the steps
turn out slower than timed, the run stops when the final evaluation would no longer fit, evaluates
and saves the model as it is, says so, and exits 0 (the schedule then has not ended).

Checkpoints: `--out` is written once the run ends (`{"model": state_dict}`, Meta's format, with
`steps` done, `planned_steps` and the run's `args` beside it) and, with `--save-every N`, every N
steps as well: the first write creates `--out` (a file that exists is refused before the run), later
ones replace that file of this run's own whole, so a run killed at any moment leaves the last saved
model loadable.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fssam2 import build_sam2
from fssam2.data import to_input
from fssam2.errors import InputError
from fssam2.files import check_new, create, replace_own
from fssam2.methods.base import bce_dice_per_episode
from fssam2.methods.features import ImageFeatures
from fssam2.methods.fssam2 import FewShotSAM2
from fssam2.methods.sansa import SANSA, AdapterConfig
from fssam2.synthetic import SyntheticVideo, VariedVideo

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "src" / "fssam2" / "checkpoints" / "fssam2_tiny_pointers.pt"
WORLDS = {"varied": VariedVideo, "hue": SyntheticVideo}  # the clips each world draws
EVAL_SEED_OFFSET = 1000  # evaluation clips come from another seed than training clips


def world_of(name: str, size: int, seed: int, relocate: float = 0.0) -> SyntheticVideo | VariedVideo:
    """The clips of world `name`; `relocate` (varied only) is the share of clips laid out anew."""
    if relocate:
        return VariedVideo(image_size=size, seed=seed, relocate=relocate)
    return WORLDS[name](image_size=size, seed=seed)


def batch_of(video: SyntheticVideo | VariedVideo, indices: range, motion: float, size: int) -> tuple[torch.Tensor, ...]:
    """Support images [B, 1, 3, S, S], support masks [B, 1, S, S], query images [B, 3, S, S],
    query targets [B, S, S] (long, {0, 1})."""
    pairs = [video.pair(i, motion) for i in indices]
    images0 = torch.stack([to_input(p[0], size) for p in pairs])[:, None]
    masks0 = torch.from_numpy(np.stack([p[1] for p in pairs])).float()[:, None]
    images1 = torch.stack([to_input(p[2], size) for p in pairs])
    targets = torch.from_numpy(np.stack([p[3] for p in pairs])).long()
    return images0, masks0, images1, targets


@functools.lru_cache(maxsize=2)
def held_out(
    world: str, size: int, seed: int, relocate: float, clips: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """The evaluation's clips at full motion, as `batch_of` gives them, on `device`; drawn once per
    run (every evaluation of a run reads the same clips)."""
    video = world_of(world, size, seed + EVAL_SEED_OFFSET, relocate)
    data = [batch_of(video, range(i, min(i + 16, clips)), 1.0, size) for i in range(0, clips, 16)]
    return tuple(torch.cat([d[i] for d in data]).to(device) for i in range(4))


@torch.no_grad()
def evaluate(
    model: FewShotSAM2,
    world: str,
    clips: int,
    seed: int,
    batch: int,
    prompts: bool,
    relocate: float = 0.0,
    sansa: SANSA | None = None,
) -> dict[str, float]:
    """Foreground IoU (summed intersections over summed unions, x100) on held-out clips at full
    motion, with the true memory, with the memory of another clip (`swap`) and with an empty
    memory mask (`blank`); with `prompts`, also of the later frame's object decoded from prompts.
    `relocate`: the share of clips whose objects are laid out anew (see `VariedVideo`). With
    `sansa` (SANSA's forward on the same SAM2), also its IoU with the true and another clip's memory."""
    device = next(model.parameters()).device
    images0, masks0, images1, targets = held_out(world, model.image_size, seed, relocate, clips, device)
    controls = {
        "true": (images0, masks0),
        "swap": (images0.roll(1, 0), masks0.roll(1, 0)),
        "blank": (images0, torch.zeros_like(masks0)),
    }
    was_training = model.training
    model.eval()
    out, readouts = {}, {}
    layers = model.sam2.memory_attention.layers
    for name, (sup, sup_masks) in controls.items():
        inter = union = 0
        for i in range(0, clips, batch):
            seen: list[torch.Tensor] = []
            hooks = [
                layer.cross_attn_image.register_forward_hook(lambda m, a, o, seen=seen: seen.append(o))
                for layer in layers
            ]
            pred = model(sup[i : i + batch], sup_masks[i : i + batch], images1[i : i + batch])[:, 0] > 0
            for hook in hooks:
                hook.remove()
            if i == 0:
                readouts[name] = torch.stack(seen)  # [layers, B, HW, C] what each layer reads from memory
            truth = targets[i : i + batch] == 1
            inter += int((pred & truth).sum())
            union += int((pred | truth).sum())
        out[name] = 100 * inter / max(union, 1)
    if sansa is not None:
        sansa.eval()
        for name in ("true", "swap"):
            sup, sup_masks = controls[name]
            inter = union = 0
            for i in range(0, clips, batch):
                pred = sansa(sup[i : i + batch], sup_masks[i : i + batch], images1[i : i + batch])[:, 0] > 0
                truth = targets[i : i + batch] == 1
                inter += int((pred & truth).sum())
                union += int((pred | truth).sum())
            out[f"pointer_{name}"] = 100 * inter / max(union, 1)
        sansa.train(was_training)
    if prompts:
        out.update({f"prompt_{k}": v for k, v in prompt_iou(model, images1, targets, seed, batch).items()})
    model.train(was_training)
    # How loud the memory readout is, and how much of it depends on which memory it reads.
    out["readout"] = float(readouts["true"].pow(2).mean().sqrt())
    out["readout_swap_diff"] = float((readouts["true"] - readouts["swap"]).pow(2).mean().sqrt())
    return out


def mask_terms(masks: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each of the decoder's four masks scored against the target: BCE + Dice [B, 4] and the IoU
    its prediction would get [B, 4] (no gradient). masks [B, 4, h, w] low-resolution logits,
    targets [B, S, S] in {0, 1}."""
    size = targets.shape[-1]
    logits = F.interpolate(masks.float(), size=(size, size), mode="bilinear", align_corners=False)  # [B, 4, S, S]
    per_mask = torch.stack([bce_dice_per_episode(logits[:, i], targets) for i in range(logits.shape[1])], 1)
    with torch.no_grad():
        pred, truth = logits > 0, (targets == 1)[:, None]
        iou = (pred & truth).flatten(2).sum(2) / (pred | truth).flatten(2).sum(2).clamp(min=1)
    return per_mask, iou


def sam_terms(
    masks: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per item, each [B]: the single mask's and the best multimask output's BCE + Dice, and the
    IoU head's squared error averaged over the four masks (summed in this order by the caller)."""
    per_mask, iou = mask_terms(masks, targets)
    return per_mask[:, 0], per_mask[:, 1:].min(1).values, (iou_pred.float() - iou).pow(2).mean(1)


def tracking_loss(
    model: FewShotSAM2, feats: ImageFeatures, masks0: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """SAM2's own training signal for its mask decoder, on the FS-SAM2 forward pass (features of
    frames 0 then 1): the single mask (what FS-SAM2 reads) and the best of the three multimask
    outputs, each BCE + Dice, and the IoU head regressing each mask's IoU. In eval mode SAM2 falls
    back to the multimask output with the highest predicted IoU when the single mask is unstable
    (DESIGN.md, step 4), so those outputs and the IoU head must be trained too."""
    b = targets.shape[0]
    memory, memory_pos = model.encode_memory(feats.select(slice(0, b)), masks0.flatten(0, 1), b)
    inputs = model.decoder_inputs(feats.select(slice(b, None)), memory, memory_pos)
    masks, iou_pred, _, _ = model.sam2.sam_mask_decoder.predict_masks(
        **inputs, repeat_image=False
    )  # [B, 4, h, w], [B, 4]
    per_mask, iou = mask_terms(masks, targets)
    return per_mask[:, 0].mean() + per_mask[:, 1:].min(1).values.mean() + F.mse_loss(iou_pred.float(), iou)


def pointer_tracking_loss(
    sansa: SANSA, feats: ImageFeatures, masks0: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """The same pairs through SANSA's forward (object pointers read, the decoder without its
    object-score token, multimask output): the best of the three masks, BCE + Dice, and the IoU
    head regressing each. It trains what FS-SAM2's forward never reads: the object-pointer
    projection, the temporal encodings and the mask-prompted pointer decode."""
    b = targets.shape[0]
    supports = sansa.support_memories(feats.select(slice(0, b)), masks0.flatten(0, 1), b)
    masks, iou_pred = sansa.decoder_outputs(feats.select(slice(b, None)), supports)  # [B, 3, h, w], [B, 3]
    per_mask, iou = mask_terms(masks, targets)
    return per_mask.min(1).values.mean() + F.mse_loss(iou_pred.float(), iou)


def sample_prompt(
    mask: np.ndarray, rng: np.random.Generator, kind: str, jitter: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt of a mask [S, S] bool as SAM's training draws them: points [P, 2] (x, y) and labels [P].
    kind: "point" (one foreground click), "points" (2-5 foreground clicks, half the time one
    background click in the box around the object), "box" (its corners, each moved by up to
    `jitter` of the box's sides; labels 2 and 3)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return np.zeros((1, 2)), np.array([-1])
    if kind == "box":
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        shift = rng.uniform(-jitter, jitter, 4) * np.array([x1 - x0, x1 - x0, y1 - y0, y1 - y0])
        box = np.clip(np.array([x0, x1, y0, y1]) + shift, 0, mask.shape[0] - 1)
        return np.array([[box[0], box[2]], [box[1], box[3]]]), np.array([2, 3])
    n = 1 if kind == "point" else int(rng.integers(2, 6))
    pick = rng.integers(len(xs), size=n)
    points, labels = [np.stack([xs[pick], ys[pick]], 1)], [np.ones(n, np.int64)]
    if kind == "points" and rng.random() < 0.5:
        around = np.zeros_like(mask)
        around[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        bys, bxs = np.nonzero(around & ~mask)
        if len(bxs):
            j = int(rng.integers(len(bxs)))
            points.append(np.array([[bxs[j], bys[j]]]))
            labels.append(np.zeros(1, np.int64))
    return np.concatenate(points).astype(np.float64), np.concatenate(labels)


def correction(truth: np.ndarray, pred: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One corrective click, as SAM's interactive training adds: in the larger error region, a
    foreground click where the object was missed or a background click where it was over-segmented."""
    missed, extra = truth & ~pred, pred & ~truth
    region, label = (missed, 1) if missed.sum() >= extra.sum() else (extra, 0)
    ys, xs = np.nonzero(region)
    if not len(xs):
        return np.zeros((1, 2)), np.array([-1])
    j = int(rng.integers(len(xs)))
    return np.array([[xs[j], ys[j]]], np.float64), np.array([label])


def padded(
    prompts: list[tuple[np.ndarray, np.ndarray]], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item prompts -> coords [B, P, 2] float, labels [B, P] int32, padded with label -1, on `device`."""
    p = max(len(labels) for _, labels in prompts)
    coords = torch.zeros(len(prompts), p, 2)
    labels = -torch.ones(len(prompts), p, dtype=torch.int32)
    for i, (c, lab) in enumerate(prompts):
        coords[i, : len(lab)] = torch.from_numpy(c).float()
        labels[i, : len(lab)] = torch.from_numpy(lab).int()
    return coords.to(device), labels.to(device)


def joined(prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Several prompts of one object as one: their points and labels, in order."""
    return np.concatenate([c for c, _ in prompts]), np.concatenate([lab for _, lab in prompts])


def chosen_pred(masks: torch.Tensor, iou_pred: torch.Tensor, single_click: torch.Tensor, size: int) -> torch.Tensor:
    """The mask SAM2 reads, as a prediction [B, S, S] bool: the multimask output of highest
    predicted IoU after a single click, the single mask otherwise. masks [B, 4, h, w], iou_pred
    [B, 4], single_click [B] bool."""
    best = iou_pred[:, 1:].argmax(1) + 1
    index = torch.where(single_click, best, torch.zeros_like(best))
    chosen = masks[torch.arange(len(masks), device=masks.device), index]
    return F.interpolate(chosen[:, None].float(), size=(size, size), mode="bilinear")[:, 0] > 0


def prompt_loss(
    model: FewShotSAM2, image: ImageFeatures, targets: torch.Tensor, rng: np.random.Generator
) -> torch.Tensor:
    """SAM2's prompt training on frames decoded without memory: a point, points or a box drawn
    from the object's mask, then one corrective click on the first prediction; both rounds' masks
    are scored. Items whose object is fully covered are left out."""
    device = targets.device
    truth = targets.cpu().numpy().astype(bool)
    kinds = rng.choice(["point", "points", "box"], size=len(truth), p=[0.35, 0.3, 0.35])
    first = [sample_prompt(t, rng, str(kind)) for t, kind in zip(truth, kinds, strict=True)]
    coords, labels = padded(first, device)
    masks, iou_pred = model.decode_prompts(image, coords, labels)
    loss = sum(sam_terms(masks, iou_pred, targets), torch.zeros(len(truth), device=device))  # [B]
    with torch.no_grad():
        single = torch.from_numpy(kinds == "point").to(device)
        pred = chosen_pred(masks, iou_pred, single, targets.shape[-1])
    fixes = [correction(t, p, rng) for t, p in zip(truth, pred.cpu().numpy(), strict=True)]
    coords, labels = padded([joined(pair) for pair in zip(first, fixes, strict=True)], device)
    masks, iou_pred = model.decode_prompts(image, coords, labels)
    loss = sum(sam_terms(masks, iou_pred, targets), loss)
    valid = torch.from_numpy(truth.reshape(len(truth), -1).any(1)).float().to(device)
    return (loss * valid).sum() / valid.sum().clamp(min=1) / 2


@torch.no_grad()
def prompt_iou(model: FewShotSAM2, images: torch.Tensor, targets: torch.Tensor, seed: int, batch: int) -> dict:
    """Foreground IoU (summed intersections over summed unions, x100) of the mask SAM2 decodes
    without memory from one foreground click, three clicks and the object's box (no jitter)."""
    out = {}
    device = targets.device
    truth = targets.cpu().numpy().astype(bool)
    starts = range(0, len(images), batch)
    feats = [model.encode_images(images[i : i + batch]) for i in starts]  # once, for every kind of prompt
    for kind in ("point", "points", "box"):
        rng = np.random.default_rng((seed, EVAL_SEED_OFFSET, len(kind)))
        inter = union = 0
        for i, image in zip(starts, feats, strict=True):
            if kind == "points":
                prompts = [joined([sample_prompt(t, rng, "point") for _ in range(3)]) for t in truth[i : i + batch]]
            else:
                prompts = [sample_prompt(t, rng, kind, jitter=0.0) for t in truth[i : i + batch]]
            coords, labels = padded(prompts, device)
            masks, iou_pred = model.decode_prompts(image, coords, labels)
            single = torch.full((len(masks),), kind == "point", device=device)
            pred = chosen_pred(masks, iou_pred, single, targets.shape[-1])
            t = targets[i : i + batch] == 1
            inter += int((pred & t).sum())
            union += int((pred | t).sum())
        out[kind] = 100 * inter / max(union, 1)
    return out


def motion_at(step: int, steps: int, start: float, full_at: float) -> float:
    """The curriculum: motion grows linearly from `start` to 1 over the first `full_at` of the run."""
    return min(1.0, start + (1 - start) * step / max(1, full_at * steps))


class Clips(torch.utils.data.Dataset):
    """Step i's clips of a run of `steps` steps: (motion, batch_of's tensors). A function of the
    step alone, so data-loading workers draw the same batches as the main process."""

    def __init__(self, video: SyntheticVideo | VariedVideo, opts: argparse.Namespace, steps: int, count: int) -> None:
        self.video, self.opts, self.steps, self.count = video, opts, steps, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, step: int) -> tuple[float, tuple[torch.Tensor, ...]]:
        o = self.opts
        motion = motion_at(step, self.steps, o.motion_start, o.motion_full_at)
        return motion, batch_of(self.video, range(step * o.batch, (step + 1) * o.batch), motion, o.image_size)


class Run:
    """The recipe for a run of `steps` steps, seeded: the model, SANSA's forward on the same SAM2
    (with `--pointer-weight`), AdamW over the parameters the losses read, the warm-up + cosine
    schedule, the clips and the prompt draws."""

    def __init__(self, opts: argparse.Namespace, steps: int, device: torch.device) -> None:
        self.opts, self.steps, self.device = opts, steps, device
        torch.manual_seed(opts.seed)
        model = FewShotSAM2(build_sam2("fssam2_tiny", opts.init, image_size=opts.image_size)).to(device).train()
        # SANSA's forward on the same SAM2 (no adapters): it reads object pointers.
        sansa = SANSA(model.sam2, AdapterConfig(stages=())).to(device).train() if opts.pointer_weight else None
        model.requires_grad_(False)
        # The forward pass's parameters, and the IoU head that picks the fallback mask in eval mode.
        params = [p for _, p in model.used_parameters()]
        params += list(model.sam2.sam_mask_decoder.iou_prediction_head.parameters())
        if sansa is not None:  # what only SANSA's forward reads
            sam2 = model.sam2
            params += [sam2.maskmem_tpos_enc, *sam2.obj_ptr_proj.parameters(), *sam2.mask_downsample.parameters()]
            params += list(sam2.sam_prompt_encoder.mask_downscaling.parameters())
        if opts.prompt_weight:  # prompted frames are decoded with the no-memory embedding
            params.append(model.sam2.no_mem_embed)
        for p in params:
            p.requires_grad_(True)
        memory_parts = {
            id(p)
            for part in ("memory_attention", "memory_encoder")
            for p in model.sam2.get_submodule(part).parameters()
        }
        groups = []
        for lr, in_memory in ((opts.lr, False), (opts.memory_lr or opts.lr, True)):
            chosen = [p for p in params if (id(p) in memory_parts) == in_memory]
            groups.append({"params": [p for p in chosen if p.ndim >= 2], "weight_decay": opts.weight_decay, "lr": lr})
            groups.append({"params": [p for p in chosen if p.ndim < 2], "weight_decay": 0.0, "lr": lr})
        self.optimizer = torch.optim.AdamW(groups, lr=opts.lr)

        def rate(step: int) -> float:
            if step < opts.warmup:
                return (step + 1) / opts.warmup
            return 0.5 * (1 + math.cos(math.pi * (step - opts.warmup) / max(1, steps - opts.warmup)))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, rate)
        self.model, self.sansa, self.params = model, sansa, params
        self.prompt_rng = np.random.default_rng((opts.seed, 3))
        self.video = world_of(opts.world, opts.image_size, opts.seed, opts.relocate)

    def clips(self, count: int) -> torch.utils.data.DataLoader:
        """The first `count` steps' clips, in order, drawn by `--workers` processes (0: this one)."""
        workers = self.opts.workers
        return torch.utils.data.DataLoader(
            Clips(self.video, self.opts, self.steps, count),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.opts.seed),  # its seed draw leaves torch's own alone
        )

    def step(self, step: int, batch: tuple[torch.Tensor, ...]) -> float:
        """One optimiser step on `batch` (step `step`'s clips); its loss."""
        opts, model, sansa = self.opts, self.model, self.sansa
        images0, masks0, images1, targets = (t.to(self.device, non_blocking=True) for t in batch)
        feats = model.encode_images(torch.cat([images0.flatten(0, 1), images1]))  # frames 0 then 1
        loss = tracking_loss(model, feats, masks0, targets)
        if sansa is not None:
            loss = loss + opts.pointer_weight * pointer_tracking_loss(sansa, feats, masks0, targets)
        if opts.prompt_weight:
            b = len(targets)
            loss = loss + opts.prompt_weight * prompt_loss(
                model, feats.select(slice(b, None)), targets, self.prompt_rng
            )
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at step {step}: lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def evaluate(self, clips: int | None = None) -> dict[str, float]:
        o = self.opts
        return evaluate(
            self.model, o.world, clips or o.eval_clips, o.seed, 16, bool(o.prompt_weight), o.relocate, self.sansa
        )


PROBE_WARMUP, PROBE_STEPS, PROBE_EVAL_CLIPS = 3, 20, 32  # --minutes: untimed steps, timed steps, clips evaluated


def probe(opts: argparse.Namespace, device: torch.device, budget_s: float) -> tuple[float, float, float]:
    """Seconds a step takes here, an evaluation of `--eval-clips` clips, and drawing those clips
    (once a run), timed on a throwaway run: PROBE_WARMUP steps untimed, then up to PROBE_STEPS timed
    from one step's end to the next (waiting for the clips included; fewer once they have used a
    tenth of `budget_s`), then two evaluations of PROBE_EVAL_CLIPS clips (the first draws them),
    scaled to `--eval-clips`. With `--workers`, a step takes at least what drawing one step's clips
    in one process takes, shared out between the workers (their queue may hide it in a short probe)."""
    trial = Run(opts, opts.steps or 10000, device)
    tick = time.perf_counter()
    batch_of(trial.video, range(opts.batch), 1.0, opts.image_size)
    draw_step_s = time.perf_counter() - tick
    times: list[float] = []
    start = last = time.perf_counter()
    for step, (_, batch) in enumerate(trial.clips(PROBE_WARMUP + PROBE_STEPS)):
        trial.step(step, batch)
        now = time.perf_counter()
        if step >= PROBE_WARMUP:
            times.append(now - last)
            if now - start > budget_s / 10:
                break
        last = now
    clips = min(PROBE_EVAL_CLIPS, opts.eval_clips)
    seconds = []
    for _ in range(2):
        tick = time.perf_counter()
        trial.evaluate(clips)
        seconds.append((time.perf_counter() - tick) * opts.eval_clips / clips)
    del trial
    if device.type == "cuda":
        torch.cuda.empty_cache()
    step_s = max(float(np.median(times)), draw_step_s / opts.workers if opts.workers else 0.0)
    return step_s, seconds[1], max(0.0, seconds[0] - seconds[1])


def planned_steps(
    budget_s: float, spent_s: float, step_s: float, eval_s: float, draw_s: float, eval_every: int, cap: int
) -> int:
    """The most steps (1 to `cap`) whose training, evaluations every `eval_every` steps and final
    evaluation (`eval_s` each; drawing their clips `draw_s`, once) fit 95% of what `budget_s` has
    left after `spent_s` (the rest: saves and jitter)."""
    left = 0.95 * (budget_s - spent_s) - eval_s - draw_s
    return max(1, min(cap, int(left / (step_s + eval_s / eval_every))))


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint to write (never overwritten)")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps of the run (default 10000; with --minutes: at most this many)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget: the run times a few steps here, then plans as many steps as fit (see above)",
    )
    parser.add_argument(
        "--save-every", type=int, default=None, help="also write --out every N steps (default: only at the end)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument(
        "--memory-lr", type=float, default=None, help="rate of memory attention and encoder (default: --lr)"
    )
    parser.add_argument("--warmup", type=int, default=300, help="steps of linear warm-up")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--motion-start", type=float, default=0.1, help="motion of the first clips, 0..1")
    parser.add_argument("--motion-full-at", type=float, default=0.2, help="fraction of the run reaching full motion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--world", choices=sorted(WORLDS), default="varied", help="the clips' world (hue: the first tracker's)"
    )
    parser.add_argument(
        "--prompt-weight", type=float, default=1.0, help="weight of the prompt loss (0: tracking pairs only)"
    )
    parser.add_argument(
        "--relocate",
        type=float,
        default=0.0,
        help="share of varied clips whose objects are laid out anew in the later frame (0: the shipped world)",
    )
    parser.add_argument(
        "--pointer-weight",
        type=float,
        default=1.0,
        help="weight of the same pairs through SANSA's forward, object pointers on (0: FS-SAM2's forward only)",
    )
    parser.add_argument(
        "--init", default=None, help="start from this tiny SAM2 checkpoint (a packaged name or a path; default: random)"
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-clips", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: reproducible and leaves a core free)")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes drawing the clips (0: this one; the same clips either way)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    opts = parser.parse_args(argv)
    try:
        check_new(opts.out, "--out")  # before the long run
    except InputError as err:
        parser.error(str(err))
    if opts.relocate and opts.world != "varied":
        parser.error(
            f"--relocate {opts.relocate} needs --world varied: the {opts.world} world has no layouts to redraw."
        )
    if not 0 <= opts.relocate <= 1:
        parser.error(f"--relocate {opts.relocate}: give a share between 0 and 1.")
    for name in ("steps", "save_every", "eval_every", "eval_clips", "batch"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} {value}: give a positive number.")
    if opts.minutes is not None and not opts.minutes > 0:
        parser.error(f"--minutes {opts.minutes}: give a positive budget, e.g. --minutes 5.")
    if opts.workers < 0:
        parser.error(f"--workers {opts.workers}: give 0 (this process) or more.")
    try:
        device = torch.device(opts.device)
    except RuntimeError as err:
        parser.error(f"--device {opts.device}: {err}; give cpu or cuda.")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {opts.device}: this torch sees no CUDA GPU; give --device cpu.")

    torch.set_num_threads(opts.threads)
    budget_s = opts.minutes * 60 if opts.minutes else None
    steps, step_s, eval_s, draw_s = opts.steps or 10000, 0.0, 0.0, 0.0
    if device.type == "cuda":  # float32 as on a CPU: no TF32 in convolutions (nor in matmuls, torch's default)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if budget_s is not None:
        step_s, eval_s, draw_s = probe(opts, device, budget_s)
        spent_s = time.perf_counter() - started
        steps = planned_steps(budget_s, spent_s, step_s, eval_s, draw_s, opts.eval_every, opts.steps or sys.maxsize)
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(
            f"--minutes {opts.minutes:g} on {where}: a step takes {step_s * 1e3:.1f} ms, an evaluation of "
            f"{opts.eval_clips} clips {eval_s:.1f} s (drawing them {draw_s:.1f} s, once); {spent_s:.0f} s spent: "
            f"{steps} steps planned (the same run as --steps {steps})",
            flush=True,
        )
    run = Run(opts, steps, device)
    args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    saved = False

    def save(done: int) -> None:
        """--out with the weights after `done` steps: created at the first save, then replaced whole."""
        nonlocal saved
        state = {k: v.detach().cpu().contiguous() for k, v in run.model.sam2.state_dict().items()}
        record = {"model": state, "steps": done, "planned_steps": steps, "args": args}
        if saved:
            replace_own(opts.out, lambda tmp: torch.save(record, tmp))
            return
        try:
            create(opts.out, lambda tmp: torch.save(record, tmp), "--out")
        except InputError as err:  # a file took the name during the run: it is kept
            raise SystemExit(f"pretrain_tracking: {err}") from err
        saved = True

    print(f"pretraining {sum(p.numel() for p in run.params):,} parameters for {steps} steps of {opts.batch} clips")
    start, losses, done, motion = time.perf_counter(), [], 0, opts.motion_start
    for step, (motion, batch) in enumerate(run.clips(steps)):
        losses.append(run.step(step, batch))
        done = step + 1
        # Out of time: another step and the final evaluation would not fit the budget.
        out_of_time = (
            budget_s is not None
            and done < steps
            and time.perf_counter() - started + step_s + eval_s + draw_s > budget_s
        )
        if done % opts.eval_every == 0 or done == steps or out_of_time:
            scores = run.evaluate()
            print(
                f"step {done:>6}  motion {motion:.2f}  loss {np.mean(losses[-opts.eval_every :]):.3f}  "
                f"IoU true {scores['true']:5.1f}  swap {scores['swap']:5.1f}  blank {scores['blank']:5.1f}  "
                f"readout {scores['readout']:.3f} (swap diff {scores['readout_swap_diff']:.3f})  "
                + "".join(f"{k} {v:5.1f}  " for k, v in scores.items() if k.startswith(("prompt_", "pointer_")))
                + f"({(time.perf_counter() - start) / 60:.1f} min)",
                flush=True,
            )
        if opts.save_every and done % opts.save_every == 0 and done < steps and not out_of_time:
            save(done)
            print(f"saved {opts.out} at step {done}", flush=True)
        if out_of_time:
            print(
                f"--minutes {opts.minutes:g}: time is up after {done} of {steps} planned steps; "
                "the model is saved as it is (its schedule had not ended)",
                flush=True,
            )
            break
    save(done)
    digest = hashlib.sha256(opts.out.read_bytes()).hexdigest()
    print(f"wrote {opts.out} after {done} steps (sha256 {digest})")


if __name__ == "__main__":
    main()
