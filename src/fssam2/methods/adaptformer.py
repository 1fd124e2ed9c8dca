"""AdaptFormer adapters beside the MLP of Hiera blocks, as SANSA places them.

An adapter is LayerNorm -> Linear down -> ReLU -> Linear up, times a fixed scale; its up
projection starts at zero, so a fresh adapter changes nothing. In a block of an adapted stage,
the adapter reads the block's input to the MLP residual (after attention) and its output is added
to the block's output: x = x + MLP(norm2(x)) + adapter(x). Parameter names are SANSA's
(`...trunk.blocks.N.adapter.{adapter_layer_norm_before,down_proj,up_proj}`), so its released
adapter files load by key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from sam2.modeling.backbones.hieradet import Hiera, MultiScaleBlock
from torch import nn

from fssam2.errors import InputError, is_number


@dataclass(frozen=True)
class AdapterConfig:
    """Where the adapters go and how wide they are (defaults: SANSA's COCO-20i / FSS-1000 setting)."""

    stages: tuple[int, ...] = (2, 3)  # 0-based Hiera stages whose every block gets an adapter
    channel_factor: float = 0.3  # bottleneck width = int(the block's input width * channel_factor)
    scale: float = 0.1  # the adapter's output is multiplied by this

    def __post_init__(self) -> None:
        wrong = [
            f"{name}={value!r} (give {kind})"
            for name, value, ok, kind in (
                ("stages", self.stages, isinstance(self.stages, tuple)
                 and all(isinstance(s, int) and not isinstance(s, bool) for s in self.stages),
                 "Hiera stage numbers, e.g. [2, 3]"),
                ("channel_factor", self.channel_factor, is_number(self.channel_factor) and self.channel_factor > 0,
                 "a number > 0"),
                ("scale", self.scale, is_number(self.scale), "a finite number"),
            )
            if not ok
        ]  # fmt: skip
        if wrong:
            raise InputError(f"model.method_args.adapter: {'; '.join(wrong)}.")


class AdaptFormer(nn.Module):
    """x [..., C] -> scale * up(relu(down(layer_norm(x)))), [..., C]."""

    def __init__(self, channels: int, bottleneck: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.adapter_layer_norm_before = nn.LayerNorm(channels)
        self.down_proj = nn.Linear(channels, bottleneck)
        self.up_proj = nn.Linear(bottleneck, channels)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down_proj.bias)
            nn.init.zeros_(self.up_proj.weight)
            nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_proj(torch.relu(self.down_proj(self.adapter_layer_norm_before(x)))) * self.scale


def _keep_mlp_input(norm2: nn.Module, args: tuple[Any, ...]) -> None:
    norm2.__dict__["mlp_input"] = args[0]  # read once by _add_adapter


def _add_adapter(block: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    x = block.get_submodule("norm2").__dict__.pop("mlp_input")  # the residual stream the MLP read: [B, H, W, C]
    adapter: AdaptFormer = block.get_submodule("adapter")  # type: ignore[assignment]
    return output + adapter(x)


def add_adaptformer(trunk: Hiera, config: AdapterConfig) -> list[str]:
    """Give every block of `config.stages` of a SAM2 Hiera trunk an adapter; returns the adapted
    blocks' names. The trunk's other weights are untouched."""
    ends = list(trunk.stage_ends)  # the last block of each stage
    bad = [s for s in config.stages if not 0 <= s < len(ends)]
    if bad:
        raise InputError(
            f"adapter.stages {list(config.stages)}: this Hiera has stages 0..{len(ends) - 1}; choose among them."
        )
    names = []
    blocks: list[MultiScaleBlock] = list(trunk.blocks)
    for i, block in enumerate(blocks):
        stage = sum(end < i for end in ends)
        if stage not in config.stages:
            continue
        block.adapter = AdaptFormer(block.dim_out, int(block.dim * config.channel_factor), config.scale)
        block.norm2.register_forward_pre_hook(_keep_mlp_input)
        block.register_forward_hook(_add_adapter)
        names.append(f"blocks.{i}")
    return names
