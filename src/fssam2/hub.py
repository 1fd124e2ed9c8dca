"""SAM2 checkpoints by name: download into a cache, resume, verify.

`fssam2 download sam2.1_hiera_b+` fetches Meta's published file into `$FSSAM2_HOME` (default
`~/.cache/fssam2`), resuming a partial download (`<name>.pt.part`) with an HTTP Range request. The
file appears under its final name only when complete, checked (`--sha256`, or else the SHA-256
recorded at the first complete download in `<name>.pt.sha256`) and loadable as a state dict of the
named config. Meta publishes no checksums, so the first download's digest is trusted and every
later load is verified against it.

Checkpoints shipped inside a package (`PACKAGED_CHECKPOINTS`, e.g. `fssam2_tiny_tracking`) are
loaded by name too, with no download: every load checks the file against the SHA-256 pinned here.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from fssam2.errors import InputError

RANDOM_INIT = "random"  # the checkpoint value that asks for a randomly initialised SAM2 (model.sam2_checkpoint)
BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
CHECKPOINT_URLS = {
    "sam2.1_hiera_t": f"{BASE_URL}/sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": f"{BASE_URL}/sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": f"{BASE_URL}/sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": f"{BASE_URL}/sam2.1_hiera_large.pt",
}
CHUNK = 1 << 20


class PackagedCheckpoint(NamedTuple):
    """A SAM2 checkpoint shipped inside a Python package, in Meta's format."""

    package: str  # the package holding the file
    path: str  # the file's path inside the package
    sha256: str  # its pinned digest, checked on every load
    config: str  # the packaged config name (fssam2.build.PACKAGED_CONFIGS) it belongs to
    regenerate: str  # the command that writes the file


# Checkpoint names loadable with no download -> where the file is and what it must be.
PACKAGED_CHECKPOINTS: dict[str, PackagedCheckpoint] = {
    # fssam2_tiny pretrained on synthetic video tracking (4000 steps, one CPU thread, seed 0).
    "fssam2_tiny_tracking": PackagedCheckpoint(
        "fssam2",
        "checkpoints/fssam2_tiny_tracking.pt",
        "8ec298f3a50e546184609e5b25e0b13496d1a2d9d12081f76cca9c1ad98d9b4e",
        "fssam2_tiny",
        "python experiments/pretrain_tracking.py",
    ),
}


def cache_dir() -> Path:
    """`$FSSAM2_HOME`, else `$XDG_CACHE_HOME/fssam2`, else `~/.cache/fssam2`."""
    if os.environ.get("FSSAM2_HOME"):
        return Path(os.environ["FSSAM2_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "fssam2"


def data_dir() -> Path:
    """The data home: `$FSSAM2_DATA`, else `cache_dir() / "data"`. It holds the dataset roots the
    benchmarks read (`VOC2012/`, `COCO2014/`, `FSS-1000/`) and their split lists (`splits/`);
    `fssam2 prepare` writes there and the DataModules read there when `--data.root` is not given."""
    if os.environ.get("FSSAM2_DATA"):
        return Path(os.environ["FSSAM2_DATA"]).expanduser().absolute()
    return cache_dir() / "data"


def cached_path(name: str) -> Path:
    return cache_dir() / f"{name}.pt"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str | None) -> str:
    """Check the file against `expected` or its recorded digest (recording it if none); returns it."""
    record = path.with_name(path.name + ".sha256")
    expected = expected or (record.read_text().strip() if record.is_file() else None)
    actual = sha256_of(path)
    if expected and actual != expected.lower():
        raise InputError(
            f"SAM2 checkpoint {path} has SHA-256 {actual}, expected {expected}: the file changed or is "
            f"corrupt; delete it and run `fssam2 download {path.stem}` again."
        )
    if not record.is_file():
        record.write_text(actual + "\n")
    return actual


def packaged_path(name: str) -> Path:
    """Where the packaged checkpoint `name` lives (or would live) in this install; not verified."""
    entry = PACKAGED_CHECKPOINTS[name]
    return Path(str(resources.files(entry.package).joinpath(entry.path)))


def _verify_packaged(name: str) -> tuple[Path, str]:
    """The packaged checkpoint's path and digest, after checking the file against its pin."""
    entry = PACKAGED_CHECKPOINTS[name]
    path = packaged_path(name)
    if not path.is_file():
        raise InputError(
            f"SAM2 checkpoint {name!r} is not in this install ({path} is missing): regenerate it with "
            f"`{entry.regenerate}` (it writes that file), or reinstall {entry.package} from a release that ships it."
        )
    actual = sha256_of(path)
    if actual != entry.sha256.lower():
        raise InputError(
            f"Packaged SAM2 checkpoint {path} has SHA-256 {actual}, expected {entry.sha256}: the file is corrupt or "
            f"from another run; regenerate it with `{entry.regenerate}`, or if you did, pin its digest in "
            f"fssam2.hub.PACKAGED_CHECKPOINTS[{name!r}]."
        )
    return path, actual


def _resolve(checkpoint: str | Path) -> tuple[Path, str | None]:
    """(path, its verified SHA-256) for a downloaded or packaged name; (path, None) for a path as given."""
    path = Path(checkpoint).expanduser()
    name = str(checkpoint)
    if path.exists() or name not in CHECKPOINT_URLS.keys() | PACKAGED_CHECKPOINTS.keys():
        return path, None
    if name in PACKAGED_CHECKPOINTS:
        return _verify_packaged(name)
    cached = cached_path(name)
    if not cached.is_file():
        raise InputError(
            f"SAM2 checkpoint {name!r} is not downloaded yet: run `fssam2 download {name}` (or fetch "
            f"{CHECKPOINT_URLS[name]} by hand and put it at {cached})."
        )
    return cached, _verify(cached, None)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A checkpoint path as given, or the verified file of a downloadable or packaged name."""
    return _resolve(checkpoint)[0]


def checkpoint_sha256(checkpoint: str | Path) -> str:
    """SHA-256 of a checkpoint path or downloaded / packaged name, hashing the file once."""
    path, digest = _resolve(checkpoint)
    return digest or sha256_of(path)


def checkpoint_config(checkpoint: str | Path) -> str | None:
    """The config a packaged checkpoint name belongs to; None for paths and downloaded names
    (those are checked key by key when loaded)."""
    name = str(checkpoint)
    if name in PACKAGED_CHECKPOINTS and not Path(checkpoint).expanduser().exists():
        return PACKAGED_CHECKPOINTS[name].config
    return None


def download(
    name: str, *, sha256: str | None = None, url: str | None = None, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download (or resume) the checkpoint of a packaged config name; returns its cached path.
    A packaged checkpoint name (`PACKAGED_CHECKPOINTS`) needs no download: its verified path is returned."""
    from fssam2.build import PACKAGED_CONFIGS, load_checkpoint, load_model_config

    if name in PACKAGED_CHECKPOINTS:
        if url is not None:
            raise InputError(f"{name!r} ships inside fssam2 and is never downloaded: drop --url.")
        path, actual = _verify_packaged(name)
        if sha256 and actual != sha256.lower():
            raise InputError(
                f"Packaged SAM2 checkpoint {path} has SHA-256 {actual}, not the --sha256 {sha256} you gave: check --sha256."
            )
        return path
    if name not in PACKAGED_CONFIGS:
        raise InputError(
            f"Unknown SAM2 model {name!r}: use one of {', '.join(CHECKPOINT_URLS)} "
            f"(packaged, no download needed: {', '.join(PACKAGED_CHECKPOINTS)})."
        )
    url = url or CHECKPOINT_URLS.get(name)
    if url is None:
        packaged = [k for k, v in PACKAGED_CHECKPOINTS.items() if v.config == name]
        also = f" (or load the packaged {', '.join(packaged)} by name, no download needed)" if packaged else ""
        raise InputError(f"{name!r} has no published checkpoint: use one of {', '.join(CHECKPOINT_URLS)}{also}.")
    final = cached_path(name)
    if final.is_file():
        _verify(final, sha256)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    _fetch(url, part, final, progress, timeout)
    actual = sha256_of(part)
    if sha256 and actual != sha256.lower():
        part.unlink()
        raise InputError(
            f"Download of {url} has SHA-256 {actual}, expected {sha256}: it was discarded; check --sha256 and run again."
        )
    from hydra.utils import instantiate

    try:
        load_checkpoint(instantiate(load_model_config(name).model, _recursive_=True), part, name)
    except InputError as err:
        part.unlink()
        raise InputError(f"Download of {url} is not a {name} checkpoint and was discarded: {err}") from err
    os.replace(part, final)
    final.with_name(final.name + ".sha256").write_text(actual + "\n")
    return final


def _fetch(url: str, part: Path, final: Path, progress: bool, timeout: float) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - https by default, any URL by choice
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the partial file is already whole
            return
        raise InputError(
            f"Downloading {url} failed: the server answered {err.code} {err.reason}; try again later."
        ) from err
    except (urllib.error.URLError, OSError) as err:
        raise InputError(
            f"Cannot reach {url} ({getattr(err, 'reason', err)}): fetch it by hand and put it at {final}, "
            f"or run `fssam2 download {final.stem}` where the network is reachable."
        ) from err
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header: start again
        total = response.headers.get("Content-Length")
        total = int(total) + offset if total is not None else None
        with (
            open(part, "ab" if offset else "wb") as f,
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=final.name, disable=not progress) as bar,
        ):
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, OSError) as err:
                raise InputError(
                    f"Download of {url} was interrupted ({err}): run the same command again to resume."
                ) from err
    if total is not None and part.stat().st_size < total:
        raise InputError(
            f"Download of {url} ended early ({part.stat().st_size} of {total} bytes): run the same command again to resume."
        )
