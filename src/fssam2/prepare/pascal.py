"""`fssam2 prepare pascal`: PASCAL-5i: VOC2012 + SBD, SegmentationClassAug. Being written."""

from __future__ import annotations

import argparse

HELP = "PASCAL-5i: VOC2012 + SBD, SegmentationClassAug (not written yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(opts: argparse.Namespace) -> None:
    raise NotImplementedError("fssam2 prepare pascal")
