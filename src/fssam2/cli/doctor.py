"""`fssam2 doctor`: a preflight, one line per check, so that a run is known to be able to finish
before it starts: versions, devices, the data at the data home (or the config's --data.root),
the SAM2 weights the config loads (and GF-SAM's semantic encoder's), free disk, and, with
`--config`, every check `fssam2 fit` makes of the options (through fit's own code, see
`fit_checks`) and the memory of the configured run, measured with one training step of 1 and of 2
episodes and extrapolated to data.batch_size. A training-free method's config is a test config:
it is checked as `fssam2 test` takes it, and its memory measured with one evaluation step.

Nothing is downloaded or written. The exit status is 1 when the run would refuse the options, or
something the config needs is missing or does not fit, 0 otherwise. Without a config, the
benchmarks' data is reported for information: only an unusable data home fails.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import platform
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import torch

from fssam2 import hub
from fssam2.benchmarks import (
    BENCHMARKS,
    PREPARED_MARKER,
    DataPlace,
    OnDiskDataModule,
    read_class_file,
    read_data_list,
    split_list_files,
)
from fssam2.cli.app import CLI_SETTINGS, DEFAULT_RUN_DIR, FSSAM2CLI, OneLineErrorParser, datamodule_of, parse_error_line
from fssam2.data import FewShotDataModule, cpu_cores
from fssam2.errors import InputError, cause_of
from fssam2.meters import PeakMemory, parse_precision
from fssam2.methods import DEFAULT_METHOD, GFSAM, FewShotMethod, FewShotSAM2, method_class
from fssam2.methods.dinov2 import dinov2_vit, encoder_weights
from fssam2.module import STAGE_SPLITS
from fssam2.registry import RANDOM_INIT

if TYPE_CHECKING:
    from fssam2.module import FSSAM2Module

Status = Literal["ok", "--", "warn", "FAIL"]  # "--": not needed by this run; FAIL: the exit status is 1
GiB = 2**30


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    status: Status
    topic: str
    text: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.topic:<8}  {self.text}"


# versions and devices
def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> Check:
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    return Check(
        "ok",
        "versions",
        f"python {platform.python_version()}, torch {torch.__version__} ({cuda}), torchvision "
        f"{_version('torchvision')}, sam2 {_version('sam2')}, lightning {_version('lightning')}, fssam2 {_version('fssam2')}",
    )


def available_memory(device: torch.device) -> int:
    """Bytes a new allocation can take now: the GPU's free memory, or the system's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_checks() -> list[Check]:
    if not torch.cuda.is_available():
        free = available_memory(torch.device("cpu")) / GiB
        return [
            Check(
                "ok",
                "device",
                f"no GPU: CPU only ({cpu_cores()} core{'s' if cpu_cores() != 1 else ''}, {free:.1f} GiB memory available)",
            )
        ]
    checks = []
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        free, total = torch.cuda.mem_get_info(device)
        with torch.cuda.device(device):
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        checks.append(
            Check(
                "ok",
                "device",
                f"cuda:{index} {torch.cuda.get_device_name(device)}: {total / GiB:.1f} GiB total, "
                f"{free / GiB:.1f} GiB free, bf16 {'supported' if bf16 else 'NOT supported (use precision 16-mixed or 32-true)'}",
            )
        )
    return checks


# data
def _marker(folder: Path) -> str:
    return (
        "verified by fssam2 prepare"
        if (folder / PREPARED_MARKER).is_file()
        else "present, not verified by fssam2 prepare"
    )


def dataset_check(key: str, place: DataPlace, needed: bool, folders: list[str] | None = None) -> Check:
    spec = BENCHMARKS[key]
    try:
        place.check(key, folders)  # the one layout check the DataModules use, with their message
    except InputError as err:
        return Check("FAIL" if needed else "--", "data", str(err))
    return Check("ok", "data", f"{spec.name}: {_marker(place.root / spec.folder)} ({place.root / spec.folder})")


def lists_check(key: str, place: DataPlace, needed: bool, files: list[str]) -> Check:
    spec = BENCHMARKS[key]
    try:
        for name in files:  # read as the DataModules read them: an empty or broken list fails here too
            reader = read_class_file if "sub_class_file_list" in name else read_data_list
            reader(place.splits_dir / name, place.missing_list(key))
    except InputError as err:
        return Check("FAIL" if needed else "--", "splits", str(err))
    folder = place.splits_dir / spec.lists
    return Check(
        "ok",
        "splits",
        f"{spec.name} split lists: {_lists_origin(place.splits_dir, files)} ({len(files)} files in {folder})",
    )


def _lists_origin(splits_dir: Path, files: list[str]) -> str:
    """Whether the lists are the published ones, by the SHA-256 `fssam2 prepare splits` pins."""
    from fssam2.downloads import file_digest
    from fssam2.prepare.splits import PUBLISHED_LISTS

    if all(PUBLISHED_LISTS.get(name) == file_digest(splits_dir / name, "sha256") for name in files):
        return "the published lists (SHA-256 checked)"
    return "NOT the published lists (derived or changed; `fssam2 prepare splits` fetches those)"


def data_home() -> tuple[Path | None, str]:
    """(the data home, how it was chosen), or (None, why it cannot be used)."""
    try:
        home = hub.data_dir()
    except InputError as err:
        return None, str(err)
    return home, "$FSSAM2_DATA" if os.environ.get("FSSAM2_DATA") else "default; set $FSSAM2_DATA to move it"


def data_checks(
    datamodule: FewShotDataModule | None, configured: bool, splits: tuple[str, ...] = STAGE_SPLITS["fit"]
) -> list[Check]:
    """The data home, then each benchmark's dataset and lists: at the config's root and lists for
    its benchmark (the folders and lists its run's `splits` read), at the data home for the others.
    Only the configured benchmark's data is needed; the others' (without a config: every
    benchmark's) is information. An unusable data home fails without a config (`fssam2 prepare`
    writes there); with one, the run's own check says whether it is needed."""
    on_disk = datamodule if isinstance(datamodule, OnDiskDataModule) else None
    used = on_disk.benchmark if on_disk is not None else None
    home, source = data_home()
    if home is None:
        checks = [Check("warn" if configured else "FAIL", "data", source)]
    else:
        checks = [Check("ok", "data", f"data home {home} ({source})")]
    for key in BENCHMARKS:
        if on_disk is not None and key == used:
            place = on_disk.place
        elif home is not None:
            place = DataPlace.locate(None, None)
        else:
            continue  # no data home to look in: said above
        files, folders = split_list_files(key), None
        if on_disk is not None and key == used:  # as check_prepared reads them
            lists = sorted({"train" if split == "train" else "val" for split in splits})
            files = split_list_files(key, None if key == "fss" else [on_disk.fold], lists)
            read = [on_disk.folders(split) for split in splits]
            folders = None if None in read else list(dict.fromkeys(f for names in read for f in names or []))
        checks += [dataset_check(key, place, key == used, folders), lists_check(key, place, key == used, files)]
    if datamodule is not None and used is None:
        checks.append(own_data_check(datamodule))
    return checks


def own_data_check(datamodule: FewShotDataModule) -> Check:
    name = type(datamodule).__name__
    root = getattr(datamodule, "root", None)
    if root is None:
        return Check("ok", "data", f"{name}: generated in memory, no files needed")
    path = Path(root).expanduser()
    if not path.is_dir():
        return Check("FAIL", "data", f"{name}: --data.root {path} does not exist: give the folder of your data.")
    return Check("ok", "data", f"{name}: {path}")


# weights
def weights_check(sam2_config: str, sam2_checkpoint: str | None) -> Check:
    """What the module would load (`hub.base_weights`), without downloading or hashing."""
    try:
        chosen = hub.base_weights(sam2_config, sam2_checkpoint)
    except InputError as err:
        return Check("FAIL", "weights", str(err))
    if chosen is None:
        return Check("ok", "weights", f"{sam2_config}: random initialisation (model.sam2_checkpoint={RANDOM_INIT})")
    name = str(chosen)
    path = Path(name).expanduser()
    if name in hub.PACKAGED_CHECKPOINTS and not path.exists():
        entry, packaged = hub.PACKAGED_CHECKPOINTS[name], hub.packaged_path(name)
        if not packaged.is_file():
            return Check(
                "FAIL", "weights", f"packaged {name} is missing ({packaged}): regenerate it with `{entry.regenerate}`."
            )
        return Check("ok", "weights", f"{name}: packaged with fssam2 ({packaged}; SHA-256 pinned, checked on load)")
    if name in hub.CHECKPOINT_URLS and not path.exists():
        return cache_check(name, f"{'released ' if sam2_checkpoint is None else ''}{name}")
    if not path.is_file():
        return Check("FAIL", "weights", f"model.sam2_checkpoint {path} does not exist: give a SAM2 .pt file or a name.")
    return Check("ok", "weights", f"{path} ({path.stat().st_size / 2**20:.0f} MB)")


def cache_check(name: str, label: str, size: str = "") -> Check:
    """A released file by name in the download cache, or what the run first downloads (nothing is
    fetched); `label` names it, `size` is its download size when known."""
    cached = hub.cached_path(name)
    if cached.is_file():
        digest = cached.with_name(cached.name + ".sha256").is_file()
        recorded = "SHA-256 recorded" if digest else "no SHA-256 recorded yet: recorded at the first load"
        return Check("ok", "weights", f"{label}: cached at {cached} ({recorded})")
    part = cached.with_name(cached.name + ".part")
    partial = f", {part.stat().st_size / 2**20:.0f} MB of it in {part.name}" if part.is_file() else ""
    sources = ", else from ".join(hub.download_sources(name))  # in the order download() tries them
    return Check(
        "warn",
        "weights",
        f"{label}: not cached{partial}; the run first downloads it{size} from {sources} "
        f"(needs the network), or run `fssam2 download {name}` now",
    )


def encoder_check(method_args: dict[str, Any] | None) -> Check:
    """What GF-SAM's semantic encoder loads (`encoder_weights`), without downloading or hashing."""
    args = method_args or {}
    name = args.get("encoder", inspect.signature(GFSAM.build).parameters["encoder"].default)
    checkpoint = args.get("encoder_checkpoint")
    if name == "sam2":
        return Check("--", "weights", "no semantic encoder: model.method_args.encoder=sam2 (SAM2's features stand in)")
    if not isinstance(name, str) or not isinstance(checkpoint, str | None):
        return Check("--", "weights", "semantic encoder not checked: GFSAM refuses its options (see the config line)")
    try:
        weights = encoder_weights(name, checkpoint)
    except InputError as err:
        return Check("FAIL", "weights", str(err))
    label = f"semantic encoder {name}"
    if weights is None:
        return Check(
            "ok", "weights", f"{label}: random initialisation (model.method_args.encoder_checkpoint={RANDOM_INIT})"
        )
    if checkpoint is None:
        return cache_check(name, f"released {label}", f", about {_size(encoder_bytes(name))},")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        unset = ", unset it for the released weights" if name in hub.ENCODER_CHECKPOINTS else ""
        return Check(
            "FAIL",
            "weights",
            f"model.method_args.encoder_checkpoint {path} does not exist: give a {name} weights file{unset}, "
            f"or {RANDOM_INIT}.",
        )
    return Check("ok", "weights", f"{label}: {path} ({_size(path.stat().st_size)})")


def encoder_bytes(name: str) -> int:
    """The size of encoder `name`'s released file: its float32 parameters (timm's safetensors),
    counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        vit = dinov2_vit(name)
    return sum(t.numel() * 4 for t in vit.state_dict().values())


def _size(size: int) -> str:
    return f"{size / GiB:.1f} GiB" if size >= GiB else f"{size / 2**20:.0f} MB"


# disk
def disk_check(what: str, folder: Path) -> Check:
    existing = hub.existing_ancestor(folder)
    usage = shutil.disk_usage(existing)
    return Check(
        "ok", "disk", f"{what} {folder}: {usage.free / GiB:.1f} GiB free of {usage.total / GiB:.1f} GiB (on {existing})"
    )


# memory
def measure_step_memory(
    build: Callable[[], FSSAM2Module], device: torch.device, precision: Any, shot: int
) -> tuple[int | None, int | None, int]:
    """Peak memory (bytes) of one training step (forward, loss, backward, AdamW step on the
    trainable parameters, optimiser state already allocated) with 1 and with 2 episodes of random
    images at the model's input size, counting the model, its gradients and the optimiser state;
    returns (1-episode peak, 2-episode peak, input size), a peak None where the GPU ran out of memory."""
    from fssam2.methods.base import bce_dice_loss

    setting = parse_precision(precision)
    dtype = setting.weights
    meter = PeakMemory(device)
    module = build().to(device)
    size = module.model.image_size
    if dtype is not None:
        module = module.to(dtype)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for p in params:  # allocate the optimiser state, as every step after a run's first holds it
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    peaks: list[int | None] = [None, None]
    for batch in (1, 2):
        support, masks, query, target = random_episodes(batch, shot, size, device, dtype)
        meter.start()
        try:
            with setting.autocast(device.type):
                logits = module(support, masks, query)
            bce_dice_loss(logits[:, 0].float(), target).backward()
            optimizer.step()
        except torch.OutOfMemoryError:
            break
        finally:
            optimizer.zero_grad(set_to_none=True)
            logits = None
        peaks[batch - 1] = meter.peak() - meter.baseline
    del module, optimizer, params
    meter.settle()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peaks[0], peaks[1], size


def random_episodes(
    batch: int, shot: int, size: int, device: torch.device, dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`batch` episodes of random images at `size` px, seeded by `batch`: support images, support
    masks, query images (in `dtype`, else float32) and the query's target, on `device`."""
    generator = torch.Generator().manual_seed(batch)
    kind = dtype or torch.float32
    support = torch.randn(batch, shot, 3, size, size, generator=generator)
    masks = torch.rand(batch, shot, size, size, generator=generator) > 0.5
    query = torch.randn(batch, 3, size, size, generator=generator)
    target = (torch.rand(batch, size, size, generator=generator) > 0.5).long()
    return support.to(device, kind), masks.to(device, kind), query.to(device, kind), target.to(device)


def measure_eval_memory(
    build: Callable[[], FSSAM2Module], device: torch.device, precision: Any, shot: int, batch: int
) -> tuple[int | None, int]:
    """Peak memory (bytes) of one evaluation step as `fssam2 test` runs it (eval mode, weights fixed
    for evaluation, forward under inference mode, no loss or gradients) with `batch` episodes of
    random images at the model's input size, counting the model; returns (the peak, None where the
    GPU ran out of memory; input size)."""
    setting = parse_precision(precision)
    meter = PeakMemory(device)
    module = build().to(device)
    size = module.model.image_size
    if setting.weights is not None:
        module = module.to(setting.weights)
    module.eval()
    module.model.start_evaluation()
    support, masks, query, _ = random_episodes(batch, shot, size, device, setting.weights)
    meter.start()
    peak: int | None = None
    try:
        with torch.inference_mode(), setting.autocast(device.type):
            module(support, masks, query)
        peak = meter.peak() - meter.baseline
    except torch.OutOfMemoryError:
        pass
    del module, support, masks, query
    meter.settle()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peak, size


def memory_verdict(
    one: int | None, two: int | None, batch_size: int, available: int, setting: str, cache: int = 0
) -> Check:
    """The linear extrapolation of the 1- and 2-episode peaks to batch_size, against `available`
    (a peak None: that step ran out of memory). `cache`: the feature cache's budget, which each
    validation fills beside the model's weights and optimizer state (a warning when only that
    does not fit: the step's own activations are freed by then, so the sum is an upper bound)."""
    if one is None or two is None:
        episodes = "1 episode" if one is None else "2 episodes"
        fits = "not even 1 episode fits" if one is None else "at most data.batch_size=1 fits"
        status: Status = "ok" if one is not None and batch_size == 1 else "FAIL"
        return Check(status, "memory", f"one training step ({setting}) with {episodes} ran out of memory: {fits}")
    per_episode = max(two - one, 0)
    need = one + (batch_size - 1) * per_episode
    measured = (
        f"measured one training step ({setting}): peak {one / GiB:.2f} GiB with 1 episode, {two / GiB:.2f} GiB "
        f"with 2 -> data.batch_size={batch_size} needs about {need / GiB:.2f} GiB"
    )
    if need + cache <= available:
        held = f", and validation's feature cache up to {cache / GiB:.2f} GiB beside it" if cache else ""
        return Check("ok", "memory", f"{measured}{held}: fits in {available / GiB:.2f} GiB free")
    if need <= available:
        return Check(
            "warn",
            "memory",
            f"{measured}: fits in {available / GiB:.2f} GiB free, but each validation also keeps up to "
            f"{cache / GiB:.2f} GiB of features (model.feature_cache.max_megabytes), {(need + cache) / GiB:.2f} GiB "
            f"at most: if validation runs out of memory, set model.feature_cache.max_megabytes "
            f"{max((available - need) // 2**20, 1)} or lower",
        )
    if one > available:
        fix = "not even 1 episode fits: a smaller model.image_size or sam2_config, or a larger device"
    else:
        fix = f"at most data.batch_size={1 + (available - one) // per_episode} fits"
    return Check("FAIL", "memory", f"{measured}: does NOT fit in {available / GiB:.2f} GiB free; {fix}")


def eval_memory_verdict(peak: int | None, batch_size: int, cache: int, available: int, setting: str) -> Check:
    """One evaluation step's peak at batch_size (None: it ran out of memory), plus the feature cache's
    budget `cache` a test run fills beside it, against `available`."""
    step = f"one evaluation step as `fssam2 test` runs it ({setting})"
    if peak is None:
        return Check(
            "FAIL", "memory", f"{step} with data.batch_size={batch_size} ran out of memory: lower data.batch_size"
        )
    need = peak + cache
    held = f" + the feature cache's budget {cache / GiB:.2f} GiB (model.feature_cache.max_megabytes)" if cache else ""
    measured = (
        f"measured {step}: peak {peak / GiB:.2f} GiB with data.batch_size={batch_size}{held} -> needs about "
        f"{need / GiB:.2f} GiB"
    )
    if need <= available:
        return Check("ok", "memory", f"{measured}: fits in {available / GiB:.2f} GiB free")
    lower = "data.batch_size or model.feature_cache.max_megabytes" if cache else "data.batch_size"
    fix = f"lower {lower}, or use a larger device"
    return Check("FAIL", "memory", f"{measured}: does NOT fit in {available / GiB:.2f} GiB free; {fix}")


def run_devices(trainer: Any) -> tuple[torch.device, list[torch.device], Check | None]:
    """(the device to measure on, the devices the run uses, a FAIL check when the config asks for
    devices this machine lacks)."""
    accelerator = str(getattr(trainer, "accelerator", "auto") or "auto")
    devices = getattr(trainer, "devices", "auto")
    cpu = torch.device("cpu")
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return cpu, [cpu], None
    if accelerator not in ("auto", "gpu", "cuda"):
        return (
            cpu,
            [cpu],
            Check("warn", "device", f"trainer.accelerator={accelerator}: fssam2 doctor checks CPUs and CUDA GPUs only"),
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return (
            cpu,
            [cpu],
            Check("FAIL", "device", f"trainer.accelerator={accelerator} but no CUDA device is visible here"),
        )
    if isinstance(devices, str) and devices not in ("auto", "-1"):
        devices = [int(d) for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if devices in ("auto", "-1", -1):
        indices = list(range(count))
    elif isinstance(devices, int):
        indices = list(range(devices))
    else:
        indices = [int(d) for d in devices]
    if not indices or max(indices) >= count:
        return (
            torch.device("cuda", 0),
            [torch.device("cuda", 0)],
            Check("FAIL", "device", f"trainer.devices={devices} but {count} CUDA device(s) are visible here"),
        )
    used = [torch.device("cuda", i) for i in indices]
    return used[0], used, None


# the command
@dataclass
class FitChecks:
    """What `fit_checks` found: the config (None when fit cannot parse the options), the run's
    one-line refusal (None: accepted), the DataModule when the run got to make it, and the run's
    subcommand (fit; test for a training-free method)."""

    config: Any
    refusal: str | None
    datamodule: FewShotDataModule | None
    subcommand: str = "fit"


class ParseRefusal(Exception):
    """fit cannot parse the options (an unknown option, a value of the wrong type): one line."""


class RefusingParser(OneLineErrorParser):
    """fit's parser, whose parse errors are raised as one line (`ParseRefusal`) for the report
    instead of ending the command with fit's usage."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a nested parser's: the outer one reports it
            super().error(message, ex)
        lines = message.strip().splitlines() or ["?"]
        raise ParseRefusal(parse_error_line(message) or f"{lines[0]} (fssam2 fit with these options shows the details)")


def fit_checks(args: list[str], subcommand: str = "fit") -> FitChecks:
    """Every check `fssam2 fit ARGS` makes before it trains, through fit's own code (FSSAM2CLI):
    parsing and --ckpt_path, before_instantiate_classes (the data is prepared, the run folder can be
    made), the DataModule, model and Trainer made as fit makes them, before_fit, and the DataModule's
    setup("fit") as Trainer.fit runs it; the first refusal is kept as fit words it. With `subcommand`
    "test", the same of `fssam2 test ARGS` (a training-free method's run). So that nothing is
    downloaded or written, the model is made with random weights and the method's sizing options
    (`FewShotMethod.sizing_options`: GF-SAM's encoder random too; `weights_check` and `encoder_check`
    check what the run would load), W&B's folder is not made and no seed is set. A parse error (an
    unknown option, a value of the wrong type) is the refusal too, in fit's one line; the config is then None."""
    from fssam2.module import FSSAM2Module

    class FitUntilTraining(FSSAM2CLI):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.refusal: str | None = None
            try:
                super().__init__(*args, **kwargs)
            except Exception as err:
                if getattr(self, "config", None) is None:
                    raise
                cause = cause_of(err, InputError)
                text = str(cause) if cause is not None else f"{type(err).__name__}: {str(err).strip()}"
                self.refusal = text.splitlines()[0] if text else type(err).__name__

        def _set_seed(self) -> None:
            pass

        def before_instantiate_classes(self) -> None:
            super().before_instantiate_classes()
            self._wandb_dir = None  # made by a run that starts; doctor writes nothing

        def instantiate_classes(self) -> None:
            model = self.config[self.subcommand].model
            given = model.sam2_checkpoint, model.method_args
            model.sam2_checkpoint, model.method_args = RANDOM_INIT, unfetched_method_args(model)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*starts from random initialisation")
                    super().instantiate_classes()
            finally:
                model.sam2_checkpoint, model.method_args = given

        def _run_subcommand(self, subcommand: str) -> None:
            getattr(self, f"before_{subcommand}")()
            self.datamodule.image_size = self.model.model.image_size  # as the Trainer sets it
            self.datamodule.setup(subcommand)

    lightning_log = logging.getLogger("lightning.pytorch")
    level, environment = lightning_log.level, dict(os.environ)
    lightning_log.setLevel(logging.WARNING)  # the Trainer's and DataModule's start-up notes are not the report's
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # stdout is the report's
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # args come from doctor's own
            cli = FitUntilTraining(
                FSSAM2Module,
                FewShotDataModule,
                **{**CLI_SETTINGS, "parser_class": RefusingParser},
                parser_kwargs={"prog": "fssam2"},
                args=[subcommand, *args],
            )
    except ParseRefusal as refusal:
        return FitChecks(None, str(refusal), None, subcommand)
    finally:
        lightning_log.setLevel(level)
        for key in os.environ.keys() - environment.keys():  # fit points W&B at its run folder: doctor does not
            del os.environ[key]
        os.environ.update(environment)
    return FitChecks(cli.config[subcommand], cli.refusal, getattr(cli, "datamodule", None), subcommand)


def model_method(model: Any) -> type[FewShotMethod] | None:
    """The class of the config's `model.method`; None for an unknown one (the run's refusal names it)."""
    with contextlib.suppress(InputError):
        return method_class(model.get("method") or DEFAULT_METHOD)
    return None


def unfetched_method_args(model: Any) -> dict[str, Any] | None:
    """model.method_args as the method builds a model for which nothing is fetched (`sizing_options`)."""
    kind, args = model_method(model), model.get("method_args")
    return kind.sizing_options(dict(args)) if kind is not None and isinstance(args, dict) else args


def doctor_checks(args: list[str] | None, measure: bool | None) -> Iterator[Check]:
    """Every check, in report order (the memory measurement last: it takes longest); `args` are
    fit's options (`--config` and overrides), None without a config."""
    fit = fit_checks(args) if args is not None else None  # first: a parse error ends doctor as it ends fit
    kind = model_method(fit.config.model) if fit is not None and fit.config is not None else None
    if fit is not None and kind is not None and not kind.TRAINS:  # training-free: its configs are test configs
        fit = fit_checks(args or [], "test")
    yield versions()
    yield from device_checks()
    config = fit.config if fit is not None else None
    datamodule = fit.datamodule if fit is not None else None
    if fit is not None and datamodule is None:
        with contextlib.suppress(Exception):  # fit refused before making it; its refusal is reported below
            datamodule = datamodule_of(fit.config)
    device, used, device_problem = run_devices(config.trainer) if config is not None else (None, [], None)
    if device_problem is not None:
        yield device_problem
    failed: list[str] = [] if device_problem is None else [device_problem.text]
    checks = data_checks(datamodule, fit is not None, STAGE_SPLITS[fit.subcommand if fit is not None else "fit"])
    model = config.model if config is not None else None
    sam2_config = model.sam2_config if model is not None else "sam2.1_hiera_b+"
    if fit is not None and config is None:
        checks.append(Check("--", "weights", "not checked: fit cannot read the options (see the config line)"))
    else:
        checks.append(weights_check(sam2_config, model.sam2_checkpoint if model is not None else None))
    if model is not None and kind is not None and issubclass(kind, GFSAM):
        checks.append(encoder_check(model.method_args))
    for check in checks:
        yield check
        failed += [check.text] if check.status == "FAIL" else []
    if fit is not None:
        yield fit_verdict(fit.refusal, failed, fit.subcommand, model.method if model is not None else "")
    given = datamodule.place if isinstance(datamodule, OnDiskDataModule) and datamodule.place.root_given else None
    home, _ = data_home()
    if given is not None:
        yield disk_check("data root", given.root)
    elif home is not None:
        yield disk_check("data home", home)
    run_dir = config.trainer.default_root_dir if config is not None else None
    yield disk_check("run folder", Path(run_dir or DEFAULT_RUN_DIR).expanduser().resolve())
    if fit is None or device is None:  # both set with a config
        return
    if measure is None:
        measure = device.type == "cuda"
    if not measure:
        why = (
            "--no-measure"
            if device.type == "cuda"
            else "on CPU it takes a while and as much memory as a step: add --measure"
        )
        yield Check("--", "memory", f"not measured ({why})")
        return
    if device_problem is not None and device_problem.status == "FAIL":
        yield Check("--", "memory", "not measured: the configured devices are not here")
        return
    if fit.refusal is not None or datamodule is None:
        yield Check("--", "memory", f"not measured: fssam2 {fit.subcommand} refuses the options (see the config line)")
        return
    yield measure_check(fit.config, datamodule, device, used)


def fit_verdict(refusal: str | None, failed: list[str], subcommand: str = "fit", method: str = "") -> Check:
    """The config line: whether `fssam2 fit` (a training-free `method`'s run: `fssam2 test`) accepts
    the options; a refusal already reported as a FAIL above is not counted twice (the run stops
    there, so the checks after it wait for its fix)."""
    run = f"fssam2 {subcommand}"
    if refusal is None and subcommand == "test":
        return Check(
            "ok",
            "config",
            f"{method} is training-free: `fssam2 test` runs it and accepts these options (its own checks, up to "
            "the first step; fssam2 fit refuses it)",
        )
    if refusal is None:
        return Check("ok", "config", f"{run} accepts these options (its own checks, up to the first step)")
    if refusal in failed:
        return Check("--", "config", f"{run} stops at the problem above; its later checks run once it is fixed")
    return Check("FAIL", "config", f"{run} refuses these options: {refusal}")


def measure_check(config: Any, datamodule: FewShotDataModule, device: torch.device, used: list[torch.device]) -> Check:
    """The measured memory of the configured run against the free memory of its devices (the least)."""
    from fssam2.module import FSSAM2Module

    model = config.model
    kwargs = {
        **model.as_dict(),
        "sam2_checkpoint": RANDOM_INIT,
        "method_args": unfetched_method_args(model),
        "compile": False,
    }

    def build() -> FSSAM2Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-initialisation warning: memory does not depend on weights
            return FSSAM2Module(**kwargs)

    available = min(available_memory(d) for d in used)
    precision = config.trainer.precision
    counted = "allocated tensors" if device.type == "cuda" else "the process's peak RSS increase"
    kind = method_class(model.get("method") or DEFAULT_METHOD)
    cache = model.get("feature_cache")
    budget = 0 if cache is None or cache.get("plan_only") else int(cache.get("max_megabytes") * 2**20)
    if not kind.TRAINS:  # its run is a test: one evaluation step, and the feature cache it fills
        peak, image_size = measure_eval_memory(build, device, precision, datamodule.shot, datamodule.batch_size)
        cache = model.get("feature_cache")
        setting = (
            f"{device}, {precision}, {kind.__name__} on {model.sam2_config}, inputs at {image_size} px, "
            f"{datamodule.shot}-shot, random weights and images; {counted}"
        )
        return eval_memory_verdict(peak, datamodule.batch_size, budget, available, setting)
    one, two, image_size = measure_step_memory(build, device, precision, datamodule.shot)
    trained = f"trainable {config.model.trainable}" if issubclass(kind, FewShotSAM2) else f"{kind.__name__}'s adapters"
    setting = (
        f"{device}, {precision}, {kind.__name__} on {config.model.sam2_config}, inputs at {image_size} px, "
        f"{datamodule.shot}-shot, {trained}; {counted}"
    )
    return memory_verdict(one, two, datamodule.batch_size, available, setting, budget)


def doctor_command(args: list[str]) -> None:
    """`fssam2 doctor [--config CONFIG] [--measure | --no-measure]`: can a run start and finish here?"""
    parser = argparse.ArgumentParser(
        prog="fssam2 doctor",
        description=doctor_command.__doc__,
        epilog="Other options (--data.root DIR, --model.image_size N, ...) override the config, as for fit.",
    )
    parser.add_argument(
        "--config",
        help="a fit config (configs/pascal_fold0.yaml), or a training-free method's test config: check what it needs",
    )
    parser.add_argument(
        "--measure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure one training step's memory at the config's batch size (a training-free method's: one "
        "evaluation step's; default: on a GPU, yes; on CPU, no)",
    )
    opts, rest = parser.parse_known_args(args)
    if opts.measure and not opts.config:
        raise InputError("fssam2 doctor --measure measures the run of a config: give --config CONFIG.")
    if opts.config and not Path(opts.config).expanduser().is_file():
        raise InputError(f"--config {opts.config} does not exist: give a fit config (e.g. configs/pascal_fold0.yaml).")
    fit_args = [*(["--config", opts.config] if opts.config else []), *rest] if opts.config or rest else None
    failed = 0
    for check in doctor_checks(fit_args, opts.measure):
        print(check.line(), flush=True)
        failed += check.status == "FAIL"
    if failed:
        print(f"fssam2 doctor: {failed} problem(s) above (FAIL); fix them before the run.", flush=True)
        raise SystemExit(1)
    print("fssam2 doctor: ready" + (f" for {opts.config}" if opts.config else ""), flush=True)
