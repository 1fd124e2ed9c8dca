"""`make demo`: meta-train FS-SAM2 on the synthetic benchmark and compare with the untrained model.

Runs the real CLI three times with configs/demo.yaml: `test` of the untrained model, `fit` on the
15 training classes of fold 0, `test` of the best checkpoint (by validation mIoU, on validation
episodes distinct from the test ones) on the 5 held-out classes; then prints both results.
Each run gets a new folder under runs/demo/, so nothing earlier is overwritten.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

import wandb

from fssam2.cli import run_cli

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str]):
    """One CLI run with its own W&B run (W&B would otherwise append to the previous one)."""
    cli = run_cli(args)
    wandb.finish()
    return cli


def held_out_metrics(args: list[str]) -> dict[str, float]:
    return {k: float(v) for k, v in run(args).trainer.callback_metrics.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--runs", default="runs/demo", help="parent folder of this run's folder")
    parser.add_argument("overrides", nargs="*", help="extra CLI options for every run, e.g. --trainer.max_epochs=2")
    opts = parser.parse_args(argv)
    run_dir = Path(opts.runs).resolve() / datetime.now().strftime("%Y%m%d-%H%M%S")
    base = ["--config", opts.config, *opts.overrides]

    start = time.perf_counter()
    untrained = held_out_metrics(["test", *base, "--trainer.default_root_dir", str(run_dir / "untrained")])
    fit = run(["fit", *base, "--trainer.default_root_dir", str(run_dir)])
    best = fit.trainer.checkpoint_callback.best_model_path
    trained = held_out_metrics(
        ["test", *base, "--trainer.default_root_dir", str(run_dir / "test"), "--ckpt_path", best]
    )
    minutes = (time.perf_counter() - start) / 60

    episodes = fit.datamodule.test_episodes
    print(
        f"\nFS-SAM2 on the synthetic benchmark, fold {fit.datamodule.fold}: {episodes} test episodes, "
        f"{fit.datamodule.shot}-shot, classes {fit.datamodule.class_ids('test')} never seen in training"
    )
    print(f"{'model':<28}{'mIoU':>8}{'FB-IoU':>9}")
    print(f"{'untrained (random init)':<28}{untrained['test/miou']:>8.1f}{untrained['test/fbiou']:>9.1f}")
    print(f"{'meta-trained':<28}{trained['test/miou']:>8.1f}{trained['test/fbiou']:>9.1f}")
    print(f"\nbest checkpoint: {best}\nrun folder: {run_dir}  ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
