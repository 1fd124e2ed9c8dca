"""Writing files without replacing any: no fssam2 command writes over a file it did not create in
the same run.

Every file is written to a hidden temporary file beside it (`temp_path`) and then takes its name
with a hard link (an exclusive create where the filesystem has none), which fails on a name any
file holds: a file appears whole, and a file that appeared meanwhile is kept. `check_new` refuses
an output that exists, in one line naming the option to change, before the work that would write
it; `create` writes a file under a free name or refuses; `write_new` (text) and `create_first_free`
(any file) take the first free name among `<stem>.ext`, `<stem>-1.ext`, ... instead (a run folder's
config, results and adapter);
`replace_own` rewrites a file the same run created; `new_folder` claims a run's own folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

from fssam2.errors import InputError

# What a temporary file's name matches: `.<name>.<random>.tmp` (a killed write leaves one behind).
PARTIAL_GLOB = ".*.tmp"


def temp_path(path: Path) -> Path:
    """A fresh hidden temporary name beside `path`, matching `PARTIAL_GLOB`."""
    return path.with_name(f".{path.name}.{uuid4().hex[:12]}.tmp")


def exists(path: Path) -> bool:
    """A file, folder or link (a dangling one too) holds the name `path`."""
    return path.exists() or path.is_symlink()


def refusal(path: Path, option: str) -> InputError:
    """The one line for an output `path` that exists: which option picks another."""
    return InputError(
        f"{path} exists and fssam2 writes over no file it did not create: choose another {option}, or remove it first."
    )


def check_new(path: str | os.PathLike[str], option: str) -> Path:
    """`path` (user home expanded) when nothing holds that name, else the one-line InputError of
    `refusal`; call it before the work whose result goes there."""
    path = Path(path).expanduser()
    if exists(path):
        raise refusal(path, option)
    return path


def new_folder(path: str | os.PathLike[str], option: str) -> Path:
    """Create the folder `path` (and its parents) for this run alone; one that exists is refused."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError as err:
        raise refusal(path, option) from err
    return path


def create(path: str | os.PathLike[str], write: Callable[[Path], object], option: str, *, sync: bool = False) -> Path:
    """Write a new file at `path`: `write(tmp)` writes it under a temporary name, which then takes
    the name `path`. When a file holds that name (before, or appearing while `write` ran), nothing
    is written over: the one-line InputError of `refusal`. `sync` flushes the file to disk first."""
    path = check_new(path, option)
    tmp = _written(path, write, sync)
    try:
        if not _claim(tmp, path):
            raise refusal(path, option)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_new(path: Path, text: str) -> Path:
    """Write `text` to `path`, or, when that name is taken, to the first free name among
    `<stem>-1<suffix>`, `<stem>-2<suffix>`, ...; returns the path written (synced to disk)."""
    return create_first_free(path, lambda p: p.write_text(text))


def create_first_free(path: Path, write: Callable[[Path], object]) -> Path:
    """`write_new` for any file: `write(tmp)` writes it under a temporary name, which then takes the
    first free name among `path`, `<stem>-1<suffix>`, ...; returns the path written (synced to disk)."""
    tmp = _written(path, write, sync=True)
    try:
        for n in range(100_000):
            target = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
            if not exists(target) and _claim(tmp, target):
                return target
        raise FileExistsError(f"no free name for {path}")
    finally:
        tmp.unlink(missing_ok=True)


def replace_own(path: Path, write: Callable[[Path], object]) -> Path:
    """Rewrite `path`, a file this run created (with `create`), atomically: it is whole at every moment."""
    tmp = _written(path, write, sync=False)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _written(path: Path, write: Callable[[Path], object], sync: bool) -> Path:
    """`write`'s file under a temporary name beside `path` (the folder created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _claim(tmp: Path, target: Path) -> bool:
    """Give `tmp`'s file the name `target` unless a file holds it (then False); `tmp` may stay."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: claim the name by exclusive create, then fill it
        try:
            with open(target, "x"):
                pass
        except FileExistsError:
            return False
        os.replace(tmp, target)  # onto the empty file this process just created
    return True
