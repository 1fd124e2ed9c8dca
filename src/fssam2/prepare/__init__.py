"""`fssam2 prepare pascal | coco | fss1000 | splits`: the benchmarks and split lists, from their
published files into the data home (`fssam2.hub.data_dir()`, `$FSSAM2_DATA`), every byte checked.

Each subcommand is a module here with `HELP`, `add_arguments(parser)` and `run(opts)`; the options
every subcommand shares (`--root`, `--archives`, `--mirror`) are added by `main`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fssam2.hub import check_folder, data_dir
from fssam2.prepare import coco, fss1000, pascal, splits
from fssam2.prepare.coco import render_coco_labels
from fssam2.prepare.splits import MIN_PIXELS, coco_held_out, derive_split_lists, pascal_held_out

SUBCOMMANDS = {"pascal": pascal, "coco": coco, "fss1000": fss1000, "splits": splits}

__all__ = ["MIN_PIXELS", "coco_held_out", "derive_split_lists", "main", "pascal_held_out", "render_coco_labels"]


def main(args: list[str]) -> None:
    """Parse `fssam2 prepare ...` arguments and run the subcommand."""
    parser = argparse.ArgumentParser(prog="fssam2 prepare", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name, module in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        command.add_argument(
            "--root", default=None, help="the data folder to prepare (default: $FSSAM2_DATA, else <cache>/fssam2/data)"
        )
        command.add_argument(
            "--archives",
            action="append",
            default=[],
            metavar="DIR",
            help="a folder of already downloaded archives, used in place when their checksums match (repeatable)",
        )
        command.add_argument(
            "--mirror", help="a base URL serving the same files by name, instead of the official hosts"
        )
        module.add_arguments(command)
    opts = parser.parse_args(args)
    if opts.root:
        root = Path(opts.root).expanduser()
        opts.root = str(check_folder(root, f"--root {root}", "give the data folder (it is created when absent)"))
    else:
        opts.root = str(data_dir())  # refuses a data home that is a file
    SUBCOMMANDS[opts.what].run(opts)
