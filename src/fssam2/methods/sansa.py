"""SANSA (Cuttano et al., NeurIPS 2025): SAM2's tracker, adapted by AdaptFormer adapters in the
image encoder, finds the supports' class in the query as a video frame after them.

The steps follow the official code (github ClaudiaCuttano/SANSA, models/sansa/sansa.py):
1. the image encoder (frozen, AdaptFormer adapters beside the MLPs of the last two Hiera stages)
   on the K supports and the query;
2. each support mask goes SAM2's mask-as-output path: logits mask * 20 - 10, downsampled to
   S/4 (antialiased), upsampled back for the memory encoder; its object pointer comes from the
   mask decoder prompted with the mask (single mask output). A weak support (points, box,
   scribble) is decoded without memory from its prompt (single mask output): its soft mask
   (sigmoid of the logits, never binarised) is memory-encoded, its object pointer is that decode's;
3. the query is frame K: memory attention over support 0's memory (temporal position slot
   num_maskmem - 1), supports 1..K-1 (slot K - k - 1, the latest num_maskmem - 1 frames) and
   the object pointers (support 0, then K-1 down to 1; position encoding zero), each pointer
   split into C / C_mem tokens;
4. the mask decoder with multimask output; the mask with the highest predicted IoU, upsampled
   bilinearly from S/4 to S.
SAM2's mask decoder runs without its object-score token, as SANSA builds it.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path, PosixPath, WindowsPath
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam2_base import SAM2Base

from fssam2.annotations import PAD_LABEL
from fssam2.build import build_sam2
from fssam2.errors import InputError
from fssam2.methods.adaptformer import AdapterConfig, add_adaptformer
from fssam2.methods.base import Prompts
from fssam2.methods.features import ImageFeatures, SAM2Method, no_prompt
from fssam2.metric import IGNORE

MASK_LOGIT_SCALE, MASK_LOGIT_BIAS = 20.0, -10.0  # a mask as logits (sigmoid(-10) ~ 0), as SAM2 takes mask inputs


@contextlib.contextmanager
def decoder_as_sansa_builds_it(decoder: MaskDecoder) -> Iterator[None]:
    """SAM2's mask decoder as SANSA builds it (pred_obj_scores false: no object-score token among
    its tokens; no dynamic multimask selection), for the time of a call. The token and head stay
    in the model, unused, and the settings come back after: the same SAM2 can serve another
    method, and a SAM2 checkpoint loads as it is."""
    saved = decoder.pred_obj_scores, decoder.dynamic_multimask_via_stability
    decoder.pred_obj_scores, decoder.dynamic_multimask_via_stability = False, False
    try:
        yield
    finally:
        decoder.pred_obj_scores, decoder.dynamic_multimask_via_stability = saved


def focal_dice_per_episode(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss (mean over the valid pixels) + Dice (smoothing 1) of each episode, [B].

    logits [B, H, W]; target [B, H, W] in {0, 1, 255}, 255 left out of both terms.
    """
    valid = (target != IGNORE).float().flatten(1)
    fg = (target == 1).float().flatten(1)
    x = logits.float().flatten(1)
    prob = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, fg, reduction="none")
    p_t = prob * fg + (1 - prob) * (1 - fg)
    focal = (alpha * fg + (1 - alpha) * (1 - fg)) * ce * (1 - p_t) ** gamma
    focal = (focal * valid).sum(1) / valid.sum(1).clamp(min=1)
    prob = prob * valid
    dice = 1 - (2 * (prob * fg).sum(1) + 1) / (prob.sum(1) + fg.sum(1) + 1)
    return focal + dice


def flat(prompts: Prompts | None) -> Prompts | None:
    """Prompts of B episodes' K supports ([B, K, P, 2], [B, K, P]) as B*K supports', episode-major."""
    return None if prompts is None else (prompts[0].flatten(0, 1), prompts[1].flatten(0, 1))


def per_support(memory: torch.Tensor, position: torch.Tensor, pointer: torch.Tensor, batch: int) -> list[dict]:
    """B*K supports' entries (episode-major) -> K dicts of memory, position and pointer over B."""

    def regroup(t: torch.Tensor) -> list[torch.Tensor]:
        return list(t.reshape(batch, -1, *t.shape[1:]).transpose(0, 1))

    return [
        {"memory": m, "position": p, "pointer": o}
        for m, p, o in zip(regroup(memory), regroup(position), regroup(pointer), strict=True)
    ]


class SANSA(SAM2Method):
    """SAM2 v1 with AdaptFormer adapters, segmenting the supports' class as a tracker would.

    Args:
        sam2: a built SAM2 (see `fssam2.build_sam2`, e.g. "sam2_hiera_l"), weights loaded; its
            mask decoder runs without its object-score head (`decoder_as_sansa_builds_it`).
        adapter: where the adapters go; they are the only trainable parameters.
        input_size: the side images and masks come at, as the official loaders resize them
            (COCO-20i 640, FSS-1000 518); they are resized to SAM2's size inside (antialiased, as
            the official preprocessing), logits come back at this size, and the metric scores
            here against the target resized nearest, as the official evaluation does. None:
            SAM2's own size, scored at each query's original size (fssam2's protocol).
    """

    FIXED_BY_WEIGHTS: ClassVar[tuple[str, ...]] = ("sam2_config", "sam2_checkpoint", "image_size", "method_args")
    PROMPT_MULTIMASK_POINTS: ClassVar[int] = 0  # the official code decodes a prompted support's single mask

    def __init__(self, sam2: SAM2Base, adapter: AdapterConfig | None = None, input_size: int | None = None) -> None:
        if input_size is not None and input_size < 1:
            raise InputError(f"input_size={input_size} must be a positive side in pixels (or None: SAM2's size).")
        if not sam2.use_obj_ptrs_in_encoder:
            raise InputError(
                "SANSA reads object pointers, but this SAM2 config has use_obj_ptrs_in_encoder false: "
                "use a SAM2 config with it on (e.g. sam2_hiera_l)."
            )
        super().__init__(sam2)
        self.input_size = input_size
        self.adapter = adapter or AdapterConfig()
        self.adapted_blocks = add_adaptformer(sam2.image_encoder.trunk, self.adapter)
        self.requires_grad_(False)
        for name, param in self.named_parameters():
            param.requires_grad_(".adapter." in name)

    @classmethod
    def build(
        cls,
        sam2_config: str,
        sam2_checkpoint: str | None,
        image_size: int | None,
        *,
        adapter: AdapterConfig | dict[str, Any] | None = None,
        adapters: str | None = None,
        input_size: int | None = None,
        **options: Any,
    ) -> SANSA:
        """SANSA on `build_sam2(sam2_config, sam2_checkpoint)`, in training mode; `adapters`: a
        released SANSA adapter file (`adapter_coco_fold0.pth`, ...) to start from."""
        if options:
            raise InputError(f"SANSA has no option {', '.join(sorted(options))}: drop it from model.method_args.")
        if isinstance(adapter, dict):
            unknown = sorted(set(adapter) - {f.name for f in fields(AdapterConfig)})
            if unknown:
                raise InputError(
                    f"model.method_args.adapter has no option {', '.join(unknown)}: use stages, channel_factor or scale."
                )
            given: dict[str, Any] = {
                k: tuple(v) if k == "stages" and isinstance(v, list) else v for k, v in adapter.items()
            }
            adapter = AdapterConfig(**given)
        model = cls(build_sam2(sam2_config, sam2_checkpoint, image_size=image_size), adapter, input_size)
        if adapters is not None:
            model.load_official_adapters(adapters)
        model.train()
        return model

    def load_official_adapters(self, path: str | Path) -> None:
        """Load an adapter file as the official code writes it (`{"model": {"sam.image_encoder.
        trunk.blocks.N.adapter.<name>": tensor}, ...}`, keys maybe prefixed "module."). Every
        adapter of this model must be in it, with its shape; an InputError names what differs."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(f"SANSA adapter file {path} does not exist: give a released adapter_*.pth.")
        try:
            with torch.serialization.safe_globals([argparse.Namespace, PosixPath, WindowsPath]):
                saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise InputError(
                f"SANSA adapter file {path} could not be read ({type(err).__name__}): it is not a SANSA checkpoint."
            ) from err
        state = saved.get("model") if isinstance(saved, dict) else None
        if not isinstance(state, dict):
            raise InputError(f"SANSA adapter file {path} has no 'model' state dict: it is not a SANSA checkpoint.")
        given = {}
        for key, value in state.items():
            name = key.removeprefix("module.")
            if ".adapter." in name and name.startswith("sam."):
                given["sam2." + name.removeprefix("sam.")] = value
        ours = self.adapter_state()
        wrong = sorted(
            n for n in ours.keys() | given.keys() if n not in given or n not in ours or given[n].shape != ours[n].shape
        )
        if wrong:
            raise InputError(
                f"SANSA adapter file {path} does not fit this model ({len(given)} adapter tensors, "
                f"{len(ours)} expected; first mismatch {wrong[0]}): set model.method_args.adapter "
                f"(stages, channel_factor; the generalist adapters use channel_factor 0.8) and the SAM2 config "
                "it was trained with."
            )
        self.load_state_dict(given, strict=False)

    @property
    def image_size(self) -> int:
        """The side of the images `forward` takes and of the logits it returns."""
        return self.input_size or int(self.sam2.image_size)

    def score(self, logits: torch.Tensor, targets: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """With input_size, as the official evaluation scores: at input_size, against each target
        resized nearest; otherwise at the original size (fssam2's protocol)."""
        if self.input_size is None:
            return super().score(logits, targets)
        side = (self.input_size, self.input_size)
        preds = F.interpolate(logits.float(), size=side, mode="bilinear", align_corners=False)[:, 0] > 0
        resized = [F.interpolate(t[None, None].float(), size=side, mode="nearest")[0, 0].to(t.dtype) for t in targets]
        return list(preds.long()), resized

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """SANSA's loss: sigmoid focal (alpha 0.25, gamma 2, mean over pixels) + Dice, per episode,
        mean over the batch; pixels marked 255 left out of both."""
        return focal_dice_per_episode(logits, target).mean()

    @classmethod
    def is_adapter_key(cls, name: str) -> bool:
        return ".adapter." in name

    def prompt_decoder(self) -> contextlib.AbstractContextManager:
        return decoder_as_sansa_builds_it(self.sam2.sam_mask_decoder)

    def encode_support(
        self, support_images: torch.Tensor, support_masks: torch.Tensor, prompts: Prompts | None = None
    ) -> list[dict]:
        """Steps 1-2: images [B, K, 3, S, S] normalised, masks [B, K, S, S] in {0, 1}, the weak
        supports' prompts -> one memory entry per support k (memory, its position encoding,
        object pointer), each batched over B."""
        b, k = support_images.shape[:2]
        images, masks = self.to_sam2_size(support_images.flatten(0, 1), support_masks.flatten(0, 1))
        return self.support_memories(self.encode_images(images), masks, b, flat(prompts))

    def segment(self, query_images: torch.Tensor, memory: list[dict]) -> torch.Tensor:
        """Steps 1, 3-4: query images [B, 3, S, S] -> logits [B, 1, S, S]."""
        return self.decode(self.encode_images(self.to_sam2_size(query_images)[0]), memory)

    def support_memories(
        self, feats: ImageFeatures, masks: torch.Tensor, batch: int, prompts: Prompts | None = None
    ) -> list[dict]:
        """Step 2 for B*K supports (episode-major): masks [B*K, S, S] and prompts (coords
        [B*K, P, 2], labels [B*K, P]) -> K entries over B."""
        return per_support(*self.memory_entries(feats, masks, prompts), batch)

    def memory_entries(
        self, feats: ImageFeatures, masks: torch.Tensor, prompts: Prompts | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 2 for N supports: masks [N, S, S], and for weak supports their prompts (coords
        [N, P, 2] in input pixels, labels [N, P], -1 padding) -> memory [N, C_mem, h, w], its
        position encoding (the same for every support of a size), object pointer [N, C].

        A mask goes SAM2's mask-as-output path. A prompted support goes the official code's path
        for a support frame with points (`_compute_decoder_out_no_mem`, then its memory with
        `is_mask_from_pts` false): decoded without memory, its logits upsampled to S and
        memory-encoded as a soft mask, its object pointer from that decode."""
        sam2, size = self.sam2, int(self.sam2.image_size)
        mask = masks[:, None].float()  # [N, 1, S, S]
        low = F.interpolate(
            mask * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS,
            size=(size // 4, size // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )  # [N, 1, S/4, S/4]
        pointer = self.object_pointer(feats.embedding, feats.high_res, masks=sam2.mask_downsample(mask))  # [N, C]
        if prompts is not None:
            coords, labels = prompts
            weak = (labels != PAD_LABEL).any(1).nonzero()[:, 0].tolist()
            if weak:
                low, pointer = low.clone(), pointer.clone()
            for i in weak:  # each prompt decoded alone, as in support_masks_from_prompts
                real = labels[i] != PAD_LABEL
                logits, token = self.prompted_decode(
                    feats.select(slice(i, i + 1)),
                    coords[i, real][None].float() * (size / self.image_size),
                    labels[i, real][None],
                )
                low[i] = logits[0].float()
                pointer[i] = sam2.obj_ptr_proj(token)[0]
        high = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        prob = torch.sigmoid(high) * sam2.sigmoid_scale_for_mem_enc + sam2.sigmoid_bias_for_mem_enc
        out = sam2.memory_encoder(feats.embedding, prob, skip_mask_sigmoid=True)
        return out["vision_features"], out["vision_pos_enc"][-1], pointer

    def cached_memories(
        self, feats: ImageFeatures, masks: torch.Tensor, prompts: Prompts | None = None
    ) -> list[tuple[torch.Tensor, ...]]:
        """Each support's memory map [C_mem, h, w] and object pointer [C] (the position encoding is kept once)."""
        memory, position, pointer = self.memory_entries(feats, masks, prompts)
        self._memory_position = position[:1].clone()  # not a view: it would hold the whole batch
        return list(zip(memory, pointer, strict=True))

    def object_pointer(
        self, embedding: torch.Tensor, high_res: list[torch.Tensor], masks: torch.Tensor
    ) -> torch.Tensor:
        """The mask decoder prompted with masks [N, 1, S/4, S/4] (and one empty point), single
        mask output: its output token through obj_ptr_proj, [N, C]."""
        sam2, n = self.sam2, len(embedding)
        points, labels = no_prompt(n, embedding.device)
        sparse, dense = sam2.sam_prompt_encoder(points=(points, labels), boxes=None, masks=masks)
        with decoder_as_sansa_builds_it(sam2.sam_mask_decoder):
            _, _, tokens, _ = sam2.sam_mask_decoder(
                image_embeddings=embedding,
                image_pe=sam2.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
                repeat_image=False,
                high_res_features=high_res,
            )
        return sam2.obj_ptr_proj(tokens[:, 0])

    def memory_of(self, supports: list[dict]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Step 3's memory for the query (frame K): tokens [M, B, C_mem], their position
        encoding, and how many of them are object-pointer tokens (they come last)."""
        sam2, k = self.sam2, len(supports)
        slots = sam2.num_maskmem
        frames = [0] + [f for f in range(max(1, k - slots + 1), k)]  # the latest num_maskmem - 1 after frame 0
        memory, position = [], []
        for f in frames:
            slot = slots - 1 if f == 0 else k - f - 1
            memory.append(supports[f]["memory"].flatten(2).permute(2, 0, 1))  # [hw, B, C_mem]
            position.append(supports[f]["position"].flatten(2).permute(2, 0, 1) + sam2.maskmem_tpos_enc[slot])
        pointers = [0] + list(range(k - 1, 0, -1))[: min(k + 1, sam2.max_obj_ptrs_in_encoder) - 1]
        ptrs = torch.stack([supports[f]["pointer"] for f in pointers])  # [P, B, C]
        p, b, c = ptrs.shape
        split = c // sam2.mem_dim
        tokens = ptrs.reshape(p, b, split, sam2.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)  # [P*split, B, C_mem]
        memory.append(tokens)
        position.append(tokens.new_zeros(tokens.shape))
        return torch.cat(memory), torch.cat(position), len(tokens)

    def decoder_outputs(self, query: ImageFeatures, supports: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 3 and the mask decoder of step 4: the three multimask logits [B, 3, S/4, S/4] (SAM2's
        size) and their predicted IoUs [B, 3]."""
        sam2 = self.sam2
        memory, position, pointer_tokens = self.memory_of(supports)
        emb = query.embedding  # [B, C, h, w]
        b, c, h, w = emb.shape
        conditioned = sam2.memory_attention(
            curr=[emb.flatten(2).permute(2, 0, 1)],  # [hw, B, C]
            curr_pos=[query.position.flatten(2).permute(2, 0, 1)],
            memory=memory,
            memory_pos=position,
            num_obj_ptr_tokens=pointer_tokens,
        )
        conditioned = conditioned.permute(1, 2, 0).reshape(b, c, h, w)
        points, labels = no_prompt(b, emb.device)
        sparse, dense = sam2.sam_prompt_encoder(points=(points, labels), boxes=None, masks=None)
        with decoder_as_sansa_builds_it(sam2.sam_mask_decoder):
            masks, iou, _, _ = sam2.sam_mask_decoder(
                image_embeddings=conditioned,
                image_pe=sam2.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
                repeat_image=False,
                high_res_features=query.high_res,
            )
        return masks, iou

    def decode(self, query: ImageFeatures, supports: list[dict]) -> torch.Tensor:
        """Steps 3-4: the multimask output with the highest predicted IoU, upsampled: logits [B, 1, s, s]
        at the input size."""
        masks, iou = self.decoder_outputs(query, supports)
        best = masks[torch.arange(len(masks), device=masks.device), iou.argmax(-1)][:, None].float()
        size = (self.image_size, self.image_size)
        return F.interpolate(best, size=size, mode="bilinear", align_corners=False)

    def forward(
        self,
        support_images: torch.Tensor,
        support_masks: torch.Tensor,
        query_images: torch.Tensor,
        keys: Any = None,
        prompts: Prompts | None = None,
    ) -> torch.Tensor:
        """support_images [B, K, 3, S, S] and query_images [B, 3, S, S] normalised; support_masks
        [B, K, S, S] in {0, 1}; prompts: the weak supports' (their memories are read from the
        prompted decode, `memory_entries`). Returns query logits [B, 1, S, S]."""
        self.check_inputs(support_images, support_masks, query_images)
        b, k = support_images.shape[:2]
        images, masks = self.to_sam2_size(support_images.flatten(0, 1), support_masks.flatten(0, 1))
        queries = self.to_sam2_size(query_images)[0]
        if keys is None or self.feature_cache is None:
            feats = self.encode_images(torch.cat([images, queries]))
            supports = self.support_memories(feats.select(slice(0, b * k)), masks, b, flat(prompts))
            return self.decode(feats.select(slice(b * k, None)), supports)
        keys.check(b, k)
        query, entries, memory_position = self.cached_support_memories(images, masks, queries, keys, flat(prompts))
        memory = torch.stack([e[0] for e in entries])
        pointer = torch.stack([e[1] for e in entries])
        position = memory_position.expand(b * k, -1, -1, -1)
        supports = per_support(memory, position, pointer, b)
        return self.decode(query, supports)

    def extra_repr(self) -> str:
        return (
            f"adapter={asdict(self.adapter)}, adapted blocks {len(self.adapted_blocks)}, input_size={self.input_size}"
        )
