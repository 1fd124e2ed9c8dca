"""FS-SAM2: the K annotated supports are earlier video frames in SAM2's memory, the query the next.

The steps follow DESIGN.md, "The method":
1. image encoder on all K+1 images of an episode in one batch;
2. each support's ground-truth mask (as logits, mask * 20 - 10) and image embedding go through
   the memory encoder; no temporal position encoding, no object pointers;
3. memory attention conditions the query embedding on the K * HW memory tokens;
4. prompt encoder (one empty point) and mask decoder (single mask, no object-score gating),
   low-resolution logits resized bilinearly to the input size.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import SAM2Base
from torch import nn

from fssam2.build import build_sam2
from fssam2.errors import InputError
from fssam2.lora import (
    LoRAConfig,
    inject_lora,
    is_lora_parameter,
    load_lora_state_dict,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora_,
    unmerge_lora_,
    unmerged_weights,
)
from fssam2.methods.base import Prompts
from fssam2.methods.features import EpisodeKeys, ImageFeatures, SAM2Method, no_prompt

# Ground-truth support masks become logits as SAM2 does for mask inputs: sigmoid(-10) ~ 0.
MASK_LOGIT_SCALE = 20.0
MASK_LOGIT_BIAS = -10.0

# SAM2 parts the forward pass below never uses (video tracking, mask prompts, heads whose outputs
# it discards). Full fine-tuning leaves them frozen, so DDP waits for no gradient that never comes.
UNUSED_SAM2_PARTS = (
    "mask_downsample",
    "maskmem_tpos_enc",
    "no_mem_embed",
    "no_mem_pos_enc",
    "no_obj_embed_spatial",
    "no_obj_ptr",
    "obj_ptr_proj",
    "obj_ptr_tpos_proj",
    "sam_mask_decoder.iou_prediction_head",
    "sam_mask_decoder.pred_obj_score_head",
    "sam_prompt_encoder.mask_downscaling",
)


def memory_tokens(maps: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*K, C, h, w] episode-major -> [K*hw, B, C] tokens, support k's at k*hw..(k+1)*hw."""
    n, c = maps.shape[:2]
    return maps.reshape(batch, n // batch, c, -1).permute(1, 3, 0, 2).reshape(-1, batch, c)


class FewShotSAM2(SAM2Method):
    """SAM2 used as a few-shot segmenter; optionally with LoRA layers inserted.

    Args:
        sam2: a built SAM2 model (see `fssam2.build_sam2`), pretrained weights already loaded.
        lora: where to insert LoRA layers, which then are the only trainable parameters (the
            published setting; full fine-tuning sets requires_grad itself); None leaves the SAM2
            model untouched.
        encoder_batch: at most this many images per image-encoder call (the same result); None =
            all of a batch at once. On CPU, large encoder batches cost more per image than small
            ones (see experiments/bench_episode.py); on a GPU, one batch is fastest.
    """

    FIXED_BY_WEIGHTS: ClassVar[tuple[str, ...]] = ("sam2_config", "sam2_checkpoint", "image_size", "lora", "trainable")
    COMPILED_PARTS: ClassVar[tuple[str, ...]] = ("sam2.image_encoder", "sam2.memory_attention", "sam2.sam_mask_decoder")

    def __init__(self, sam2: SAM2Base, lora: LoRAConfig | None = None, encoder_batch: int | None = None) -> None:
        super().__init__(sam2, encoder_batch)
        self.merge_for_evaluation = True  # fold LoRA into the weights while evaluating (see start_evaluation)
        self.lora = lora
        self.lora_layers: list[str] = inject_lora(sam2, lora) if lora is not None else []
        if lora is not None:
            mark_only_lora_trainable(self)

    @classmethod
    def build(
        cls,
        sam2_config: str,
        sam2_checkpoint: str | None,
        image_size: int | None,
        *,
        lora: LoRAConfig | None = LoRAConfig(),  # noqa: B008 - a frozen-by-convention default
        trainable: Literal["lora", "all"] = "lora",
        encoder_batch: int | None = None,
        merge_lora: bool = True,
        **options: Any,
    ) -> FewShotSAM2:
        """FS-SAM2 on `build_sam2(sam2_config, sam2_checkpoint)`, in training mode. trainable: "lora"
        trains only the LoRA factors (the published setting); "all" every parameter the forward
        pass uses. merge_lora: fold LoRA into the weights while evaluating."""
        if options:
            raise InputError(f"FS-SAM2 has no option {', '.join(sorted(options))}: drop it.")
        if trainable == "lora" and lora is None:
            raise InputError(
                "model.trainable='lora' but model.lora is null: give a LoRA config or set model.trainable='all'."
            )
        model = cls(build_sam2(sam2_config, sam2_checkpoint, image_size=image_size), lora, encoder_batch)
        model.merge_for_evaluation = merge_lora
        model.train()  # build_sam2 returns eval mode; Lightning keeps submodule modes as found
        if trainable == "lora":
            mark_only_lora_trainable(model)
        else:
            model.requires_grad_(False)
            for _, param in model.used_parameters():
                param.requires_grad_(True)
        return model

    def start_evaluation(self) -> None:
        if self.merge_for_evaluation:
            merge_lora_(self)

    def end_evaluation(self) -> None:
        unmerge_lora_(self)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return unmerged_weights(self)  # Lightning may save while LoRA is merged

    @classmethod
    def is_adapter_key(cls, name: str) -> bool:
        return is_lora_parameter(name)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return lora_state_dict(self)

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        load_lora_state_dict(self, state)

    def encode_support(
        self, support_images: torch.Tensor, support_masks: torch.Tensor, prompts: Prompts | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-2 for the supports: memory and its position encoding, each [K*HW, B, C_mem].
        `prompts` are not read: a weak support's memory is its decoded mask in `support_masks`,
        binarised, as SAM2's video predictor memory-encodes a prompted frame."""
        b, k = support_images.shape[:2]
        feats = self.encode_images(support_images.flatten(0, 1))
        return self.encode_memory(feats, support_masks.flatten(0, 1), b)

    def segment(self, query_images: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Steps 1, 3-4 for the queries [B, 3, S, S]: logits [B, 1, S, S]."""
        return self.decode(self.encode_images(query_images), *memory)

    def used_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of every parameter the forward pass depends on."""
        unused = tuple(f"sam2.{part}" for part in UNUSED_SAM2_PARTS)
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(unused)]

    def memory_maps(self, support: ImageFeatures, support_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2 per support: features [N] and masks [N, S, S] in {0, 1} -> memory and its
        position encoding, each [N, C_mem, S/16, S/16]."""
        mask_logits = support_masks[:, None].to(support.embedding.dtype) * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS
        out = self.sam2.memory_encoder(support.embedding, mask_logits, skip_mask_sigmoid=True)
        return out["vision_features"], out["vision_pos_enc"][0]

    def cached_memories(
        self, feats: ImageFeatures, masks: torch.Tensor, prompts: Prompts | None = None
    ) -> list[tuple[torch.Tensor, ...]]:
        """Each support's memory map [C_mem, h, w] (its position encoding is kept once); `prompts`
        are not read (see `encode_support`)."""
        maps, pos = self.memory_maps(feats, masks)
        self._memory_position = pos[:1].clone()  # not a view: it would hold the whole batch
        return [(m,) for m in maps]

    def encode_memory(
        self, support: ImageFeatures, support_masks: torch.Tensor, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2: support memories, flattened to tokens.

        support: features of B*K images, episode-major; support_masks [B*K, S, S] in {0, 1}.
        Returns memory and its position encoding, each [K*HW, B, C_mem] (support k's HW tokens
        at k*HW..(k+1)*HW).
        """
        feats, pos = self.memory_maps(support, support_masks)
        return memory_tokens(feats, batch), memory_tokens(pos, batch)

    def decoder_inputs(
        self, query: ImageFeatures, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Step 3 and step 4's prompt: the query embedding conditioned on the memory, and the
        keyword arguments SAM2's mask decoder takes with it (one empty point, no mask prompt)."""
        emb = query.embedding  # [B, C, h, w]
        b, c, h, w = emb.shape
        conditioned = self.sam2.memory_attention(
            curr=emb.flatten(2).permute(2, 0, 1),  # [hw, B, C]
            curr_pos=query.position.flatten(2).permute(2, 0, 1),
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=0,
        )
        conditioned = conditioned.permute(1, 2, 0).reshape(b, c, h, w)
        points, labels = no_prompt(b, emb.device)
        sparse, dense = self.sam2.sam_prompt_encoder(points=(points, labels), boxes=None, masks=None)
        return {
            "image_embeddings": conditioned,
            "image_pe": self.sam2.sam_prompt_encoder.get_dense_pe(),
            "sparse_prompt_embeddings": sparse,
            "dense_prompt_embeddings": dense,
            "high_res_features": query.high_res,
        }

    def decode_prompts(
        self, image: ImageFeatures, coords: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An image prompted with points, decoded without memory, as SAM2's video predictor
        decodes a prompted frame (the no-memory embedding added to the image embedding).

        coords [B, P, 2] (x, y) in input pixels; labels [B, P] int: 1 foreground, 0 background,
        2 / 3 a box's top-left / bottom-right corner, -1 padding. Returns the mask decoder's four
        masks [B, 4, S/4, S/4] (the single mask, then the three multimask outputs) and its IoU
        predictions [B, 4].
        """
        emb = image.embedding + self.sam2.no_mem_embed.view(1, -1, 1, 1)  # [B, C, h, w]
        sparse, dense = self.sam2.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        masks, iou_pred, _, _ = self.sam2.sam_mask_decoder.predict_masks(
            image_embeddings=emb,
            image_pe=self.sam2.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=image.high_res,
        )
        return masks, iou_pred

    def decode(self, query: ImageFeatures, memory: torch.Tensor, memory_pos: torch.Tensor) -> torch.Tensor:
        """Steps 3-4: condition the query on the memory and decode. Returns logits [B, 1, S, S]."""
        low_res, _, _, _ = self.sam2.sam_mask_decoder(
            **self.decoder_inputs(query, memory, memory_pos), multimask_output=False, repeat_image=False
        )  # [B, 1, S/4, S/4]
        size = (self.image_size, self.image_size)
        return F.interpolate(low_res.float(), size=size, mode="bilinear", align_corners=False)

    def forward(
        self,
        support_images: torch.Tensor,
        support_masks: torch.Tensor,
        query_images: torch.Tensor,
        keys: EpisodeKeys | None = None,
        prompts: Prompts | None = None,
    ) -> torch.Tensor:
        """Segment the supports' class in each query.

        support_images [B, K, 3, S, S] and query_images [B, 3, S, S], normalised;
        support_masks [B, K, S, S] in {0, 1} (a weak support's decoded mask: `prompts` are not
        read, see `encode_support`); keys: the images' cache keys, used when a feature cache is
        set. Returns query logits [B, 1, S, S].
        """
        self.check_inputs(support_images, support_masks, query_images)
        b, k = support_images.shape[:2]
        supports, masks = support_images.flatten(0, 1), support_masks.flatten(0, 1)  # [B*K, ...]
        if keys is None or self.feature_cache is None:
            feats = self.encode_images(torch.cat([supports, query_images]))  # [B*K + B, ...]
            memory, memory_pos = self.encode_memory(feats.select(slice(0, b * k)), masks, b)
            return self.decode(feats.select(slice(b * k, None)), memory, memory_pos)
        keys.check(b, k)
        query, entries, position = self.cached_support_memories(supports, masks, query_images, keys)
        maps = torch.stack([entry[0] for entry in entries])
        pos = position.expand(b * k, -1, -1, -1)
        return self.decode(query, memory_tokens(maps, b), memory_tokens(pos, b))
