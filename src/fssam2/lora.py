"""Where LoRA goes in SAM2, and how adapter state is saved and loaded.

Layers are matched by their full module path inside SAM2Base, never by their leaf name alone:
"proj", "q_proj", "out_proj" also name layers of the mask decoder, which stays untouched.
Layers are built with merge_weights=False, so eval mode never folds the delta into the base
weight on its own. `merge_lora_` folds it in explicitly for fast evaluation and `unmerge_lora_`
puts the very same base tensors back (no subtraction, so no drift); while merged,
`unmerged_weights` gives the base weights a checkpoint must hold instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import loralib
import torch
from torch import nn

from fssam2.errors import InputError, state_mismatch

# Module paths (inside SAM2Base) of the adapted layers, one pattern per group.
IMAGE_ENCODER_TARGETS = (
    r"image_encoder\.trunk\.blocks\.\d+\.attn\.qkv",  # attention qkv
    r"image_encoder\.trunk\.blocks\.\d+\.attn\.proj",  # attention output projection
    r"image_encoder\.trunk\.blocks\.\d+\.proj",  # stage-transition projection
    r"image_encoder\.trunk\.patch_embed\.proj",  # patch embedding (a 7x7 conv)
)
MEMORY_ATTENTION_TARGETS = (r"memory_attention\.layers\.\d+\.(self_attn|cross_attn_image)\.(q|k|v|out)_proj",)
MEMORY_ENCODER_TARGETS = (r"memory_encoder\.out_proj",)


@dataclass
class LoRAConfig:
    """LoRA ranks and scales per SAM2 component; the defaults are the published FS-SAM2 setting."""

    image_encoder_rank: int = 4  # rank in Hiera's qkv / proj layers and the patch-embed conv; 0 = off
    image_encoder_alpha: float = 16.0  # scaling numerator: delta = B @ A * alpha / rank
    memory_attention_rank: int = 32  # rank in memory attention's q/k/v/out projections; 0 = off
    memory_attention_alpha: float = 16.0
    memory_encoder_rank: int = 32  # rank in the memory encoder's 1x1 out_proj conv; 0 = off
    memory_encoder_alpha: float = 16.0
    dropout: float = 0.1  # dropout on the LoRA branch input (loralib applies it to Linear only)

    def groups(self) -> list[tuple[tuple[str, ...], int, float]]:
        """(path patterns, rank, alpha) per component, components with rank 0 left out."""
        groups = [
            (IMAGE_ENCODER_TARGETS, self.image_encoder_rank, self.image_encoder_alpha),
            (MEMORY_ATTENTION_TARGETS, self.memory_attention_rank, self.memory_attention_alpha),
            (MEMORY_ENCODER_TARGETS, self.memory_encoder_rank, self.memory_encoder_alpha),
        ]
        for _, rank, _ in groups:
            if rank < 0:
                raise InputError(f"LoRA rank {rank} is negative: use a rank >= 1, or 0 to leave a component out.")
        return [g for g in groups if g[1] > 0]


def _lora_linear(layer: nn.Linear, rank: int, alpha: float, dropout: float) -> loralib.Linear:
    new = loralib.Linear(
        layer.in_features,
        layer.out_features,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias=layer.bias is not None,
        merge_weights=False,
    )
    new.weight.data.copy_(layer.weight.data)
    if layer.bias is not None:
        new.bias.data.copy_(layer.bias.data)
    return new


def _lora_conv(layer: nn.Conv2d, rank: int, alpha: float, dropout: float, path: str) -> loralib.Conv2d:
    kh, kw = layer.kernel_size
    if kh != kw:
        raise InputError(
            f"LoRA target {path} has a non-square kernel {layer.kernel_size}: loralib supports square kernels only."
        )
    new = loralib.Conv2d(
        layer.in_channels,
        layer.out_channels,
        kh,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
        merge_weights=False,
    )
    new.conv.weight.data.copy_(layer.weight.data)
    if layer.bias is not None:
        new.conv.bias.data.copy_(layer.bias.data)
    return new


def inject_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Replace the targeted layers of a SAM2 model by loralib layers, in place.

    Call it after the pretrained weights are loaded: the base weights are copied into the new
    layers. Returns the adapted module paths. Raises if nothing matches (not a SAM2 model).
    """
    adapted = []
    for patterns, rank, alpha in config.groups():
        regex = re.compile("|".join(f"(?:{p})" for p in patterns))
        for path, layer in list(model.named_modules()):
            if not regex.fullmatch(path) or isinstance(layer, loralib.LoRALayer):
                continue
            if type(layer) is nn.Linear:
                new = _lora_linear(layer, rank, alpha, config.dropout)
            elif type(layer) is nn.Conv2d:
                new = _lora_conv(layer, rank, alpha, config.dropout, path)
            else:
                raise InputError(f"LoRA target {path} is a {type(layer).__name__}, not a Linear or Conv2d.")
            new.to(device=layer.weight.device, dtype=layer.weight.dtype)
            new.train(layer.training)
            parent_path, _, leaf = path.rpartition(".")
            setattr(model.get_submodule(parent_path), leaf, new)
            adapted.append(path)
    if config.groups() and not adapted:
        raise InputError("No LoRA target found: the model is not a SAM2Base with the SAM2.1 module layout.")
    return adapted


def is_lora_parameter(name: str) -> bool:
    """True for the low-rank factors loralib adds (lora_A, lora_B)."""
    return name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")


def mark_only_lora_trainable(model: nn.Module) -> None:
    """Freeze every parameter but the LoRA factors."""
    for name, param in model.named_parameters():
        param.requires_grad_(is_lora_parameter(name))


def lora_layers(model: nn.Module) -> dict[str, loralib.LoRALayer]:
    """Module path -> loralib layer with rank > 0."""
    return {n: m for n, m in model.named_modules() if isinstance(m, loralib.LoRALayer) and getattr(m, "r", 0) > 0}


def base_weight_name(layer: loralib.LoRALayer) -> str:
    """The base weight's name inside the layer (loralib's convs wrap an nn.Conv2d)."""
    return "conv.weight" if isinstance(layer, loralib.ConvLoRA) else "weight"


def lora_delta(layer: loralib.LoRALayer) -> torch.Tensor:
    """The low-rank update B @ A * scaling, in the base weight's shape."""
    weight = layer.get_parameter(base_weight_name(layer))
    delta: torch.Tensor = (layer.lora_B @ layer.lora_A).view(weight.shape) * layer.scaling
    return delta


@torch.no_grad()
def merge_lora_(model: nn.Module) -> int:
    """Fold every LoRA delta into its base weight, in place; the layers then skip their LoRA
    branch. Returns how many layers were merged (already merged ones are left alone)."""
    merged = 0
    for layer in lora_layers(model).values():
        if layer.merged:
            continue
        weight = layer.get_parameter(base_weight_name(layer))
        layer._unmerged_weight = weight.data
        weight.data = weight.data + lora_delta(layer).to(weight.dtype)
        layer.merged = True
        merged += 1
    return merged


def unmerge_lora_(model: nn.Module) -> None:
    """Undo `merge_lora_` exactly: the original base tensors are put back."""
    for layer in lora_layers(model).values():
        if getattr(layer, "_unmerged_weight", None) is not None:
            layer.get_parameter(base_weight_name(layer)).data = layer._unmerged_weight
            layer._unmerged_weight = None
            layer.merged = False


def unmerged_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name -> base weight, for every layer `merge_lora_` has merged (else empty)."""
    return {
        f"{path}.{base_weight_name(layer)}": layer._unmerged_weight
        for path, layer in lora_layers(model).items()
        if getattr(layer, "_unmerged_weight", None) is not None
    }


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter state alone: every LoRA factor of `model`, keyed by its parameter path."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if is_lora_parameter(k)}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter state saved by `lora_state_dict`, refusing any key or shape mismatch."""
    own = lora_state_dict(model)
    differs = state_mismatch(own, state)
    if differs:
        raise InputError(
            f"Adapter state does not fit this model (different LoRA config or base model): {differs}. "
            "Build the model with the LoRAConfig the adapter was trained with."
        )
    model.load_state_dict(state, strict=False)
