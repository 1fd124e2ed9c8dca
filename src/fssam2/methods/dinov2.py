"""DINOv2 as GF-SAM reads it: timm's ViT with DINOv2's weights, the tokens of the last block before
the final norm, without the class token.

timm loads DINOv2: its `VisionTransformer` has DINOv2's module tree (LayerScale, the same MLP
and attention, LayerNorm eps 1e-6), its ViT-L/14 at 518 px is the official architecture, and its
`checkpoint_filter_fn` maps Meta's own `dinov2_vitl14_pretrain.pth` keys to it, so either file
loads. The released weights are fetched by name from the Hugging Face Hub (timm's repos) through
`fssam2.hub`, which verifies them against the SHA-256 the Hub publishes and caches them beside
SAM2's checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

if TYPE_CHECKING:  # timm is imported where a ViT is built: fssam2 imports without it until then
    from timm.models.vision_transformer import VisionTransformer

from fssam2 import hub
from fssam2.errors import InputError, state_mismatch
from fssam2.registry import RANDOM_INIT


class Architecture(NamedTuple):
    """A DINOv2 ViT (patch 14, LayerScale 1e-5, MLP feed-forward, no registers)."""

    embed_dim: int
    depth: int
    num_heads: int
    img_size: int  # the side the encoder sees: images are resized to it


# Encoder names -> architecture. The released ones have weights by name (`fssam2.hub.ENCODER_CHECKPOINTS`);
# dinov2_tiny has none: a ViT of the same family for tests and the miniature (encoder_checkpoint: random).
ENCODERS: dict[str, Architecture] = {
    "dinov2_vits14": Architecture(384, 12, 6, 518),
    "dinov2_vitb14": Architecture(768, 12, 12, 518),
    "dinov2_vitl14": Architecture(1024, 24, 16, 518),
    "dinov2_tiny": Architecture(48, 2, 3, 98),
}
PATCH = 14


def dinov2_vit(name: str) -> VisionTransformer:
    """The ViT of encoder `name`, randomly initialised."""
    from timm.models.vision_transformer import VisionTransformer

    arch = ENCODERS[name]
    return VisionTransformer(
        img_size=arch.img_size,
        patch_size=PATCH,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        init_values=1e-5,
        qkv_bias=True,
        num_classes=0,
    )


class SemanticEncoder(nn.Module):
    """A DINOv2 ViT as GF-SAM reads it: images [N, 3, S, S] normalised (ImageNet mean and std) ->
    tokens [N, h*w, C] of the last block before the final norm, row-major on the h x w grid.
    Images are resized to the encoder's side bilinearly without antialias, as GF-SAM's torchvision
    0.14 `Resize` does to a tensor."""

    def __init__(self, vit: VisionTransformer, name: str = "") -> None:
        super().__init__()
        self.vit = vit.eval()
        self.name = name
        self.side = int(vit.patch_embed.img_size[0])
        self.grid = self.side // int(vit.patch_embed.patch_size[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(self.side, self.side), mode="bilinear", align_corners=False)
        out = self.vit.forward_intermediates(x, indices=1, norm=False, output_fmt="NLC", intermediates_only=True)
        assert isinstance(out, list), "intermediates_only: the list of the blocks' tokens"
        return out[-1]


def is_safetensors(path: Path) -> bool:
    """Whether a file is safetensors (by its content: an 8-byte header length, then a JSON header),
    whatever its name (the downloader checks a file under a temporary name)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A DINOv2 state dict from a safetensors file (timm's) or a PyTorch file (Meta's .pth)."""
    if not path.is_file():
        raise InputError(f"DINOv2 weights {path} do not exist: give a file, or the encoder's name to fetch them.")
    try:
        if is_safetensors(path):
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"DINOv2 weights {path} could not be read ({type(err).__name__}): the file is corrupt or not DINOv2's."
        ) from err
    if isinstance(state, dict) and isinstance(state.get("teacher"), dict):  # a DINOv2 training checkpoint
        state = {k.removeprefix("backbone."): v for k, v in state["teacher"].items() if k.startswith("backbone.")}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"DINOv2 weights {path} hold no state dict: give a DINOv2 checkpoint.")
    return state


def load_weights(vit: VisionTransformer, path: Path, name: str) -> None:
    """Load a DINOv2 file (timm's or Meta's keys) into `vit`, refusing any missing, unexpected or
    reshaped entry in one line."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = checkpoint_filter_fn(read_weights(path), vit)
    own = vit.state_dict()
    differs = state_mismatch(own, state)
    if differs:
        raise InputError(
            f"DINOv2 weights {path} do not fit encoder {name}: {differs}; give the encoder the file was released for (model.method_args.encoder)."
        )
    vit.load_state_dict(state, strict=True)


def check_loads(name: str, path: Path) -> None:
    """Refuse a file that is not a state dict of encoder `name` (InputError)."""
    load_weights(dinov2_vit(name), path, name)


def encoder_weights(name: str, checkpoint: str | None) -> str | None:
    """Which weights the DINOv2 encoder `name` loads, without reading or fetching them: None for
    "random"; `name` itself for its released weights (`checkpoint` unset); else `checkpoint`, a file.
    InputError for an unknown encoder, or an unset checkpoint of one without released weights."""
    if name not in ENCODERS:
        raise InputError(
            f"model.method_args.encoder={name} is not a known encoder: use one of {', '.join(ENCODERS)}, "
            "or sam2 (SAM2's own image features)."
        )
    if checkpoint == RANDOM_INIT:
        return None
    if checkpoint is None and name not in hub.ENCODER_CHECKPOINTS:
        raise InputError(
            f"Encoder {name} has no released weights: set model.method_args.encoder_checkpoint to a file or "
            f"{RANDOM_INIT}."
        )
    return name if checkpoint is None else checkpoint


def build_semantic_encoder(name: str, checkpoint: str | None = None) -> SemanticEncoder:
    """The DINOv2 encoder `name` (`ENCODERS`) with weights: None, the released ones by name (from the
    cache; fetched and verified when absent); "random", random initialisation; else a file."""
    weights = encoder_weights(name, checkpoint)
    vit = dinov2_vit(name)
    if weights is None:
        return SemanticEncoder(vit, name)
    if checkpoint is None:
        path = hub.download(name, check=lambda p: check_loads(name, p))
    else:
        path = Path(checkpoint).expanduser()
    load_weights(vit, path, name)
    return SemanticEncoder(vit, name)
