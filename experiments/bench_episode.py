"""Benchmark FS-SAM2's batched episode against the published per-image loop, on synthetic episodes.

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python experiments/bench_episode.py [--models tiny b+] [--json PATH]

"sequential" is the published loop: each support alone (batch 1) through the image encoder and
the memory encoder, its memory tokens appended to a growing list, then the query alone through
the image encoder, memory attention over the concatenated memories, and the decoder.
"fssam2" is FewShotSAM2.forward: all K+1 images of an episode in one image-encoder batch.
Both are built from FewShotSAM2's own pieces and must give the same logits (checked first).

Measured, with random weights and LoRA inserted (the published setting), in one run:
1. episode latency (median ms over timed repetitions, eval mode, inference mode) and peak extra
   memory per path for each shot count K, with a line fit over K per path;
2. training throughput (episodes/s) of a LoRA-only AdamW step on a batch of episodes (1-shot by
   default); the sequential step runs each episode through the loop and averages the losses.
CPU peak memory is the process's peak RSS (VmHWM, reset through /proc/self/clear_refs) above
the RSS before the timed repetitions; on CUDA it is the peak of allocated tensor memory
(torch.cuda.max_memory_allocated after reset_peak_memory_stats), also given in total.

--precision bf16 times both paths under torch.autocast(bfloat16), as `fssam2 fit/test` run on a
GPU (bf16-mixed); the equality check then runs twice: in float32 first (TF32 off, tolerance
CHECK_TOLERANCE: the check that both paths compute the same function), then in bf16, where only a
tolerance suited to bf16 rounding can hold (reported, never fatal). On CUDA, float32 matmuls left
under autocast use TF32, as FSSAM2Module does. A CUDA out-of-memory error in the training step
halves the batch and tries again (the batch used is reported).

    python experiments/bench_episode.py --device cuda --models b+ --image-size 1024 --precision bf16
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fssam2.build import build_sam2
from fssam2.data import IMAGENET_MEAN, IMAGENET_STD
from fssam2.errors import InputError
from fssam2.files import check_new, create
from fssam2.lora import LoRAConfig, is_lora_parameter, mark_only_lora_trainable
from fssam2.meters import PeakMemory
from fssam2.methods.base import bce_dice_loss
from fssam2.methods.fssam2 import FewShotSAM2

MEAN = torch.from_numpy(IMAGENET_MEAN / 255).view(3, 1, 1)  # the normalisation of fssam2.data, on [0, 1] pixels
STD = torch.from_numpy(IMAGENET_STD / 255).view(3, 1, 1)
CHECK_SHOTS = 3  # shots of the episode on which both paths must agree
CHECK_TOLERANCE = 1e-4  # atol and rtol of that check (float32, TF32 off)
# bf16 keeps 8 significant bits (0.4% per rounding), compounded over the network's layers and
# taken in a different order by a batch of 1 and of K+1: the bf16 paths agree when their largest
# logit difference is at most this share of the largest |logit| (reported, not fatal).
BF16_RELATIVE_TOLERANCE = 5e-2
LATENCY_TARGET = 0.9  # 1-shot sequential/fssam2 latency ratio fssam2 must reach
# Growth reads as "at most linear" in K when an extra shot at the largest K (the last step between
# measured K) costs at most this multiple of the least-squares slope; y = K^2 over K = 1, 5, 10, 20
# gives 1.38x, growth that flattens (as batching gives) less than 1.
SUPERLINEAR_RATIO = 1.25


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked model and its default settings (sized for a 2-core CPU)."""

    config: str
    image_size: int | None  # None: --image-size
    reps: int
    warmup: int
    train_batch: int


MODELS = {
    "tiny": ModelSpec("fssam2_tiny", 128, reps=10, warmup=2, train_batch=8),
    "b+": ModelSpec("sam2.1_hiera_b+", None, reps=3, warmup=1, train_batch=2),
}


@dataclass
class Episodes:
    """B synthetic K-shot episodes: normalised random images, one random rectangle per mask."""

    support_images: torch.Tensor  # [B, K, 3, S, S]
    support_masks: torch.Tensor  # [B, K, S, S] in {0, 1}
    query_images: torch.Tensor  # [B, 3, S, S]
    query_masks: torch.Tensor  # [B, S, S] in {0, 1}


def random_images(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, 3, size, size, generator=gen) - MEAN) / STD


def rectangle_masks(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for mask in masks:
        h, w = torch.randint(size // 4, size // 2 + 1, (2,), generator=gen).tolist()
        top = int(torch.randint(0, size - h + 1, (1,), generator=gen))
        left = int(torch.randint(0, size - w + 1, (1,), generator=gen))
        mask[top : top + h, left : left + w] = 1
    return masks


def make_episodes(batch: int, shots: int, size: int, gen: torch.Generator, device: torch.device) -> Episodes:
    n = batch * shots
    return Episodes(
        support_images=random_images(n, size, gen).view(batch, shots, 3, size, size).to(device),
        support_masks=rectangle_masks(n, size, gen).view(batch, shots, size, size).to(device),
        query_images=random_images(batch, size, gen).to(device),
        query_masks=rectangle_masks(batch, size, gen).to(device),
    )


def sequential_episode(
    model: FewShotSAM2, support_images: torch.Tensor, support_masks: torch.Tensor, query_image: torch.Tensor
) -> torch.Tensor:
    """One episode the published way, one image at a time. [K, 3, S, S], [K, S, S], [3, S, S] -> [1, 1, S, S]."""
    memories, positions = [], []
    for image, mask in zip(support_images, support_masks, strict=True):
        memory, position = model.encode_memory(model.encode_images(image[None]), mask[None], batch=1)
        memories.append(memory)
        positions.append(position)
    query = model.encode_images(query_image[None])
    return model.decode(query, torch.cat(memories), torch.cat(positions))


def sequential_forward(model: FewShotSAM2, episodes: Episodes) -> torch.Tensor:
    return torch.cat(
        [
            sequential_episode(model, s, m, q)
            for s, m, q in zip(episodes.support_images, episodes.support_masks, episodes.query_images, strict=True)
        ]
    )


def fssam2_forward(model: FewShotSAM2, episodes: Episodes) -> torch.Tensor:
    return model(episodes.support_images, episodes.support_masks, episodes.query_images)


def sequential_loss(model: FewShotSAM2, episodes: Episodes) -> torch.Tensor:
    """Each episode's loss on its own logits, averaged over the batch."""
    losses = [
        bce_dice_loss(sequential_episode(model, s, m, q)[:, 0].float(), target[None])
        for s, m, q, target in zip(
            episodes.support_images,
            episodes.support_masks,
            episodes.query_images,
            episodes.query_masks,
            strict=True,
        )
    ]
    return torch.stack(losses).mean()


def fssam2_loss(model: FewShotSAM2, episodes: Episodes) -> torch.Tensor:
    return bce_dice_loss(fssam2_forward(model, episodes)[:, 0].float(), episodes.query_masks)


FORWARDS: dict[str, Callable[[FewShotSAM2, Episodes], torch.Tensor]] = {
    "sequential": sequential_forward,
    "fssam2": fssam2_forward,
}
LOSSES: dict[str, Callable[[FewShotSAM2, Episodes], torch.Tensor]] = {
    "sequential": sequential_loss,
    "fssam2": fssam2_loss,
}


def train_step(
    model: FewShotSAM2,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[FewShotSAM2, Episodes], torch.Tensor],
    episodes: Episodes,
    device: torch.device,
    precision: str,
) -> None:
    """One AdamW step; the forward pass and loss under `precision`'s autocast, backward outside
    it (as Lightning's bf16-mixed)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        loss = loss_fn(model, episodes)
    loss.backward()
    optimizer.step()


@dataclass
class Measurement:
    times_ms: list[float]
    peak_mb: float  # above the level before the call
    peak_total_mb: float  # the whole peak during the call

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed repetitions."""
        return (max(self.times_ms) - min(self.times_ms)) / self.median_ms


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> Any:
    """The precision context every timed call runs in: bf16 autocast (as Lightning's bf16-mixed)
    or none (float32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def in_precision(fn: Callable[[], Any], device: torch.device, precision: str) -> Callable[[], Any]:
    def run() -> Any:
        with autocast(device, precision):
            return fn()

    return run


@contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """TF32 off on CUDA (it rounds float32 matmuls and convolutions to 10-bit mantissas)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def measure(fns: dict[str, Callable[[], Any]], reps: int, warmup: int, device: torch.device) -> dict[str, Measurement]:
    """Each path: warm up, then one call alone for its peak memory above the level before it;
    then `reps` timed calls per path, interleaved (ABBA...) so that drifting machine load hits
    every path alike and the ratios stay fair."""
    peaks = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        synchronize(device)
        meter = PeakMemory(device)
        meter.start()
        fn()
        synchronize(device)
        peaks[name] = (meter.peak() - meter.at_start) / 2**20, meter.peak() / 2**20
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(reps):
        for name in list(fns)[:: 1 if rep % 2 == 0 else -1]:
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: Measurement(times[name], *peaks[name]) for name in fns}


@dataclass
class LineFit:
    """y = intercept + slope * K, least squares."""

    intercept: float
    slope: float
    r2: float
    max_rel_dev: float  # max |y - fit| / fit over the measured K
    last_step_ratio: float  # (y[-1] - y[-2]) / (K[-1] - K[-2]) / slope: cost of an extra shot at the end


def fit_line(ks: list[int], ys: list[float]) -> LineFit | None:
    if len(ks) < 2:
        return None
    x, y = np.asarray(ks, float), np.asarray(ys, float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = intercept + slope * x
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - pred) ** 2).sum()) / total if total > 0 else 1.0
    last_step = (y[-1] - y[-2]) / (x[-1] - x[-2])
    ratio = float(last_step / slope) if slope > 0 else 0.0
    return LineFit(float(intercept), float(slope), r2, float((np.abs(y - pred) / np.abs(pred)).max()), ratio)


def build_model(spec: ModelSpec, image_size: int, device: torch.device, encoder_batch: int | None) -> FewShotSAM2:
    sam2 = build_sam2(spec.config, image_size=spec.image_size or image_size, device=device)
    return FewShotSAM2(sam2, LoRAConfig(), encoder_batch=encoder_batch).to(device).eval()


@dataclass
class Check:
    """Both paths' logits on one episode, in one precision."""

    precision: str
    max_abs_diff: float
    max_abs_logit: float
    mask_agreement: float  # share of pixels where both paths' logits have the same sign
    tolerance: str
    passed: bool

    def line(self) -> str:
        verdict = "agree" if self.passed else "DIFFER"
        return (
            f"{self.precision}: paths {verdict} on a {CHECK_SHOTS}-shot episode: max |logit diff| = "
            f"{self.max_abs_diff:.2e} (max |logit| {self.max_abs_logit:.3g}; tolerance {self.tolerance}); "
            f"masks (logit > 0) agree on {self.mask_agreement:.4%} of pixels"
        )


@torch.inference_mode()
def compare_paths(model: FewShotSAM2, episodes: Episodes, device: torch.device, precision: str) -> Check:
    with autocast(device, precision):
        seq, batched = sequential_forward(model, episodes).float(), fssam2_forward(model, episodes).float()
    diff, scale = float((seq - batched).abs().max()), float(seq.abs().max())
    if precision == "fp32":
        passed = torch.allclose(seq, batched, atol=CHECK_TOLERANCE, rtol=CHECK_TOLERANCE)
        tolerance = f"atol = rtol = {CHECK_TOLERANCE:g}"
    else:
        passed = diff <= BF16_RELATIVE_TOLERANCE * scale
        tolerance = f"max diff <= {BF16_RELATIVE_TOLERANCE:g} x max abs logit"
    agreement = float(((seq > 0) == (batched > 0)).float().mean())
    return Check(precision, diff, scale, agreement, tolerance, bool(passed))


def check_same_function(
    model: FewShotSAM2, gen: torch.Generator, device: torch.device, precision: str, on_mismatch: str
) -> list[Check]:
    """Both paths on one episode: in float32 with TF32 off (the check that they compute the same
    function; a mismatch raises unless on_mismatch is "warn"), then, for bf16, under autocast
    (reported only: bf16 rounding differs between a batch of 1 and of K+1)."""
    episodes = make_episodes(1, CHECK_SHOTS, model.image_size, gen, device)
    with exact_float32(device):
        checks = [compare_paths(model, episodes, device, "fp32")]
    if precision != "fp32":
        checks.append(compare_paths(model, episodes, device, precision))
    strict = checks[0]
    if not strict.passed:
        message = (
            f"sequential and fssam2 logits differ by up to {strict.max_abs_diff:.3g} in float32 on a "
            f"{CHECK_SHOTS}-shot episode: the two paths do not compute the same function, so timing "
            "them would compare nothing."
        )
        if on_mismatch == "stop":
            raise RuntimeError(message)
        print(f"\nWARNING: {message} (--on-mismatch warn: timed anyway)", flush=True)
    return checks


@torch.inference_mode()
def bench_latency(
    model: FewShotSAM2,
    shots: list[int],
    reps: int,
    warmup: int,
    gen: torch.Generator,
    device: torch.device,
    precision: str,
) -> dict[int, dict[str, Measurement]]:
    results = {}
    for k in shots:
        episodes = make_episodes(1, k, model.image_size, gen, device)
        fns = {name: in_precision(partial(fwd, model, episodes), device, precision) for name, fwd in FORWARDS.items()}
        results[k] = measure(fns, reps, warmup, device)
        # As it goes, so that a run cut short (a timeout) still shows what it measured.
        print(
            f"- measured K = {k}: " + ", ".join(f"{n} {m.median_ms:.1f} ms" for n, m in results[k].items()), flush=True
        )
    return results


def bench_training(
    model: FewShotSAM2,
    batch: int,
    shots: int,
    reps: int,
    warmup: int,
    gen: torch.Generator,
    device: torch.device,
    precision: str,
) -> tuple[int, dict[str, Measurement]]:
    """(episodes a step, measurements); on a CUDA out-of-memory error the batch is halved."""
    while True:
        try:
            results = _bench_training(model, batch, shots, reps, warmup, gen, device, precision)
            print(f"- measured training, {batch} episodes a step: " + ", ".join(f"{n} {m.median_ms:.0f} ms" for n, m in results.items()), flush=True)  # fmt: skip
            return batch, results
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        # Outside the except block, whose traceback holds the failed step's tensors.
        model.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        print(f"\n- CUDA out of memory with {batch} training episodes a step: trying {batch // 2}", flush=True)
        batch //= 2


def _bench_training(
    model: FewShotSAM2,
    batch: int,
    shots: int,
    reps: int,
    warmup: int,
    gen: torch.Generator,
    device: torch.device,
    precision: str,
) -> dict[str, Measurement]:
    model.train()
    try:
        mark_only_lora_trainable(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        episodes = make_episodes(batch, shots, model.image_size, gen, device)
        fns = {
            name: partial(train_step, model, optimizer, loss_fn, episodes, device, precision)
            for name, loss_fn in LOSSES.items()
        }
        return measure(fns, reps, warmup, device)
    finally:
        model.eval()


def machine_info(device: torch.device) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return {
        "cpu": names[0] if names else platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpu_memory_gb": torch.cuda.get_device_properties(device).total_memory / 2**30
        if device.type == "cuda"
        else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }


def device_label(machine: dict[str, Any], precision: str) -> str:
    """What every table names: the GPU (else the CPU) and the precision."""
    where = machine["gpu"] or f"CPU {machine['cpu']}, {machine['threads']} threads"
    return f"{where}, {precision}"


def fmt_fit(fit: LineFit | None, unit: str) -> str:
    if fit is None:
        return "n/a | n/a | n/a"
    sign = "+" if fit.slope >= 0 else "-"
    return f"{fit.intercept:.1f} {sign} {abs(fit.slope):.2f}*K {unit} | {fit.r2:.4f} | {fit.max_rel_dev:.1%}"


def print_model_report(name: str, spec: ModelSpec, result: dict[str, Any]) -> None:
    latency: dict[int, dict[str, Measurement]] = result["latency_measurements"]
    label = result["device_label"]
    print(
        f"\n## {name}: {spec.config} at {result['image_size']} px, {result['params'] / 1e6:.1f}M params "
        f"({result['lora_params'] / 1e3:.0f}k LoRA), {result['reps']} reps after {result['warmup']} warmup; {label}"
    )
    print()
    for check in result["checks"]:
        print(f"- {check.line()}")
    print(f"\n### Episode latency (1 episode, eval, inference mode; {label})\n")
    print(
        "| K | images | sequential ms | fssam2 ms | seq/fssam2 | seq ms/img | fssam2 ms/img "
        "| seq peak MB | fssam2 peak MB | total peak MB seq / fssam2 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, paths in latency.items():
        seq, bat = paths["sequential"], paths["fssam2"]
        print(
            f"| {k} | {k + 1} | {seq.median_ms:.1f} | {bat.median_ms:.1f} | {seq.median_ms / bat.median_ms:.2f}x "
            f"| {seq.median_ms / (k + 1):.1f} | {bat.median_ms / (k + 1):.1f} | {seq.peak_mb:.0f} | {bat.peak_mb:.0f} "
            f"| {seq.peak_total_mb:.0f} / {bat.peak_total_mb:.0f} |"
        )
    spread = max(m.spread for paths in latency.values() for m in paths.values())
    print(f"\nlargest (max - min) / median over the timed reps of any cell: {spread:.0%}")
    print(f"\n### Growth with K (least-squares line over the K above; {label})\n")
    print("| path | time fit | R^2 | max dev | memory fit | R^2 | max dev |")
    print("|---|---|---:|---:|---|---:|---:|")
    for path, fits in result["fits"].items():
        print(f"| {path} | {fmt_fit(fits['ms'], 'ms')} | {fmt_fit(fits['mb'], 'MB')} |")
    ks = list(latency)
    if len(ks) > 1:
        print(f"\nms per extra shot between consecutive K (constant if linear; {label}):\n")
        print("| path | " + " | ".join(f"K {a}->{b}" for a, b in pairwise(ks)) + " |")
        print("|---|" + "---:|" * (len(ks) - 1))
        for path in FORWARDS:
            ms = [latency[k][path].median_ms for k in ks]
            steps = [(y1 - y0) / (k1 - k0) for (k0, y0), (k1, y1) in pairwise(zip(ks, ms, strict=True))]
            print(f"| {path} | " + " | ".join(f"{step:.1f}" for step in steps) + " |")
    train: dict[str, Measurement] = result["training_measurements"]
    b, k = result["train_batch"], result["train_shots"]
    seq_eps, bat_eps = (b / (train[p].median_ms / 1e3) for p in ("sequential", "fssam2"))
    asked = "" if b == result["train_batch_requested"] else f", {result['train_batch_requested']} ran out of memory"
    print(f"\n### Training step ({b} episodes x {k}-shot{asked}, LoRA-only AdamW, train mode; {label})\n")
    print("| path | ms/step | episodes/s | peak MB | total peak MB |")
    print("|---|---:|---:|---:|---:|")
    for path, eps in (("sequential", seq_eps), ("fssam2", bat_eps)):
        m = train[path]
        print(f"| {path} | {m.median_ms:.0f} | {eps:.2f} | {m.peak_mb:.0f} | {m.peak_total_mb:.0f} |")
    print(f"\nfssam2/sequential throughput: {bat_eps / seq_eps:.2f}x", flush=True)


def print_targets(results: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n## Targets (at most linear in K: an extra shot at the largest K costs at most {SUPERLINEAR_RATIO}x "
        "the fitted slope)\n"
    )
    for name, result in results.items():
        latency = result["latency_measurements"]
        if 1 in latency:
            ratio = latency[1]["sequential"].median_ms / latency[1]["fssam2"].median_ms
            verdict = "met" if ratio >= LATENCY_TARGET else "MISSED"
            print(f"- {name}: 1-shot latency seq/fssam2 = {ratio:.2f}x (target >= {LATENCY_TARGET}x): {verdict}")
        else:
            print(f"- {name}: 1-shot latency not measured (K = 1 not in --shots)")
        k_max = max(latency)
        for path, fits in result["fits"].items():
            if fits["ms"] is None:
                continue
            ms, mb = fits["ms"], fits["mb"]
            time_verdict, mem_verdict = (
                "at most linear" if fit.last_step_ratio <= SUPERLINEAR_RATIO else "SUPERLINEAR" for fit in (ms, mb)
            )
            print(
                f"- {name} {path}, K up to {k_max}: time {time_verdict} ({ms.slope:.1f} ms per extra shot, "
                f"last step {ms.last_step_ratio:.2f}x, R^2 {ms.r2:.4f}); memory {mem_verdict} ({mb.slope:.1f} MB "
                f"per extra shot, last step {mb.last_step_ratio:.2f}x, R^2 {mb.r2:.4f})"
            )


def to_json(machine: dict[str, Any], settings: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def measurement(m: Measurement) -> dict[str, Any]:
        return {**asdict(m), "median_ms": m.median_ms}

    models = {}
    for name, result in results.items():
        plain = {k: v for k, v in result.items() if not k.endswith("_measurements") and k not in ("fits", "checks")}
        plain["checks"] = [asdict(c) for c in result["checks"]]
        plain["latency"] = {
            str(k): {p: measurement(m) for p, m in paths.items()} for k, paths in result["latency_measurements"].items()
        }
        plain["fits"] = {
            p: {unit: asdict(fit) if fit else None for unit, fit in fits.items()} for p, fits in result["fits"].items()
        }
        plain["training"] = {p: measurement(m) for p, m in result["training_measurements"].items()}
        models[name] = plain
    return {"machine": machine, "settings": settings, "models": models}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", "--model", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5, 10, 20], help="K values for latency")
    parser.add_argument("--reps", type=int, help="timed repetitions per cell (default: tiny 10, b+ 3)")
    parser.add_argument("--warmup", type=int, help="untimed repetitions first (default: tiny 2, b+ 1)")
    parser.add_argument("--image-size", type=int, default=256, help="input size of b+ (tiny stays at 128)")
    parser.add_argument("--train-shots", type=int, default=1)
    parser.add_argument("--train-batch", type=int, help="episodes per training step (default: tiny 8, b+ 2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="bf16: both paths timed under bfloat16 autocast (as bf16-mixed); the equality check runs in fp32 first",
    )
    parser.add_argument(
        "--on-mismatch",
        default="stop",
        choices=["stop", "warn"],
        help="when the fp32 equality check fails: stop, or warn and time anyway",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--encoder-batch", type=int, help="fssam2: at most this many images per encoder call (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the raw numbers here (a new file)")
    opts = parser.parse_args(argv)
    if opts.json:
        try:
            check_new(opts.json, "--json")  # before the long run
        except InputError as err:
            parser.error(str(err))
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if min(opts.shots) < 1 or opts.train_shots < 1:
        parser.error("shot counts must be >= 1")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    if device.type == "cuda":  # as FSSAM2Module.setup: float32 matmuls left under autocast use TF32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    start = time.perf_counter()

    machine = machine_info(device)
    print("# FS-SAM2 episode benchmark: sequential (published per-image loop) vs fssam2 (one batch)\n")
    print(f"- CPU: {machine['cpu']}, {machine['usable_cpus']} usable of {machine['logical_cpus']} logical CPUs")
    print(f"- torch {machine['torch']}, {machine['threads']} threads, device {machine['device']}")
    print(f"- load average (1 min) at start: {machine['load_average_1min']:.2f} (other processes skew timings)")
    if machine["gpu"]:
        print(f"- GPU: {machine['gpu']}, {machine['gpu_memory_gb']:.0f} GiB, CUDA {machine['cuda']}")
    print(
        f"- precision: {opts.precision}"
        + (" (torch.autocast bfloat16; equality checked in fp32 first)" if opts.precision == "bf16" else "")
        + ("; TF32 on for float32 matmuls" if device.type == "cuda" else "")
    )
    print("- random weights, LoRA inserted (default LoRAConfig), synthetic episodes, seed", opts.seed)
    print(f"- fssam2 image-encoder calls: at most {opts.encoder_batch or 'all K+1'} images each")

    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    models = {name: build_model(MODELS[name], opts.image_size, device, opts.encoder_batch) for name in opts.models}
    checks = {
        name: check_same_function(model, gen, device, opts.precision, opts.on_mismatch)
        for name, model in models.items()
    }

    results: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        spec = MODELS[name]
        reps, warmup = opts.reps or spec.reps, opts.warmup if opts.warmup is not None else spec.warmup
        train_batch = opts.train_batch or spec.train_batch
        latency = bench_latency(model, sorted(opts.shots), reps, warmup, gen, device, opts.precision)
        ks = list(latency)
        fits = {
            path: {
                "ms": fit_line(ks, [latency[k][path].median_ms for k in ks]),
                "mb": fit_line(ks, [latency[k][path].peak_mb for k in ks]),
            }
            for path in FORWARDS
        }
        used_batch, training = bench_training(
            model, train_batch, opts.train_shots, reps, warmup, gen, device, opts.precision
        )
        results[name] = {
            "config": spec.config,
            "image_size": model.image_size,
            "params": sum(p.numel() for p in model.parameters()),
            "lora_params": sum(p.numel() for n, p in model.named_parameters() if is_lora_parameter(n)),
            "reps": reps,
            "warmup": warmup,
            "device_label": device_label(machine, opts.precision),
            "precision": opts.precision,
            "check_max_abs_diff": checks[name][0].max_abs_diff,
            "checks": checks[name],
            "train_batch": used_batch,
            "train_batch_requested": train_batch,
            "train_shots": opts.train_shots,
            "latency_measurements": latency,
            "fits": fits,
            "training_measurements": training,
        }
        print_model_report(name, spec, results[name])

    print_targets(results)
    seconds = time.perf_counter() - start
    print(f"\ntotal {seconds / 60:.1f} min")
    if opts.json:
        settings = {**{k: v for k, v in vars(opts).items() if k != "json"}, "seconds": seconds}
        text = json.dumps(to_json(machine, settings, results), indent=2)
        create(opts.json, lambda tmp: tmp.write_text(text), "--json")
        print(f"raw numbers: {opts.json}")


if __name__ == "__main__":
    main()
