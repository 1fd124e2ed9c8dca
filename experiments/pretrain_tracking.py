"""Pretrain the tiny SAM2 for video object tracking on synthetic clips (`fssam2.synthetic.SyntheticVideo`).

FS-SAM2 starts from a SAM2 pretrained for tracking. The tiny SAM2 has no released weights, so this
gives it the same start: every parameter the FS-SAM2 forward pass uses, and the IoU head, trains on pairs (frame 0
with one object's mask as the memory, a later frame in which to find that object again), through
the same forward pass as few-shot episodes (`fssam2.FewShotSAM2`, K = 1).

Recipe (see docs/synthetic.md, "The tracker the demo starts from", for the measurements behind it):
AdamW, linear warm-up then cosine decay, and a motion curriculum that starts with nearly still
clips (the memory only has to be copied into place) and reaches full motion a fifth of the way in.
The rate decides whether the memory path opens: every run first segments every object whatever
the memory shows; at 5e-4 the memory is then read, at 2e-3 it never is. This script's evaluation
prints the IoU with the true memory beside another clip's memory and an empty mask, so that
failure is visible.

    python experiments/pretrain_tracking.py                # writes src/fssam2/checkpoints/fssam2_tiny_tracking.pt
    python experiments/pretrain_tracking.py --steps 600 --out /tmp/probe.pt --lr 2e-3   # a probe

Seeded: the same arguments on the same machine and torch build give the same weights. It runs on
one CPU thread by default (`--threads`), about 3 steps a second on the machine docs/synthetic.md names.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fssam2 import build_sam2
from fssam2.data import to_input
from fssam2.model import FewShotSAM2
from fssam2.module import bce_dice_per_episode
from fssam2.synthetic import SyntheticVideo

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "src" / "fssam2" / "checkpoints" / "fssam2_tiny_tracking.pt"
EVAL_SEED_OFFSET = 1000  # evaluation clips come from another seed than training clips


def batch_of(video: SyntheticVideo, indices: range, motion: float, size: int) -> tuple[torch.Tensor, ...]:
    """Support images [B, 1, 3, S, S], support masks [B, 1, S, S], query images [B, 3, S, S],
    query targets [B, S, S] (long, {0, 1})."""
    pairs = [video.pair(i, motion) for i in indices]
    images0 = torch.stack([to_input(p[0], size) for p in pairs])[:, None]
    masks0 = torch.from_numpy(np.stack([p[1] for p in pairs])).float()[:, None]
    images1 = torch.stack([to_input(p[2], size) for p in pairs])
    targets = torch.from_numpy(np.stack([p[3] for p in pairs])).long()
    return images0, masks0, images1, targets


@torch.no_grad()
def evaluate(model: FewShotSAM2, clips: int, seed: int, batch: int) -> dict[str, float]:
    """Foreground IoU (summed intersections over summed unions, x100) on held-out clips at full
    motion, with the true memory, with the memory of another clip (`swap`) and with an empty
    memory mask (`blank`)."""
    video = SyntheticVideo(image_size=model.image_size, seed=seed + EVAL_SEED_OFFSET)
    size = model.image_size
    data = [batch_of(video, range(i, min(i + batch, clips)), 1.0, size) for i in range(0, clips, batch)]
    images0 = torch.cat([d[0] for d in data])
    masks0 = torch.cat([d[1] for d in data])
    images1 = torch.cat([d[2] for d in data])
    targets = torch.cat([d[3] for d in data])
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
    model.train(was_training)
    # How loud the memory readout is, and how much of it depends on which memory it reads.
    out["readout"] = float(readouts["true"].pow(2).mean().sqrt())
    out["readout_swap_diff"] = float((readouts["true"] - readouts["swap"]).pow(2).mean().sqrt())
    return out


def tracking_loss(
    model: FewShotSAM2, images0: torch.Tensor, masks0: torch.Tensor, images1: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """SAM2's own training signal for its mask decoder, on the FS-SAM2 forward pass: the single
    mask (what FS-SAM2 reads) and the best of the three multimask outputs, each BCE + Dice, and
    the IoU head regressing each mask's IoU. In eval mode SAM2 falls back to the multimask output
    with the highest predicted IoU when the single mask is unstable (DESIGN.md, step 4), so those
    outputs and the IoU head must be trained too."""
    b = images1.shape[0]
    feats = model.encode_images(torch.cat([images0.flatten(0, 1), images1]))  # [2B, ...]
    memory, memory_pos = model.encode_memory(feats.select(slice(0, b)), masks0.flatten(0, 1), b)
    inputs = model.decoder_inputs(feats.select(slice(b, None)), memory, memory_pos)
    masks, iou_pred, _, _ = model.sam2.sam_mask_decoder.predict_masks(
        **inputs, repeat_image=False
    )  # [B, 4, h, w], [B, 4]
    size = targets.shape[-1]
    logits = F.interpolate(masks.float(), size=(size, size), mode="bilinear", align_corners=False)  # [B, 4, S, S]
    per_mask = torch.stack([bce_dice_per_episode(logits[:, i], targets) for i in range(logits.shape[1])], 1)
    with torch.no_grad():
        pred, truth = logits > 0, (targets == 1)[:, None]
        iou = (pred & truth).flatten(2).sum(2) / (pred | truth).flatten(2).sum(2).clamp(min=1)
    return per_mask[:, 0].mean() + per_mask[:, 1:].min(1).values.mean() + F.mse_loss(iou_pred.float(), iou)


def motion_at(step: int, steps: int, start: float, full_at: float) -> float:
    """The curriculum: motion grows linearly from `start` to 1 over the first `full_at` of the run."""
    return min(1.0, start + (1 - start) * step / max(1, full_at * steps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint to write (never overwritten)")
    parser.add_argument("--steps", type=int, default=4000)
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
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-clips", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: reproducible and leaves a core free)")
    parser.add_argument("--device", default="cpu")
    opts = parser.parse_args(argv)
    if opts.out.exists():
        parser.error(f"--out {opts.out} exists: choose another path or delete it first (it is never overwritten).")

    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    device = torch.device(opts.device)
    model = FewShotSAM2(build_sam2("fssam2_tiny", image_size=opts.image_size)).to(device).train()
    model.requires_grad_(False)
    # The forward pass's parameters, and the IoU head that picks the fallback mask in eval mode.
    params = [p for _, p in model.used_parameters()]
    params += list(model.sam2.sam_mask_decoder.iou_prediction_head.parameters())
    for p in params:
        p.requires_grad_(True)
    memory_parts = {
        id(p) for part in ("memory_attention", "memory_encoder") for p in model.sam2.get_submodule(part).parameters()
    }
    groups = []
    for lr, in_memory in ((opts.lr, False), (opts.memory_lr or opts.lr, True)):
        chosen = [p for p in params if (id(p) in memory_parts) == in_memory]
        groups.append({"params": [p for p in chosen if p.ndim >= 2], "weight_decay": opts.weight_decay, "lr": lr})
        groups.append({"params": [p for p in chosen if p.ndim < 2], "weight_decay": 0.0, "lr": lr})
    optimizer = torch.optim.AdamW(groups, lr=opts.lr)

    def rate(step: int) -> float:
        if step < opts.warmup:
            return (step + 1) / opts.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - opts.warmup) / max(1, opts.steps - opts.warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    video = SyntheticVideo(image_size=opts.image_size, seed=opts.seed)
    print(f"pretraining {sum(p.numel() for p in params):,} parameters for {opts.steps} steps of {opts.batch} clips")
    start, losses = time.perf_counter(), []
    for step in range(opts.steps):
        motion = motion_at(step, opts.steps, opts.motion_start, opts.motion_full_at)
        batch = batch_of(video, range(step * opts.batch, (step + 1) * opts.batch), motion, opts.image_size)
        images0, masks0, images1, targets = (t.to(device) for t in batch)
        loss = tracking_loss(model, images0, masks0, images1, targets)
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at step {step}: lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % opts.eval_every == 0 or step + 1 == opts.steps:
            scores = evaluate(model, opts.eval_clips, opts.seed, 16)
            print(
                f"step {step + 1:>6}  motion {motion:.2f}  loss {np.mean(losses[-opts.eval_every :]):.3f}  "
                f"IoU true {scores['true']:5.1f}  swap {scores['swap']:5.1f}  blank {scores['blank']:5.1f}  "
                f"readout {scores['readout']:.3f} (swap diff {scores['readout_swap_diff']:.3f})  "
                f"({(time.perf_counter() - start) / 60:.1f} min)",
                flush=True,
            )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = opts.out.with_name(f".{opts.out.name}.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.sam2.state_dict().items()}
    torch.save({"model": state}, tmp)
    os.replace(tmp, opts.out)
    digest = hashlib.sha256(opts.out.read_bytes()).hexdigest()
    print(f"wrote {opts.out} (sha256 {digest})")


if __name__ == "__main__":
    main()
