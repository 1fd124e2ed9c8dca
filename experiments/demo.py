"""`make demo`: FS-SAM2 (or SANSA, `--method sansa`) in miniature, with the controls that show
whether the support decides the mask.

The published recipe on the synthetic benchmark: a tiny SAM2 pretrained on a varied synthetic world
(`fssam2_tiny_pointers`, shipped in the package) meta-trains LoRA only on the 15 training classes of
fold 0 (configs/demo.yaml; SANSA: its adapters only, configs/demo_sansa.yaml, from the same tiny
SAM2), and is tested on the 5 held-out classes, for each class family given
(`--families`: hue and shape by default, texture too on request), the families side by side, one
process per core (`--jobs`). On the same test episodes it prints, per family, one row each:
- the tiny SAM2 at random initialisation (no pretraining, no meta-training);
- the pretrained tracker with its memory and no meta-training (LoRA at zero = the tracker itself);
- the method meta-trained (the best checkpoint by validation mIoU, on episodes distinct from the test's);
- the same model given the supports of an episode of another class (`support_control: swap`):
  a model that uses its support drops sharply, one that segments salient objects does not;
- on the hue family, GF-SAM (training-free, configs/demo_gfsam.yaml: the same tiny SAM2, its own
  image embedding standing in for DINOv2) and its swap control;
- the objectness oracle: every object of the query predicted, no model. Few-shot ability shows
  above it.
Below them, the support gap the meta-trained test run measured itself (`data.gap_episodes`: a
seeded subset of its episodes run again with swapped supports), mIoU true minus swap on that subset,
what meta-training adds to the tracker, and the verdict in words: whether the support decides the
mask, with the numbers that say so. Each CLI run gets its own folder under
runs/demo/<time>/<family>/, a folder of this run alone (one that exists is refused), so nothing
earlier is overwritten; the tables are also written there as demo_results.json.

`--sam2-checkpoint FILE` starts every run from another tiny SAM2 in place of the config's (a file
`experiments/pretrain_tracking.py` wrote, or a packaged name); `compare_tracker.py` runs the demo
and the letters transfer from such a file and sets them beside the shipped tiny SAM2's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import wandb

from fssam2 import build_sam2
from fssam2.cli import run_cli
from fssam2.errors import InputError
from fssam2.files import create, new_folder
from fssam2.oracle import objectness_oracle
from fssam2.synthetic import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
# What "the support decides the mask" means here: meta-trained - swap, and the margin over the oracle.
MIN_SWAP_GAP = 40.0
MIN_ORACLE_MARGIN = 10.0
FAMILY_WORDS = {"hue": "a hue band", "shape": "an outline, in any colours", "texture": "a pattern, in any colours"}
FAMILY_CUES = {"hue": "hue band", "shape": "outline", "texture": "pattern"}  # what a support shows of its class
# --method -> (its demo config, the label of its meta-trained row)
METHODS = {
    "fssam2": (ROOT / "configs" / "demo.yaml", "FS-SAM2 meta-trained (LoRA)"),
    "sansa": (ROOT / "configs" / "demo_sansa.yaml", "SANSA meta-trained (adapters)"),
}
# What `make demo` runs: two families side by side fit the 2-core machine's 12 minutes; texture (a
# third run, about 7 more minutes there) is shown with --families hue shape texture. SANSA's demo
# (`make demo METHOD=sansa`) shows the hue family alone by default.
DEFAULT_FAMILIES = {"fssam2": ("hue", "shape"), "sansa": ("hue",)}
# The training-free GF-SAM beside the trained method, on the hue family.
GFSAM_CONFIG = ROOT / "configs" / "demo_gfsam.yaml"
GFSAM_FAMILIES = ("hue",)
GFSAM_ROWS = ("GF-SAM, training-free (SAM2 features)", "  GF-SAM, swap supports")
SWAP_ROW, TRACKER_ROW, ORACLE_ROW = (
    "  same, swap supports",
    "pretrained tracker, no meta-training",
    "objectness oracle (no model)",
)


def run(args: list[str]):
    """One CLI run with its own W&B run (W&B would otherwise append to the previous one)."""
    cli = run_cli(args)
    wandb.finish()
    return cli


def test(base: list[str], folder: Path, *extra: str) -> dict[str, float]:
    """`fssam2 test` into `folder`; returns its test_metrics.json."""
    run(["test", *base, "--trainer.default_root_dir", str(folder), *extra])
    return json.loads((folder / "test_metrics.json").read_text())


def family_result(
    family: str, base: list[str], folder: Path, trained: str = METHODS["fssam2"][1], gfsam: list[str] | None = None
) -> dict:
    """The demo's rows for one class family, each run in its own folder under `folder`, with what
    the table says of the protocol, the checks and the verdict; `trained` labels the meta-trained row;
    `gfsam`: the CLI options of GF-SAM's rows (None: none)."""
    rows: dict[str, dict] = {}
    rows["random-init tiny SAM2"] = test(base, folder / "random_init", "--model.sam2_checkpoint", "random")
    rows[TRACKER_ROW] = test(base, folder / "tracker")
    fit = run(["fit", *base, "--trainer.default_root_dir", str(folder)])
    best = fit.trainer.checkpoint_callback.best_model_path
    rows[trained] = test(base, folder / "test", "--ckpt_path", best)
    rows[SWAP_ROW] = test(base, folder / "test_swap", "--ckpt_path", best, "--data.init_args.support_control", "swap")
    if gfsam is not None:
        rows[GFSAM_ROWS[0]] = test(gfsam, folder / "gfsam")
        rows[GFSAM_ROWS[1]] = test(gfsam, folder / "gfsam_swap", "--data.init_args.support_control", "swap")
    rows[ORACLE_ROW] = objectness_oracle(fit.datamodule)
    dm = fit.datamodule
    in_run = rows[trained]
    return {
        "trained_row": trained,
        "rows": rows,
        "protocol": {
            "fold": dm.fold,
            "test_episodes": dm.test_episodes,
            "shot": dm.shot,
            "classes": dm.class_ids("test"),
        },
        "checks": {k: {"value": v, "threshold": t} for k, (v, t) in checks_of(rows, trained).items()},
        "verdict": verdict(family, rows[trained]["miou"], rows[SWAP_ROW]["miou"], rows[ORACLE_ROW]["miou"]),
        "support_gap": {k: in_run.get(k) for k in ("support_gap", "gap_miou_true", "gap_miou_swap", "gap_episodes")},
        "best_checkpoint": best,
    }


def checks_of(rows: dict[str, dict], trained_row: str) -> dict[str, tuple[float, float]]:
    """(value, threshold) of each of the demo's checks."""
    trained = rows[trained_row]["miou"]
    return {
        "meta-trained - swap": (trained - rows[SWAP_ROW]["miou"], MIN_SWAP_GAP),
        "meta-trained - objectness oracle": (trained - rows[ORACLE_ROW]["miou"], MIN_ORACLE_MARGIN),
        "meta-training adds to the tracker": (trained - rows[TRACKER_ROW]["miou"], 0.0),
    }


def verdict(family: str, trained: float, swap: float, oracle: float) -> str:
    """What the meta-trained, swap and oracle mIoU say of `family`, in two lines: whether the support
    decides the mask (meta-trained - swap >= MIN_SWAP_GAP and meta-trained - oracle >= MIN_ORACLE_MARGIN),
    and the numbers that say so."""
    cue = FAMILY_CUES.get(family, "class")
    gap, margin = trained - swap, trained - oracle
    if gap >= MIN_SWAP_GAP and margin >= MIN_ORACLE_MARGIN:
        words = f"the support decides the mask: the model finds the {cue} its support shows"
    elif gap >= MIN_SWAP_GAP:
        words = "the support picks the object, but the model hardly beats segmenting every object of the query"
    elif margin >= MIN_ORACLE_MARGIN:
        words = f"the support hardly decides the mask: the model finds the held-out classes without their {cue}"
    else:
        words = f"the support hardly decides the mask: the model segments salient objects, whatever {cue} it is shown"
    numbers = f"meta-trained - swap {gap:+.1f} mIoU, meta-trained - objectness oracle {margin:+.1f}"
    return f"{words}\n  ({numbers}; the support decides from +{MIN_SWAP_GAP:g} and +{MIN_ORACLE_MARGIN:g})"


def print_family(family: str, result: dict) -> None:
    rows, protocol = result["rows"], result["protocol"]
    print(
        f"\n{family} family: classes defined by {FAMILY_WORDS[family]}; fold {protocol['fold']}, "
        f"{protocol['test_episodes']} test episodes, {protocol['shot']}-shot, classes {protocol['classes']} "
        "never seen in meta-training"
    )
    print(f"{'':<40}{'mIoU':>8}{'FB-IoU':>9}")
    for name, row in rows.items():
        print(f"{name:<40}{row['miou']:>8.1f}{row['fbiou']:>9.1f}")
    in_run = rows[result["trained_row"]]
    if in_run.get("support_gap") is not None:  # the meta-trained test's own swap control, on a subset
        name = f"  support gap in that run ({in_run['gap_episodes']} ep.)"
        print(
            f"{name:<40}{in_run['support_gap']:>+8.1f}   (mIoU true {in_run['gap_miou_true']:.1f} - swap "
            f"{in_run['gap_miou_swap']:.1f} on the same episodes; data.gap_episodes)"
        )
    name = "meta-training adds to the tracker"
    print(f"{name:<40}{checks_of(rows, result['trained_row'])[name][0]:>+8.1f} mIoU")
    print(result["verdict"])


def in_subprocesses(opts: argparse.Namespace, run_dir: Path) -> dict[str, dict]:
    """Each family in its own process (`--jobs` at a time, the CPU threads shared out between
    them); each writes its log and results into its own folder. A family that fails stops the demo."""
    threads = max(1, (os.cpu_count() or 1) // opts.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def one(family: str) -> tuple[str, int]:
        folder = run_dir / family
        folder.mkdir(parents=True)
        command = [sys.executable, __file__, "--method", opts.method, "--config", opts.config]
        command += ["--families", family, "--jobs", "1"]
        command += ["--sam2-checkpoint", opts.sam2_checkpoint] if opts.sam2_checkpoint else []
        command += ["--into", str(folder), "--", *opts.overrides]
        with open(folder / "demo.log", "x") as log:
            return family, subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode

    with ThreadPoolExecutor(opts.jobs) as pool:
        codes = dict(pool.map(one, opts.families))
    failed = [f for f, code in codes.items() if code]
    if failed:
        raise SystemExit(f"demo: the {', '.join(failed)} family failed; its log: {run_dir / failed[0] / 'demo.log'}")
    return {f: json.loads((run_dir / f / "demo_results.json").read_text())["families"][f] for f in opts.families}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(METHODS), default="fssam2", help="the method shown")
    parser.add_argument("--config", default=None, help="the demo's config (default: the method's)")
    parser.add_argument("--runs", default="runs/demo", help="parent folder of this run's folder")
    parser.add_argument(
        "--families", nargs="+", choices=FAMILIES, default=None, help="class families to run (default: the method's)"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="families run at once, each in its own process (default: one per core)"
    )
    parser.add_argument(
        "--sam2-checkpoint",
        default=None,
        help="the tiny SAM2 every run starts from: a file or a packaged name (default: the config's)",
    )
    parser.add_argument("--into", type=Path, default=None, help=argparse.SUPPRESS)  # a subprocess's own folder
    parser.add_argument("overrides", nargs="*", help="extra CLI options for every run, e.g. --trainer.max_epochs=2")
    opts = parser.parse_args(argv)
    opts.config = opts.config or str(METHODS[opts.method][0])
    opts.families = opts.families or list(DEFAULT_FAMILIES[opts.method])
    opts.jobs = opts.jobs or max(1, min(len(opts.families), os.cpu_count() or 1))
    run_dir = opts.into or Path(opts.runs).resolve() / datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        if opts.sam2_checkpoint:  # read before any run: a file that does not fit the tiny SAM2 ends here
            build_sam2("fssam2_tiny", opts.sam2_checkpoint)
            if Path(opts.sam2_checkpoint).expanduser().is_file():
                opts.sam2_checkpoint = str(Path(opts.sam2_checkpoint).expanduser().resolve())
        if opts.into is None:  # a subprocess's folder is its parent's, made in this run
            new_folder(run_dir, "--runs")
    except InputError as err:
        parser.error(str(err))

    start = time.perf_counter()
    if opts.jobs > 1:
        results = in_subprocesses(opts, run_dir)
    else:
        results = {}
        for family in opts.families:
            sam2_args = ["--model.sam2_checkpoint", opts.sam2_checkpoint] if opts.sam2_checkpoint else []
            base = ["--config", opts.config, "--data.init_args.family", family, *sam2_args, *opts.overrides]
            gfsam = ["--config", str(GFSAM_CONFIG), "--data.init_args.family", family, *sam2_args, *opts.overrides]
            folder = run_dir if opts.into else run_dir / family
            results[family] = family_result(
                family, base, folder, METHODS[opts.method][1], gfsam if family in GFSAM_FAMILIES else None
            )
    for family, result in results.items():
        print_family(family, result)
    minutes = (time.perf_counter() - start) / 60
    text = json.dumps({"families": results, "minutes": minutes, "sam2_checkpoint": opts.sam2_checkpoint}, indent=2)
    create(run_dir / "demo_results.json", lambda tmp: tmp.write_text(text), "--runs")
    start_from = opts.sam2_checkpoint or f"the config's ({opts.config})"
    print(f"\ntiny SAM2 every run started from: {start_from}")
    print(f"run folder: {run_dir}  ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
