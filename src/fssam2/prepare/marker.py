"""What every `fssam2 prepare` subcommand shares: the "prepared" marker a dataset folder gets once
it is verified (a second run reads it and does nothing), and the early disk-space refusal."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any

from fssam2.benchmarks import PREPARED_MARKER
from fssam2.errors import InputError
from fssam2.hub import existing_ancestor

MARKER = PREPARED_MARKER  # what `fssam2 doctor` looks for
GB = 1e9


def fssam2_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fssam2")
    except PackageNotFoundError:
        return "unknown"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker's content, or None when the folder has none (or an unreadable one: not prepared)."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_marker(folder: Path, info: dict[str, Any]) -> Path:
    """Write `<folder>/.fssam2-prepared.json` (info plus fssam2's version and the date), atomically."""
    path = folder / MARKER
    data = {**info, "fssam2_version": fssam2_version(), "date": datetime.datetime.now().astimezone().isoformat()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def check_free_space(root: Path, needed: float, what: str) -> None:
    """Print what `what` needs under `root` and refuse (one line) when the disk has less free."""
    existing = existing_ancestor(root)
    free = shutil.disk_usage(existing).free
    print(f"{what} needs about {needed / GB:.1f} GB free under {root} ({free / GB:.1f} GB free)")
    if free < needed:
        raise InputError(
            f"{what} needs about {needed / GB:.1f} GB under {root} but only {free / GB:.1f} GB are free: free some "
            "space or pass --root on a larger disk (nothing was downloaded)."
        )
