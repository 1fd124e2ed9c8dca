"""`fssam2 prepare fss1000`: FSS-1000. Being written."""

from __future__ import annotations

import argparse

HELP = "FSS-1000 (not written yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(opts: argparse.Namespace) -> None:
    raise NotImplementedError("fssam2 prepare fss1000")
