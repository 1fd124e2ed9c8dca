"""SAM2 checkpoints by name: download into a cache, resume, verify.

`fssam2 download sam2.1_hiera_b+` puts the released file at `$FSSAM2_HOME/<name>.pt` (default
`~/.cache/fssam2`). It comes from the Hugging Face Hub (`HUB_CHECKPOINTS`, the repos sam2's own
`build_sam2_hf` uses) through `huggingface_hub`, which resumes, caches (`$HF_HOME`) and honours
`HF_HUB_OFFLINE` and `HF_ENDPOINT` mirrors; the file is checked against the SHA-256 the Hub publishes
for it (its LFS object id) before it is used. When the Hub cannot be reached, Meta's URL
(`CHECKPOINT_URLS`) is fetched instead, resuming `<name>.pt.part` with an HTTP Range request; Meta
publishes no checksums, so that first download's digest is trusted. Either way the file appears
under its final name only when complete, checked (also against `--sha256` when given) and loadable
as a state dict of the named config; `<name>.pt.sha256` records its digest and where the digest came
from, and every later load is verified against it.

Checkpoints shipped inside a package (`PACKAGED_CHECKPOINTS`, e.g. `fssam2_tiny_tracking`) are
loaded by name too, with no download: every load checks the file against the SHA-256 pinned here;
so are packaged adapter files (`PACKAGED_ADAPTERS`, e.g. `fssam2_tiny_hue`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from uuid import uuid4

from tqdm import tqdm

from fssam2.downloads import Unreachable, fetch_url, file_digest
from fssam2.errors import InputError
from fssam2.registry import PACKAGED_CONFIGS, RANDOM_INIT

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
V1_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"  # SAM2 v1, as sam2's download script names it
CHECKPOINT_URLS = {
    "sam2.1_hiera_t": f"{BASE_URL}/sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": f"{BASE_URL}/sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": f"{BASE_URL}/sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": f"{BASE_URL}/sam2.1_hiera_large.pt",
    "sam2_hiera_t": f"{V1_URL}/sam2_hiera_tiny.pt",
    "sam2_hiera_s": f"{V1_URL}/sam2_hiera_small.pt",
    "sam2_hiera_b+": f"{V1_URL}/sam2_hiera_base_plus.pt",
    "sam2_hiera_l": f"{V1_URL}/sam2_hiera_large.pt",
}
# The same files on the Hugging Face Hub: (repo id, file name), as sam2.build_sam.HF_MODEL_ID_TO_FILENAMES.
HUB_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "sam2.1_hiera_t": ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt"),
    "sam2.1_hiera_s": ("facebook/sam2.1-hiera-small", "sam2.1_hiera_small.pt"),
    "sam2.1_hiera_b+": ("facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_base_plus.pt"),
    "sam2.1_hiera_l": ("facebook/sam2.1-hiera-large", "sam2.1_hiera_large.pt"),
    "sam2_hiera_t": ("facebook/sam2-hiera-tiny", "sam2_hiera_tiny.pt"),
    "sam2_hiera_s": ("facebook/sam2-hiera-small", "sam2_hiera_small.pt"),
    "sam2_hiera_b+": ("facebook/sam2-hiera-base-plus", "sam2_hiera_base_plus.pt"),
    "sam2_hiera_l": ("facebook/sam2-hiera-large", "sam2_hiera_large.pt"),
}
HUB_REVISION = "main"
# GF-SAM's semantic encoders (fssam2.methods.dinov2), on the Hub only, as timm publishes DINOv2's weights:
# name -> (repo id, file name). Cached as `<name>.safetensors` beside the SAM2 checkpoints, verified alike.
ENCODER_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "dinov2_vits14": ("timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors"),
    "dinov2_vitb14": ("timm/vit_base_patch14_dinov2.lvd142m", "model.safetensors"),
    "dinov2_vitl14": ("timm/vit_large_patch14_dinov2.lvd142m", "model.safetensors"),
}


def download_sources(name: str) -> list[str]:
    """Where `download(name)` fetches a released checkpoint from, in the order it tries them."""
    sources = []
    if name in HUB_CHECKPOINTS or name in ENCODER_CHECKPOINTS:
        repo_id, filename = _hub_file(name)
        sources.append(f"the Hugging Face Hub ({repo_id}, {filename})")
    if name in CHECKPOINT_URLS:
        sources.append(CHECKPOINT_URLS[name])
    return sources


_SHA256 = re.compile(r"[0-9a-f]{64}")


class PackagedCheckpoint(NamedTuple):
    """A SAM2 checkpoint shipped inside a Python package, in Meta's format."""

    package: str  # the package holding the file
    path: str  # the file's path inside the package
    sha256: str  # its pinned digest, checked on every load
    config: str  # the packaged config name (fssam2.registry.PACKAGED_CONFIGS) it belongs to
    regenerate: str  # the command that writes the file


# Checkpoint names loadable with no download -> where the file is and what it must be.
PACKAGED_CHECKPOINTS: dict[str, PackagedCheckpoint] = {
    # fssam2_tiny pretrained on the varied synthetic world: tracking pairs through FS-SAM2's forward
    # and SANSA's (object pointers on), and prompts (10000 steps, one CPU thread, seed 0); every demo
    # starts from it.
    "fssam2_tiny_pointers": PackagedCheckpoint(
        "fssam2",
        "checkpoints/fssam2_tiny_pointers.pt",
        "48ff1375affad6c16c47a3bf8ea73579358c84fb95b9fe472ede116bd6283583",
        "fssam2_tiny",
        "python experiments/pretrain_tracking.py",
    ),
    # The same without SANSA's forward (its object-pointer path untrained): the demos' earlier start.
    "fssam2_tiny_varied": PackagedCheckpoint(
        "fssam2",
        "checkpoints/fssam2_tiny_varied.pt",
        "9a5927eada97dabec6fe2b36c782af4ade8ddc53f2868ef190acd9c6d2622fa8",
        "fssam2_tiny",
        "python experiments/pretrain_tracking.py --pointer-weight 0",
    ),
    # The first tracker: fssam2_tiny pretrained on hue-coded blobs (4000 steps, one CPU thread, seed 0).
    "fssam2_tiny_tracking": PackagedCheckpoint(
        "fssam2",
        "checkpoints/fssam2_tiny_tracking.pt",
        "8ec298f3a50e546184609e5b25e0b13496d1a2d9d12081f76cca9c1ad98d9b4e",
        "fssam2_tiny",
        "python experiments/pretrain_tracking.py --world hue --prompt-weight 0 --pointer-weight 0 --steps 4000",
    ),
}


# Adapter files (`fssam2 export`) shipped inside a package, loadable by name wherever an adapter file is
# taken (`--adapter NAME`); `config` is the SAM2 config of their base. Checked on every load like the above.
PACKAGED_ADAPTERS: dict[str, PackagedCheckpoint] = {
    # LoRA of the demo recipe (configs/demo.yaml: 20 epochs from fssam2_tiny_pointers) on the synthetic
    # benchmark's hue family, fold 0; `fssam2 serve` opens with it.
    "fssam2_tiny_hue": PackagedCheckpoint(
        "fssam2",
        "checkpoints/fssam2_tiny_hue.safetensors",
        "31f814c077baee451ab9ab77b94e31927d426972d3c7ab37e84b6678ba457040",
        "fssam2_tiny",
        "fssam2 fit --config configs/demo.yaml --data.init_args.family hue --trainer.default_root_dir runs/hue && "
        "fssam2 export runs/hue/checkpoints/best.ckpt --output src/fssam2/checkpoints/fssam2_tiny_hue.safetensors",
    ),
}


def packaged_adapter(name: str) -> Path:
    """The packaged adapter file `name` (`PACKAGED_ADAPTERS`), checked against its pinned SHA-256."""
    return _checked_pin(PACKAGED_ADAPTERS, "PACKAGED_ADAPTERS", "adapter", name)[0]


def cache_dir() -> Path:
    """`$FSSAM2_HOME`, else `$XDG_CACHE_HOME/fssam2`, else `~/.cache/fssam2`."""
    if os.environ.get("FSSAM2_HOME"):
        return Path(os.environ["FSSAM2_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "fssam2"


def data_dir() -> Path:
    """The data home: `$FSSAM2_DATA`, else `cache_dir() / "data"`. It holds the dataset roots the
    benchmarks read (`VOC2012/`, `COCO2014/`, `FSS-1000/`) and their split lists (`splits/`);
    `fssam2 prepare` writes there and the DataModules read there when `--data.root` is not given.
    A data home that is a file, or lies under one, is refused (InputError)."""
    if os.environ.get("FSSAM2_DATA"):
        path = Path(os.environ["FSSAM2_DATA"]).expanduser().absolute()
        fix = "point $FSSAM2_DATA at a folder (`fssam2 prepare` creates it), or unset it"
        return check_folder(path, f"The data home $FSSAM2_DATA={path}", fix)
    path = cache_dir() / "data"
    return check_folder(path, f"The data home {path}", "move that file away, or set $FSSAM2_DATA to a folder")


def existing_ancestor(path: Path) -> Path:
    """`path` itself if it exists, else its nearest existing parent (where it would be created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_folder(path: Path, what: str, fix: str) -> Path:
    """`path`, when it is a folder or can be made one (its nearest existing parent is a folder); else
    one line (InputError): `what` names the path, `fix` says how to mend it."""
    existing = existing_ancestor(path)
    if existing.is_dir():
        return path
    problem = "is a file, not a folder" if existing == path else f"lies inside {existing}, which is a file"
    raise InputError(f"{what} {problem}: {fix}.")


def cached_path(name: str) -> Path:
    return cache_dir() / f"{name}{'.safetensors' if name in ENCODER_CHECKPOINTS else '.pt'}"


def _hub_file(name: str) -> tuple[str, str]:
    """(repo id, file name) of a released SAM2 checkpoint or encoder on the Hub."""
    return HUB_CHECKPOINTS.get(name) or ENCODER_CHECKPOINTS[name]


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def _verify(path: Path, expected: str | None) -> str:
    """Check the file against `expected` or its recorded digest (recording it if none); returns it."""
    record = path.with_name(path.name + ".sha256")
    expected = expected or (_recorded(record) if record.is_file() else None)
    actual = sha256_of(path)
    if expected and actual != expected.lower():
        raise InputError(
            f"SAM2 checkpoint {path} has SHA-256 {actual}, expected {expected}: the file changed or is "
            f"corrupt; delete it and run `fssam2 download {path.stem}` again."
        )
    if not record.is_file():
        record.write_text(actual + "\n")
    return actual


def _recorded(record: Path) -> str | None:
    """The digest in a `<name>.pt.sha256` record: its first word (a second line says where it came from)."""
    words = record.read_text().split()
    return words[0] if words else None


def packaged_path(name: str) -> Path:
    """Where the packaged checkpoint `name` lives (or would live) in this install; not verified."""
    entry = PACKAGED_CHECKPOINTS[name]
    return Path(str(resources.files(entry.package).joinpath(entry.path)))


def _verify_packaged(name: str) -> tuple[Path, str]:
    """The packaged checkpoint's path and digest, after checking the file against its pin."""
    return _checked_pin(PACKAGED_CHECKPOINTS, "PACKAGED_CHECKPOINTS", "SAM2 checkpoint", name)


def _checked_pin(table: Mapping[str, PackagedCheckpoint], table_name: str, what: str, name: str) -> tuple[Path, str]:
    """A packaged file's path and digest (`table[name]`), after checking it against its pin; a
    missing or changed file is one line saying how to regenerate it."""
    entry = table[name]
    path = Path(str(resources.files(entry.package).joinpath(entry.path)))
    if not path.is_file():
        raise InputError(
            f"{what[0].upper()}{what[1:]} {name!r} is not in this install ({path} is missing): regenerate it with "
            f"`{entry.regenerate}` (it writes that file), or reinstall {entry.package} from a release that ships it."
        )
    actual = sha256_of(path)
    if actual != entry.sha256.lower():
        raise InputError(
            f"Packaged {what} {path} has SHA-256 {actual}, expected {entry.sha256}: the file is corrupt or from "
            f"another run; regenerate it with `{entry.regenerate}`, or if you did, pin its digest in "
            f"fssam2.hub.{table_name}[{name!r}]."
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


def base_weights(sam2_config: str, sam2_checkpoint: str | None) -> str | None:
    """Which SAM2 weights a model of `sam2_config` starts from, without reading or fetching them:
    None for `random`; `sam2_checkpoint` as given (a path or a name); unset, the released weights
    of a released config (named as `fssam2 download` names them). InputError for an unset checkpoint
    of a config with no released weights."""
    if sam2_checkpoint == RANDOM_INIT:
        return None
    if sam2_checkpoint is not None:
        return sam2_checkpoint
    if str(sam2_config) in CHECKPOINT_URLS:
        return str(sam2_config)
    raise InputError(
        f"model.sam2_config={sam2_config} has no released weights and model.sam2_checkpoint is unset: give a "
        f"checkpoint file or name (fssam2_tiny has the packaged fssam2_tiny_tracking), or "
        f"model.sam2_checkpoint={RANDOM_INIT} to start from random initialisation."
    )


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
    name: str,
    *,
    sha256: str | None = None,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Download (or resume) the checkpoint of a packaged config name; returns its cached path.
    Released names come from the Hugging Face Hub, verified against its published SHA-256, else from
    Meta's URL; `url` fetches that URL directly. `timeout` is for Meta's URL (the Hub's are
    huggingface_hub's: HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT). A packaged checkpoint name
    (`PACKAGED_CHECKPOINTS`) needs no download: its verified path is returned. `check(path)` raises
    InputError for a fetched file that is not a checkpoint of `name` (`fssam2.build.download` passes
    one that builds the model); the file is then discarded."""
    if name in PACKAGED_CHECKPOINTS:
        if url is not None:
            raise InputError(f"{name!r} ships inside fssam2 and is never downloaded: drop --url.")
        path, actual = _verify_packaged(name)
        if sha256 and actual != sha256.lower():
            raise InputError(
                f"Packaged SAM2 checkpoint {path} has SHA-256 {actual}, not the --sha256 {sha256} you gave: check --sha256."
            )
        return path
    if name not in PACKAGED_CONFIGS and name not in ENCODER_CHECKPOINTS:
        raise InputError(
            f"Unknown SAM2 model {name!r}: use one of {', '.join(CHECKPOINT_URLS)} "
            f"(packaged, no download needed: {', '.join(PACKAGED_CHECKPOINTS)}; GF-SAM's encoders: "
            f"{', '.join(ENCODER_CHECKPOINTS)})."
        )
    direct = url is not None  # --url: that URL only, no Hub
    url = url or CHECKPOINT_URLS.get(name)
    if url is None and name not in ENCODER_CHECKPOINTS:
        packaged = [k for k, v in PACKAGED_CHECKPOINTS.items() if v.config == name]
        also = f" (or load the packaged {', '.join(packaged)} by name, no download needed)" if packaged else ""
        raise InputError(f"{name!r} has no published checkpoint: use one of {', '.join(CHECKPOINT_URLS)}{also}.")
    final = cached_path(name)
    if final.is_file():
        _verify(final, sha256)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    hub_failure: _HubUnavailable | None = None
    if not direct and (name in HUB_CHECKPOINTS or name in ENCODER_CHECKPOINTS):
        try:
            path = _download_from_hub(name, final, sha256, progress, check)
        except _HubUnavailable as err:
            if url is None:  # an encoder: the Hub is its only source
                raise InputError(
                    f"Cannot fetch {name}: the Hugging Face Hub ({err.where}) is unavailable ({err}); "
                    f"put the file at {final} or set HF_ENDPOINT to a mirror."
                ) from err
            hub_failure = err
            trust = (
                "checked against --sha256" if sha256 else "whose SHA-256 is trusted on first use (Meta publishes none)"
            )
            warnings.warn(
                f"SAM2 checkpoint {name}: the Hugging Face Hub ({err.where}) is unavailable ({err}); "
                f"fetching {url} instead, {trust}.",
                stacklevel=2,
            )
        else:
            part.unlink(missing_ok=True)  # a partial download of Meta's file from an earlier fallback
            return path
    assert url is not None, "an encoder returned or raised above"
    try:
        fetch_url(url, part, final, progress=progress, timeout=timeout)
    except Unreachable as err:
        if hub_failure is None:
            raise
        raise InputError(
            f"Cannot fetch {name}: the Hugging Face Hub ({hub_failure.where}: {hub_failure}) and {url} "
            f"({err.reason}) are unreachable; put the file at {final} or set HF_ENDPOINT to a mirror."
        ) from err
    actual = sha256_of(part)
    if sha256 and actual != sha256.lower():
        part.unlink()
        raise InputError(
            f"Download of {url} has SHA-256 {actual}, expected {sha256}: it was discarded; check --sha256 and run again."
        )
    try:
        if check is not None:
            check(part)
    except InputError as err:
        part.unlink()
        raise InputError(f"Download of {url} is not a {name} checkpoint and was discarded: {err}") from err
    source = f"--sha256 given for {url}" if sha256 else f"trusted on first use: the first complete download of {url}"
    _place(part, final, actual, source)
    return final


class _HubUnavailable(Exception):
    """The Hub (or, offline, its cache) did not provide the file; Meta's URL is tried next."""

    def __init__(self, reason: str, where: str) -> None:
        super().__init__(reason)
        self.where = where  # "repo, file at endpoint"


class _QuietTqdm(tqdm):
    """huggingface_hub's progress bar, switched off (download(progress=False))."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)
        super().__init__(*args, **{**kwargs, "disable": True})


def _brief(err: BaseException) -> str:
    """An exception as a short one-line reason."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}" if text else type(err).__name__


def _hub_fetch(repo_id: str, filename: str, progress: bool) -> tuple[Path, str, str]:
    """The Hub's file in the Hugging Face cache (downloaded when absent), the SHA-256 the Hub publishes
    for it, and where that digest came from. Raises _HubUnavailable when neither has the file."""
    import httpx2  # huggingface_hub 2.x's HTTP client: its transport errors are not OSErrors
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")  # read now, not at import
    where = f"{repo_id}, {filename} at {endpoint}"

    def download_file() -> str:
        quiet = None if progress else _QuietTqdm
        return hf_hub_download(
            repo_id=repo_id, filename=filename, revision=HUB_REVISION, endpoint=endpoint, tqdm_class=quiet
        )

    try:
        if constants.is_offline_mode():  # HF_HUB_OFFLINE: only what the Hugging Face cache holds
            try:
                pointer = Path(download_file())
            except FileNotFoundError as err:  # LocalEntryNotFoundError
                raise _HubUnavailable(
                    "HF_HUB_OFFLINE is set and the Hugging Face cache does not hold it", where
                ) from err
            # The cache names a blob by the ETag the Hub gave it, for an LFS file its SHA-256.
            published = pointer.resolve().name
            if not _SHA256.fullmatch(published):
                raise _HubUnavailable(
                    "HF_HUB_OFFLINE is set and the Hugging Face cache records no SHA-256 for it", where
                )
            return pointer, published, f"the Hugging Face Hub's published SHA-256 of {repo_id}/{filename}, as cached"
        url = hf_hub_url(repo_id, filename, revision=HUB_REVISION, endpoint=endpoint)
        metadata = get_hf_file_metadata(url)
        # An LFS file's ETag is the SHA-256 of its content (its LFS object id).
        published = (metadata.etag or "").lower()
        if not _SHA256.fullmatch(published):
            raise _HubUnavailable(f"it publishes no SHA-256 for the file (ETag {metadata.etag!r})", where)
        pointer = Path(download_file())
    except (OSError, httpx2.HTTPError) as err:  # huggingface_hub's errors are OSErrors
        raise _HubUnavailable(_brief(err), where) from err
    commit = f" at commit {metadata.commit_hash}" if metadata.commit_hash else ""
    return pointer, published, f"the Hugging Face Hub's published SHA-256 of {repo_id}/{filename}{commit} ({endpoint})"


def _download_from_hub(
    name: str, final: Path, sha256: str | None, progress: bool, check: Callable[[Path], None] | None
) -> Path:
    """Fetch `name` from the Hub, verify it against the published SHA-256 and place it at `final`."""
    repo_id, filename = _hub_file(name)
    pointer, published, source = _hub_fetch(repo_id, filename, progress)
    blob = pointer.resolve()
    actual = sha256_of(blob)
    if actual != published:
        for path in (pointer, blob):  # a corrupt download must not be found in the cache again
            with contextlib.suppress(OSError):
                path.unlink()
        raise InputError(
            f"Hugging Face Hub file {repo_id}/{filename} arrived with SHA-256 {actual}, but the Hub publishes "
            f"{published}: it was discarded; run `fssam2 download {name}` again (or unset HF_ENDPOINT if it names a mirror)."
        )
    if sha256 and actual != sha256.lower():
        raise InputError(
            f"Hugging Face Hub file {repo_id}/{filename} has SHA-256 {actual} (as the Hub publishes), not the "
            f"--sha256 {sha256} you gave: check --sha256."
        )
    temp = final.with_name(f".{final.name}.{uuid4().hex[:12]}.tmp")
    try:
        try:
            os.link(blob, temp)  # no second copy of the file where the caches share a filesystem
        except OSError:
            shutil.copyfile(blob, temp)
        try:
            if check is not None:
                check(temp)
        except InputError as err:
            raise InputError(f"Hugging Face Hub file {repo_id}/{filename} is not a {name} checkpoint: {err}") from err
        _place(temp, final, actual, source)
    finally:
        temp.unlink(missing_ok=True)
    return final


def _place(source_file: Path, final: Path, digest: str, source: str) -> None:
    """Move a checked file to its final name, then record its digest and where the digest came from."""
    os.replace(source_file, final)
    record = final.with_name(final.name + ".sha256")
    temp = record.with_name(f".{record.name}.{uuid4().hex[:12]}.tmp")
    temp.write_text(f"{digest}\nsource: {source}\n")
    os.replace(temp, record)
