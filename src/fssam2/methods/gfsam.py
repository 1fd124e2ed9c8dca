"""GF-SAM (Zhang et al., NeurIPS 2024, "Bridge the Points: Graph-based Few-shot Segment Anything
Semantically"): training-free. Semantic features find where the supports' class is likely in the
query, SAM2 decodes one mask from each likely point, and a graph of points and masks decides which
masks make the answer.

The steps follow the official code (github ANDYZAQ/GF-SAM, matcher/GFSAM.py, commit f227d1d), one
episode at a time:
1. semantic features: DINOv2 ViT-L/14 on the images resized to 518 px (bilinear, no antialias, as
   its torchvision 0.14 resizes a tensor), the tokens after the last block before the final norm,
   without the class token, L2-normalised over the tokens (per channel, as its code does);
2. the positive prior (cosine similarity of each query token to the supports' masked tokens: its
   maximum over the support tokens, and its mean divided by the masked share) and the negative prior
   (the same with the complement mask), averaged over the K supports; the product of the positive
   maximum and mean, scaled to [0, 1], where the scaled negative mean is not above it;
3. the points: the top min(int(sum), 128) cells of that map, each decoded alone by SAM2's prompt
   path (the image predictor's: single mask, no-memory embedding added, logits upsampled to the
   input size, > 0);
4. the graph: point i -> point j when mask i covers point j (on the token grid, nearest); its weakly
   connected components are the clusters;
5. each cluster's masks, by score (positive minus negative prior over the mask), grow a region and
   are kept while they add more positive than negative cells ("mask growth");
6. point consistency: each point goes to the cluster whose union mask it resembles most (mean
   similarity to the union, over the distance to its nearest point); a cluster whose points mostly
   go elsewhere is dropped;
7. the answer: the union of the masks both kept in 5 and consistent in 6; when there is none, the
   mask of the best remaining cluster.

`GFSAM.predict` returns the official code's outputs (the binary mask and its soft mask); `forward`
returns the binary mask as logits (+-10).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import SAM2Base
from scipy.sparse import csgraph
from torch import nn

from fssam2.build import build_sam2
from fssam2.errors import InputError, is_number
from fssam2.methods.base import Prompts
from fssam2.methods.dinov2 import SemanticEncoder, build_semantic_encoder
from fssam2.methods.features import EpisodeKeys, ImageFeatures, SAM2Method, image_features
from fssam2.registry import RANDOM_INIT

BINARY_LOGIT = 10.0  # the answer as logits: +10 inside, -10 outside (sigmoid ~ 1 and ~ 0)
MAX_POINTS = 128  # the official cap on prompted points, "for efficiency"
POINT_BATCH = 64  # points decoded per mask-decoder call, as the official code batches them
COSINE_EPS = 1e-7  # the official code's epsilons
SCALE_EPS = 1e-6
EMPTY_SUPPORT_HALF = 7  # supports all empty: the official code marks the central 14 x 14 pixels
MASK_THRESHOLD = 0.0  # SAM2's image predictor keeps a mask's logits above 0


@dataclass
class SemanticFeatures(ImageFeatures):
    """SAM2's features of N images and their semantic tokens."""

    tokens: torch.Tensor  # [N, h*w, C] normalised over the tokens (dim 1), row-major on the h x w grid

    def select(self, index: slice) -> SemanticFeatures:
        return SemanticFeatures(
            self.embedding[index], self.position[index], [f[index] for f in self.high_res], self.tokens[index]
        )

    def per_image(self, i: int) -> tuple[torch.Tensor, ...]:
        return (*super().per_image(i), self.tokens[i])


@dataclass
class SupportMemory:
    """What a query reads of its K supports, batched over B episodes."""

    tokens: torch.Tensor  # [B, K, h*w, C] semantic tokens, normalised as SemanticFeatures.tokens
    fg: torch.Tensor  # [B, K, h*w] the mask on the token grid (bilinear, align_corners=True)
    bg: torch.Tensor  # [B, K, h*w] its complement on the grid
    area: torch.Tensor  # [B, K] the mask's pixels: supports all empty get the central square


class Prediction(NamedTuple):
    """One episode's answer with what led to it."""

    mask: torch.Tensor  # [S, S] float in {0, 1}: the official pred_masks
    prob: torch.Tensor  # [S, S] the official prob_masks (mean prior over each kept mask, max over masks)
    points: torch.Tensor  # [P, 2] long: the prompted cells (x, y) on the token grid
    labels: torch.Tensor  # [P] long: 1 kept, 2 candidate, 0 dropped (the official coord_waiting_labels)


def grid_masks(masks: torch.Tensor, side: int) -> torch.Tensor:
    """Masks [N, 1, H, W] -> [N, side*side] on the token grid, as the prior reads them (bilinear,
    align_corners=True)."""
    return F.interpolate(masks.float(), size=(side, side), mode="bilinear", align_corners=True).flatten(1)


def cosine_similarities(query: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
    """Query tokens [hw_q, C], support tokens [K, hw_s, C] -> cosine similarities [K, hw_s, hw_q],
    computed as the official code computes them (a batched product over norms, epsilon 1e-7)."""
    q = query[None].permute(0, 2, 1)  # [1, C, hw_q]
    q_norm = torch.norm(q, 2, 1, True)  # [1, 1, hw_q]
    out: torch.Tensor | None = None
    for i, support in enumerate(supports):
        s = support[None]  # [1, hw_s, C]
        s_norm = torch.norm(s, 2, 2, True)  # [1, hw_s, 1]
        products, norms = torch.bmm(s, q), torch.bmm(s_norm, q_norm) + COSINE_EPS
        if out is None:  # each support's quotient written in place: no copy of K maps of hw_s x hw_q
            dtype = torch.promote_types(products.dtype, norms.dtype)
            out = products.new_empty((len(supports), *products.shape[1:]), dtype=dtype)
        torch.div(products, norms, out=out[i : i + 1])
    assert out is not None, "at least one support"
    return out


def _masked_mean(weighted: torch.Tensor, mask: torch.Tensor, side: int) -> torch.Tensor:
    """One support's mean prior [1, 1, side, side] from its masked similarities [1, hw_s, hw_q]: their
    mean over all support tokens over the masked share of its mask [hw_s]."""
    return weighted.mean(1).view(1, 1, side, side) / (mask.sum() / (side * side) + COSINE_EPS)


def prior(similarities: torch.Tensor, masks: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official `generate_prior`: similarities [K, hw_s, hw_q] and support masks on the grid
    [K, hw_s] -> (maximum prior, mean prior), each [1, side, side], averaged over the K supports.
    The mean prior is the masked similarity's mean over all support tokens over the masked share."""
    peaks, means = [], []
    for sim, mask in zip(similarities, masks, strict=True):
        weighted = sim[None] * mask[None, :, None]  # [1, hw_s, hw_q]
        means.append(_masked_mean(weighted, mask, side))
        peaks.append(weighted.max(1)[0].view(1, 1, side, side))
    return torch.cat(peaks, 1).mean(1), torch.cat(means, 1).mean(1)


def mean_prior(similarities: torch.Tensor, masks: torch.Tensor, side: int) -> torch.Tensor:
    """`prior`'s mean prior alone, computed as it computes it (point consistency reads no maximum)."""
    means = [
        _masked_mean(sim[None] * mask[None, :, None], mask, side) for sim, mask in zip(similarities, masks, strict=True)
    ]
    return torch.cat(means, 1).mean(1)


def scaled(x: torch.Tensor) -> torch.Tensor:
    """x scaled to [0, 1] by its minimum and maximum (epsilon 1e-6), as the official code does."""
    return (x - x.min()) / (x.max() - x.min() + SCALE_EPS)


def find_points(sim_map: torch.Tensor, max_points: int = MAX_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The official `find_points`: map [1, h, w] -> the cells of its top min(int(sum), 128)
    values (at least one when the sum is positive), (x, y) [P, 2] long in the official order (by x,
    then y), and their one-hot map [h, w]."""
    total = sim_map.sum()
    k = min(int(total), max_points)
    if k == 0 and total > 0:
        k = 1
    flat = sim_map.flatten(0)
    hot = torch.zeros_like(flat)
    hot[flat.topk(k)[1]] = 1
    hot = hot.view(sim_map.shape[1], sim_map.shape[2])
    points = torch.from_numpy(np.argwhere((hot.T > 0).cpu().numpy())).to(sim_map.device)  # bool: bf16 maps too
    return points.long(), hot


def prompt_coords(points: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """Grid cells (x, y) [P, 2] -> prompt coordinates in SAM2's input pixels [P, 2] int32: the cell's
    corner scaled by size / side in float64, truncated (the official apply_coords, then int)."""
    return (points.double() * (size / side)).to(torch.int32)


def weak_clusters(masks: torch.Tensor, points: torch.Tensor, hot: torch.Tensor) -> tuple[int, np.ndarray]:
    """The official `mask_cluster`: masks [P, 1, H, W] (one per point), points (x, y) [P, 2], the
    points' one-hot map [h, w] -> (clusters, label per point): the weakly connected components of
    the graph with an edge i -> j where mask i, resized nearest to the grid, covers point j."""
    h, w = hot.shape
    on_grid = F.interpolate(masks.float(), size=(h, w), mode="nearest").squeeze(1)
    adjacent = (on_grid * (hot > 0).float()[None]).flatten(1)[:, points[:, 1] * w + points[:, 0]]  # [P, P]
    count, labels = csgraph.connected_components(
        adjacent.cpu().numpy(), directed=True, connection="weak", return_labels=True
    )
    return int(count), labels


def classify_clusters(
    masks: torch.Tensor, labels: torch.Tensor, count: int, pos_map: torch.Tensor, neg_map: torch.Tensor, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official `cluster_classification` (mask growth): masks [P, 1, H, W], cluster labels [P],
    the positive and negative maps [1, side, side] -> (foreground label per mask [P] long, cluster
    score per mask [P]: the last grown mask's positive minus negative cells, as its code leaves it)."""
    fg_labels = torch.zeros_like(labels)
    scores = torch.zeros_like(labels, dtype=torch.float)
    positive = (pos_map > neg_map).float()
    size = (side, side)
    for cluster in range(count):
        members = torch.where(labels == cluster)[0]
        union = (masks[members].sum(dim=0) > 0).float()
        union = F.interpolate(union.unsqueeze(0), size, mode="bilinear", align_corners=False).squeeze(0)
        on_grid = F.interpolate(masks[members].float(), size, mode="bilinear", align_corners=False)
        mask_scores = (on_grid * (pos_map - neg_map).unsqueeze(0)).sum(dim=(-1, -2, -3))
        mask_scores = mask_scores / (on_grid.sum(dim=(-1, -2, -3)) + SCALE_EPS)
        inner = torch.zeros_like(union)
        pos_score = neg_score = torch.zeros((), device=masks.device)
        for idx in mask_scores.argsort(descending=True):
            grown = on_grid[idx] * (1 - inner)
            pos_score = (positive * grown).sum()
            neg_score = ((1 - positive) * grown).sum()
            if pos_score > neg_score:
                inner += grown
                fg_labels[members[idx]] = 1
        scores[members] = pos_score - neg_score
    return fg_labels, scores


def point_consistency(
    self_similarity: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    count: int,
    fg_labels: torch.Tensor,
    points: torch.Tensor,
    side: int,
) -> torch.Tensor:
    """The official `point_consistency_dis`: the query's token self-similarity [1, hw, hw], masks
    [P, 1, H, W], cluster labels [P], foreground labels [P], points (x, y) [P, 2] -> per point 1
    (consistent and foreground), 2 (one of the two) or 0 (neither)."""
    unions = []
    for cluster in range(count):
        members = torch.where(labels == cluster)[0]
        union = (masks[members].sum(dim=0) > 0).float()
        union = F.interpolate(union.unsqueeze(0), (side, side), mode="bilinear", align_corners=False).squeeze(0)
        unions.append(mean_prior(self_similarity, grid_masks(union.unsqueeze(0), side), side))
    similarity = torch.cat(unions, dim=0)[:, points[:, 1], points[:, 0]]  # [clusters, P]
    distance = torch.cdist(points.float(), points.float())  # [P, P]
    # Each point's distance to the nearest point of each cluster (a minimum: exact, in any order).
    members = labels[None, :] == torch.arange(count, device=labels.device)[:, None]  # [clusters, P]
    nearest = distance[None].masked_fill(~members[:, None, :], float("inf")).amin(-1).to(similarity.dtype)
    nearest[nearest == 0] = 1
    best = (similarity / nearest).max(dim=0)[1]
    consistent = torch.where(best == labels, 1, 0)
    for cluster in range(count):
        members = torch.where(labels == cluster)[0]
        agree = consistent[members].sum()
        if agree < len(members) - agree:
            consistent[members] = 0
    chosen = (consistent * fg_labels) > 0
    out = ((consistent + fg_labels) > 0).long() * 2
    out[chosen] = 1
    return out


def select_masks(
    masks: torch.Tensor, selection: torch.Tensor, mean_map: torch.Tensor, scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official `triplet_selection_b`: the union of the masks labelled 1, else the mask of the
    highest score among those labelled 2 (mask 0 when none is) -> (mask [S, S] in {0, 1}, soft
    mask [S, S]: each chosen mask times the mean prior over it, the maximum over masks)."""
    size = masks.shape[-2:]
    pred = torch.zeros(size, device=masks.device).unsqueeze(0)
    prob = torch.zeros(size, device=masks.device).unsqueeze(0)
    sim = F.interpolate(mean_map.unsqueeze(0), size, mode="bilinear", align_corners=False).squeeze(0)
    for idx in (selection == 1).nonzero()[:, 0].tolist():  # the labels read once, not once a point
        pred += masks[idx]
        prob = torch.max(prob, (sim * masks[idx]).sum() / masks[idx].sum() * masks[idx])
    pred = (pred > 0).float()
    if pred.sum() == 0:
        scores = scores.clone()
        scores[selection != 2] = 0
        best = scores.max(dim=0)[1]
        pred += masks[best]
        prob = (sim * masks[best]).sum() / masks[best].sum() * masks[best]
    return pred[0], prob[0]


def disk_masks(coords: torch.Tensor, size: int, radius: float) -> torch.Tensor:
    """The stand-in predictor: for each prompt (x, y) [P, 2] in input pixels, the pixels within
    `radius` of it, [P, 1, size, size] bool."""
    grid = torch.arange(size, device=coords.device, dtype=torch.float64)
    x, y = coords[:, 0].double(), coords[:, 1].double()
    dist = (grid[None, None, :] - x[:, None, None]) ** 2 + (grid[None, :, None] - y[:, None, None]) ** 2
    return (dist <= radius**2)[:, None]


def central_square(size: int, device: torch.device) -> torch.Tensor:
    """The mask the official code gives supports that are all empty: 14 x 14 central pixels, [size, size]."""
    mask = torch.zeros(size, size, device=device)
    c = size // 2
    mask[c - EMPTY_SUPPORT_HALF : c + EMPTY_SUPPORT_HALF, c - EMPTY_SUPPORT_HALF : c + EMPTY_SUPPORT_HALF] = 1
    return mask


class GFSAM(SAM2Method):
    """GF-SAM on SAM2: training-free; nothing in it trains, and `fssam2 fit` refuses it.

    Args:
        sam2: a built SAM2 (see `fssam2.build_sam2`; the official method uses SAM ViT-H, here
            SAM2.1, e.g. sam2.1_hiera_l), weights loaded; it decodes the points and weak supports.
        encoder: the semantic encoder (DINOv2, `fssam2.methods.dinov2`); None: SAM2's own image
            embedding stands in (the miniature, where no DINOv2 exists).
        disk_radius: None: SAM2 decodes each point; a radius in input pixels: a disk around each
            point stands in for SAM2's mask (deterministic, for checks against the official code).
    """

    FIXED_BY_WEIGHTS: ClassVar[tuple[str, ...]] = ("sam2_config", "sam2_checkpoint", "image_size", "method_args")
    TRAINS: ClassVar[bool] = False

    def __init__(
        self, sam2: SAM2Base, encoder: SemanticEncoder | None = None, disk_radius: float | None = None
    ) -> None:
        if disk_radius is not None and disk_radius < 0:
            raise InputError(f"disk_radius={disk_radius} must be >= 0 pixels (or null: SAM2 decodes the points).")
        super().__init__(sam2)
        self.encoder = encoder
        self.disk_radius = disk_radius
        self.requires_grad_(False)

    @classmethod
    def build(
        cls,
        sam2_config: str,
        sam2_checkpoint: str | None,
        image_size: int | None,
        *,
        encoder: str = "dinov2_vitl14",
        encoder_checkpoint: str | None = None,
        disk_radius: float | None = None,
        **options: Any,
    ) -> GFSAM:
        """GF-SAM on `build_sam2(sam2_config, sam2_checkpoint)`, in eval mode. `encoder`: a DINOv2
        name (`fssam2.methods.dinov2.ENCODERS`) or "sam2" (SAM2's image embedding stands in);
        `encoder_checkpoint`: its weights (None: the released ones by name, downloaded once and
        verified; "random": random initialisation; or a file)."""
        if options:
            raise InputError(
                f"GFSAM has no option {', '.join(sorted(options))}: its options are encoder, encoder_checkpoint "
                "and disk_radius (model.method_args in a config; --method-args of segment and serve)."
            )
        wrong = [
            f"{name}={value!r} (give {kind})"
            for name, value, ok, kind in (
                ("encoder", encoder, isinstance(encoder, str), "a name such as dinov2_vitl14, or sam2"),
                (
                    "encoder_checkpoint",
                    encoder_checkpoint,
                    isinstance(encoder_checkpoint, str | None),
                    "a path, a name or null",
                ),
                (
                    "disk_radius",
                    disk_radius,
                    disk_radius is None or is_number(disk_radius),
                    "a number of pixels or null",
                ),
            )
            if not ok
        ]
        if wrong:
            raise InputError(
                f"GFSAM option {'; '.join(wrong)} (model.method_args; --method-args of segment and serve)."
            )
        if encoder == "sam2":
            if encoder_checkpoint is not None:
                raise InputError(
                    "model.method_args.encoder_checkpoint is for a DINOv2 encoder; with encoder=sam2 SAM2's own "
                    "features stand in: drop encoder_checkpoint."
                )
            semantic = None
        else:
            semantic = build_semantic_encoder(encoder, encoder_checkpoint)
        model = cls(build_sam2(sam2_config, sam2_checkpoint, image_size=image_size), semantic, disk_radius)
        return model.eval()

    @classmethod
    def sizing_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """A DINOv2 encoder with random weights: its tokens' shape, nothing fetched (a checkpoint
        that is no path or name is kept, for `build` to refuse)."""
        if options.get("encoder") == "sam2" or not isinstance(options.get("encoder_checkpoint"), str | None):
            return options
        return {**options, "encoder_checkpoint": RANDOM_INIT}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return []

    def semantic_tokens(self, images: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Step 1: images [N, 3, S, S] normalised -> tokens [N, h*w, C], normalised over the tokens.
        Without an encoder, SAM2's image embedding [N, C, h, w] (computed when not given)."""
        if self.encoder is None:
            if embedding is None:
                embedding = image_features(self.sam2, images).embedding
            tokens = embedding.flatten(2).transpose(1, 2)
        else:
            tokens = self.encoder(images)
        return F.normalize(tokens, dim=1, p=2)

    @property
    def grid(self) -> int:
        """The side h = w of the token grid."""
        if self.encoder is None:
            return self.image_size // 16
        return self.encoder.grid

    def _encode(self, images: torch.Tensor) -> SemanticFeatures:
        feats = image_features(self.sam2, images)
        tokens = self.semantic_tokens(images, feats.embedding)
        return SemanticFeatures(feats.embedding, feats.position, feats.high_res, tokens)

    def _stacked(self, entries: list[tuple[torch.Tensor, ...]]) -> SemanticFeatures:
        maps = [torch.stack(level) for level in zip(*entries, strict=True)]
        assert self._position is not None, "set when the cache's first entry was computed"
        position = self._position.expand(len(entries), -1, -1, -1)
        return SemanticFeatures(maps[0], position, maps[1:-1], maps[-1])

    def support_entries(self, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """N supports' masks [N, S, S] -> on the grid (fg [N, hw], bg [N, hw]) and areas [N]."""
        m = masks[:, None].float()
        side = self.grid
        return grid_masks(m, side), grid_masks(1 - m, side), m.flatten(1).sum(1)

    def encode_support(
        self, support_images: torch.Tensor, support_masks: torch.Tensor, prompts: Prompts | None = None
    ) -> SupportMemory:
        """Steps 1-2's support side: images [B, K, 3, S, S] normalised, masks [B, K, S, S] in {0, 1}
        (a weak support's: its decoded mask) -> their tokens and masks on the grid."""
        b, k = support_images.shape[:2]
        tokens = self.semantic_tokens(support_images.flatten(0, 1))
        fg, bg, area = self.support_entries(support_masks.flatten(0, 1))
        return SupportMemory(
            tokens.unflatten(0, (b, k)), fg.unflatten(0, (b, k)), bg.unflatten(0, (b, k)), area.view(b, k)
        )

    def segment(self, query_images: torch.Tensor, memory: SupportMemory) -> torch.Tensor:
        """Steps 1-7 for queries [B, 3, S, S] -> logits [B, 1, S, S] (+-BINARY_LOGIT)."""
        return self.decode(self.encode_images(query_images), memory)

    def encode_images(self, images: torch.Tensor, keys: Sequence[Hashable] | None = None) -> SemanticFeatures:
        """SAM2's features and the semantic tokens of images [N, 3, S, S] (through the feature cache
        with `keys`, as `SAM2Method.encode_images`)."""
        feats = super().encode_images(images, keys)
        assert isinstance(feats, SemanticFeatures), "_encode and _stacked make them"
        return feats

    def decode(self, query: SemanticFeatures, memory: SupportMemory) -> torch.Tensor:
        masks = [self.predict(query.select(slice(i, i + 1)), memory, i).mask for i in range(len(query.tokens))]
        return (torch.stack(masks)[:, None] * 2 - 1) * BINARY_LOGIT

    def point_masks(self, query: ImageFeatures, coords: torch.Tensor) -> torch.Tensor:
        """Step 3's decode: one query's features, prompts (x, y) [P, 2] int in SAM2's input pixels ->
        one mask per prompt [P, 1, S, S] bool, as SAM2's image predictor decodes single points."""
        size = self.image_size
        if self.disk_radius is not None:
            return disk_masks(coords, size, self.disk_radius)
        sam2 = self.sam2
        emb = query.embedding
        if sam2.directly_add_no_mem_embed:
            emb = emb + sam2.no_mem_embed.view(1, -1, 1, 1)
        out = []
        for start in range(0, len(coords), POINT_BATCH):
            points = coords[start : start + POINT_BATCH, None].float()  # [n, 1, 2]
            labels = torch.ones(points.shape[:2], dtype=torch.int32, device=coords.device)
            sparse, dense = sam2.sam_prompt_encoder(points=(points, labels), boxes=None, masks=None)
            low, _, _, _ = sam2.sam_mask_decoder(
                image_embeddings=emb,
                image_pe=sam2.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
                repeat_image=len(points) > 1,
                high_res_features=query.high_res,
            )
            up = F.interpolate(low.float(), size=(size, size), mode="bilinear", align_corners=False)
            out.append(up > MASK_THRESHOLD)
        return torch.cat(out)

    def predict(self, query: SemanticFeatures, memory: SupportMemory, episode: int = 0) -> Prediction:
        """Steps 2-7 for one query (features of one image) and episode `episode` of `memory`."""
        side, size = self.grid, self.image_size
        device = query.tokens.device
        tokens = query.tokens[0]
        fg, bg = memory.fg[episode], memory.bg[episode]
        if float(memory.area[episode].sum()) == 0:  # the official reference_masks_verification
            square = central_square(size, device)[None, None]
            fg = grid_masks(square, side).expand_as(fg)
            bg = grid_masks(1 - square, side).expand_as(bg)
        similarities = cosine_similarities(tokens, memory.tokens[episode])
        neg_peak, neg_mean = prior(similarities, bg, side)
        peak, mean = prior(similarities, fg, side)
        half = (mean.max() + mean.min()) / 2
        cross = scaled(mean * peak)
        kept = cross * ~(scaled(neg_mean) > cross)
        points, hot = find_points(kept)
        if len(points) == 0:
            empty = torch.zeros(size, size, device=device)
            return Prediction(empty, empty.clone(), points, points.new_zeros(0))
        masks = self.point_masks(query, prompt_coords(points, side, size).to(device))
        count, labels_np = weak_clusters(masks, points, hot)
        labels = torch.as_tensor(labels_np, device=device, dtype=torch.long)
        fg_labels, scores = classify_clusters(masks, labels, count, mean * mean, neg_mean * half, side)
        self_similarity = cosine_similarities(tokens, tokens[None])
        selection = point_consistency(self_similarity, masks, labels, count, fg_labels, points, side)
        mask, prob = select_masks(masks, selection, mean, scores)
        return Prediction(mask, prob, points, selection)

    def forward(
        self,
        support_images: torch.Tensor,
        support_masks: torch.Tensor,
        query_images: torch.Tensor,
        keys: Any = None,
        prompts: Prompts | None = None,
    ) -> torch.Tensor:
        """support_images [B, K, 3, S, S] and query_images [B, 3, S, S] normalised; support_masks
        [B, K, S, S] in {0, 1} (a weak support's: its decoded mask). Returns logits [B, 1, S, S]."""
        self.check_inputs(support_images, support_masks, query_images)
        if keys is None or self.feature_cache is None:
            return self.segment(query_images, self.encode_support(support_images, support_masks))
        b, k = support_images.shape[:2]
        keys.check(b, k)
        query, memory = self.cached_support(
            support_images.flatten(0, 1), support_masks.flatten(0, 1), query_images, keys
        )
        return self.decode(query, memory)

    def cached_support(
        self, images: torch.Tensor, masks: torch.Tensor, queries: torch.Tensor, keys: EpisodeKeys
    ) -> tuple[SemanticFeatures, SupportMemory]:
        """Through the feature cache: the queries' features and each support's memory entry (tokens,
        fg, bg, area) by its memory key. A missing entry's tokens are its image's: from its weak
        support's prompt decode this step; else, for an image this batch or (planned) a later step
        shows as a query or another memory, from its image entry, encoded with the queries and kept;
        else from a held image entry (then its pixels may not have been shipped:
        `FSSAM2Module._needed`), else from the semantic encoder alone. Its masks on the grid come from
        its mask. images [B*K, 3, S, S], masks [B*K, S, S], queries [B, 3, S, S]."""
        cache = self.feature_cache
        assert cache is not None, "forward calls this only with a feature cache"
        encoded: list[SemanticFeatures] = []  # the queries' features, when encoded with supports' images
        shown = set(keys.queries)

        def compute(new: list[int]) -> list[tuple[torch.Tensor, ...]]:
            image_keys = [keys.supports[i] for i in new]
            tokens: list[torch.Tensor | None] = [
                None if (d := self._decoded.get(key)) is None else d[-1] for key in image_keys
            ]
            absent = [j for j, t in enumerate(tokens) if t is None]
            whole = [j for j in absent if image_keys[j] in shown or cache.needed_later("image", image_keys[j])]
            feats = self.encode_images(
                torch.cat([images[[new[j] for j in whole]], queries]),
                [image_keys[j] for j in whole] + list(keys.queries),
            )
            encoded.append(feats.select(slice(len(whole), None)))
            for n, j in enumerate(whole):
                tokens[j] = feats.tokens[n]
            rest = [j for j in absent if tokens[j] is None]
            for j, entry in zip(rest, cache.lookup("image", [image_keys[j] for j in rest]), strict=True):
                tokens[j] = None if entry is None else entry[-1]
            alone = [j for j in rest if tokens[j] is None]
            computed: Iterator[torch.Tensor] = iter(
                self.semantic_tokens(images[[new[j] for j in alone]]) if alone else []
            )
            stacked = torch.stack([next(computed) if t is None else t for t in tokens])
            fg, bg, area = self.support_entries(masks[new])
            return list(zip(stacked, fg, bg, area, strict=True))

        entries = cache.fetch("memory", keys.memories, compute)
        query = encoded[0] if encoded else self.encode_images(queries, list(keys.queries))
        return query, self.memory_of(entries, len(keys.queries))

    @staticmethod
    def memory_of(entries: Sequence[tuple[torch.Tensor, ...]], batch: int) -> SupportMemory:
        """B*K cached entries, episode-major -> the memory of B episodes."""
        tokens, fg, bg, area = (torch.stack(level) for level in zip(*entries, strict=True))
        k = len(entries) // batch
        return SupportMemory(
            tokens.unflatten(0, (batch, k)),
            fg.unflatten(0, (batch, k)),
            bg.unflatten(0, (batch, k)),
            area.view(batch, k),
        )

    def cached_memories(
        self, feats: ImageFeatures, masks: torch.Tensor, prompts: Prompts | None = None
    ) -> list[tuple[torch.Tensor, ...]]:
        """Each support's entry (tokens, fg, bg, area), from features of N images with tokens."""
        assert isinstance(feats, SemanticFeatures), "GFSAM's features carry their tokens"
        fg, bg, area = self.support_entries(masks)
        return list(zip(feats.tokens, fg, bg, area, strict=True))

    def extra_repr(self) -> str:
        encoder = "SAM2's image embedding" if self.encoder is None else self.encoder.name
        return f"encoder={encoder}, grid={self.grid}, disk_radius={self.disk_radius}"
