"""The LightningCLI application of `fssam2` (fit, validate, test, predict): its defaults,
settings and the checks it runs before a run starts. `fssam2.cli` dispatches to it.

    fssam2 fit --config configs/demo.yaml
    fssam2 test --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt

Defaults: W&B logging, offline unless `--trainer.logger.init_args.offline false`, with every
W&B file under the run directory (`trainer.default_root_dir`); checkpoints in
`<run dir>/checkpoints` (best by val/miou, and last); bf16 autocast when a GPU is present.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, NoReturn, TypedDict

import torch
from jsonargparse import ArgumentParser, Namespace, class_from_function
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback

from fssam2 import hub
from fssam2.adapters import module_kwargs
from fssam2.benchmarks import OnDiskDataModule
from fssam2.cache import CacheConfig
from fssam2.callbacks import PREDICTIONS, RunConfig
from fssam2.data import FewShotDataModule
from fssam2.errors import InputError
from fssam2.files import check_new
from fssam2.methods import DEFAULT_METHOD, method_class
from fssam2.module import STAGE_SPLITS, FSSAM2Module, stage_class_ids

DEFAULT_RUN_DIR = "runs/fssam2"


def _trainer_defaults() -> dict:
    return {
        "trainer.default_root_dir": DEFAULT_RUN_DIR,
        "trainer.use_distributed_sampler": False,  # fssam2 shards episodes itself (PlanSampler, EpisodeSampler), without padding
        "trainer.precision": "bf16-mixed" if torch.cuda.is_available() else "32-true",
        "trainer.logger": {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"project": "fssam2", "offline": True},
        },
        "trainer.callbacks": [
            {
                "class_path": "fssam2.callbacks.RunCheckpoint",
                "init_args": {"monitor": "val/miou", "mode": "max", "filename": "best"},
            },
            # The latest state, at the end of every training epoch, validated or not: by default
            # Lightning saves at validation end when check_val_every_n_epoch > 1, leaving epochs
            # between validations without a checkpoint. (Lightning 2.6's save_last refreshes
            # last.ckpt only when a top-k checkpoint is saved in the same step: it would trail the run.)
            {
                "class_path": "fssam2.callbacks.RunCheckpoint",
                "init_args": {"filename": "last", "save_top_k": 1, "save_on_train_epoch_end": True},
            },
            {"class_path": "fssam2.callbacks.TestResults"},
            {"class_path": "fssam2.callbacks.WandbTestReport"},
            {"class_path": "fssam2.callbacks.WandbAdapter"},
            {"class_path": "fssam2.callbacks.PredictionWriter"},
        ],
    }


# One line each for `fssam2 --help`: the Trainer's subcommands and fssam2's own (COMMANDS).
SUBCOMMAND_HELP = {
    "fit": "meta-train on a benchmark's episodes (run folder: config, checkpoints, W&B)",
    "validate": "score a model on the validation episodes",
    "test": "score a model on the held-out classes' test episodes (writes test_metrics.json)",
    "predict": "write each test episode's predicted mask to <run dir>/predictions/",
    "segment": "masks for your own images from a few annotated examples",
    "serve": "a local web page to segment your own images from a few examples (Gradio)",
    "export": "an adapter file (LoRA weights + metadata) from a checkpoint, optionally a merged model",
    "download": "fetch a released SAM2 checkpoint into the cache ($FSSAM2_HOME), verified",
    "prepare": "download, check and lay out PASCAL-5i, COCO-20i, FSS-1000 and the split lists",
    "episodes": "print the episodes a config would run, one JSON object a line",
    "doctor": "preflight: versions, devices, data, weights, disk, and the measured memory of --config's run",
}
# fssam2's commands that are not the Trainer's, run by `fssam2.cli.run_cli` before LightningCLI parses.
OWN_COMMANDS = ("episodes", "doctor", "prepare", "download", "segment", "serve", "export")
# Lightning's special --ckpt_path values, resolved by the Trainer rather than read from a file.
SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")


def parse_error_line(message: str) -> str | None:
    """One line naming the option and what it expects, from jsonargparse's nested error text
    (a union of classes prints every subtype's error); None when it names neither."""
    keys: list[str] = []
    tuple_size: str | None = None  # a tuple of the wrong length: its value follows on a later line
    subtypes: str | None = None  # the innermost union's types: a value none of them takes follows
    plain_value = True  # the value is one option's, not a class's nested options
    owner = "this class"  # the class whose options the keys name
    fix = "check its spelling (--help lists the options)"
    for line in message.splitlines():
        if found := re.search(r"unrecognized arguments: (\S+)", line):
            return f"{found.group(1)} is not an option: {fix}."
        if found := re.search(r"Subcommand '([^']+)' does not accept option '([^']+)'", line):
            return f"{found.group(2)} (in a config file) is not an option of {found.group(1)}: {fix}."
        if found := re.search(r"Option '([^']+)' is not accepted", line):
            return f"--{'.'.join([*keys, found.group(1)])} is not an option of {owner}: {fix}."
        if found := re.search(r"Expected a tuple with (\d+) elements", line):
            tuple_size = found.group(1)
        if tuple_size and (found := re.search(r"Given value: (.*)", line)):
            return f"--{'.'.join(keys)} expects {tuple_size} values, got {found.group(1).strip()}."
        if found := re.search(r'Parser key "([^"]+)"', line):
            keys.append(found.group(1))
            subtypes = None
        elif (found := re.search(r"Problem with given class_path '(?:[\w.]+\.)?(\w+)'", line)) and keys:
            keys.append("init_args")
            owner = found.group(1)
        if found := re.search(r"Subtypes: \[(.*)\]$", line):
            subtypes = found.group(1)
        if found := re.search(r"Given value type: (.*)", line):
            plain_value = not re.search(r"NestedArg|dict|Namespace", found.group(1))
        if subtypes and plain_value and (found := re.search(r"Given value: (.*)", line)):
            return f"--{'.'.join(keys)} expects {_type_names(subtypes)}, got {found.group(1).strip()!r}."
        if found := re.search(r"Expected a <class '([^']+)'>\. Got value: (.*)", line):
            return f"--{'.'.join(keys)} expects {found.group(1)}, got {found.group(2).strip()!r}."
        if found := re.search(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", line):
            values = ", ".join(v.strip().strip("'\"") for v in found.group(1).split(","))
            return f"--{'.'.join(keys)} expects one of {values}, got {found.group(2).strip()!r}."
        if found := re.search(r"the following arguments are required: (.*)", line):
            names = ", ".join(f"--{'.'.join([*keys, n.strip()])}" for n in found.group(1).split(","))
            return f"missing {names}: give them on the command line or in the config."
    return None


def _type_names(subtypes: str) -> str:
    """A union's types as a user writes values: "<class 'int'>, <class 'NoneType'>" -> "int or
    null", "tuple[int, int], ..." -> "[int, int] or ..."."""
    names = []
    for name in re.split(r",\s*(?![^\[]*\])", subtypes):  # commas outside brackets
        name = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", name.strip()).replace("typing.", "")
        names.append("null" if name == "NoneType" else re.sub(r"^(?:tuple|list)\[(.*)\]$", r"[\1]", name))
    return " or ".join(names)


class OneLineErrorParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are one line naming the option when it can name one
    (exit status 2), else jsonargparse's usage and details."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        line = parse_error_line(message) if self.exit_on_error else None
        if line:
            sys.stderr.write(f"fssam2: error: {line}\n")
            self.exit(2)
        super().error(message, ex)


class FSSAM2CLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults(_trainer_defaults())

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        # LightningCLI's own, with fssam2's help lines; fssam2's other commands (run by run_cli
        # before LightningCLI parses anything) are listed too, so `fssam2 --help` shows them all.
        self._subcommand_parsers = {}
        subcommands = parser.add_subcommands()
        # As LightningCLI's: trainer_class may be a function returning a Trainer.
        trainer_class = (
            self.trainer_class if isinstance(self.trainer_class, type) else class_from_function(self.trainer_class)
        )
        for name in self.subcommands():
            sub_kwargs = dict(kwargs.get(name, {}))
            sub_kwargs.setdefault("description", SUBCOMMAND_HELP[name])
            self._subcommand_parsers[name] = self._prepare_subcommand_parser(trainer_class, name, **sub_kwargs)
            subcommands.add_subcommand(name, self._subcommand_parsers[name], help=SUBCOMMAND_HELP[name])
        for name in OWN_COMMANDS:
            listed = ArgumentParser(prog=f"fssam2 {name}", description=SUBCOMMAND_HELP[name])
            subcommands.add_subcommand(name, listed, help=f"{SUBCOMMAND_HELP[name]} (fssam2 {name} --help)")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        # Before LightningCLI reads the checkpoint's hyperparameters (right after parsing), which
        # would end a missing, truncated or foreign file in a traceback.
        subcommand = self.config.get("subcommand")
        if subcommand in self.subcommands():
            check_checkpoint(self.config[subcommand].get("ckpt_path"))

    def _parse_ckpt_path(self) -> None:
        # Lightning replaces every model option with the checkpoint's, so evaluation options
        # given with --ckpt_path (feature_cache, merge_lora, compile, encoder_batch) were ignored.
        # Here the checkpoint decides only what its weights fix, and a conflicting option is refused.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        # Memory-mapped: only the hyperparameters are read, not every tensor.
        stored = module_kwargs(torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=True))
        model = self.config[subcommand].model
        defaults = {n: p.default for n, p in inspect.signature(FSSAM2Module.__init__).parameters.items()}
        taken = {}
        for key in checkpoint_fixes(stored):
            if key not in stored or _plain(model.get(key)) == _plain(stored[key]):
                continue
            if _plain(model.get(key)) != _plain(defaults[key]):
                raise InputError(
                    f"--model.{key}={_plain(model.get(key))} conflicts with {ckpt_path}, trained with "
                    f"{key}={_plain(stored[key])}: drop the option (the checkpoint decides it) or pass a checkpoint trained with it."
                )
            taken[key] = _plain(stored[key])
        if taken:
            self.config = self.parser.parse_object({subcommand: {"model": taken}}, self.config)

    def before_instantiate_classes(self) -> None:
        if (
            self.subcommand in OWN_COMMANDS
        ):  # e.g. `fssam2 --config x.yaml segment`: run_cli dispatches on the first word
            raise InputError(f"`{self.subcommand}` must come first: fssam2 {self.subcommand} ... (see its --help).")
        # fit saves config.yaml; a later test / validate / predict in the same run folder saves
        # its own <subcommand>_config.yaml; none replaces an existing file (see RunConfig).
        if self.subcommand and self.subcommand != "fit":
            self.save_config_kwargs["config_filename"] = f"{self.subcommand}_config.yaml"
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in STAGE_SPLITS:
            datamodule = datamodule_of(config)
            if isinstance(datamodule, OnDiskDataModule):  # before the model, which may download weights
                datamodule.check_prepared(STAGE_SPLITS[self.subcommand])
        trainer = config.trainer
        run_dir = Path(trainer.default_root_dir or DEFAULT_RUN_DIR).expanduser().resolve()
        check_run_dir(run_dir)
        if self.subcommand == "fit":
            check_trains(config.model.get("method") or DEFAULT_METHOD)
            check_new_fit(run_dir, config.get("ckpt_path"))
        if self.subcommand == "predict":  # an earlier predict's masks are kept
            check_new(run_dir / PREDICTIONS, "trainer.default_root_dir")
        trainer.default_root_dir = str(run_dir)
        self._wandb_dir = None
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        for logger in loggers:
            if getattr(logger, "class_path", "").endswith("WandbLogger"):
                if logger.init_args.get("save_dir") in (None, "."):
                    logger.init_args.save_dir = str(run_dir)
                # W&B writes caches and settings beside its runs, never in the user's home or cwd.
                for var, sub in (
                    ("WANDB_DIR", ""),
                    ("WANDB_CACHE_DIR", ".cache"),
                    ("WANDB_CONFIG_DIR", ".config"),
                    ("WANDB_DATA_DIR", ".data"),
                ):
                    os.environ[var] = str(run_dir / "wandb" / sub)
                self._wandb_dir = run_dir / "wandb"  # created once the run is known to start
                for key, value in wandb_labels(config, str(self.subcommand)).items():
                    if logger.init_args.get(key) is None:  # the user's own group / tags / job_type are kept
                        logger.init_args[key] = value

    def _plan_only(self) -> bool:
        model = self.config[self.subcommand].model if self.subcommand else None
        return bool(model is not None and (_plain(model.get("feature_cache")) or {}).get("plan_only"))

    def instantiate_classes(self) -> None:
        if self.subcommand is None or not self._plan_only():
            super().instantiate_classes()
            return
        # The plan report: no model weights are read and no episode runs.
        print(plan_report(self.config[self.subcommand], self.subcommand))
        self.datamodule = self.model = None
        self.trainer = None  # type: ignore[assignment]  # LightningCLI declares a Trainer; a plan report has none

    def _run_subcommand(self, subcommand: str) -> None:
        if self._plan_only():
            return
        run_dir = Path(self.trainer.default_root_dir)
        before = folder_state(run_dir)
        super()._run_subcommand(subcommand)
        if self.trainer.is_global_zero:
            print(run_summary(subcommand, run_dir, before, self.trainer.checkpoint_callback), flush=True)

    def _before_run(self) -> None:
        """Checks that need the instances, before the Trainer writes anything: a run that fails
        here leaves the run folder as it was."""
        subcommand = str(self.subcommand)  # set: LightningCLI runs a subcommand
        stage_class_ids(self.datamodule, subcommand)
        if subcommand == "fit" and isinstance(self.datamodule, FewShotDataModule):
            self.datamodule.check_fit()
        if self.trainer.is_global_zero:
            warn_batch_limits(self.config[subcommand].trainer, subcommand)
        if self._wandb_dir is not None:
            os.makedirs(self._wandb_dir, exist_ok=True)

    before_fit = before_validate = before_test = before_predict = _before_run


def wandb_labels(config: Namespace, subcommand: str) -> dict[str, Any]:
    """How a run shows on W&B beside other methods' runs: grouped by benchmark, fold and shot (one
    workspace group a fold, the methods side by side in it), tagged with the method, the benchmark,
    the fold, the shot, the support annotation and the subcommand, its job type the subcommand."""
    data = _plain(config.data) or {}
    args = data.get("init_args") or {}
    kind = str(data.get("class_path", "")).rpartition(".")[2]
    benchmark = kind.removesuffix("DataModule").lower() or "data"
    method = str((config.model or {}).get("method") or DEFAULT_METHOD).rpartition(".")[2]
    defaults = inspect.signature(FewShotDataModule.__init__).parameters
    fold, shot = (args.get(name, defaults[name].default) for name in ("fold", "shot"))
    annotation = args.get("support_annotation", defaults["support_annotation"].default)
    return {
        "group": f"{benchmark}-fold{fold}-{shot}shot",
        "tags": [method, benchmark, f"fold{fold}", f"{shot}-shot", f"support:{annotation}", subcommand],
        "job_type": subcommand,
    }


def check_run_dir(run_dir: Path) -> None:
    """The run folder exists as a folder or can be created (its first existing parent is a
    writable folder); nothing is created here."""
    existing = hub.existing_ancestor(run_dir)
    if not existing.is_dir():
        raise InputError(
            f"trainer.default_root_dir {run_dir} cannot be a folder: {existing} is a file. "
            "Choose another trainer.default_root_dir."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(
            f"trainer.default_root_dir {run_dir} cannot be written ({existing} is not writable): "
            "choose another trainer.default_root_dir."
        )


def check_trains(method: str) -> None:
    """`fssam2 fit` refuses a training-free method (`FewShotMethod.TRAINS` false) in one line."""
    kind = method_class(method)
    if not kind.TRAINS:
        raise InputError(
            f"model.method={method} is training-free: nothing in {kind.__name__} trains, so there is nothing to fit; "
            "run `fssam2 test` with the same config (no checkpoint needed)."
        )


def check_new_fit(run_dir: Path, ckpt_path: str | None) -> None:
    """A fit starts in a folder without checkpoints, or resumes from one of its own: a second fit
    beside a first would write best-v1.ckpt, and `<run dir>/checkpoints/best.ckpt` would no
    longer be this folder's run's best."""
    folder = run_dir / "checkpoints"
    held = sorted(p for p in folder.glob("*.ckpt") if not p.name.startswith(".")) if folder.is_dir() else []
    if not held:
        return
    resumed = ckpt_path is not None and Path(ckpt_path).expanduser().resolve().parent == folder
    if ckpt_path in SPECIAL_CKPT_PATHS or resumed:
        return
    last = folder / "last.ckpt" if (folder / "last.ckpt").is_file() else held[-1]
    raise InputError(
        f"trainer.default_root_dir {run_dir} holds a fit already ({', '.join(p.name for p in held)}): resume it "
        f"with --ckpt_path {last}, or choose another trainer.default_root_dir."
    )


def warn_batch_limits(trainer: Namespace, subcommand: str) -> None:
    """One line when a trainer.limit_*_batches the run uses was read as the float 1.0, which
    Lightning takes as every batch (jsonargparse before 4.53 reads a written 1 so; from 4.53 it
    stays the integer 1, one batch, and nothing is said)."""
    used = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
    for split in used.get(subcommand, ()):
        value = trainer.get(f"limit_{split}_batches")
        if isinstance(value, float) and value == 1.0:
            sys.stderr.write(
                f"fssam2: warning: trainer.limit_{split}_batches={value} runs every {split} batch (1 reads as 1.0, "
                "i.e. 100%); for a number of batches give 2 or more, for a share a fraction below 1 such as 0.5.\n"
            )


def folder_state(folder: Path) -> dict[Path, int]:
    """Each file under `folder` with its modification time (ns); one that vanishes while it is
    listed (W&B's writer process renames its files) is left out."""
    state = {}
    for parent, _, names in os.walk(folder):  # a folder that vanishes is skipped
        for name in names:
            path = Path(parent) / name
            try:
                state[path] = path.stat().st_mtime_ns
            except OSError:
                continue
    return state


def run_summary(subcommand: str, run_dir: Path, before: dict[Path, int], checkpoint: Any = None) -> str:
    """The block a run ends with: its folder, the files it wrote there (a folder other than
    checkpoints/ as one entry with its count) and, after fit, the run's best checkpoint."""
    written: dict[str, int] = {}
    for path, mtime in sorted(folder_state(run_dir).items()):
        if before.get(path) == mtime or path.name.startswith("."):
            continue
        parts = path.relative_to(run_dir).parts
        name = "/".join(parts) if len(parts) == 1 or parts[0] == "checkpoints" else f"{parts[0]}/"
        written[name] = written.get(name, 0) + 1
    entries = [name if not name.endswith("/") else f"{name} ({n} files)" for name, n in written.items()]
    lines = [f"fssam2 {subcommand}: run folder {run_dir}", f"  wrote {', '.join(entries) or 'nothing'}"]
    if subcommand == "fit" and checkpoint is not None:
        best, score = getattr(checkpoint, "best_model_path", ""), getattr(checkpoint, "best_model_score", None)
        if best:
            shown = ""
            if not checkpoint.monitor:
                shown = " (no validation ran: the latest state)"
            elif score is not None:
                shown = f" ({checkpoint.monitor} {float(score):.4f})"
            lines.append(f"  best checkpoint{shown}: {best}")
        else:
            lines.append("  no best checkpoint: no validation ran (see trainer.check_val_every_n_epoch)")
    return "\n".join(lines)


def checkpoint_fixes(stored: dict[str, Any]) -> tuple[str, ...]:
    """Model options a training checkpoint's weights fix: its method and the options the method
    names (`FewShotMethod.FIXED_BY_WEIGHTS`); every other model option (the evaluation fast path,
    the optimiser) comes from the command line and config files."""
    return ("method", *method_class(stored.get("method", DEFAULT_METHOD)).FIXED_BY_WEIGHTS)


def _plain(value: Any) -> Any:
    """A config value as plain data, so a dataclass, a Namespace and a dict compare equal."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Namespace):
        return value.as_dict()
    return value


def check_checkpoint(ckpt_path: str | os.PathLike | None) -> None:
    """--ckpt_path names a whole Lightning checkpoint (as `fssam2 fit` writes), checked before
    the run starts. Only the pickled structure is read (tensors are memory-mapped)."""
    if ckpt_path is None:
        return
    text = str(ckpt_path)
    if text in SPECIAL_CKPT_PATHS or text.startswith("registry:") or "://" in text:
        return
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"--ckpt_path {path} does not exist: give a .ckpt written by `fssam2 fit`.")
    if not path.is_file():
        raise InputError(f"--ckpt_path {path} is not a file: give a .ckpt written by `fssam2 fit`.")
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"--ckpt_path {path} is truncated or not a PyTorch checkpoint: give a whole .ckpt written by `fssam2 fit`."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True)
    except Exception as err:
        raise InputError(
            f"--ckpt_path {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}): "
            "give a whole .ckpt written by `fssam2 fit`."
        ) from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "pytorch-lightning_version"} <= checkpoint.keys():
        raise InputError(
            f"--ckpt_path {path} is not a Lightning checkpoint (no state_dict): give a .ckpt written by "
            "`fssam2 fit` (Meta's SAM2 .pt goes to --model.sam2_checkpoint)."
        )


def datamodule_of(config: Namespace) -> FewShotDataModule:
    """The DataModule a run's config describes, made alone (no model, no Trainer)."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(FewShotDataModule, "data", required=True)
    return parser.instantiate(parser.parse_object({"data": config.data})).data


def plan_report(config: Namespace, subcommand: str) -> str:
    """What `--model.feature_cache.plan_only true` prints for a test / validate / predict config."""
    from fssam2.plan_report import describe

    split = {"test": "test", "predict": "test", "validate": "val"}.get(subcommand)
    if split is None:
        raise InputError(f"model.feature_cache.plan_only is for test, validate and predict, not {subcommand}.")
    datamodule = datamodule_of(config)
    trainer, model = config.trainer, config.model
    devices = trainer.get("devices", 1)
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices < 0 or devices == "auto":
        devices = max(torch.cuda.device_count(), 1) if trainer.get("accelerator") != "cpu" else 1
    world = (len(devices) if isinstance(devices, list) else int(devices)) * int(trainer.get("num_nodes") or 1)
    cache = CacheConfig(**_plain(model.feature_cache))  # checked as the run would check it
    return describe(
        datamodule,
        split,
        model.sam2_config,
        model.image_size,
        trainer.get("precision"),
        cache.max_megabytes,
        half=cache.half,
        world_size=world,
        method=model.get("method") or DEFAULT_METHOD,
        method_args=_plain(model.get("method_args")),
    )


# LightningCLI's settings, shared by every command that parses a run's config (fssam2 doctor too).
class CLISettings(TypedDict):
    subclass_mode_data: bool
    parser_class: type[LightningArgumentParser]
    seed_everything_default: int
    save_config_callback: type[SaveConfigCallback]
    auto_configure_optimizers: bool


CLI_SETTINGS: CLISettings = {
    "subclass_mode_data": True,
    "parser_class": OneLineErrorParser,
    "seed_everything_default": 42,
    "save_config_callback": RunConfig,
    "auto_configure_optimizers": False,
}
