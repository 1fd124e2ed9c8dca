"""The plan report for every PASCAL-5i, COCO-20i and FSS-1000 fold, 1- and 5-shot, without a GPU.

Episodes come from the published split lists (`--splits-dir`, read-only) with the real episode
rules of fssam2.episodes, seed 42, 1000 test episodes (FSS-1000: every test image once). With no
label maps here, PASCAL-5i's rule ("the class is drawn among the fold's classes present in the
query's label map") uses the classes the fold's class file lists the query under. Entry sizes are
those the feature cache keeps for the model at the input size (B+ at 1024 px in float32: 16 MB an
image, 1 MB a support memory), measured by `fssam2.plan_report.entry_bytes`.

    python experiments/plan_report.py                                  # B+ 1024 px, 4096 MB
    python experiments/plan_report.py --precision bf16-mixed --processes 1 8
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from fssam2.benchmarks import FSS_NUMBERS, fold_lists, read_data_list  # noqa: E402
from fssam2.build import build_sam2  # noqa: E402
from fssam2.episodes import ClassFirstEpisodes, FolderEpisodes, QueryCycleEpisodes, coco_classes  # noqa: E402
from fssam2.meters import parse_precision  # noqa: E402
from fssam2.methods.fssam2 import FewShotSAM2  # noqa: E402
from fssam2.plan import Shown, build_plan  # noqa: E402
from fssam2.plan_report import entry_bytes, report  # noqa: E402

DEFAULT_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits"


def pascal_rule(splits: Path, fold: int, shot: int, seed: int, episodes: int) -> QueryCycleEpisodes:
    images, by_class = fold_lists(splits, "pascal", "test", fold)
    listed: dict[str, list[int]] = {}
    for c, ids in by_class.items():
        for i in ids:
            listed.setdefault(i, []).append(c)
    return QueryCycleEpisodes(images, by_class, lambda q: listed.get(q, []), sorted(by_class), shot, seed, episodes)


def coco_rule(splits: Path, fold: int, shot: int, seed: int, episodes: int) -> ClassFirstEpisodes:
    _, by_class = fold_lists(splits, "coco", "test", fold)
    return ClassFirstEpisodes(by_class, coco_classes("test", fold), shot, seed, episodes)


def fss_rule(splits: Path, shot: int, seed: int) -> FolderEpisodes:
    categories = sorted(read_data_list(splits / "fss" / "test.txt"))
    return FolderEpisodes({c: [str(n) for n in FSS_NUMBERS] for c in categories}, shot, seed)


def shown(rule) -> list[Shown]:  # noqa: ANN001 - an EpisodeRule
    return [Shown(e.index, e.query, e.class_id, e.supports, e.class_id) for e in map(rule.episode, range(len(rule)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--splits-dir", type=Path, default=DEFAULT_SPLITS, help="the published lists (pascal/, coco/, fss/)"
    )
    parser.add_argument("--sam2", default="sam2.1_hiera_b+")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument(
        "--precision", default="32-true", help="Trainer precision the run would use (bf16-mixed on a GPU)"
    )
    parser.add_argument("--half", action="store_true", help="feature_cache.half")
    parser.add_argument("--budget-mb", type=float, default=4096.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 8], help="process counts to plan for")
    args = parser.parse_args()
    if not (args.splits_dir / "pascal").is_dir():
        raise SystemExit(f"{args.splits_dir} holds no published lists: pass --splits-dir")
    model = FewShotSAM2(build_sam2(args.sam2, None, image_size=args.image_size))
    image_bytes, memory_bytes = entry_bytes(model, args.image_size, parse_precision(args.precision), args.half)
    budget = int(args.budget_mb * 2**20)
    mb = 2**20
    print(
        f"{args.sam2} at {args.image_size} px, precision {args.precision}{', half' if args.half else ''}: "
        f"{image_bytes / mb:.3g} MB an image's features, {memory_bytes / mb:.3g} MB a support memory; "
        f"budget {args.budget_mb:.0f} MB; batch {args.batch_size}; seed {args.seed}, {args.episodes} episodes "
        "(FSS-1000: every test image)\n"
    )
    many = [n for n in args.processes if n > 1]
    header = "| fold | shot | episodes | distinct images (floor) | planned passes | x floor | peak MB | unplanned LRU | x floor |"
    header += "".join(f" planned, {n} processes | x floor | unplanned, {n} processes |" for n in many)
    print(header)
    print("|---|---:" + "|---:" * (7 + 3 * len(many)) + "|")
    folds = [("PASCAL-5i", f) for f in range(4)] + [("COCO-20i", f) for f in range(4)] + [("FSS-1000", None)]
    worst = 0.0
    for shot in (1, 5):
        for name, fold in folds:
            if name == "PASCAL-5i":
                rule = pascal_rule(args.splits_dir, fold, shot, args.seed, args.episodes)
            elif name == "COCO-20i":
                rule = coco_rule(args.splits_dir, fold, shot, args.seed, args.episodes)
            else:
                rule = fss_rule(args.splits_dir, shot, args.seed)
            plan = build_plan(shown(rule), args.batch_size)
            one = report(plan, args.batch_size, image_bytes, memory_bytes, budget, 1)
            worst = max(worst, one.planned.passes / one.floor)
            row = (
                f"| {name}{'' if fold is None else f' {fold}'} | {shot} | {one.episodes} | {one.floor} "
                f"| {one.planned.passes} | {one.planned.passes / one.floor:.3f} | {one.planned.peak_bytes / mb:.0f} "
                f"| {one.unplanned.passes} | {one.unplanned.passes / one.floor:.3f} |"
            )
            for n in many:
                r = report(plan, args.batch_size, image_bytes, memory_bytes, budget, n)
                row += f" {r.planned.passes} | {r.planned.passes / r.floor:.3f} | {r.unplanned.passes} |"
            print(row, flush=True)
    print(
        f"\nlargest planned passes / floor, 1 process: {worst:.3f} (target <= 1.1: {'met' if worst <= 1.1 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
