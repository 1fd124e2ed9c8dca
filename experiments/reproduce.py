"""`make reproduce`: train and test every benchmark fold of a method's paper and write its table.

    python experiments/reproduce.py [--gpus 8] [--out runs/reproduce]
    python experiments/reproduce.py --data-root DATA --splits-dir SPLITS --sam2-checkpoint FILE.pt
    python experiments/reproduce.py --method sansa        # SANSA's recipe (configs/sansa), its published numbers
    python experiments/reproduce.py --method gfsam        # GF-SAM, training-free (configs/gfsam): tests only

With no --data-root, the data home (`$FSSAM2_DATA`) is used and whatever it lacks is prepared first
with `fssam2 prepare` (FSS-1000, split lists, PASCAL-5i, COCO-20i: downloaded and checked; FSS-1000
first, since its archive needs a manual download and an error then comes before any long step).
With no --sam2-checkpoint, the released weights are fetched by name on first use (FS-SAM2: SAM2.1
B+; SANSA: SAM2 v1 Hiera-L).

For each of PASCAL-5i folds 0-3, COCO-20i folds 0-3 and FSS-1000: `fssam2 fit` (1-shot training)
then `fssam2 test` 1-shot and 5-shot from the best checkpoint (a training-free method, GF-SAM: the
tests alone, with no checkpoint); COCO->PASCAL tests each COCO fold's
model on PASCAL folds 10-13. A run already finished (its fit_done marker, or its test_metrics.json)
is skipped, and an interrupted fit resumes from its last.ckpt, so an interrupted reproduction resumes. Then `<out>/results.md` holds the table in the
paper's layout, each cell "ours (difference to the published number)"; where an earlier run left one, the
new table goes to results-1.md (then -2, ...): none is written over.

`--smoke` runs the same pipeline on generated datasets in the real layouts (lists derived with
`fssam2 prepare splits`) with the tiny model for a few steps: it checks the plumbing, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

METHODS = {"fssam2": CONFIGS, "sansa": CONFIGS / "sansa", "gfsam": CONFIGS / "gfsam"}  # --method -> its configs
TITLES = {"fssam2": "FS-SAM2", "sansa": "SANSA", "gfsam": "GF-SAM"}
TRAINING_FREE = {"gfsam"}  # nothing to fit: tested from the config alone
# Published FS-SAM2 mIoU (1-shot folds where the paper gives them, and means).
PUBLISHED_FSSAM2 = {
    ("pascal", 1): {"folds": [74.0, 79.6, 73.5, 66.7], "mean": 73.4},
    ("pascal", 5): {"folds": None, "mean": 74.8},
    ("coco", 1): {"folds": None, "mean": 55.3},
    ("coco", 5): {"folds": None, "mean": 58.4},
    ("fss1000", 1): {"mean": 90.6},
    ("fss1000", 5): {"mean": 91.7},
    ("coco2pascal", 1): {"folds": None, "mean": 77.2},
    ("coco2pascal", 5): {"folds": None, "mean": 79.7},
}
# Published SANSA mIoU (its README and paper); it reports no PASCAL-5i and no COCO->PASCAL.
PUBLISHED_SANSA = {
    ("coco", 1): {"folds": [57.7, 61.7, 62.8, 58.5], "mean": 60.2},
    ("coco", 5): {"folds": None, "mean": 67.3},
    ("fss1000", 1): {"mean": 91.4},
}
# Published GF-SAM mIoU (SAM ViT-H): the paper's means, each fold from the official logs (outputs/ in
# its repository; their PASCAL-5i 1-shot folds average 72.3).
PUBLISHED_GFSAM = {
    ("pascal", 1): {"folds": [71.1, 75.7, 69.2, 73.3], "mean": 72.1},
    ("pascal", 5): {"folds": [81.5, 86.3, 79.7, 82.9], "mean": 82.6},
    ("coco", 1): {"folds": [56.6, 61.4, 59.6, 57.1], "mean": 58.7},
    ("coco", 5): {"folds": [67.1, 69.4, 66.0, 64.8], "mean": 66.8},
    ("fss1000", 1): {"mean": 88.0},
    ("fss1000", 5): {"mean": 88.9},
}
PUBLISHED = {"fssam2": PUBLISHED_FSSAM2, "sansa": PUBLISHED_SANSA, "gfsam": PUBLISHED_GFSAM}
BENCHMARKS = {
    "fssam2": ("pascal", "coco", "fss1000", "coco2pascal"),
    "sansa": ("pascal", "coco", "fss1000"),
    "gfsam": ("pascal", "coco", "fss1000"),
}
SHOTS = (1, 5)
SMOKE = [
    "--model.sam2_config", "fssam2_tiny", "--model.sam2_checkpoint", "random", "--model.image_size", "64", "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2", "--data.test_episodes", "4",
    "--data.val_episodes", "2", "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.logger", "false",
    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
]  # fmt: skip


def plan(benchmarks: list[str]) -> list[tuple[str, str | None, str, list[tuple[int, str]]]]:
    """(run name, config to fit or None, config to test, [(shot, test folder)]), in order."""
    runs = []
    for bench in [b for b in ("pascal", "coco", "fss1000", "coco2pascal") if b in benchmarks]:
        if bench in ("pascal", "coco"):
            runs += [(f"{bench}_fold{f}", f"{bench}_fold{f}", f"{bench}_fold{f}", []) for f in range(4)]
        elif bench == "fss1000":
            runs.append(("fss1000", "fss1000", "fss1000", []))
        elif bench == "coco2pascal":
            runs += [(f"coco2pascal_fold{f}", None, f"coco2pascal_fold{f}", []) for f in range(4)]
    return [(name, fit, test, [(k, f"test_{k}shot") for k in SHOTS]) for name, fit, test, _ in runs]


def generate_smoke_data(out: Path) -> tuple[Path, Path]:
    """Generated PASCAL / COCO / FSS-1000 layouts and their split lists under `out`."""
    from fssam2.cli import run_cli
    from fssam2.synthetic import SyntheticBenchmark, write_coco_layout, write_fss_layout, write_pascal_layout

    root, splits = out / "data", out / "data" / "splits"
    if (splits / "fss" / "test.txt").is_file():
        return root, splits
    pascal = write_pascal_layout(root, SyntheticBenchmark(image_size=64, pool_sizes=(120, 0, 160)))
    for split, ids in pascal.items():
        (root / f"pascal_{split}.txt").write_text("\n".join(ids))
    common = ["--out", str(splits), "--min-pixels", "20", "--root", str(root)]
    run_cli(
        [
            "prepare",
            "splits",
            "--benchmark",
            "pascal",
            *common,
            "--train-ids",
            str(root / "pascal_train.txt"),
            "--val-ids",
            str(root / "pascal_val.txt"),
        ]
    )
    write_coco_layout(root, SyntheticBenchmark(num_classes=80, image_size=64, pool_sizes=(1500, 0, 800)))
    run_cli(["prepare", "splits", "--benchmark", "coco", *common])
    names = {split: [f"{split}_cat{k:02d}" for k in range(2)] for split in ("train", "val", "test")}
    write_fss_layout(root, SyntheticBenchmark(image_size=64), names)
    (splits / "fss").mkdir(parents=True, exist_ok=True)
    for split, file in (("train", "trn.txt"), ("val", "val.txt"), ("test", "test.txt")):
        (splits / "fss" / file).write_text("\n".join(names[split]) + "\n")
    return root, splits


def prepare_order(benchmarks: list[str]) -> list[str]:
    """The `fssam2 prepare` subcommands the benchmarks need: FSS-1000 first (its archive needs a
    manual download, so its error comes before hours of other downloads), then the lists, then the rest."""
    needs = {"pascal": "pascal", "coco2pascal": "pascal", "coco": "coco", "fss1000": "fss1000"}
    wanted = {needs[b] for b in benchmarks}
    return [*(["fss1000"] if "fss1000" in wanted else []), "splits", *(n for n in ("pascal", "coco") if n in wanted)]


def prepare_data_home(benchmarks: list[str]) -> tuple[Path, Path]:
    """Prepare what the data home lacks (each step is a no-op once done); its root and lists folder."""
    from fssam2.cli import run_cli
    from fssam2.hub import data_dir

    root = data_dir()
    for name in prepare_order(benchmarks):
        print(f"[reproduce] fssam2 prepare {name} --root {root}", flush=True)
        run_cli(["prepare", name, "--root", str(root)])
    return root, root / "splits"


def fssam2(args: list[str], in_process: bool) -> None:
    """One CLI run: in this process on one device, else a subprocess (DDP relaunches its command)."""
    if in_process:
        from fssam2.cli import run_cli

        run_cli(args)
    else:
        subprocess.run([sys.executable, "-m", "fssam2.cli", *args], check=True)


def fit_args(fit_config: str, common: list[str], run_dir: Path, configs: Path = CONFIGS) -> list[str]:
    """`fssam2 fit` of a run into `run_dir`, resuming from its last.ckpt when an earlier fit there
    was interrupted (a new fit beside it would be refused), so that its best.ckpt, which the tests
    read, is the finished fit's choice."""
    args = ["fit", "--config", str(configs / f"{fit_config}.yaml"), *common, "--trainer.default_root_dir", str(run_dir)]
    last = run_dir / "checkpoints" / "last.ckpt"
    return [*args, "--ckpt_path", str(last)] if last.is_file() else args


def run_all(opts: argparse.Namespace) -> Path:
    from fssam2.files import write_new

    out = Path(opts.out).resolve()
    if opts.smoke:
        data_root, splits_dir = generate_smoke_data(out)
    elif opts.data_root is None:
        data_root, splits_dir = prepare_data_home(opts.benchmarks)
    else:
        data_root, splits_dir = opts.data_root, opts.splits_dir
    common = ["--data.root", str(data_root), "--data.splits_dir", str(splits_dir)]
    if opts.sam2_checkpoint:
        common += ["--model.sam2_checkpoint", str(opts.sam2_checkpoint)]
    if opts.smoke:
        common += SMOKE
        if opts.method == "sansa":  # SANSA's loader sizes (640, 518) kept small too
            common += ["--model.method_args", '{"input_size": 48}']
        if opts.method == "gfsam":  # a DINOv2 of the same family, tiny and random
            common += ["--model.method_args", '{"encoder": "dinov2_tiny", "encoder_checkpoint": "random"}']
    elif opts.gpus:
        common += ["--trainer.accelerator", "gpu", "--trainer.devices", str(opts.gpus)]
    in_process = opts.smoke or opts.gpus <= 1
    trains = opts.method not in TRAINING_FREE
    for name, fit_config, test_config, tests in plan(opts.benchmarks):
        fit_config = fit_config if trains else None
        run_dir = out / name
        source = run_dir if fit_config else out / name.replace("coco2pascal", "coco")
        done = run_dir / "fit_done"
        if fit_config and not done.is_file():
            args = fit_args(fit_config, common, run_dir, METHODS[opts.method])
            print(f"[reproduce] {'resume' if '--ckpt_path' in args else 'fit'} {name}", flush=True)
            fssam2(args, in_process)
            done.write_text("ok\n")
        for shot, folder in tests:
            if (run_dir / folder / "test_metrics.json").is_file():
                continue
            print(f"[reproduce] test {name} {shot}-shot", flush=True)
            ckpt = ["--ckpt_path", str(source / "checkpoints" / "best.ckpt")] if trains else []
            fssam2([
                "test", "--config", str(METHODS[opts.method] / f"{test_config}.yaml"), *common, "--data.shot", str(shot),
                *ckpt, "--trainer.default_root_dir", str(run_dir / folder),
            ], in_process)  # fmt: skip
    table = results_table(out, opts.benchmarks, opts.method)
    written = write_new(out / "results.md", table)
    print(f"{table}\n[reproduce] table: {written}")
    return written


def _cell(ours: float | None, published: float | None) -> str:
    if ours is None:
        return "–"
    return f"{ours:.1f}" if published is None else f"{ours:.1f} ({ours - published:+.1f})"


def results_table(out: Path, benchmarks: list[str], method: str = "fssam2") -> str:
    """The paper's layout: per benchmark, mIoU per fold and mean, 1-shot then 5-shot."""
    published_numbers = PUBLISHED[method]
    none: dict = {"folds": None, "mean": None}  # no published number: ours alone

    def miou(name: str, shot: int) -> float | None:
        path = out / name / f"test_{shot}shot" / "test_metrics.json"
        return json.loads(path.read_text())["miou"] if path.is_file() else None

    lines = [f"# {TITLES[method]} reproduction: mIoU (difference to the published number)", ""]
    titles = {"pascal": "PASCAL-5i", "coco": "COCO-20i", "coco2pascal": "COCO->PASCAL"}
    for bench in [b for b in benchmarks if b in titles]:
        lines += [
            f"## {titles[bench]}",
            "",
            "| shot | fold 0 | fold 1 | fold 2 | fold 3 | mean |",
            "|---|---|---|---|---|---|",
        ]
        for shot in SHOTS:
            folds = [miou(f"{bench}_fold{f}", shot) for f in range(4)]
            published = published_numbers.get((bench, shot), none)
            pub_folds = published["folds"] or [None] * 4
            mean = sum(folds) / 4 if all(v is not None for v in folds) else None
            cells = [_cell(v, p) for v, p in zip(folds, pub_folds, strict=True)] + [_cell(mean, published["mean"])]
            lines.append(f"| {shot} | " + " | ".join(cells) + " |")
        lines.append("")
    if "fss1000" in benchmarks:
        lines += ["## FSS-1000", "", "| shot | mIoU |", "|---|---|"]
        lines += [
            f"| {shot} | {_cell(miou('fss1000', shot), published_numbers.get(('fss1000', shot), none)['mean'])} |"
            for shot in SHOTS
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-root", help="folder holding VOC2012/, COCO2014/ and FSS-1000/ (default: the data home, prepared)"
    )
    parser.add_argument("--splits-dir", help="folder holding pascal/, coco/ and fss/ split lists (with --data-root)")
    parser.add_argument("--sam2-checkpoint", help="a SAM2 .pt file (default: the released weights, fetched by name)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per run (DDP when > 1)")
    parser.add_argument("--method", choices=sorted(METHODS), default="fssam2", help="whose recipe and configs")
    parser.add_argument("--out", default=None, help="run folder (default: runs/reproduce, runs/reproduce_sansa)")
    parser.add_argument("--benchmarks", nargs="+", default=None, help="default: every benchmark the method has")
    parser.add_argument("--smoke", action="store_true", help="generated data, tiny model, a few steps")
    opts = parser.parse_args(argv)
    opts.out = opts.out or ("runs/reproduce" if opts.method == "fssam2" else f"runs/reproduce_{opts.method}")
    opts.benchmarks = opts.benchmarks or list(BENCHMARKS[opts.method])
    unknown = sorted(set(opts.benchmarks) - set(BENCHMARKS[opts.method]))
    if unknown:
        parser.error(
            f"--benchmarks {' '.join(unknown)}: {TITLES[opts.method]} has configs for {' '.join(BENCHMARKS[opts.method])}"
        )
    if bool(opts.data_root) != bool(opts.splits_dir):
        parser.error("give --data-root and --splits-dir together, or neither (the data home is then prepared)")
    if "coco2pascal" in opts.benchmarks and "coco" not in opts.benchmarks:
        parser.error("coco2pascal tests the COCO-20i models: include coco in --benchmarks")
    run_all(opts)


if __name__ == "__main__":
    main()
