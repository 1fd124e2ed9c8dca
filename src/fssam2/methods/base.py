"""What a few-shot method supplies to fssam2's one LightningModule (`fssam2.module.FSSAM2Module`).

A method is an `nn.Module` built from a SAM2 config and weights. The task trains it on episodes,
scores it with the protocol and saves it; everything that depends on the method (its trainable
parameters, its loss, its weights while evaluating, what a checkpoint and an adapter file hold, the
feature-cache keys, the options its weights fix) is asked of it through this interface.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from fssam2.cache import FeatureCache
from fssam2.errors import InputError, state_mismatch
from fssam2.metric import IGNORE, score_at_original_size

# Weak supports' prompts: coords [B, K, P, 2] (x, y in input pixels), labels [B, K, P] (1 a
# foreground point, 2 / 3 box corners, -1 padding; a support of padding only shows its mask).
Prompts = tuple[torch.Tensor, torch.Tensor]


def bce_dice_per_episode(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + Dice (on the sigmoid) of each episode, [B].

    logits [B, H, W]; target [B, H, W] in {0, 1, 255}, 255 left out of both terms.
    """
    valid = (target != IGNORE).float()
    fg = (target == 1).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, fg, reduction="none")
    bce = (bce * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    prob = torch.sigmoid(logits) * valid
    inter = (prob * fg).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + fg.flatten(1).sum(1) + 1)
    return bce + dice


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss: `bce_dice_per_episode`, mean over the batch."""
    return bce_dice_per_episode(logits, target).mean()


class FewShotMethod(nn.Module, ABC):
    """A few-shot segmenter on SAM2. Subclasses implement the abstract methods; the others have
    defaults that suit a method without adapters (AdamW with a cosine schedule, BCE + Dice).

    Class attributes:
        FIXED_BY_WEIGHTS: the model options a training checkpoint's weights fix; `--ckpt_path`
            takes them from the checkpoint and refuses a conflicting one.
        COMPILED_PARTS: the submodules `model.compile` compiles.
        TRAINS: whether anything in the method trains; `fssam2 fit` refuses a training-free one.
        feature_cache: the evaluation's feature cache, which `forward` uses with `keys`.
    """

    FIXED_BY_WEIGHTS: ClassVar[tuple[str, ...]] = ("sam2_config", "sam2_checkpoint", "image_size")
    # Submodules `model.compile` compiles in place (the parameter names stay).
    COMPILED_PARTS: ClassVar[tuple[str, ...]] = ()
    TRAINS: ClassVar[bool] = True
    # Set by the task only while evaluating with fixed weights and no augmentation (see fssam2.cache).
    feature_cache: FeatureCache | None

    @classmethod
    @abstractmethod
    def build(
        cls, sam2_config: str, sam2_checkpoint: str | None, image_size: int | None, **options: Any
    ) -> FewShotMethod:
        """The method on a SAM2 built from `sam2_config` and the weights `sam2_checkpoint` (a path or
        a name; None: random initialisation), its trainable parameters marked (`requires_grad`).
        `options` are the method's own (e.g. FS-SAM2's lora, trainable, encoder_batch)."""

    @classmethod
    def sizing_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """`build`'s options for a model built only to size its cache entries (the plan report):
        nothing is fetched or read for it. By default the options as given."""
        return options

    @property
    @abstractmethod
    def image_size(self) -> int:
        """The square input size S."""

    @abstractmethod
    def encode_support(
        self, support_images: torch.Tensor, support_masks: torch.Tensor, prompts: Prompts | None = None
    ) -> Any:
        """Support -> memory: images [B, K, 3, S, S] normalised, masks [B, K, S, S] in {0, 1}.
        `prompts`: the weak supports' prompts, whose decoded masks (`support_masks_from_prompts`)
        `support_masks` holds; a method whose memory reads the prompted decode itself reads them."""

    @abstractmethod
    def segment(self, query_images: torch.Tensor, memory: Any) -> torch.Tensor:
        """Query -> logits: images [B, 3, S, S] and `encode_support`'s memory -> logits [B, 1, S, S]."""

    @abstractmethod
    def cache_keys(self, batch: dict[str, Any], split: str) -> Any:
        """The feature-cache keys of a collated batch's images (`forward`'s `keys`)."""

    @abstractmethod
    def forward(
        self,
        support_images: torch.Tensor,
        support_masks: torch.Tensor,
        query_images: torch.Tensor,
        keys: Any = None,
        prompts: Prompts | None = None,
    ) -> torch.Tensor:
        """One batch of episodes -> query logits [B, 1, S, S] (`segment(encode_support(...))`,
        with the feature cache when one is set and `keys` are given; `prompts` as `encode_support`)."""

    def check_inputs(
        self, support_images: torch.Tensor, support_masks: torch.Tensor, query_images: torch.Tensor
    ) -> None:
        """One-line InputErrors for episode tensors of the wrong shapes."""
        s = self.image_size
        if support_images.dim() != 5 or support_images.shape[2:] != (3, s, s):
            raise InputError(
                f"support_images has shape {tuple(support_images.shape)}; expected [B, K, 3, {s}, {s}] "
                f"(images resized to the model's input size {s})."
            )
        b, k = support_images.shape[:2]
        if k == 0:
            raise InputError("K = 0 support images: an episode needs at least one annotated support (shot >= 1).")
        if tuple(support_masks.shape) != (b, k, s, s):
            raise InputError(
                f"support_masks has shape {tuple(support_masks.shape)} but support_images has "
                f"{tuple(support_images.shape)}: masks must be [B, K, {s}, {s}], one per support image."
            )
        if tuple(query_images.shape) != (b, 3, s, s):
            raise InputError(
                f"query_images has shape {tuple(query_images.shape)}; expected [{b}, 3, {s}, {s}] "
                "(one query per episode, at the model's input size)."
            )

    def support_masks_from_prompts(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        keys: Any = None,
    ) -> torch.Tensor:
        """The mask each support gives its memory when supports come with point prompts (coords
        [N, P, 2], labels [N, P], -1 padding) beside their images [N, 3, S, S] and masks [N, S, S]:
        see `fssam2.methods.features.SAM2Method`. A method that takes only masks refuses."""
        raise InputError(f"{type(self).__name__} takes support masks only: set data.support_annotation=mask.")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters training updates."""
        return [p for p in self.parameters() if p.requires_grad]

    def score(self, logits: torch.Tensor, targets: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Query logits [B, 1, S, S] and targets [H, W] (original sizes) -> (binary predictions,
        targets) as the metric compares them: by default at each target's original size."""
        return score_at_original_size(logits, targets), targets

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss of query logits [B, S, S] against targets [B, S, S] in {0, 1, 255}."""
        return bce_dice_loss(logits, target)

    def optimizer(
        self, lr: float, weight_decay: float, betas: Sequence[float], total_steps: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """AdamW (no weight decay on 1-D parameters: biases, norms) and a per-step cosine decay to 0
        over `total_steps`."""
        params = self.trainable_parameters()
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        b1, b2 = betas
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2))
        total = max(1, total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
        return optimizer, scheduler

    def start_evaluation(self) -> None:  # noqa: B027 - a method without adapters has nothing to fix
        """Weights are fixed until `end_evaluation` (e.g. fold adapters into the weights)."""

    def end_evaluation(self) -> None:  # noqa: B027 - see start_evaluation
        """Undo `start_evaluation`."""

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Entries of `state_dict()` a checkpoint must hold in place of the live ones (e.g. the
        unmerged weights while adapters are merged for evaluation); {} when the live ones will do."""
        return {}

    @classmethod
    def is_adapter_key(cls, name: str) -> bool:
        """Whether state-dict entry `name` belongs to the method's adapters (what an adapter file
        holds; without adapters, nothing)."""
        return False

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The adapters' weights, as an adapter file stores them."""
        return {n: v.detach() for n, v in self.state_dict().items() if self.is_adapter_key(n)}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load `adapter_state()`'s weights, refusing any missing, unexpected or reshaped entry."""
        own = self.adapter_state()
        differs = state_mismatch(own, state)
        if differs:
            raise InputError(
                f"Adapter state does not fit this {type(self).__name__} (built with other options or another base): "
                f"{differs}."
            )
        self.load_state_dict(state, strict=False)
