"""SAM2's image encoder as every method here runs it: each image once, its maps kept as the
mask decoder and the memory take them (the feature cache stores these), and `SAM2Method`, the
base of the methods that run SAM2 so."""

from __future__ import annotations

import contextlib
import hashlib
from abc import abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import SAM2Base

from fssam2.annotations import PAD_LABEL
from fssam2.cache import FeatureCache, image_key, memory_key
from fssam2.errors import InputError
from fssam2.methods.base import FewShotMethod, Prompts


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


def no_prompt(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM2's prompt for "no point": one point [n, 1, 2] at 0 with label -1 [n, 1], as SAM2 pads
    a frame decoded without clicks."""
    return torch.zeros(n, 1, 2, device=device), -torch.ones(n, 1, dtype=torch.int32, device=device)


@dataclass
class EpisodeKeys:
    """Feature-cache keys of a batch's images; equal keys promise equal inputs."""

    supports: Sequence[Hashable]  # B*K, episode-major: the support image
    memories: Sequence[Hashable]  # B*K: the support image with its mask (e.g. image and class)
    queries: Sequence[Hashable]  # B: the query image

    def check(self, batch: int, shot: int) -> None:
        if len(self.supports) != batch * shot or len(self.memories) != batch * shot or len(self.queries) != batch:
            raise InputError(
                f"EpisodeKeys has {len(self.supports)} support, {len(self.memories)} memory and "
                f"{len(self.queries)} query keys for B={batch}, K={shot}: give B*K, B*K and B."
            )


def prompt_digest(coords: torch.Tensor, labels: torch.Tensor) -> str:
    """A short digest of one support's prompt (coords [P, 2], labels [P], padding included or not)."""
    real = labels != PAD_LABEL
    data = coords[real].float().cpu().numpy().tobytes() + labels[real].long().cpu().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class SAM2Method(FewShotMethod):
    """A method on one SAM2 whose image encoder sees each image once: it holds `sam2`, encodes
    images through the feature cache when one is set, keys a batch's images, and decodes weak
    support annotations as SAM2's video predictor decodes a prompted frame.

    Args:
        sam2: a built SAM2 (see `fssam2.build_sam2`), weights loaded.
        encoder_batch: at most this many images per image-encoder call (the same result); None =
            all of a batch at once. On CPU, large encoder batches cost more per image than small
            ones (see experiments/bench_episode.py); on a GPU, one batch is fastest.
    """

    # A prompt of at most this many points is decoded multimask, the mask of highest predicted IoU
    # kept (SAM2's video predictor: multimask_max_pt_num 1); 0: always the single mask.
    PROMPT_MULTIMASK_POINTS: ClassVar[int] = 1

    def __init__(self, sam2: SAM2Base, encoder_batch: int | None = None) -> None:
        super().__init__()
        if encoder_batch is not None and encoder_batch < 1:
            raise InputError(f"encoder_batch={encoder_batch} must be >= 1 (or None: all images in one batch).")
        self.sam2 = sam2
        self.encoder_batch = encoder_batch
        # Set only while evaluating with fixed weights and no augmentation (see fssam2.cache).
        self.feature_cache: FeatureCache | None = None
        self._position: torch.Tensor | None = None  # [1, C, S/16, S/16], the position encoding of any image
        # [1, C_mem, S/16, S/16], the position encoding of any support memory (set by cached_memories)
        self._memory_position: torch.Tensor | None = None
        # The image features of a batch's weak supports, by key, as the prompt decode found (looked up)
        # or computed them: the batch's memory step takes them and stores the computed ones in the
        # feature cache with its own, after every lookup of the batch (see FeatureCache.fetch).
        self._decoded: dict[Hashable, tuple[torch.Tensor, ...]] = {}
        self._decoded_new: list[Hashable] = []

    @property
    def image_size(self) -> int:
        """The square input size S."""
        return int(self.sam2.image_size)

    def cache_keys(self, batch: dict[str, Any], split: str) -> EpisodeKeys:
        """An image is keyed by (split, id, size), a support memory by that and the class its mask
        shows (support_class: under a support control it is not the query's class_id)."""
        size = self.image_size
        supports = [image_key(split, s, size) for episode in batch["supports"] for s in episode]
        classes = [int(c) for c in batch["support_class"] for _ in batch["supports"][0]]
        memories: list[Hashable] = [memory_key(key, c) for key, c in zip(supports, classes, strict=True)]
        if "support_labels" in batch:  # a weak support's memory is that of the mask its prompt decodes to
            coords, labels = batch["support_points"].flatten(0, 1), batch["support_labels"].flatten(0, 1)
            memories = [
                (key, prompt_digest(c, lab)) if bool((lab != PAD_LABEL).any()) else key
                for key, c, lab in zip(memories, coords, labels, strict=True)
            ]
        return EpisodeKeys(
            supports=supports, memories=memories, queries=[image_key(split, q, size) for q in batch["query"]]
        )

    def to_sam2_size(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> tuple:
        """Images [N, 3, s, s] (and masks [N, s, s]) at the input size -> SAM2's size: bilinear,
        antialiased; a mask is foreground wherever its resized value is above 0. Unchanged when
        the input size is SAM2's."""
        size = int(self.sam2.image_size)
        if images.shape[-1] == size:
            return images, masks
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if masks is not None:
            resized = F.interpolate(masks[:, None].float(), size=(size, size), mode="bilinear", antialias=True)
            masks = (resized[:, 0] > 0).to(masks.dtype)
        return images, masks

    def prompt_decoder(self) -> contextlib.AbstractContextManager:
        """The settings SAM2's mask decoder runs under while decoding a prompted support."""
        return contextlib.nullcontext()

    def prompted_decode(
        self, image: ImageFeatures, coords: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image prompted with points [1, P, 2] (x, y in SAM2's input pixels) and labels [1, P],
        decoded without memory (the no-memory embedding added, as SAM2's video predictor decodes a
        prompted frame): the low-resolution logits [1, 1, S/4, S/4] SAM2 keeps and the mask
        decoder's output token of that mask [1, C] (what SAM2 projects to an object pointer)."""
        multimask = labels.shape[1] <= self.PROMPT_MULTIMASK_POINTS
        emb = image.embedding + self.sam2.no_mem_embed.view(1, -1, 1, 1)  # [1, C, h, w]
        sparse, dense = self.sam2.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        with self.prompt_decoder():
            masks, iou, tokens, _ = self.sam2.sam_mask_decoder(
                image_embeddings=emb,
                image_pe=self.sam2.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=False,
                high_res_features=image.high_res,
            )
        if not multimask:
            return masks[:, :1], tokens[:, 0]
        best = int(iou[0].argmax())
        return masks[:, best][:, None], tokens[:, best if tokens.shape[1] > 1 else 0]

    @torch.no_grad()
    def support_masks_from_prompts(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        keys: Sequence[Hashable] | None = None,
    ) -> torch.Tensor:
        """The mask each support gives its memory: for a support with a prompt, the mask SAM2
        decodes from it without memory, binarised (logits > 0) at the input size, as SAM2's video
        predictor memory-encodes a prompted frame; for the others, its own mask.

        images [N, 3, s, s] normalised, masks [N, s, s], coords [N, P, 2] (x, y in input pixels),
        labels [N, P] (-1: padding; a support with only padding shows its mask), keys: the images'
        cache keys. Each prompt is decoded alone, so a support's mask never depends on the batch.
        Returns masks [N, s, s] of masks' dtype.
        """
        weak = (labels != PAD_LABEL).any(1).nonzero()[:, 0].tolist()
        out = masks.clone()
        self._decoded, self._decoded_new = {}, []
        if not weak:
            return out
        side, size = self.image_size, int(self.sam2.image_size)
        images = self.to_sam2_size(images[weak])[0]
        if keys is None or self.feature_cache is None:
            feats = self.encode_images(images)
        else:
            feats = self._lookup_for_decode(images, [keys[i] for i in weak])
        for j, i in enumerate(weak):
            real = labels[i] != PAD_LABEL
            logits, _ = self.prompted_decode(
                feats.select(slice(j, j + 1)), coords[i, real][None].float() * (size / side), labels[i, real][None]
            )
            up = F.interpolate(logits.float(), size=(side, side), mode="bilinear", align_corners=False)
            out[i] = (up[0, 0] > 0).to(out.dtype)
        return out

    def _lookup_for_decode(self, images: torch.Tensor, keys: Sequence[Hashable]) -> ImageFeatures:
        """The features of weak supports' images [N, 3, S, S] for their prompt decode: looked up in
        the feature cache, the others encoded (in one batch) and kept for the batch's memory step,
        which stores them (`encode_images`)."""
        cache = self.feature_cache
        assert cache is not None, "called with a feature cache"
        held = cache.lookup("image", keys)
        todo: dict[Hashable, int] = {}
        for i, (key, entry) in enumerate(zip(keys, held, strict=True)):
            if entry is None:
                todo.setdefault(key, i)
        if todo:
            feats = self._encode(images[list(todo.values())])
            self._position = feats.position[:1].clone()
            fresh = {key: feats.per_image(j) for j, key in enumerate(todo)}
        else:
            fresh = {}
        self._decoded = {key: fresh[key] if entry is None else entry for key, entry in zip(keys, held, strict=True)}
        self._decoded_new = list(fresh)
        return self._stacked([self._decoded[key] for key in keys])

    def _stacked(self, entries: list[tuple[torch.Tensor, ...]]) -> ImageFeatures:
        """Cached per-image entries -> features of those images."""
        maps = [torch.stack(level) for level in zip(*entries, strict=True)]
        assert self._position is not None, "set when the cache's first entry was computed"
        position = self._position.expand(len(entries), -1, -1, -1)
        return ImageFeatures(embedding=maps[0], position=position, high_res=maps[1:])

    def encode_images(self, images: torch.Tensor, keys: Sequence[Hashable] | None = None) -> ImageFeatures:
        """Step 1: the image encoder. images [N, 3, S, S] normalised -> features of N images.

        With `keys` (one per image) and a feature cache set, only images whose key is not
        cached are encoded, in one batch; those the batch's prompt decode encoded
        (`support_masks_from_prompts`) are taken from it.
        """
        decoded, unstored = self._decoded, self._decoded_new
        self._decoded, self._decoded_new = {}, []
        if keys is None or self.feature_cache is None:
            return self._encode(images)

        def compute(positions: list[int]) -> list[tuple[torch.Tensor, ...]]:
            feats = self._encode(images[positions])
            self._position = feats.position[:1].clone()  # not a view: it would hold the whole batch
            return [feats.per_image(j) for j in range(len(positions))]

        return self._stacked(self.feature_cache.fetch("image", keys, compute, decoded, unstored))

    def _encode(self, images: torch.Tensor) -> ImageFeatures:
        n = self.encoder_batch
        if n is not None and len(images) > n:
            parts = [self._encode(images[i : i + n]) for i in range(0, len(images), n)]
            return ImageFeatures(
                embedding=torch.cat([p.embedding for p in parts]),
                position=torch.cat([p.position for p in parts]),
                high_res=[torch.cat(level) for level in zip(*(p.high_res for p in parts), strict=True)],
            )
        return image_features(self.sam2, images)

    @abstractmethod
    def cached_memories(
        self, feats: ImageFeatures, masks: torch.Tensor, prompts: Prompts | None = None
    ) -> list[tuple[torch.Tensor, ...]]:
        """What the feature cache keeps of each of N supports' memory: features of N images, masks
        [N, S, S] and their prompts (coords [N, P, 2], labels [N, P]) -> N tuples of tensors (maps
        [C, h, w] and any per-support vectors)."""

    def cached_support_memories(
        self,
        supports: torch.Tensor,
        masks: torch.Tensor,
        queries: torch.Tensor,
        keys: EpisodeKeys,
        prompts: Prompts | None = None,
    ) -> tuple[ImageFeatures, list[tuple[torch.Tensor, ...]], torch.Tensor]:
        """Through the feature cache: each support's memory entry (`cached_memories`) in
        `keys.memories` order, the queries' features, and the memory position encoding [1, ...].
        A support's image is encoded only when its memory is not held; those images and the
        queries go through the image encoder in one call. supports [B*K, 3, S, S], masks
        [B*K, S, S], queries [B, 3, S, S], prompts (coords [B*K, P, 2], labels [B*K, P]) or None;
        a feature cache must be set."""
        cache = self.feature_cache
        assert cache is not None, "forward calls this only with a feature cache"
        encoded: list[ImageFeatures] = []  # the queries' features, when encoded with missing supports

        def compute(new: list[int]) -> list[tuple[torch.Tensor, ...]]:
            feats = self.encode_images(
                torch.cat([supports[new], queries]), [keys.supports[i] for i in new] + list(keys.queries)
            )
            encoded.append(feats.select(slice(len(new), None)))
            given = None if prompts is None else (prompts[0][new], prompts[1][new])
            return self.cached_memories(feats.select(slice(0, len(new))), masks[new], given)

        entries = cache.fetch("memory", keys.memories, compute)
        query_feats = encoded[0] if encoded else self.encode_images(queries, list(keys.queries))
        assert self._memory_position is not None, "cached_memories sets it on the first miss of a fresh cache"
        return query_feats, entries, self._memory_position
