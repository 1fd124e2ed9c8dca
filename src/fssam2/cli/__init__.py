"""`fssam2`: the command dispatcher. The Trainer's subcommands (fit, validate, test, predict) go to
the LightningCLI application (`fssam2.cli.app`), the others to their functions (`COMMANDS`).

    fssam2 fit --config configs/demo.yaml
    fssam2 test --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from fssam2.cli.app import CLI_SETTINGS, FSSAM2CLI
from fssam2.cli.commands import download_command, episodes_command, export_command, prepare_command, segment_command
from fssam2.cli.doctor import doctor_command
from fssam2.data import FewShotDataModule
from fssam2.errors import InputError, cause_of
from fssam2.module import FSSAM2Module
from fssam2.serve import serve_command

COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "episodes": episodes_command,
    "doctor": doctor_command,
    "prepare": prepare_command,
    "download": download_command,
    "segment": segment_command,
    "serve": serve_command,
    "export": export_command,
}


def run_cli(args: list[str] | None = None, run: bool = True) -> FSSAM2CLI | None:
    """Parse `args` (default sys.argv[1:]), build everything and run the subcommand.

    Returns the LightningCLI object (trainer, model, datamodule) for fit / validate / test /
    predict, None for the other commands; bad input exits with status 2 and one line, a
    non-finite training loss with status 1 and one line."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return FSSAM2CLI(
            FSSAM2Module,
            FewShotDataModule,
            **CLI_SETTINGS,
            parser_kwargs={"description": "Few-shot segmentation with SAM2 (FS-SAM2). Subcommands:"},
            args=None if args is None else argv,  # None: LightningCLI reads sys.argv (no warning)
            run=run,
        )
    except Exception as err:
        for kind, status in ((InputError, 2), (FloatingPointError, 1)):
            cause = cause_of(err, kind)
            if cause is not None:
                # One write with its newline: DDP ranks share stderr, and print's separate
                # writes of text and newline let two ranks' lines run together.
                sys.stderr.write(f"fssam2: error: {cause}\n")
                sys.stderr.flush()
                raise SystemExit(status) from None
        raise


def main(args: list[str] | None = None) -> None:
    """Entry point of the `fssam2` command."""
    run_cli(args)
