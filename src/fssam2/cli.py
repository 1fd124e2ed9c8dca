"""`fssam2`: LightningCLI over FSSAM2Module and the few-shot DataModules.

    fssam2 fit --config configs/demo.yaml
    fssam2 test --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt

Defaults: W&B logging, offline unless `--trainer.logger.init_args.offline false`, with every
W&B file under the run directory (`trainer.default_root_dir`); checkpoints in
`<run dir>/checkpoints` (best by val/miou, and last); bf16 autocast when a GPU is present.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch.cli import LightningCLI

from fssam2 import hub, prepare
from fssam2.benchmarks import LabelMapReader, check_layout, read_data_list
from fssam2.data import FewShotDataModule
from fssam2.episodes import EVAL_EPOCH
from fssam2.errors import InputError
from fssam2.module import FSSAM2Module

DEFAULT_RUN_DIR = "runs/fssam2"


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
                "class_path": "fssam2.callbacks.RunCheckpoint",
                "init_args": {"monitor": "val/miou", "mode": "max", "filename": "best"},
            },
            # The latest state, every epoch. (Lightning 2.6's save_last refreshes last.ckpt only
            # when a top-k checkpoint is saved in the same step, i.e. it would trail the run.)
            {"class_path": "fssam2.callbacks.RunCheckpoint", "init_args": {"filename": "last", "save_top_k": 1}},
            {"class_path": "fssam2.callbacks.TestResults"},
            {"class_path": "fssam2.callbacks.WandbTestReport"},
        ],
    }


class FSSAM2CLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - LightningArgumentParser
        parser.set_defaults(_trainer_defaults())

    def before_instantiate_classes(self) -> None:
        # fit saves config.yaml; a later test / validate / predict in the same run folder saves
        # its own <subcommand>_config.yaml instead of replacing the training config.
        if self.subcommand and self.subcommand != "fit":
            self.save_config_kwargs["config_filename"] = f"{self.subcommand}_config.yaml"
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


def episodes_command(args: list[str]) -> None:
    """`fssam2 episodes`: print the episodes a config would run, one JSON object a line."""
    parser = ArgumentParser(prog="fssam2 episodes", description=episodes_command.__doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="a fit/test config; only its data section is used")
    parser.add_subclass_arguments(FewShotDataModule, "data", required=True)
    parser.add_argument("--split", type=Literal["test", "val", "train"], default="test")
    parser.add_argument("--epoch", type=int, default=EVAL_EPOCH, help="training epoch (test and val episodes use -1)")
    parser.add_argument("--limit", type=int | None, default=None, help="print at most this many episodes")
    for ignored in ("model", "trainer", "seed_everything", "ckpt_path", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{ignored}", type=Any, default=None, help=argparse.SUPPRESS)
    cfg = parser.instantiate_classes(parser.parse_args(args))
    rule = cfg.data.episodes(cfg.split)
    count = len(rule) if cfg.limit is None else min(cfg.limit, len(rule))
    for index in range(count):
        ep = rule.episode(index, cfg.epoch)
        print(json.dumps({"index": index, "query": ep.query, "class": ep.class_id, "supports": list(ep.supports)}))


def prepare_command(args: list[str]) -> None:
    """`fssam2 prepare coco|splits`: render COCO label maps, or derive split lists."""
    parser = argparse.ArgumentParser(prog="fssam2 prepare", description=prepare_command.__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    coco = sub.add_parser("coco", help="render COCO2014/annotations/{train2014,val2014}/*.png from instances_*.json")
    coco.add_argument("--root", required=True, help="the folder holding COCO2014/")
    coco.add_argument("--splits", nargs="+", default=["train2014", "val2014"])
    splits = sub.add_parser("splits", help="derive PASCAL-5i / COCO-20i split lists with the published rule")
    splits.add_argument("--benchmark", choices=["pascal", "coco"], required=True)
    splits.add_argument("--root", required=True, help="dataset root (holding VOC2012/ or COCO2014/)")
    splits.add_argument("--out", required=True, help="splits folder to write (<out>/<benchmark>/fss_list/...)")
    splits.add_argument("--train-ids", help="PASCAL: file of training image ids, one a line")
    splits.add_argument("--val-ids", help="PASCAL: file of validation image ids, one a line")
    splits.add_argument("--min-pixels", type=int, default=prepare.MIN_PIXELS)
    opts = parser.parse_args(args)
    if opts.what == "coco":
        written = prepare.render_coco_labels(opts.root, opts.splits)
        print(f"wrote {written} label maps under {Path(opts.root).expanduser() / 'COCO2014' / 'annotations'}")
        return
    if opts.benchmark == "pascal":
        if not (opts.train_ids and opts.val_ids):
            raise InputError(
                "prepare splits --benchmark pascal needs --train-ids and --val-ids (files of VOC image ids)."
            )
        ids = {"train": read_data_list(Path(opts.train_ids)), "val": read_data_list(Path(opts.val_ids))}
        reader, held_out, num_classes = LabelMapReader(opts.root, "pascal"), prepare.pascal_held_out, 20
    else:
        base = check_layout(opts.root, ["COCO2014/annotations/train2014", "COCO2014/annotations/val2014"], "COCO-20i")
        ids = {
            split: sorted(p.stem for p in (base / "COCO2014" / "annotations" / f"{split}2014").glob("*.png"))
            for split in ("train", "val")
        }
        reader, held_out, num_classes = LabelMapReader(opts.root, "coco"), prepare.coco_held_out, 80
    extra = (
        {"folds": (0, 1, 2, 3, 10, 11, 12, 13), "val_only_folds": (10, 11, 12, 13)}
        if opts.benchmark == "pascal"
        else {}
    )
    prepare.derive_split_lists(
        ids,
        lambda i: reader.paths(i)[1],
        opts.out,
        opts.benchmark,
        held_out,
        num_classes,
        min_pixels=opts.min_pixels,
        **extra,
    )
    print(f"wrote {opts.benchmark} split lists under {Path(opts.out).expanduser() / opts.benchmark / 'fss_list'}")


def download_command(args: list[str]) -> None:
    """`fssam2 download NAME`: fetch Meta's SAM2 checkpoint into the cache ($FSSAM2_HOME)."""
    parser = argparse.ArgumentParser(prog="fssam2 download", description=download_command.__doc__)
    parser.add_argument("name", help=f"one of {', '.join(hub.CHECKPOINT_URLS)}")
    parser.add_argument("--sha256", help="expected SHA-256 of the file, when you have one")
    parser.add_argument("--url", help="fetch from this URL instead of Meta's")
    opts = parser.parse_args(args)
    print(hub.download(opts.name, sha256=opts.sha256, url=opts.url))


COMMANDS = {"episodes": episodes_command, "prepare": prepare_command, "download": download_command}


def run_cli(args: list[str] | None = None, run: bool = True) -> FSSAM2CLI | None:
    """Parse `args` (default sys.argv[1:]), build everything and run the subcommand.

    Returns the LightningCLI object (trainer, model, datamodule) for fit / validate / test /
    predict, None for `episodes`, `prepare` and `download`; bad input exits with status 2 and one line."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return FSSAM2CLI(
            FSSAM2Module,
            FewShotDataModule,
            subclass_mode_data=True,
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=argv,
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
