"""Adapter files: the adapter weights of a training run with what they need to be used again.

An adapter is a safetensors file holding only a method's adapters (FS-SAM2's LoRA factors, SANSA's
AdaptFormers), with metadata: format, method and its options, base model (config name), its
checkpoint (a name, an absolute path or "random") and the file's SHA-256, LoRA config (FS-SAM2),
SAM2's input size (the config's when the run gave none), dataset, fold, shot and the best
validation mIoU. Files written before methods existed name no method: they are FS-SAM2's. An
adapter file is a new file: an existing one is never written over. `merge_lora` folds the factors
into the base weights, giving a plain SAM2 state dict (Meta's key names) that needs no adapter at
inference.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fssam2 import hub
from fssam2.build import load_model_config
from fssam2.errors import InputError
from fssam2.files import check_new, create
from fssam2.hub import checkpoint_sha256
from fssam2.lora import LoRAConfig, is_lora_parameter, lora_delta, lora_layers
from fssam2.methods import DEFAULT_METHOD, FewShotMethod, FewShotSAM2, method_class
from fssam2.registry import RANDOM_INIT

FORMAT = "fssam2-adapter/1"
# An adapter's base_sha256 for a base with no weights file (model.sam2_checkpoint = registry.RANDOM_INIT).
RANDOM_BASE_SHA256 = "random-init"


def base_fingerprint(checkpoint: str | Path | None) -> str:
    """SHA-256 of the base checkpoint file, or "random-init" for a model built without one
    (model.sam2_checkpoint "random", or None in checkpoints written before that was explicit)."""
    return RANDOM_BASE_SHA256 if checkpoint in (None, RANDOM_INIT) else checkpoint_sha256(checkpoint)


def recorded_checkpoint(checkpoint: str | Path | None) -> str:
    """How an adapter names its base checkpoint: "random", a downloaded or packaged name as is, or
    the absolute path of a file (so that it is found again from any folder)."""
    if checkpoint in (None, RANDOM_INIT):
        return RANDOM_INIT
    path = Path(checkpoint).expanduser()
    return str(path.resolve()) if path.is_file() else str(checkpoint)


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Checkpoint {path} does not exist: pass a .ckpt written by `fssam2 fit`.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise InputError(
            f"Checkpoint {path} could not be read ({type(err).__name__}): it is corrupt or not a PyTorch file."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "sam2_config" not in ckpt.get("hyper_parameters", {}):
        raise InputError(f"{path} is not a checkpoint written by `fssam2 fit` (no state_dict / hyper_parameters).")
    return ckpt


def module_kwargs(ckpt: dict[str, Any]) -> dict[str, Any]:
    """FSSAM2Module's init arguments from a training checkpoint (Lightning's own keys dropped).
    Checkpoints written before random initialisation was explicit say None for it."""
    kwargs = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    if kwargs.get("sam2_checkpoint") is None:
        kwargs["sam2_checkpoint"] = RANDOM_INIT
    return kwargs


def export_adapter(ckpt_path: str | Path, output: str | Path, option: str = "output") -> dict[str, str]:
    """Write the adapter of a `fssam2 fit` checkpoint to `output`, a new file (an existing one is
    refused before the checkpoint is read, naming `option`); returns its metadata."""
    output = check_new(output, option)
    tensors, metadata = adapter_of(ckpt_path)
    create(output, adapter_writer(tensors, metadata), option)
    return metadata


def adapter_writer(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Callable[[Path], None]:
    """What writes an adapter file (`adapter_of`'s tensors and metadata) at a path: for `fssam2.files`."""
    return lambda path: save_file(tensors, str(path), metadata=metadata)


def adapter_of(ckpt_path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The adapter weights of a `fssam2 fit` checkpoint and the metadata an adapter file records."""
    ckpt = read_training_checkpoint(ckpt_path)
    hp = module_kwargs(ckpt)
    method = str(hp.get("method", DEFAULT_METHOD))
    kind = method_class(method)
    fssam2 = issubclass(kind, FewShotSAM2)
    if fssam2 and (hp.get("lora") is None or hp.get("trainable") == "all"):
        raise InputError(
            f"{ckpt_path} trained every parameter (model.trainable=all), so there is no adapter to export: "
            "use `fssam2 export --merge` to write the whole model."
        )
    lora = None if not fssam2 else hp["lora"] if isinstance(hp["lora"], dict) else dataclasses.asdict(hp["lora"])
    tensors = {
        k.removeprefix("model."): v.contiguous()
        for k, v in ckpt["state_dict"].items()
        if kind.is_adapter_key(k.removeprefix("model."))
    }
    if not tensors:
        raise InputError(f"{ckpt_path} holds no adapter weights of {kind.__name__}: it has nothing to export.")
    best = next((v.get("best_model_score") for k, v in ckpt.get("callbacks", {}).items() if "val/miou" in k), None)
    data = ckpt.get("datamodule_hyper_parameters", {})
    metadata = {
        "format": FORMAT,
        "method": method,
        "method_args": json.dumps(hp.get("method_args") or {}),
        "base_model": str(hp["sam2_config"]),
        "base_checkpoint": recorded_checkpoint(hp.get("sam2_checkpoint")),
        "base_sha256": base_fingerprint(hp.get("sam2_checkpoint")),
        "lora": json.dumps(None if lora is None else dict(lora)),
        "image_size": str(hp.get("image_size") or load_model_config(hp["sam2_config"]).model.image_size),
        "dataset": str(data.get("dataset", "unknown")),
        "fold": str(data.get("fold", "unknown")),
        "shot": str(data.get("shot", "unknown")),
        "best_val_miou": "unknown" if best is None else f"{float(best):.4f}",
        "epoch": str(ckpt.get("epoch")),
    }
    return tensors, metadata


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of an adapter file (or of a packaged adapter by name,
    `fssam2.hub.PACKAGED_ADAPTERS`), refusing files that are not fssam2 adapters."""
    path = Path(path).expanduser()
    if str(path) in hub.PACKAGED_ADAPTERS and not path.exists():
        path = hub.packaged_adapter(str(path))
    if not path.is_file():
        raise InputError(f"Adapter {path} does not exist: create one with `fssam2 export CKPT --output FILE`.")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"Adapter {path} is corrupt or not a safetensors file ({err}): export it again.") from err
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path} is not an fssam2 adapter (no '{FORMAT}' metadata): create one with `fssam2 export`.")
    return tensors, metadata


def adapter_method(metadata: dict[str, str]) -> tuple[type[FewShotMethod], dict[str, Any]]:
    """The method class of an adapter file and the options to build it with (FS-SAM2's LoRA config)."""
    kind = method_class(metadata.get("method", DEFAULT_METHOD))
    if issubclass(kind, FewShotSAM2):
        return kind, {"lora": LoRAConfig(**json.loads(metadata["lora"]))}
    return kind, json.loads(metadata.get("method_args", "{}"))


def adapter_base_checkpoint(metadata: dict[str, str], path: str | Path) -> str | None:
    """The checkpoint (None: random initialisation) of the base the adapter was trained on, as its
    metadata records it. Adapters exported before it was recorded name only its SHA-256: a packaged
    checkpoint with that digest or the released weights of a released config stand in (`check_base`
    verifies them); any other base is an InputError asking for the file."""
    config, recorded = metadata["base_model"], metadata.get("base_checkpoint")
    if recorded is None:
        if metadata["base_sha256"] == RANDOM_BASE_SHA256:
            recorded = RANDOM_INIT
        else:
            pinned = [n for n, c in hub.PACKAGED_CHECKPOINTS.items() if c.sha256 == metadata["base_sha256"]]
            recorded = pinned[0] if pinned else (config if config in hub.CHECKPOINT_URLS else None)
    if recorded is None:
        raise InputError(
            f"Adapter {path} records its base {config} but not the checkpoint file (SHA-256 "
            f"{metadata['base_sha256']}): pass --sam2 {config} --sam2-checkpoint FILE with that file."
        )
    return None if recorded == RANDOM_INIT else recorded


def check_base(metadata: dict[str, str], path: str | Path, base_model: str, base_checkpoint: str | Path | None) -> None:
    """Refuse an adapter trained on another base model or other base weights."""
    if metadata["base_model"] != base_model:
        raise InputError(
            f"Adapter {path} was trained on {metadata['base_model']}, not {base_model}: use --sam2 {metadata['base_model']}."
        )
    if base_checkpoint is not None and not hub.resolve_checkpoint(base_checkpoint).is_file():
        raise InputError(
            f"SAM2 checkpoint {base_checkpoint} does not exist: pass --sam2-checkpoint with the file adapter {path} "
            f"was trained on (SHA-256 {metadata['base_sha256']})."
        )
    fingerprint = base_fingerprint(base_checkpoint)
    if metadata["base_sha256"] != fingerprint:
        raise InputError(
            f"Adapter {path} was trained on {base_model} weights with SHA-256 {metadata['base_sha256']}, but the base "
            f"given has {fingerprint}: use the checkpoint the adapter was trained on."
        )


def merge_lora(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of `model`'s SAM2 with every LoRA delta folded into its base weight, under
    SAM2's own key names (no lora_A / lora_B, no `.conv.` of loralib's conv wrapper)."""
    merged = {}
    layers = lora_layers(model)
    for key, value in model.state_dict().items():
        if is_lora_parameter(key):
            continue
        owner, _, leaf = key.rpartition(".")
        if owner.endswith(".conv") and owner[: -len(".conv")] in layers:
            owner = owner[: -len(".conv")]
            key = f"{owner}.{leaf}"
        if owner in layers and leaf == "weight":
            value = value + lora_delta(layers[owner])
        merged[key.removeprefix("sam2.")] = value.detach().clone()
    return merged
