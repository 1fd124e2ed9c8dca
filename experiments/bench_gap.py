"""What the support gap (`data.gap_episodes`) costs a validation: the same validation timed with
the gap off (0) and on (the default, and all episodes), side by side, alternating, median of
`--repeats`, on the tiny test config (8 episodes, random init) and the demo's validation (200
episodes, the packaged tracker, 128 px). CPU, float32, the feature cache on (the default).
Wall seconds and the process's CPU seconds (all its threads): on a shared machine the CPU
seconds are the steadier figure.

    python experiments/bench_gap.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
import warnings
from typing import Any

import lightning as L

from fssam2.data import FewShotDataModule, SyntheticDataModule
from fssam2.module import FSSAM2Module

DEFAULT = inspect.signature(FewShotDataModule).parameters["gap_episodes"].default
SETUPS: dict[str, dict[str, Any]] = {
    "tiny config (tests/configs/tiny.yaml)": {
        "model": {"sam2_config": "fssam2_tiny", "sam2_checkpoint": "random", "image_size": 64},
        "data": {"batch_size": 4, "val_episodes": 8, "image_side": 64, "pool_sizes": (150, 60, 60)},
    },
    "demo validation (configs/demo.yaml)": {
        "model": {"sam2_config": "fssam2_tiny", "sam2_checkpoint": "fssam2_tiny_tracking"},
        "data": {"batch_size": 8, "val_episodes": 200},
    },
}


def validate(module: FSSAM2Module, data: dict[str, Any], gap: int | str) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of one `validate` (a fresh DataModule: its plan and subset are made
    inside), and its metrics."""
    dm = SyntheticDataModule(fold=0, shot=1, num_workers=0, gap_episodes=gap, **data)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    wall, cpu = time.perf_counter(), time.process_time()
    result = trainer.validate(module, datamodule=dm, verbose=False)[0]
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    warnings.filterwarnings("ignore")  # random init and small gaps warn; timing only here
    print(
        "| setup | gap_episodes | episodes + gap items | wall s (median) | x off | CPU s (median) | x off | encoder passes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, setup in SETUPS.items():
        module = FSSAM2Module(**setup["model"])
        settings = [0, DEFAULT, "all"]
        validate(module, setup["data"], 0)  # warm up: first-call costs (threads, allocator) not in the figures
        walls: dict[Any, list[float]] = {g: [] for g in settings}
        cpus: dict[Any, list[float]] = {g: [] for g in settings}
        results: dict[Any, dict[str, float]] = {}
        for _ in range(opts.repeats):
            for gap in settings:
                wall, cpu, results[gap] = validate(module, setup["data"], gap)
                walls[gap].append(wall)
                cpus[gap].append(cpu)
        wall_off, cpu_off = statistics.median(walls[0]), statistics.median(cpus[0])
        for gap in settings:
            wall, cpu = statistics.median(walls[gap]), statistics.median(cpus[gap])
            items = setup["data"]["val_episodes"] + int(results[gap].get("val/gap_episodes", 0))
            print(
                f"| {name} | {gap} | {items} | {wall:.2f} | {wall / wall_off:.2f} | {cpu:.2f} | {cpu / cpu_off:.2f} "
                f"| {results[gap].get('val/encoder_passes', float('nan')):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
