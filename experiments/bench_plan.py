"""Planned evaluation, measured with real `fssam2 test` runs: image-encoder passes planned vs
unplanned (index order, least recently used) vs the floor (each distinct image encoded once).

Each fold is written in its benchmark's on-disk layout from the published split lists
(`--splits-dir`, read-only): every listed image is rendered (a textured background with one blob
per class the lists name it under, labelled with that class), so the list structure, and hence
the episodes, are the real fold's; PASCAL-5i's rule draws among the classes a query's label map
shows, here exactly the listed ones. COCO-20i images no episode shows are written as one shared
placeholder (hard links). Runs use the tiny model with random weights (passes and metric equality
do not depend on the weights), one data-loading process, and print side by side:

1. PASCAL-5i fold 2, 5-shot, a feature-cache budget holding half the fold's distinct images'
   features: planned / unplanned / floor, metrics of both against the uncached run;
2. COCO-20i fold 0, 5-shot, the same;
3. PASCAL-5i fold 0, 5-shot, 2 CPU processes (DDP over gloo, default budget): the passes of both
   processes together vs the floor, metrics against 1 process (exactly equal?);
4. (`--only lean`) PASCAL-5i folds 0 and 2, 5-shot, default budget: the lean data path (the default)
   against `data.lean_loading false` in the same run: images read, resized and shipped to the model
   and their uint8 bytes, beside the floor (distinct images x one image's bytes), the peak host memory
   of the run above its start (sampled every 50 ms; the feature cache is most of it), metrics equal?

The image-encoder passes are the cache's own counters, summed over processes; in 1-process runs a
forward hook on the image encoder counts the images it encodes, independently.

    python experiments/bench_plan.py                       # all three, tiny at 128 px
    python experiments/bench_plan.py --only ddp --image-size 64
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fssam2.benchmarks import fold_lists  # noqa: E402
from fssam2.build import build_sam2  # noqa: E402
from fssam2.cli import run_cli  # noqa: E402
from fssam2.episodes import ClassFirstEpisodes, coco_classes  # noqa: E402
from fssam2.meters import HostMemory  # noqa: E402
from fssam2.methods.fssam2 import FewShotSAM2  # noqa: E402
from fssam2.plan import index_batches  # noqa: E402
from fssam2.plan_report import distinct_images, entry_bytes, simulate  # noqa: E402

DEFAULT_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEED = 42


def render(classes: list[int], side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An image and its label map: one blob per class, each in its own vertical strip."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(110, 25, (side, side, 3))).clip(0, 255).astype(np.uint8)
    label = np.zeros((side, side), np.uint8)
    width = side // max(len(classes), 1)
    yy, xx = np.mgrid[:side, :side]
    for k, c in enumerate(classes):
        cx = k * width + width / 2 + rng.uniform(-width / 8, width / 8)
        cy = rng.uniform(side * 0.3, side * 0.7)
        rx, ry = rng.uniform(0.25, 0.45) * width, rng.uniform(0.15, 0.3) * side
        blob = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        hue = (c * 37) % 256
        image[blob] = np.array([hue, 255 - hue, (hue * 3) % 256], np.uint8)
        label[blob] = c
    return image, label


def write_fold(root: Path, benchmark: str, fold: int, splits: Path, side: int, used: set[str] | None) -> None:
    """The fold's test lists under root/splits and its images in the benchmark's layout."""
    images, by_class = fold_lists(splits, benchmark, "test", fold)
    listed: dict[str, list[int]] = {}
    for c, ids in by_class.items():
        for i in ids:
            listed.setdefault(i, []).append(c)
    lists = root / "splits" / benchmark / "fss_list" / "val"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / f"data_list_{fold}.txt").write_text("".join(f"{i}\n" for i in images))
    (lists / f"sub_class_file_list_{fold}.txt").write_text(repr(by_class))
    if benchmark == "pascal":
        folders = (root / "VOC2012" / "JPEGImages", root / "VOC2012" / "SegmentationClassAug")
    else:
        folders = (root / "COCO2014" / "val2014", root / "COCO2014" / "annotations" / "val2014")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    placeholder = None
    for n, image_id in enumerate(sorted(set(images) | set(listed))):
        jpg, png = folders[0] / f"{image_id}.jpg", folders[1] / f"{image_id}.png"
        if used is not None and image_id not in used:
            if placeholder is None:
                placeholder = (root / "placeholder.jpg", root / "placeholder.png")
                image, label = render([], side, 0)
                Image.fromarray(image).save(placeholder[0], quality=90)
                Image.fromarray(label).save(placeholder[1])
            os.link(placeholder[0], jpg)
            os.link(placeholder[1], png)
            continue
        image, label = render(sorted(listed.get(image_id, [])), side, n)
        Image.fromarray(image).save(jpg, quality=90)
        Image.fromarray(label).save(png)


def test(root: Path, benchmark: str, fold: int, args: argparse.Namespace, name: str, *options: str) -> dict:
    """One `fssam2 test`; returns its metrics, passes and wall time."""
    cli = run_cli(
        [
            "--config", str(CONFIGS / f"{benchmark}_fold{fold}.yaml"),
            "--data.root", str(root), "--data.splits_dir", str(root / "splits"),
            "--data.shot", str(args.shot), "--data.test_episodes", str(args.episodes),
            "--data.batch_size", str(args.batch_size), "--data.num_workers", "0",
            "--model.sam2_config", "fssam2_tiny", "--model.image_size", str(args.image_size),
            "--model.sam2_checkpoint", "random",
            "--trainer.default_root_dir", str(root / "runs" / name.replace(" ", "_")),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.accelerator", "cpu", *options,
        ],
        run=False,
    )  # fmt: skip
    encoded = [0]
    if cli.trainer.world_size == 1:
        cli.model.model.sam2.image_encoder.register_forward_hook(
            lambda m, inp, out: encoded.__setitem__(0, encoded[0] + len(inp[0]))
        )
    start = time.perf_counter()
    with HostMemory() as host:
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    metrics = {k: v.item() for k, v in cli.trainer.callback_metrics.items()}
    return {"seconds": time.perf_counter() - start, "hook": encoded[0] if cli.trainer.world_size == 1 else None,
            "datamodule": cli.datamodule, "host_rise": host.rise, **metrics}  # fmt: skip


def scored(r: dict) -> dict[str, float]:
    return {k: v for k, v in r.items() if k.startswith("test/") and ("iou" in k)}


def cache_runs(root: Path, benchmark: str, fold: int, args: argparse.Namespace) -> None:
    """Planned vs unplanned at a budget holding half the fold's distinct images' features."""
    baseline = test(root, benchmark, fold, args, "uncached", "--model.feature_cache", "null",
                    "--data.eval_order", "index")  # fmt: skip
    dm = baseline["datamodule"]
    dm.eval_order = "planned"  # the same episodes; only their plan is wanted here
    plan = dm.eval_plan("test")
    floor = distinct_images(plan.episodes)
    image_bytes, memory_bytes = entry_bytes(FewShotSAM2(build_sam2("fssam2_tiny", None, image_size=args.image_size)), args.image_size)  # fmt: skip
    budget = floor // 2 * image_bytes
    mb = f"{budget / 2**20:.6f}"
    runs = {
        "unplanned (index order, LRU)": test(root, benchmark, fold, args, "lru", "--model.feature_cache.max_megabytes", mb,
                                             "--data.eval_order", "index"),
        "planned (fssam2 default)": test(root, benchmark, fold, args, "planned", "--model.feature_cache.max_megabytes", mb),
    }  # fmt: skip
    budget = int(float(mb) * 2**20)
    replay = {
        "unplanned (index order, LRU)": simulate(index_batches(plan.episodes, args.batch_size), image_bytes, memory_bytes, budget, planned=False),
        "planned (fssam2 default)": simulate(plan.rank_batches(), image_bytes, memory_bytes, budget),
    }  # fmt: skip
    print(f"\n{benchmark.upper()} fold {fold}, {args.shot}-shot, {len(plan.episodes)} episodes; tiny at {args.image_size} px; "
          f"floor {floor} distinct images; budget {float(mb):.3f} MB = {floor // 2} images' features "
          f"({image_bytes} B an image, {memory_bytes} B a memory)")  # fmt: skip
    print("\n| evaluation | image-encoder passes | x floor | replayed by simulate() | encoder hook | wall time | mIoU | FB-IoU | max metric diff to uncached |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = scored(baseline)
    print(f"| uncached, index order (the published loop) | {baseline['hook']} | {baseline['hook'] / floor:.2f} | | {baseline['hook']} "
          f"| {baseline['seconds']:.0f} s | {baseline['test/miou']:.4f} | {baseline['test/fbiou']:.4f} | 0 |")  # fmt: skip
    for name, r in runs.items():
        passes = int(r["test/encoder_passes"])
        diff = max(abs(v - base[k]) for k, v in scored(r).items())
        print(f"| {name} | {passes} | {passes / floor:.3f} | {replay[name].passes} | {r['hook']} | {r['seconds']:.0f} s "
              f"| {r['test/miou']:.4f} | {r['test/fbiou']:.4f} | {diff:.1e} |")  # fmt: skip


def ddp_runs(root: Path, args: argparse.Namespace) -> None:
    """1 vs 2 CPU processes on PASCAL-5i fold 0, default budget."""
    one = test(root, "pascal", 0, args, "one")
    two = test(root, "pascal", 0, args, "two", "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2")
    two_index = test(root, "pascal", 0, args, "two index", "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2",
                     "--data.eval_order", "index")  # fmt: skip
    floor = distinct_images(one["datamodule"].eval_plan("test").episodes)
    print(f"\nPASCAL fold 0, {args.shot}-shot, {args.episodes} episodes; tiny at {args.image_size} px; default budget; "
          f"floor {floor} distinct images")  # fmt: skip
    print("\n| evaluation | image-encoder passes (all processes) | x floor | wall time | mIoU | FB-IoU |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (
        ("1 process, planned", one),
        ("2 processes, planned", two),
        ("2 processes, index order", two_index),
    ):
        passes = int(r["test/encoder_passes"])
        print(f"| {name} | {passes} | {passes / floor:.3f} | {r['seconds']:.0f} s | {r['test/miou']!r} | {r['test/fbiou']!r} |")  # fmt: skip
    equal = scored(one) == scored(two)
    differ = [k for k in scored(one) if scored(one)[k] != scored(two)[k]]
    print(f"\n2 planned processes vs 1: every metric (mIoU, FB-IoU, {len(scored(one)) - 2} per-class IoUs) "
          f"{'exactly equal' if equal else f'NOT equal: {differ}'}; index order: "
          f"{'exactly equal' if scored(one) == scored(two_index) else 'not exactly equal'}")  # fmt: skip


def lean_runs(roots: dict[int, Path], args: argparse.Namespace) -> None:
    """Lean vs full data path on PASCAL-5i folds, default budget, side by side."""
    print(f"\nThe lean data path: PASCAL-5i, {args.shot}-shot, {args.episodes} episodes (and the 50 support-gap "
          f"items); tiny at {args.image_size} px; default budget")  # fmt: skip
    print("\n| fold | data path | images shipped | x floor (distinct images) | read late | MB shipped | x floor bytes "
          "| peak host memory above start | wall time | mIoU | FB-IoU |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    image = 3 * args.image_size**2  # uint8 bytes of one image at the input size
    for fold, root in roots.items():
        runs = {
            "full (`lean_loading false`)": test(root, "pascal", fold, args, f"full{fold}", "--data.lean_loading", "false"),
            "lean (default)": test(root, "pascal", fold, args, f"lean{fold}"),
        }  # fmt: skip
        for name, r in runs.items():
            shipped, floor = int(r["test/images_shipped"]), int(r["test/distinct_images"])
            print(f"| {fold} | {name} | {shipped} | {shipped / floor:.3f} ({floor}) | {int(r['test/images_read_late'])} "
                  f"| {shipped * image / 2**20:.1f} | {shipped / floor:.3f} | {r['host_rise'] / 2**20:.0f} MB "
                  f"| {r['seconds']:.0f} s | {r['test/miou']!r} | {r['test/fbiou']!r} |")  # fmt: skip
        full, lean = (scored(r) for r in runs.values())
        differ = [k for k in full if full[k] != lean[k]]
        print(f"fold {fold}: every metric of the lean path {'exactly equal' if not differ else f'NOT equal: {differ}'} to the full path's")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits-dir", type=Path, default=DEFAULT_SPLITS, help="the published lists (pascal/, coco/)")
    parser.add_argument(
        "--only", choices=["pascal2", "coco0", "ddp", "lean"], nargs="+", default=["pascal2", "coco0", "ddp", "lean"]
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--image-side", type=int, default=96, help="side of the rendered images")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if not (args.splits_dir / "pascal").is_dir():
        raise SystemExit(f"{args.splits_dir} holds no published lists: pass --splits-dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())  # fmt: skip
    print(f"machine: {cpu}, {len(os.sched_getaffinity(0))} usable cores, {torch.get_num_threads()} torch threads; torch {torch.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fssam2-plan-") as tmp:
        for which, benchmark, fold in (("pascal2", "pascal", 2), ("coco0", "coco", 0), ("ddp", "pascal", 0)):
            if which not in args.only:
                continue
            root = Path(tmp) / which
            used = None
            if benchmark == "coco":
                _, by_class = fold_lists(args.splits_dir, "coco", "test", fold)
                rule = ClassFirstEpisodes(by_class, coco_classes("test", fold), args.shot, SEED, args.episodes)
                used = {i for e in map(rule.episode, range(args.episodes)) for i in (e.query, *e.supports)}
            write_fold(root, benchmark, fold, args.splits_dir, args.image_side, used)
            if which == "ddp":
                ddp_runs(root, args)
            else:
                cache_runs(root, benchmark, fold, args)
        if "lean" in args.only:
            roots = {fold: Path(tmp) / f"lean{fold}" for fold in (0, 2)}
            for fold, root in roots.items():
                write_fold(root, "pascal", fold, args.splits_dir, args.image_side, None)
            lean_runs(roots, args)


if __name__ == "__main__":
    main()
