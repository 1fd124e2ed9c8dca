"""`fssam2`: LightningCLI over FSSAM2Module and the few-shot DataModules.

    fssam2 fit --config configs/demo.yaml
    fssam2 test --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt

Defaults: W&B logging, offline unless `--trainer.logger.init_args.offline false`, with every
W&B file under the run directory (`trainer.default_root_dir`); checkpoints in
`<run dir>/checkpoints` (best by val/miou, and last); bf16 autocast when a GPU is present.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from fssam2.data import FewShotDataModule
from fssam2.errors import InputError
from fssam2.module import FSSAM2Module

DEFAULT_RUN_DIR = "runs/fssam2"


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose default folder is `<trainer.default_root_dir>/checkpoints`, so
    checkpoints are found at a fixed place whatever the logger (W&B nests them under a run id)."""

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 - Lightning's signature
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)


def _trainer_defaults() -> dict:
    return {
        "trainer.default_root_dir": DEFAULT_RUN_DIR,
        "trainer.use_distributed_sampler": False,  # EpisodeSampler shards episodes, without padding
        "trainer.precision": "bf16-mixed" if torch.cuda.is_available() else "32-true",
        "trainer.logger": {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"project": "fssam2", "offline": True},
        },
        "trainer.callbacks": [
            {
                "class_path": "fssam2.cli.RunCheckpoint",
                "init_args": {"monitor": "val/miou", "mode": "max", "filename": "best"},
            },
            # The latest state, every epoch. (Lightning 2.6's save_last refreshes last.ckpt only
            # when a top-k checkpoint is saved in the same step, i.e. it would trail the run.)
            {"class_path": "fssam2.cli.RunCheckpoint", "init_args": {"filename": "last", "save_top_k": 1}},
        ],
    }


class FSSAM2CLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - LightningArgumentParser
        parser.set_defaults(_trainer_defaults())

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        run_dir = Path(trainer.default_root_dir or DEFAULT_RUN_DIR).expanduser().resolve()
        trainer.default_root_dir = str(run_dir)
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
                os.makedirs(run_dir / "wandb", exist_ok=True)


def run_cli(args: list[str] | None = None, run: bool = True) -> FSSAM2CLI:
    """Parse `args` (default sys.argv[1:]), build everything and run the subcommand.

    Returns the CLI object (trainer, model, datamodule) for callers such as tests and scripts;
    bad input exits with status 2 and a one-line message."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        return FSSAM2CLI(
            FSSAM2Module,
            FewShotDataModule,
            subclass_mode_data=True,
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )
    except Exception as err:
        cause = _input_error(err)
        if cause is None:
            raise
        print(f"fssam2: error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def _input_error(err: BaseException | None) -> InputError | None:
    """The InputError behind `err`, if any (jsonargparse wraps errors raised while it
    instantiates a class)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, InputError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(args: list[str] | None = None) -> None:
    """Entry point of the `fssam2` command."""
    run_cli(args)


if __name__ == "__main__":
    main()
