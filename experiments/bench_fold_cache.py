"""A whole fold's evaluation with the encoder feature cache off and on, measured side by side.

The fold is generated in the PASCAL-5i layout and shaped like PASCAL-5i fold 0's test split:
364 query images of the 5 held-out classes, 1000 episodes, 5-shot, supports drawn from the same
list. Both runs go through the real `fssam2 test` (PascalDataModule, FSSAM2Module); the image
encoder's inputs are counted by a forward hook, independently of the cache's own counters.

    python experiments/bench_fold_cache.py                        # tiny model, 128 px
    python experiments/bench_fold_cache.py --sam2 sam2.1_hiera_b+ --image-size 256
    python experiments/bench_fold_cache.py --sam2 sam2.1_hiera_b+ --image-size 1024 --device cuda \
        --num-workers auto --cache-mb 16384 --json runs/fold.json

The precision is `fssam2 test`'s default (bf16-mixed on a GPU, 32-true on a CPU) unless
--precision names one; the output says which ran. --num-workers auto takes the CPU cores less
two, as many as /dev/shm can hold two batches each for (a batch of B+ at 1024 px is ~0.8 GB).
--json names a new file (one that exists is refused before anything runs); it is rewritten after
each run, so a run cut short still leaves the runs before it.

Beside the runs, the fold's arithmetic floor, measured in the same process: the image-encoder
passes (the fold's distinct images), memory-encoder passes and mask decodes the lean run asked
for, run back to back in batches of --batch-size on random tensors already on the device, in the
runs' precision. The lean run's wall time against it says what the data path and the rest cost.
Each run also gives its peak GPU memory (on a GPU) and its peak host memory, this process and its
data-loading workers together, sampled every 50 ms (`fssam2.meters.HostMemory`).

`--method gfsam` runs GF-SAM instead (configs/gfsam/pascal_fold0.yaml, training-free), cache off and
on by default, and counts both of its encoders: SAM2's image encoder (each query; a support needs
only its semantic tokens) and DINOv2 (each query and support), against the fold's distinct images.
Its DINOv2 is `--encoder` with random weights (default `dinov2_tiny`, the tiny ViT of
experiments/reproduce.py's smoke run; `dinov2_vitl14`, the published one; `sam2`: SAM2's own image
embedding stands in, no DINOv2 at all). Its SAM2 weights are `--sam2-checkpoint` (default: the
packaged `fssam2_tiny_pointers` for the tiny SAM2, which decodes real masks from points, else random);
FS-SAM2's runs keep random weights. GF-SAM has no arithmetic floor here.

    python experiments/bench_fold_cache.py --method gfsam --threads 1

`--only train` measures training instead: `fssam2 fit` (the published recipe's LoRA step, batch
--batch-size, 1-shot, augmentation on) on a training split of the same kind written beside the fold
(fold 0's 15 training classes, --train-images images), its real data loader and workers, steps
timed from the Trainer after --train-warmup warm-up steps: episodes/s to set beside
bench_episode.py's model-only step on the same device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fssam2.cli import run_cli  # noqa: E402
from fssam2.errors import InputError  # noqa: E402
from fssam2.files import check_new, create, replace_own  # noqa: E402
from fssam2.meters import HostMemory  # noqa: E402
from fssam2.synthetic import SyntheticBenchmark  # noqa: E402

HELD_OUT = [1, 2, 3, 4, 5]  # PASCAL-5i fold 0


def write_fold(root: Path, queries: int, side: int, seed: int) -> dict[int, int]:
    """VOC2012/{JPEGImages,SegmentationClassAug} and pascal/fss_list/val/*_0.txt for `queries`
    images, each showing a held-out class (cycling) among distractors; returns images per class."""
    bench = SyntheticBenchmark(image_size=side, pool_sizes=(1, 1, queries), seed=seed)
    voc = root / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClassAug"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    ids, by_class = [], {c: [] for c in HELD_OUT}
    for i in range(queries):
        image_id = f"2008_{i:06d}"
        image, label = bench.render("test", i, top_class=HELD_OUT[i % len(HELD_OUT)])
        Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        Image.fromarray(label).save(voc / "SegmentationClassAug" / f"{image_id}.png")
        values, counts = np.unique(label, return_counts=True)
        present = [int(v) for v, n in zip(values, counts, strict=True) if int(v) in by_class and n >= bench.min_pixels]
        if present:
            ids.append(image_id)
            for c in present:
                by_class[c].append(image_id)
    lists = root / "splits" / "pascal" / "fss_list" / "val"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "data_list_0.txt").write_text("".join(f"{i}\n" for i in ids))
    (lists / "sub_class_file_list_0.txt").write_text(repr(by_class))
    return {c: len(v) for c, v in by_class.items()}


def write_train_split(root: Path, images: int, side: int, seed: int) -> None:
    """VOC2012 images and pascal/fss_list/train/*_0.txt for `images` images of fold 0's training
    classes (6-20), each showing one of them (cycling) among distractors."""
    bench = SyntheticBenchmark(image_size=side, pool_sizes=(1, 1, images), seed=seed)
    voc = root / "VOC2012"
    ids, by_class = [], {c: [] for c in range(6, 21)}
    for i in range(images):
        image_id = f"2007_{i:06d}"
        image, label = bench.render("test", i, top_class=6 + i % 15)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        label = np.where((label >= 1) & (label <= 5), 0, label).astype(np.uint8)  # held-out classes unlabelled
        Image.fromarray(label).save(voc / "SegmentationClassAug" / f"{image_id}.png")
        present = [c for c in by_class if (label == c).sum() >= bench.min_pixels]
        if present:
            ids.append(image_id)
            for c in present:
                by_class[c].append(image_id)
    lists = root / "splits" / "pascal" / "fss_list" / "train"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "data_list_0.txt").write_text("".join(f"{i}\n" for i in ids))
    (lists / "sub_class_file_list_0.txt").write_text(repr(by_class))


class StepTimes(L.Callback):
    """Time between the ends of consecutive training steps (the device synchronised): the whole
    period of a step, the wait for the data loader included."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def train_throughput(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Training episodes/s through the real data loader (`fssam2 fit`, no validation)."""
    write_train_split(root, args.train_images, args.image_side, seed=1)
    precision = ["--trainer.precision", args.precision] if args.precision else []
    steps = args.train_warmup + args.train_steps
    cli = run_cli(
        [
            "--config", str(Path(__file__).parents[1] / "configs" / "pascal_fold0.yaml"),
            "--data.root", str(root), "--data.splits_dir", str(root / "splits"),
            "--data.shot", "1", "--data.batch_size", str(args.batch_size), "--data.num_workers", str(args.num_workers),
            "--model.sam2_config", args.sam2, "--model.image_size", str(args.image_size),
            "--model.sam2_checkpoint", "random",
            "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(root / "runs" / "train"),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.accelerator", args.device, *precision,
        ],
        run=False,
    )  # fmt: skip
    timer = StepTimes()
    cli.trainer.callbacks.append(timer)  # type: ignore[attr-defined]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    timed = sorted(timer.times[max(0, args.train_warmup - 1) :])  # periods after the warm-up steps
    median = timed[len(timed) // 2]
    result = {
        "steps": len(timed),
        "median_step_s": median,
        "episodes_per_s": args.batch_size / median,
        "precision": str(cli.trainer.precision),
    }
    print(f"- training with the real data loader: {result['episodes_per_s']:.2f} episodes/s "
          f"({args.batch_size} one-shot episodes a step, median of {len(timed)} steps after {args.train_warmup} "
          f"warm-up, {args.num_workers} workers, precision {result['precision']})", flush=True)  # fmt: skip
    return result


RUNS = {  # name -> (feature cache, decoded-image cache, lean data path)
    "published loop (no cache)": ("null", "0", "false"),
    "fssam2, feature cache only": ("{}", "0", "true"),
    "fssam2, every image shipped (lean_loading false)": ("{}", "512", "false"),
    "fssam2 (feature + decoded-image cache)": ("{}", "512", "true"),
}
LEAN = "fssam2 (feature + decoded-image cache)"  # fssam2's defaults
SHORT = dict(zip(("published", "feature", "full", "lean"), RUNS, strict=True))  # --only's names (and train)


def batch_bytes(args: argparse.Namespace) -> int:
    """One collated batch at most: K+1 uint8 images, K float support masks, a long query mask per episode."""
    pixels = args.image_size**2
    return args.batch_size * ((args.shot + 1) * 3 + args.shot * 4 + 8) * pixels


def auto_workers(args: argparse.Namespace) -> tuple[int, str]:
    """Data-loading workers for --num-workers auto, and why: workers hand batches over through
    /dev/shm, two batches in flight each (the DataLoader's prefetch)."""
    cores = len(os.sched_getaffinity(0))
    by_cores = max(0, min(cores - 2, 12))
    try:
        shm = shutil.disk_usage("/dev/shm").free
    except OSError:
        return 0, "no /dev/shm"
    by_shm = int(shm // (2.5 * batch_bytes(args)))
    workers = min(by_cores, by_shm)
    return workers, (
        f"{cores} cores, /dev/shm {shm / 2**30:.1f} GiB free for batches of {batch_bytes(args) / 2**30:.2f} GiB: "
        f"{'cores' if by_cores <= by_shm else '/dev/shm'} allow {workers}"
    )


def method_options(args: argparse.Namespace) -> list[str]:
    """The config and options of --method: FS-SAM2's published recipe, or GF-SAM's config with
    --encoder (random weights) and SAM2's weights (see above)."""
    configs = Path(__file__).parents[1] / "configs"
    if args.method == "fssam2":
        return [
            "--config",
            str(configs / "pascal_fold0.yaml"),
            "--model.sam2_checkpoint",
            args.sam2_checkpoint or "random",
        ]
    encoder = (
        {"encoder": args.encoder}
        if args.encoder == "sam2"
        else {"encoder": args.encoder, "encoder_checkpoint": "random"}
    )
    weights = args.sam2_checkpoint or ("fssam2_tiny_pointers" if args.sam2 == "fssam2_tiny" else "random")
    return [
        "--config", str(configs / "gfsam" / "pascal_fold0.yaml"),
        "--model.sam2_checkpoint", weights, "--model.method_args", json.dumps(encoder),
    ]  # fmt: skip


def run(root: Path, args: argparse.Namespace, name: str) -> dict[str, float]:
    feature_cache, image_cache_mb, lean = RUNS[name]
    if feature_cache != "null" and args.cache_mb is not None:
        feature_cache = json.dumps({"max_megabytes": args.cache_mb})
    precision = ["--trainer.precision", args.precision] if args.precision else []
    cli = run_cli(
        [
            *method_options(args),
            "--data.root", str(root), "--data.splits_dir", str(root / "splits"),
            "--data.shot", str(args.shot), "--data.test_episodes", str(args.episodes),
            "--data.batch_size", str(args.batch_size), "--data.num_workers", str(args.num_workers),
            "--model.sam2_config", args.sam2, "--model.image_size", str(args.image_size),
            "--model.feature_cache", feature_cache, "--data.image_cache_mb", image_cache_mb,
            "--data.lean_loading", lean,
            "--trainer.default_root_dir", str(root / "runs" / str(len(name))),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.accelerator", args.device, *precision,
        ],
        run=False,
    )  # fmt: skip
    encoded = [0, 0]  # images through SAM2's image encoder, and through GF-SAM's DINOv2
    cli.model.model.sam2.image_encoder.register_forward_hook(lambda m, inp, out: encoded.__setitem__(0, encoded[0] + len(inp[0])))  # fmt: skip
    dinov2 = getattr(cli.model.model, "encoder", None)  # GF-SAM's semantic encoder (None: SAM2's embedding)
    if dinov2 is not None:
        dinov2.register_forward_hook(lambda m, inp, out: encoded.__setitem__(1, encoded[1] + len(inp[0])))
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with HostMemory() as host:  # this process and its data-loading workers
        metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    plan = cli.datamodule.plan("test", True)  # the episodes and support-gap items the run showed
    queries = len({e.query for e in [*plan.episodes, *plan.gap]})
    result = {"seconds": seconds, "passes": encoded[0], "precision": str(cli.trainer.precision),
              "dinov2_passes": encoded[1] if dinov2 is not None else None, "distinct_queries": queries,
              "peak_host_gib": host.peak / 2**30, "host_rise_gib": host.rise / 2**30, **metrics}  # fmt: skip
    print(
        f"- {name}: {seconds:.1f} s, {encoded[0]} encoder passes"
        + (f", {encoded[1]} DINOv2 passes" if dinov2 is not None else "")
        + f", precision {result['precision']}"
        + (f", peak GPU memory {peak:.1f} GiB" if cuda else "")
        + f", peak host memory {host.peak / 2**30:.2f} GiB ({host.rise / 2**30:.2f} above its start, workers included)",
        flush=True,
    )
    del cli
    if cuda:
        torch.cuda.empty_cache()
    return {**result, "peak_gpu_gib": peak}


def arithmetic_floor(args: argparse.Namespace, lean: dict) -> dict[str, float]:
    """The encoder, memory-encoder and decoder passes `lean` (a run's results) asked for, back to back
    on random tensors on the device, in its precision: seconds per stage and in all."""
    from fssam2.build import build_sam2
    from fssam2.methods.fssam2 import FewShotSAM2, memory_tokens

    device = torch.device(args.device)
    model = FewShotSAM2(build_sam2(args.sam2, None, image_size=args.image_size)).to(device).eval()
    size, b, k = args.image_size, args.batch_size, args.shot
    images = int(lean["test/encoder_passes"])
    memories = int(lean["test/memory_encoder_passes"])
    decodes = int(lean["test/episode_images"]) // (k + 1)  # the episodes and the support-gap items
    bf16 = "bf16" in lean["precision"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    batch = torch.randn(b, 3, size, size, generator=gen).to(device)
    masks = (torch.rand(b, size, size, generator=gen) > 0.5).float().to(device)

    def timed(work, count: int) -> float:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            work(min(count, b))  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for n in range(0, count, b):
                work(min(b, count - n))
            if device.type == "cuda":
                torch.cuda.synchronize()
        return time.perf_counter() - start

    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        feats = model.encode_images(batch)
        maps, pos = model.memory_maps(feats, masks)
        memory = memory_tokens(maps[:1].repeat(b * k, 1, 1, 1), b), memory_tokens(pos[:1].repeat(b * k, 1, 1, 1), b)
    out = {
        "encoder_s": timed(lambda n: model.encode_images(batch[:n]), images),
        "memory_s": timed(lambda n: model.memory_maps(feats.select(slice(0, n)), masks[:n]), memories),
        "decoder_s": timed(
            lambda n: model.decode(feats.select(slice(0, n)), memory[0][:, :n], memory[1][:, :n]), decodes
        ),
    }
    return {**out, "seconds": sum(out.values()), "images": images, "memories": memories, "decodes": decodes}


def gfsam_table(args: argparse.Namespace, device: str, per_class: dict[int, int], results: dict[str, dict]) -> None:
    """GF-SAM's runs: each encoder's passes against the fold's distinct images, wall time, metrics."""
    precision = ", ".join(sorted({r["precision"] for r in results.values()}))
    lean = results[LEAN]
    distinct, queries = int(lean["test/distinct_images"]), lean["distinct_queries"]
    print(f"\nmachine: {device}; torch {torch.__version__}; precision {precision}")
    print(
        f"fold: {len(per_class)} classes, {args.queries} generated images ({per_class} per class), {args.episodes} "
        f"episodes and the support-gap items, {args.shot}-shot, {distinct} distinct images in its batches ({queries} of "
        f"them queries); GF-SAM on "
        f"{args.sam2} at {args.image_size} px, semantic encoder {args.encoder}, batch {args.batch_size}, "
        f"{args.num_workers} data-loading workers"
    )
    dinov2 = args.encoder != "sam2"
    print(f"\n| GF-SAM evaluation ({device}, {precision}) | SAM2 image-encoder passes (x distinct queries) "
          f"| {'DINOv2 passes (x distinct images) | ' if dinov2 else ''}wall time (s) | mIoU | FB-IoU |")  # fmt: skip
    print("|---|---:|---:|" + ("---:|" if dinov2 else "") + "---:|---:|")
    for name, r in results.items():
        cells = [f"{r['passes']} ({r['passes'] / queries:.2f}x)"]
        if dinov2:
            cells.append(f"{r['dinov2_passes']} ({r['dinov2_passes'] / distinct:.2f}x)")
        print(f"| {name} | {' | '.join(cells)} | {r['seconds']:.1f} | {r['test/miou']:.2f} | {r['test/fbiou']:.2f} |")
    base = results.get("published loop (no cache)", lean)
    diff = max(abs(r[m] - base[m]) for r in results.values() for m in ("test/miou", "test/fbiou"))
    print(f"\nlargest metric difference to the uncached run: {diff:.1e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["fssam2", "gfsam"], default="fssam2", help="FS-SAM2 or GF-SAM (see above)")
    parser.add_argument("--sam2", default="fssam2_tiny", help="SAM2 config")
    parser.add_argument("--sam2-checkpoint", help="SAM2 weights: a file or name, or random (default: see above)")
    parser.add_argument(
        "--encoder", default="dinov2_tiny", help="--method gfsam: its DINOv2, random weights, or sam2 (see above)"
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--queries", type=int, default=364, help="images in the fold's list (PASCAL-5i fold 0: 364)")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--num-workers",
        default="0",
        help="data-loading workers; 0: decoding timed in the main process; auto: see above",
    )
    parser.add_argument("--image-side", type=int, default=384, help="side of the generated images (VOC: ~500x375)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--precision", help="--trainer.precision, e.g. bf16-mixed or 32-true (default: fssam2 test's, see above)"
    )
    parser.add_argument(
        "--cache-mb", type=float, help="feature-cache budget in MB (default: the module's); size it to hold the fold"
    )
    parser.add_argument("--json", type=Path, help="write the numbers here (a new file, rewritten after each run)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[*SHORT, "train"],
        help="runs to make (lean is always made; default: all, for GF-SAM published and lean); train: the "
        "training measurement alone",
    )
    parser.add_argument("--train-images", type=int, default=600, help="--only train: images of the training split")
    parser.add_argument("--train-steps", type=int, default=30, help="--only train: steps timed")
    parser.add_argument("--train-warmup", type=int, default=5, help="--only train: steps not timed")
    args = parser.parse_args(argv)
    if args.json:
        try:
            check_new(args.json, "--json")  # before the long run
        except InputError as err:
            parser.error(str(err))
    if args.only is None:
        args.only = list(SHORT) if args.method == "fssam2" else ["published", "lean"]
    if args.method == "gfsam" and "train" in args.only:
        parser.error("--only train measures FS-SAM2's training: GF-SAM trains nothing")
    sys.argv[1:] = []  # LightningCLI gets its arguments from run(): it would warn about these on every run
    if args.num_workers == "auto":
        args.num_workers, why = auto_workers(args)
        print(f"data-loading workers: {args.num_workers} ({why})", flush=True)
    else:
        args.num_workers = int(args.num_workers)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())  # fmt: skip
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"  # fmt: skip
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results: dict[str, dict] = {}
    saved = False

    def save(record: dict) -> None:
        """--json: a new file at the first write, then rewritten (this run's own file)."""
        nonlocal saved
        if not args.json:
            return

        def write(tmp: Path) -> None:
            tmp.write_text(json.dumps(record, indent=2))

        if saved:
            replace_own(args.json, write)
        else:
            create(args.json, write, "--json")
        saved = True

    with tempfile.TemporaryDirectory(prefix="fssam2-fold-") as tmp:
        root = Path(tmp)
        per_class = write_fold(root, args.queries, args.image_side, seed=0)
        if args.only == ["train"]:
            train = train_throughput(root, args)
            save({"device": device, "settings": settings, "train": train})
            return
        for name in [SHORT[n] for n in SHORT if n in args.only or n == "lean"]:
            results[name] = run(root, args, name)
            record = {"device": device, "torch": torch.__version__, "settings": settings, "per_class": per_class}
            save({**record, "runs": results})
        if args.method == "gfsam":
            gfsam_table(args, device, per_class, results)
            return
        floor = arithmetic_floor(args, results[LEAN])
        save({**record, "runs": results, "floor": floor})
    precision = ", ".join(sorted({r["precision"] for r in results.values()}))
    print(f"\nmachine: {device}; torch {torch.__version__}; precision {precision}")
    print(
        f"fold: {sum(1 for _ in per_class)} classes, {args.queries} generated images ({per_class} per class), "
        f"{args.episodes} episodes, {args.shot}-shot; model {args.sam2} at {args.image_size} px, batch {args.batch_size}, "
        f"{args.num_workers} data-loading workers"
    )
    print(f"\n| evaluation ({device}, {precision}) | encoder passes | wall time (s) | vs published | mIoU | FB-IoU |")
    print("|---|---:|---:|---:|---:|---:|")
    base = results.get("published loop (no cache)", results[LEAN])
    for name, r in results.items():
        print(f"| {name} | {r['passes']} | {r['seconds']:.1f} | {base['seconds'] / r['seconds']:.2f}x faster, "
              f"{base['passes'] / max(r['passes'], 1):.1f}x fewer passes | {r['test/miou']:.2f} | {r['test/fbiou']:.2f} |")  # fmt: skip
    best = results["fssam2 (feature + decoded-image cache)"]
    passes, speed = base["passes"] / max(best["passes"], 1), base["seconds"] / best["seconds"]
    diff = max(abs(r[m] - base[m]) for r in results.values() for m in ("test/miou", "test/fbiou"))
    print(f"\nlargest metric difference to the published loop: {diff:.1e}")
    print(f"targets: >= 3x fewer encoder passes: {passes:.1f}x, {'met' if passes >= 3 else 'NOT met'}; "
          f">= 2.5x less wall time: {speed:.2f}x, {'met' if speed >= 2.5 else 'NOT met'}")  # fmt: skip
    ratio = best["seconds"] / floor["seconds"]
    full = results.get("fssam2, every image shipped (lean_loading false)", best)
    print(f"\narithmetic floor of the fold, same process: {floor['images']} encoder passes {floor['encoder_s']:.1f} s, "
          f"{floor['memories']} memory-encoder passes {floor['memory_s']:.1f} s, {floor['decodes']} decodes "
          f"{floor['decoder_s']:.1f} s: {floor['seconds']:.1f} s")  # fmt: skip
    print(f"lean run {best['seconds']:.1f} s = {ratio:.2f}x the floor (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}); "
          f"every image shipped {full['seconds']:.1f} s = {full['seconds'] / floor['seconds']:.2f}x; "
          f"images shipped {int(best['test/images_shipped'])} vs {int(full['test/images_shipped'])}")  # fmt: skip


if __name__ == "__main__":
    main()
