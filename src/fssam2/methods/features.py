"""SAM2's image encoder as every method here runs it: each image once, its maps kept as the
mask decoder and the memory take them (the feature cache stores these)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sam2.modeling.sam2_base import SAM2Base


@dataclass
class ImageFeatures:
    """Image encoder output for N images, as the rest of the forward pass consumes it."""

    embedding: torch.Tensor  # [N, C, S/16, S/16] lowest-resolution FPN map (pix_feat)
    position: torch.Tensor  # [N, C, S/16, S/16] its sine position encoding
    # [N, C/8, S/4, S/4], [N, C/4, S/8, S/8]: the FPN maps after the mask decoder's conv_s0 / conv_s1
    # (as SAM2's forward_image does), 5.5x smaller than the raw 256-channel maps a cache would keep.
    high_res: list[torch.Tensor]

    def select(self, index: slice) -> ImageFeatures:
        return ImageFeatures(self.embedding[index], self.position[index], [f[index] for f in self.high_res])

    def per_image(self, i: int) -> tuple[torch.Tensor, ...]:
        """Image i's maps, without the position encoding (the same for every image of a size)."""
        return (self.embedding[i], *(f[i] for f in self.high_res))


def image_features(sam2: SAM2Base, images: torch.Tensor) -> ImageFeatures:
    """SAM2's image encoder and the mask decoder's high-resolution projections, as SAM2's
    forward_image computes them. images [N, 3, S, S] normalised."""
    out = sam2.image_encoder(images)
    levels = sam2.num_feature_levels
    fpn = out["backbone_fpn"][-levels:]
    pos = out["vision_pos_enc"][-levels:]
    decoder = sam2.sam_mask_decoder
    high_res = [decoder.conv_s0(fpn[0]), decoder.conv_s1(fpn[1])]
    return ImageFeatures(embedding=fpn[-1], position=pos[-1], high_res=high_res)
