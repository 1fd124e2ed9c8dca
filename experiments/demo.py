"""`make demo`: FS-SAM2 in miniature, with the controls that show the support decides the mask.

The published recipe on the synthetic benchmark: a tiny SAM2 pretrained for video object tracking
(`fssam2_tiny_tracking`, shipped in the package) meta-trains LoRA only on the 15 training classes of
fold 0 (configs/demo.yaml), and is tested on the 5 held-out classes. On the same test episodes it
prints, one row each:
- the tiny SAM2 at random initialisation (no pretraining, no meta-training);
- the pretrained tracker with its memory and no meta-training (LoRA at zero = the tracker itself);
- FS-SAM2 meta-trained (the best checkpoint by validation mIoU, on episodes distinct from the test's);
- the same model given the supports of an episode of another class (`support_control: swap`):
  a model that uses its support drops sharply, one that segments salient objects does not;
- the objectness oracle: every object of the query predicted, no model. Few-shot ability shows
  above it.
Below them, the support gap the meta-trained test run measured itself (`data.gap_episodes`: a
seeded subset of its episodes run again with swapped supports), mIoU true minus swap on that subset.
Each CLI run gets its own folder under runs/demo/<time>/, so nothing earlier is overwritten; the
table is also written there as demo_results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import wandb

from fssam2.cli import run_cli
from fssam2.oracle import objectness_oracle
from fssam2.synthetic import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
# The demo's targets: how much the support decides, and the margin over the oracle.
MIN_SWAP_GAP = 40.0
MIN_ORACLE_MARGIN = 10.0
FAMILY_WORDS = {"hue": "a hue band", "shape": "an outline, in any colours", "texture": "a pattern, in any colours"}
DEFAULT_FAMILIES = FAMILIES  # what `make demo` runs


def run(args: list[str]):
    """One CLI run with its own W&B run (W&B would otherwise append to the previous one)."""
    cli = run_cli(args)
    wandb.finish()
    return cli


def test(base: list[str], folder: Path, *extra: str) -> dict[str, float]:
    """`fssam2 test` into `folder`; returns its test_metrics.json."""
    run(["test", *base, "--trainer.default_root_dir", str(folder), *extra])
    return json.loads((folder / "test_metrics.json").read_text())


def family_rows(base: list[str], folder: Path) -> tuple[dict[str, dict], object, str]:
    """The demo's rows for one class family, each run in its own folder under `folder`."""
    rows: dict[str, dict] = {}
    rows["random-init tiny SAM2"] = test(base, folder / "random_init", "--model.sam2_checkpoint", "random")
    rows["pretrained tracker, no meta-training"] = test(base, folder / "tracker")
    fit = run(["fit", *base, "--trainer.default_root_dir", str(folder)])
    best = fit.trainer.checkpoint_callback.best_model_path
    rows["FS-SAM2 meta-trained (LoRA)"] = test(base, folder / "test", "--ckpt_path", best)
    rows["  same, swap supports"] = test(
        base, folder / "test_swap", "--ckpt_path", best, "--data.init_args.support_control", "swap"
    )
    rows["objectness oracle (no model)"] = objectness_oracle(fit.datamodule)
    return rows, fit.datamodule, best


def checks_of(rows: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """(value, target) of each of the demo's checks."""
    trained = rows["FS-SAM2 meta-trained (LoRA)"]["miou"]
    return {
        "support decides: meta-trained - swap": (trained - rows["  same, swap supports"]["miou"], MIN_SWAP_GAP),
        "above the objectness oracle": (trained - rows["objectness oracle (no model)"]["miou"], MIN_ORACLE_MARGIN),
        "meta-training adds to the tracker": (trained - rows["pretrained tracker, no meta-training"]["miou"], 0.0),
    }


def print_family(family: str, rows: dict[str, dict], dm) -> None:
    print(
        f"\n{family} family: classes defined by {FAMILY_WORDS[family]}; fold {dm.fold}, {dm.test_episodes} test "
        f"episodes, {dm.shot}-shot, classes {dm.class_ids('test')} never seen in meta-training"
    )
    print(f"{'':<40}{'mIoU':>8}{'FB-IoU':>9}")
    for name, result in rows.items():
        print(f"{name:<40}{result['miou']:>8.1f}{result['fbiou']:>9.1f}")
    in_run = rows["FS-SAM2 meta-trained (LoRA)"]
    if in_run.get("support_gap") is not None:  # the meta-trained test's own swap control, on a subset
        name = f"  support gap in that run ({in_run['gap_episodes']} ep.)"
        print(
            f"{name:<40}{in_run['support_gap']:>+8.1f}   (mIoU true {in_run['gap_miou_true']:.1f} - swap "
            f"{in_run['gap_miou_swap']:.1f} on the same episodes; data.gap_episodes)"
        )
    for name, (value, target) in checks_of(rows).items():
        verdict = "met" if value > target or (target > 0 and value >= target) else "NOT met"
        print(f"{name:<40}{value:>+8.1f} mIoU  (target {'>' if target == 0 else '>='} {target:g}: {verdict})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--runs", default="runs/demo", help="parent folder of this run's folder")
    parser.add_argument(
        "--families", nargs="+", choices=FAMILIES, default=list(DEFAULT_FAMILIES), help="class families to run"
    )
    parser.add_argument("overrides", nargs="*", help="extra CLI options for every run, e.g. --trainer.max_epochs=2")
    opts = parser.parse_args(argv)
    run_dir = Path(opts.runs).resolve() / datetime.now().strftime("%Y%m%d-%H%M%S")

    start = time.perf_counter()
    results: dict[str, dict] = {}
    for family in opts.families:
        base = ["--config", opts.config, "--data.init_args.family", family, *opts.overrides]
        rows, dm, best = family_rows(base, run_dir / family)
        print_family(family, rows, dm)
        in_run = rows["FS-SAM2 meta-trained (LoRA)"]
        results[family] = {
            "rows": rows,
            "checks": {k: {"value": v, "target": t} for k, (v, t) in checks_of(rows).items()},
            "support_gap": {
                k: in_run.get(k) for k in ("support_gap", "gap_miou_true", "gap_miou_swap", "gap_episodes")
            },
            "best_checkpoint": best,
        }
    minutes = (time.perf_counter() - start) / 60
    (run_dir / "demo_results.json").write_text(json.dumps({"families": results, "minutes": minutes}, indent=2))
    print(f"\nrun folder: {run_dir}  ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
