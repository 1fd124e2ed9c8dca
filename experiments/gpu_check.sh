#!/usr/bin/env bash
# One short GPU run of fssam2's benchmarks: SAM2.1 B+ at 1024 px in bf16 on
# one GPU; about 7 minutes on an H100 and at most ~14 (each part is bounded by `timeout`; under a
# 10-minute limit per command, run it as two calls with GPU_CHECK_PARTS, e.g. "episode fold" then "fold1 train doctor").
#
#   bash experiments/gpu_check.sh [OUT]                          # on the GPU machine, repository root
#   GPU_CHECK_SMOKE=1 bash experiments/gpu_check.sh /tmp/out     # CPU smoke test of the plumbing:
#       tiny model, tiny sizes, a few episodes, < 3 min on one core (taskset -c 1 ...)
#
# Parts, most valuable first; a failing or timed-out part is recorded and the next one runs:
#   1. bench_episode.py: episode latency of the published per-image loop vs fssam2's batched
#      forward for K = 1, 5, 10, 20 (fp32 equality check first, then timed in bf16), training
#      episodes/s (8 one-shot episodes a step, halved on out-of-memory), peak GPU memory;
#   2. bench_fold_cache.py: a PASCAL-5i-fold-0-shaped 5-shot fold through the real `fssam2 test`
#      (bf16-mixed, its GPU default), feature cache off vs on, every image shipped vs the lean
#      data path, and the fold's arithmetic floor (its encoder, memory-encoder and decoder passes
#      back to back on tensors already on the GPU). 1000 episodes unless part 1's 5-shot latency
#      says the runs would not fit FOLD_BUDGET_S (then fewer, for all runs alike, and the output
#      says so); FOLD_EPISODES=N forces N.
#   3. bench_fold_cache.py --shot 1: the same fold 1-shot, every image shipped vs the lean data path,
#      and its arithmetic floor;
#   4. bench_fold_cache.py --only train: training episodes/s through `fssam2 fit` with the real data
#      loader (8 one-shot episodes a step), beside part 1's model-only step;
#   5. fssam2 doctor --config configs/pascal_fold0.yaml: devices, bf16, the measured memory of a training step.
#   6. pretrain (not in the default list; name it): pretrain_tracking.py pretrains the tiny SAM2 on the varied
#      world, the shipped recipe in float32, for the time this call has left (--minutes: it times a few steps,
#      then plans as many as fit), drawing clips in worker processes and saving OUT/pretrained.pt every 250
#      steps, so a run cut short still leaves a whole model. The call's time is GPU_CHECK_SECONDS (default
#      570, under the device tool's 10-minute limit), counted from the script's start; the part gets what is
#      left less 20 s for the summary, and is skipped under 100 s. OUT must not hold a pretrained.pt already
#      (the script writes over no file). Evaluate the file on a CPU with experiments/compare_tracker.py.
#   7. gfsam (not in the default list; name it): bench_gfsam.py, GF-SAM against the official forward on
#      SAM2.1 B+ at 1024 px with DINOv2 ViT-L/14 (random weights: the machine is offline), in float32, K = 1
#      and 5, 16 episodes each after 4 warm-up: episodes/s and seconds a query image of the official code, of
#      fssam2 one episode at a time and of fssam2 batched with its feature cache, beside the published ~2 s an
#      image, and the final masks equal to the official's per episode; under 3 min on an H100. It imports the
#      official code from GFSAM_OFFICIAL (default .gfsam, a git-ignored folder carried along; docs/performance.md,
#      "When a GPU is lent", says how to make it) and is skipped, saying so, where that holds no matcher/GFSAM.py.
# Everything lands in OUT (default runs/gpu_check): setup.log, status.tsv, each part's .log (and .json;
# pretrain: pretrained.pt), summary.md; the last lines printed are one summary table and the
# pretraining's plan, last evaluation and last save.
#
# With 15 minutes of device time in all (the machine's start included), two calls, each a fresh OUT:
#   GPU_CHECK_PARTS="fold fold1" bash experiments/gpu_check.sh "$OUT"       # ~7 min: both folds vs their floor
#   GPU_CHECK_PARTS=pretrain GPU_CHECK_SECONDS=S bash experiments/gpu_check.sh "$OUT"
# with S the device time left (status's budget_left_s) less 60 s, at most 570, and the call's timeout_s S + 30.
#
# A bare GPU machine (torch, lightning, numpy, ... but no sam2, hydra, jsonargparse,
# albumentations, loralib, iopath) gets them from the wheels in GPU_CHECK_WHEELS (default .whl,
# carried along), installed with --no-deps into GPU_CHECK_SITE (default /tmp/site) ahead of
# PYTHONPATH; typing_extensions only where the machine's is older than pydantic needs, and no
# torch, numpy or anything else the machine has; wandb, pycocotools and torchvision are not
# needed. fssam2 itself runs from src/. PYTHON picks the interpreter (default python3; for the
# smoke test .venv/bin/python where it exists). The wheels (~10 MB; the versions of
# `make install`'s .venv) were made for Python 3.12 x86_64 with
#   echo /.whl/ >>.git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl hydra-core==1.3.8 omegaconf==2.3.1 loralib==0.1.2 albumentations==2.0.8 albucore==0.0.24 \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     stringzilla==5.3.2 simsimd==6.5.16 jsonargparse==4.53.0 docstring-parser==0.18.0 \
#     typeshed-client==2.15.0 portalocker==4.4.2 typing-extensions==4.16.0
#   SAM2_BUILD_CUDA=0 .venv/bin/pip wheel --no-deps --no-build-isolation -w .whl \
#     sam2==1.1.0 antlr4-python3-runtime==4.9.3 iopath==0.1.10        # sdists: pure-Python wheels
set -euo pipefail

OUT=${1:-runs/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE=${GPU_CHECK_SMOKE:-}
PY=${PYTHON:-python3}
if [ -n "$SMOKE" ] && [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
    PY=.venv/bin/python  # `make install`'s, which has every dependency
fi
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/site}
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
STATUS=$OUT/status.tsv
START=$SECONDS

# First line: the GPUs, then Python and torch.
echo "gpus: $( (nvidia-smi -L 2>/dev/null || echo 'no nvidia-smi') | tr '\n' ';')"
"$PY" -c 'import platform, sys, torch; print(f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")' || echo "python: $PY cannot import torch"

if [ -n "$SMOKE" ]; then
    DEVICE=cpu
    EPISODE_ARGS=(--models tiny --shots 1 2 --reps 1 --warmup 0 --train-batch 2 --threads 1)
    FOLD_ARGS=(--sam2 fssam2_tiny --image-size 128 --queries 30 --batch-size 4 --image-side 96 --num-workers 1 --threads 1)
    MAX_EPISODES=16 FOLD_BUDGET_S=${FOLD_BUDGET_S:-60} EPISODE_TIMEOUT=${EPISODE_TIMEOUT:-120} FOLD_TIMEOUT=${FOLD_TIMEOUT:-120}
    PRETRAIN_ARGS=(--device cpu --image-size 64 --batch 2 --eval-every 4 --eval-clips 8 --save-every 2 --threads 1)
    GFSAM_ARGS=(--shots 1 --episodes 4 --warmup 1 --batch-size 2 --threads 1)
    CALL_SECONDS=${GPU_CHECK_SECONDS:-}  # unset: the pretraining gets 150 s wherever it runs
else
    DEVICE=cuda
    EPISODE_ARGS=(--models b+ --image-size 1024 --shots 1 5 10 20 --reps 10 --warmup 3 --train-batch 8)
    FOLD_ARGS=(--sam2 sam2.1_hiera_b+ --image-size 1024 --batch-size 8 --num-workers auto --cache-mb 16384)
    MAX_EPISODES=1000 FOLD_BUDGET_S=${FOLD_BUDGET_S:-220} EPISODE_TIMEOUT=${EPISODE_TIMEOUT:-120} FOLD_TIMEOUT=${FOLD_TIMEOUT:-260}
    CORES=$(nproc)
    PRETRAIN_ARGS=(--device cuda --threads 2 --workers $((CORES > 10 ? 8 : CORES > 2 ? CORES - 2 : 0)) --save-every 250)
    GFSAM_ARGS=(--sam2 sam2.1_hiera_b+ --image-size 1024 --dinov2 vitl14 --shots 1 5 --episodes 16 --warmup 4)
    CALL_SECONDS=${GPU_CHECK_SECONDS:-570}
fi

# ---- setup: the missing Python packages from the carried wheels -------------------------------
NEEDED='import sam2, hydra, omegaconf, iopath, loralib, albumentations, jsonargparse, docstring_parser, typeshed_client'
{
    echo "cores: $(nproc); memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}'); /dev/shm: $(df -h /dev/shm 2>/dev/null | awk 'NR == 2 {print $2 " (" $4 " free)"}')"
    if "$PY" -c "$NEEDED" 2>/dev/null; then
        echo "sam2, hydra, jsonargparse, albumentations, ... already importable: nothing installed"
    else
        # Every wheel but typing_extensions, which pydantic needs at >= 4.16 and is taken only
        # when the machine's is older (torch brings one); nothing torch or numpy is among them.
        mapfile -t PICKED < <("$PY" - "$WHEELS" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    if wheel.name.startswith("typing_extensions-"):
        try:
            have = tuple(int(x) for x in version("typing_extensions").split(".")[:2])
        except (PackageNotFoundError, ValueError):
            have = (0, 0)
        if have >= (4, 16):
            print(f"skipped: {wheel.name} (typing_extensions {'.'.join(map(str, have))} is there)", file=sys.stderr)
            continue
    print(wheel)
EOF
        )
        if [ -z "${GPU_CHECK_UNZIP:-}" ] && "$PY" -m pip --version >/dev/null 2>&1; then
            echo "installing ${#PICKED[@]} wheels from $WHEELS into $SITE (--no-deps)"
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${PICKED[@]}"
        else  # a venv made without pip (uv's): a wheel unpacked is a wheel installed, bar its scripts
            echo "no pip for $PY: unpacking ${#PICKED[@]} wheels from $WHEELS into $SITE"
            "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$SITE" "${PICKED[@]}"
        fi
    fi
} >"$OUT/setup.log" 2>&1 || echo "setup: wheel install FAILED" >>"$OUT/setup.log"
if [ -d "$SITE" ]; then
    export PYTHONPATH="$SITE:$PYTHONPATH"
fi
"$PY" - >>"$OUT/setup.log" 2>&1 <<'EOF' || echo "setup: imports FAILED" >>"$OUT/setup.log"
import importlib.metadata as md

import lightning
import numpy
import torch
from lightning.pytorch.cli import _JSONARGPARSE_SIGNATURES_AVAILABLE

import fssam2.cli  # noqa: F401
import fssam2.methods.fssam2  # noqa: F401

names = ["torch", "numpy", "lightning", "torchmetrics", "sam2", "hydra-core", "jsonargparse", "albumentations", "pydantic", "typing_extensions"]
print("versions:", ", ".join(f"{n} {md.version(n)}" for n in names))
print("from:", ", ".join(f"{m.__name__} {m.__file__}" for m in (torch, numpy, lightning)))
print("jsonargparse[signatures] for LightningCLI:", bool(_JSONARGPARSE_SIGNATURES_AVAILABLE))
EOF
cat "$OUT/setup.log"
printf 'part\texit\tseconds\n' >"$STATUS"

# ---- a part: its output to the screen and its log; its exit status (124: timed out) recorded ----
part() {
    local name=$1 limit=$2 start=$SECONDS status=0
    shift 2
    echo
    echo "===== $name (at most ${limit}s): $*"
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || status=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >>"$STATUS"
    echo "===== $name: exit $status after $((SECONDS - start))s$([ "$status" = 124 ] && echo ' (TIMED OUT)')"
}

# GPU_CHECK_PARTS picks parts (default all): e.g. "fold" reruns the fold alone.
PARTS=" ${GPU_CHECK_PARTS:-episode fold fold1 train doctor} "
wants() { [[ "$PARTS" == *" $1 "* ]]; }

# ---- 1. episode latency, training throughput, peak memory -------------------------------------
rm -f "$OUT/bench_episode.json" "$OUT/bench_fold_cache.json" "$OUT/bench_fold_1shot.json" "$OUT/bench_train.json" \
    "$OUT/bench_gfsam.json"
wants episode && part bench_episode "$EPISODE_TIMEOUT" "$PY" experiments/bench_episode.py --device "$DEVICE" --precision bf16 \
    --on-mismatch warn "${EPISODE_ARGS[@]}" --json "$OUT/bench_episode.json"

# ---- 2. a whole 5-shot fold, feature cache off vs on, full vs lean data path -------------------
# Four runs (no cache: 6 encoder passes an episode; cache: 364 in all, the loading remains) are
# estimated at 1.5x the batch-1 5-shot latency an episode, plus 40 s of start-up.
EPISODES=${FOLD_EPISODES:-}
if [ -z "$EPISODES" ]; then
    EPISODES=$("$PY" - "$OUT/bench_episode.json" "$MAX_EPISODES" "$FOLD_BUDGET_S" 2>/dev/null <<'EOF'
import json, sys
path, most, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
latency = next(iter(json.load(open(path))["models"].values()))["latency"]
ms = latency.get("5", latency[max(latency, key=int)])["fssam2"]["median_ms"]
fits = int((budget - 40) / (1.5 * ms / 1e3)) // 8 * 8
print(max(min(most, fits), min(most, 200)))
EOF
    ) || EPISODES=$MAX_EPISODES  # no latency from part 1: the whole fold, its timeout cuts it short if need be
fi
if [ "$EPISODES" -lt "$MAX_EPISODES" ]; then
    echo
    echo "NOTE: the fold runs $EPISODES of $MAX_EPISODES episodes (all three runs alike): by part 1's latency, $MAX_EPISODES would not fit ${FOLD_BUDGET_S}s"
fi
wants fold && part bench_fold_cache "$FOLD_TIMEOUT" "$PY" experiments/bench_fold_cache.py --device "$DEVICE" \
    --episodes "$EPISODES" "${FOLD_ARGS[@]}" --json "$OUT/bench_fold_cache.json"

# ---- 3. the same fold 1-shot: every image shipped vs lean, and its floor ---------------------------
wants fold1 && part bench_fold_1shot "${FOLD1_TIMEOUT:-150}" "$PY" experiments/bench_fold_cache.py --device "$DEVICE" \
    --episodes "$EPISODES" "${FOLD_ARGS[@]}" --shot 1 --only full lean --json "$OUT/bench_fold_1shot.json"

# ---- 4. training with the real data loader, beside part 1's model-only step ---------------------
if [ -n "$SMOKE" ]; then TRAIN_ARGS=(--train-images 60 --train-steps 3 --train-warmup 1); else TRAIN_ARGS=(--train-steps 30 --train-warmup 5); fi
wants train && part bench_train "${TRAIN_TIMEOUT:-150}" "$PY" experiments/bench_fold_cache.py --device "$DEVICE" \
    "${FOLD_ARGS[@]}" --only train "${TRAIN_ARGS[@]}" --json "$OUT/bench_train.json"

# 5. fssam2 doctor on the published config: devices, bf16, and the measured memory of one training
#    step (1 and 2 episodes, extrapolated to the config's batch). No data here, so it exits 1.
if [ -n "${GPU_CHECK_SMOKE:-}" ]; then DOCTOR=(--config tests/configs/tiny.yaml --measure); else DOCTOR=(--config configs/pascal_fold0.yaml); fi
wants doctor && part doctor 120 "$PY" -m fssam2.cli doctor "${DOCTOR[@]}"

# ---- 6. the tiny SAM2 pretrained for the time left (the shipped recipe; saved as it goes) ---------
if wants pretrain; then
    LEFT=$((${CALL_SECONDS:-$((SECONDS - START + 170))} - (SECONDS - START) - 20))  # 20 s for the summary
    if [ "$LEFT" -lt 100 ]; then
        echo
        echo "===== pretrain: skipped, ${LEFT}s left of the call's ${CALL_SECONDS}s (GPU_CHECK_SECONDS) and 100 needed"
        printf 'pretrain\tskipped\t0\n' >>"$STATUS"
    else
        # Its budget leaves 40 s of the part's time for Python's start, the last evaluation and save.
        MINUTES=$(awk -v s="$LEFT" 'BEGIN { printf "%.2f", (s - 40) / 60 }')
        part pretrain "$LEFT" "$PY" experiments/pretrain_tracking.py "${PRETRAIN_ARGS[@]}" --minutes "$MINUTES" \
            --out "$OUT/pretrained.pt"
    fi
fi

# ---- 7. GF-SAM against the official forward, when its code came along ---------------------------
GFSAM_OFFICIAL=${GFSAM_OFFICIAL:-.gfsam}
if wants gfsam; then
    if [ -f "$GFSAM_OFFICIAL/matcher/GFSAM.py" ]; then
        part bench_gfsam "${GFSAM_TIMEOUT:-200}" "$PY" experiments/bench_gfsam.py --official "$GFSAM_OFFICIAL" \
            --device "$DEVICE" "${GFSAM_ARGS[@]}" --json "$OUT/bench_gfsam.json"
    else
        echo
        echo "===== gfsam: skipped, no $GFSAM_OFFICIAL/matcher/GFSAM.py (the official code: see docs/performance.md, When a GPU is lent)"
        printf 'gfsam\tskipped\t0\n' >>"$STATUS"
    fi
fi

# ---- summary: one table from the JSON files ----------------------------------------------------
echo
"$PY" - "$OUT" "$((SECONDS - START))" <<'EOF' 2>&1 | tee "$OUT/summary.md"
import json
import sys
from pathlib import Path

out, total = Path(sys.argv[1]), sys.argv[2]


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


status = [line.split("\t") for line in (out / "status.tsv").read_text().splitlines()[1:]]
ep, fold, fold1 = load("bench_episode.json"), load("bench_fold_cache.json"), load("bench_fold_1shot.json")
train = load("bench_train.json")
rows = []  # (measure, published loop / no cache, fssam2 / cache, ratio)
where, what = "?", "fssam2 gpu_check"
if ep:
    where = ep["machine"]["gpu"] or f"CPU {ep['machine']['cpu']}"
    many = len(ep["models"]) > 1
    for name, m in ep["models"].items():
        what = f"{name} {m['image_size']} px, {m['precision']}"
        tag = f"{what}: " if many else ""
        for k, paths in m["latency"].items():
            s, f = paths["sequential"]["median_ms"], paths["fssam2"]["median_ms"]
            rows.append((f"{tag}{k}-shot episode, ms", f"{s:.1f}", f"{f:.1f}", f"{s / f:.2f}x"))
        fits = m["fits"]
        if fits["sequential"]["ms"]:
            s, f = fits["sequential"]["ms"]["slope"], fits["fssam2"]["ms"]["slope"]
            rows.append((f"{tag}ms per extra shot (line fit)", f"{s:.1f}", f"{f:.1f}", ""))
        k_max = max(m["latency"], key=int)
        s, f = m["latency"][k_max]["sequential"], m["latency"][k_max]["fssam2"]
        rows.append((f"{tag}peak MB, {k_max}-shot episode (total)", f"{s['peak_total_mb']:.0f}", f"{f['peak_total_mb']:.0f}", ""))
        t, b = m["training"], m["train_batch"]
        eps = {p: b / (t[p]["median_ms"] / 1e3) for p in t}
        oom = "" if b == m["train_batch_requested"] else f"; {m['train_batch_requested']}: out of memory"
        rows.append((f"{tag}training episodes/s, {b} x {m['train_shots']}-shot a step{oom}", f"{eps['sequential']:.2f}",
                     f"{eps['fssam2']:.2f}", f"{eps['fssam2'] / eps['sequential']:.2f}x"))
        rows.append((f"{tag}peak MB, training step (total)", f"{t['sequential']['peak_total_mb']:.0f}",
                     f"{t['fssam2']['peak_total_mb']:.0f}", ""))
        for c in m["checks"]:
            rows.append((f"{tag}same logits? {c['precision']}: {c['tolerance']}", "",
                         f"max diff {c['max_abs_diff']:.1e} of {c['max_abs_logit']:.2g}, masks {c['mask_agreement']:.2%}",
                         "ok" if c["passed"] else "DIFFER"))
if fold:
    st, runs = fold["settings"], fold["runs"]
    where = where if where != "?" else fold["device"]
    precision = "/".join(sorted({r["precision"] for r in runs.values()}))
    tag = f"{st['shot']}-shot fold ({st['sam2']} {st['image_size']} px, {st['episodes']} episodes, {precision}, {st['num_workers']} workers)"
    base = runs.get("published loop (no cache)")
    others = {n: r for n, r in runs.items() if r is not base}
    if base is None:
        rows.append((f"{tag}: no-cache run missing", "", "", ""))
    for name, r in others.items():
        short = name.removeprefix("fssam2").strip(" ,()") or name
        if base:
            rows.append((f"{tag}: wall s, {short}", f"{base['seconds']:.1f}", f"{r['seconds']:.1f}", f"{base['seconds'] / r['seconds']:.2f}x"))
        else:
            rows.append((f"{tag}: wall s, {short}", "", f"{r['seconds']:.1f}", ""))
    if base and not others:
        rows.append((f"{tag}: wall s, no cache (cache runs missing)", f"{base['seconds']:.1f}", "", ""))
    last = list(others.values())[-1] if others else None
    if base and last:
        rows.append(("fold encoder passes", str(base["passes"]), str(last["passes"]), f"{base['passes'] / max(last['passes'], 1):.1f}x"))
        diff = max(abs(r[m] - base[m]) for r in others.values() for m in ("test/miou", "test/fbiou"))
        rows.append(("fold mIoU / FB-IoU", f"{base['test/miou']:.2f} / {base['test/fbiou']:.2f}",
                     f"{last['test/miou']:.2f} / {last['test/fbiou']:.2f}", f"diff {diff:.1e}"))
    floor = fold.get("floor")
    lean = runs.get("fssam2 (feature + decoded-image cache)")
    if floor and lean:
        rows.append(("fold arithmetic floor s (encoder / memory / decoder passes, same process)",
                     "", f"{floor['seconds']:.1f} ({floor['encoder_s']:.1f} / {floor['memory_s']:.1f} / {floor['decoder_s']:.1f})", ""))
        full = runs.get("fssam2, every image shipped (lean_loading false)")
        rows.append(("fold wall s vs its floor: every image shipped / lean (target lean <= 1.5x)",
                     f"{full['seconds']:.1f}" if full else "", f"{lean['seconds']:.1f}",
                     f"{lean['seconds'] / floor['seconds']:.2f}x the floor"))
    peaks = {n: r.get("peak_gpu_gib") for n, r in runs.items()}
    if any(p is not None for p in peaks.values()):
        cached = " / ".join(f"{p:.1f}" for n, p in peaks.items() if runs[n] is not base)
        rows.append(("fold peak GPU GiB per run", f"{peaks.get('published loop (no cache)') or 0:.1f}", cached, ""))
    hosts = {n: r.get("peak_host_gib") for n, r in runs.items()}
    if all(h is not None for h in hosts.values()):
        cached = " / ".join(f"{h:.2f}" for n, h in hosts.items() if runs[n] is not base)
        rows.append(("fold peak host GiB per run (process and its workers)", f"{hosts.get('published loop (no cache)') or 0:.2f}", cached, ""))

if fold1 and fold1.get("floor"):
    runs1, floor1 = fold1["runs"], fold1["floor"]
    lean1 = runs1.get("fssam2 (feature + decoded-image cache)")
    full1 = runs1.get("fssam2, every image shipped (lean_loading false)")
    if lean1:
        rows.append(("1-shot fold wall s vs its floor: every image shipped / lean (target lean <= 1.5x)",
                     f"{full1['seconds']:.1f}" if full1 else "", f"{lean1['seconds']:.1f}",
                     f"{lean1['seconds'] / floor1['seconds']:.2f}x the floor ({floor1['seconds']:.1f} s)"))

if train:
    t = train["train"]
    model_only = None
    if ep:
        m = next(iter(ep["models"].values()))
        model_only = m["train_batch"] / (m["training"]["fssam2"]["median_ms"] / 1e3)
    rows.append((f"training episodes/s: model-only step (part 1) / fssam2 fit with its data loader ({train['settings']['num_workers']} workers)",
                 f"{model_only:.2f}" if model_only else "", f"{t['episodes_per_s']:.2f}",
                 f"{t['episodes_per_s'] / model_only:.2f}x" if model_only else ""))

gfsam = load("bench_gfsam.json")
if gfsam:
    m, st = gfsam["machine"], gfsam["settings"]
    where = where if where != "?" else m["gpu"] or f"CPU {m['cpu']}"
    tag = f"GF-SAM ({st['sam2']} {st['image_size']} px, DINOv2 {st['dinov2']}, float32)"
    for k, r in gfsam["shots"].items():
        official, alone, batched = (1 / rate for rate in r["episodes_per_s"].values())
        rows.append((f"{tag}, {k}-shot: s a query image, official / fssam2 one at a time; batched (published: ~2 s)",
                     f"{official:.3f}", f"{alone:.3f}; {batched:.3f}", f"{official / batched:.2f}x"))
        same = " / ".join(f"{n}/{r['episodes']}" for n in r["equal_masks"].values())
        rows.append((f"{tag}, {k}-shot: final masks equal to the official's (one at a time / batched)", "", same, ""))

parts = ", ".join(f"{n} exit {e}{' (TIMED OUT)' if e == '124' else ''} in {s} s" for n, e, s in status)
print(f"## gpu_check summary: {where}; total {total} s; {parts}")
print()
ran = {n for n, e, _ in status if e != "skipped"}
pretrain = (out / "pretrain.log").read_text().splitlines() if "pretrain" in ran else None
if rows or pretrain is None:
    print(f"| {what} | published loop / no cache | fssam2 / cache | ratio |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not rows:
        print("| (no numbers: see the parts' logs) | | | |")
if pretrain is not None:
    def last(*marks):  # the last line of the pretraining's log holding one of `marks`
        return [ln for ln in pretrain if any(m in ln for m in marks)][-1:]

    # The plan, the last evaluation, whether time ran out, and the final write (or the last save).
    shown = last("steps planned") + last("IoU true") + last("time is up")
    shown += last("wrote ") or last("saved ") or ["no model saved: see the log"]
    print()
    print(f"pretraining the tiny SAM2 ({out / 'pretrain.log'}):")
    for line in shown:
        print(f"  {line}")
EOF
