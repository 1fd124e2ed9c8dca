"""Build a SAM2 model from a packaged config name or a yaml file, on any device.

sam2's own `build_sam2` only finds yaml files inside the sam2 package and defaults to CUDA;
this builder reads any yaml with OmegaConf, instantiates it with hydra, applies the same
post-processing overrides as `sam2.build_sam.build_sam2`, and checks checkpoints key by key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sam2.modeling.sam2_base import SAM2Base

from fssam2 import hub
from fssam2.errors import InputError
from fssam2.hub import checkpoint_config, resolve_checkpoint
from fssam2.registry import PACKAGED_CONFIGS

# What sam2's build_sam2 sets by default (apply_postprocessing=True): in eval mode the mask
# decoder falls back to its multimask output when the single mask is unstable.
POSTPROCESSING = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}

_BACKBONE_STRIDE = 16


def resolve_config(config: str | Path) -> Path:
    """Return the yaml file for a packaged config name or an existing yaml path."""
    name = str(config)
    if name in PACKAGED_CONFIGS:
        package, inner = PACKAGED_CONFIGS[name]
        return Path(str(resources.files(package).joinpath(inner)))
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise InputError(
        f"SAM2 config {name!r} is neither a packaged config ({', '.join(PACKAGED_CONFIGS)}) "
        "nor an existing yaml file: pass one of those names or the path of a SAM2 model yaml."
    )


def load_model_config(config: str | Path, image_size: int | None = None) -> DictConfig:
    """Read a SAM2 yaml, apply the post-processing overrides and an optional image size."""
    path = resolve_config(config)
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml syntax errors come in several types
        raise InputError(f"SAM2 config {path} is not valid yaml ({err}): fix the file.") from err
    if not isinstance(cfg, DictConfig) or "model" not in cfg:
        raise InputError(
            f"SAM2 config {path} has no top-level 'model' section: it must be a SAM2 model "
            "yaml such as sam2's configs/sam2.1/sam2.1_hiera_b+.yaml."
        )
    model = cfg.model
    extra = model.get("sam_mask_decoder_extra_args") or {}
    model.sam_mask_decoder_extra_args = {**extra, **POSTPROCESSING}
    if image_size is not None:
        if image_size <= 0 or image_size % 32 != 0:
            raise InputError(
                f"image_size={image_size} is not a positive multiple of 32 (SAM2's Hiera "
                "needs that): use e.g. 128, 512 or 1024."
            )
        model.image_size = image_size
        side = image_size // _BACKBONE_STRIDE
        layer = model.memory_attention.layer
        for attn in ("self_attention", "cross_attention"):
            if "feat_sizes" in layer[attn]:
                layer[attn].feat_sizes = [side, side]
    OmegaConf.resolve(cfg)
    return cfg


def check_checkpoint_config(config: str | Path, checkpoint: str | Path) -> None:
    """Refuse a packaged checkpoint name (`fssam2.hub.PACKAGED_CHECKPOINTS`) with a config other
    than the one it was made with; paths and downloaded names are checked key by key on load."""
    expected = checkpoint_config(checkpoint)
    if expected is None or resolve_config(config).resolve() == resolve_config(expected).resolve():
        return
    raise InputError(
        f"SAM2 checkpoint {str(checkpoint)!r} belongs to config {expected!r}, not {str(config)!r}: "
        f"use config {expected!r} with it (e.g. --model.sam2_config {expected})."
    )


def read_checkpoint(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """Load a SAM2 checkpoint in Meta's format ({"model": state_dict}) or a bare state dict,
    from a path, a downloaded name (see `fssam2 download`) or a packaged name."""
    path = resolve_checkpoint(checkpoint)
    if not path.is_file():
        raise InputError(
            f"SAM2 checkpoint {path} does not exist: download it from Meta's SAM2 release "
            "(e.g. sam2.1_hiera_base_plus.pt) or fix the path."
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"SAM2 checkpoint {path} could not be read as a PyTorch file ({type(err).__name__}:"
            f" {str(err)[:200]}): the file is corrupt or truncated; download it again."
        ) from err
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"SAM2 checkpoint {path} holds no state dict (expected {{'model': state_dict}} as "
            "in Meta's release): pass a SAM2 checkpoint file."
        )
    return state


def _describe(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def load_checkpoint(model: torch.nn.Module, checkpoint: str | Path, config: str | Path) -> None:
    """Load a checkpoint into `model`, refusing any missing, unexpected or reshaped key."""
    state = read_checkpoint(checkpoint)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        if reshaped:
            parts.append(f"shape mismatches (checkpoint vs model): {_describe(reshaped)}")
        raise InputError(
            f"SAM2 checkpoint {checkpoint} does not fit config {config!s}: {'; '.join(parts)}. "
            "Pass the config the checkpoint was released with (e.g. sam2.1_hiera_b+ for "
            "sam2.1_hiera_base_plus.pt)."
        )
    model.load_state_dict(state, strict=True)


def build_sam2(
    config: str | Path,
    checkpoint: str | Path | None = None,
    *,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
) -> SAM2Base:
    """Build SAM2 as the published code does, in eval mode, on `device`.

    Args:
        config: a packaged name (``sam2.1_hiera_t``, ``_s``, ``_b+``, ``_l``, ``fssam2_tiny``)
            or the path of a SAM2 model yaml.
        checkpoint: a checkpoint file in Meta's format, a name fetched by `fssam2 download`
            (e.g. ``sam2.1_hiera_b+``) or a packaged name (``fssam2_tiny_tracking``, for config
            ``fssam2_tiny``); None keeps the random initialisation.
        image_size: square input size, a multiple of 32; None keeps the config's (1024).
        device: where the model lives.
    """
    if checkpoint is not None:
        check_checkpoint_config(config, checkpoint)  # before the (slow) build
    cfg = load_model_config(config, image_size)
    model = instantiate(cfg.model, _recursive_=True)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, config)
    return model.to(device).eval()


def check_loads(name: str, path: Path) -> None:
    """Refuse a file that is not a state dict of config `name` (InputError): builds the whole SAM2."""
    load_checkpoint(instantiate(load_model_config(name).model, _recursive_=True), path, name)


def download(name: str, **kwargs: Any) -> Path:
    """`fssam2.hub.download` (same keywords), refusing a fetched file that does not load as config `name`."""
    return hub.download(name, check=lambda path: check_loads(name, path), **kwargs)
