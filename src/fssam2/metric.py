"""The few-shot segmentation metric: per-class mIoU and FB-IoU, accumulated over episodes.

Per class c of the evaluated fold, foreground and background intersections and unions are
summed over every episode of that class (not averaged per sample, unlike torchmetrics'
MeanIoU); pixels equal to `ignore_index` count as neither foreground nor background.
    mIoU   = 100 * mean_c I_fg[c] / max(U_fg[c], 1), over the classes with at least one episode
    FB-IoU = 100 * mean(sum_c I_bg / sum_c U_bg, sum_c I_fg / sum_c U_fg)
A class no episode was scored for (a run cut short) is left out of the mean, never counted as 0.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from fssam2.errors import InputError

IGNORE = 255  # a label or target pixel left out of the metric and the loss (object borders, padding)


class FewShotIoU(Metric):
    """mIoU / FB-IoU over the classes `class_ids` of one fold, summed across processes.

    Args:
        class_ids: the label values of the fold's classes (e.g. 1..5 for PASCAL-5i fold 0).
        ignore_index: target value excluded from both foreground and background.
    """

    full_state_update = False
    higher_is_better = True
    # Registered in __init__ (a buffer and states); declared here for the type checker.
    _slot: torch.Tensor
    inter_fg: torch.Tensor
    union_fg: torch.Tensor
    inter_bg: torch.Tensor
    union_bg: torch.Tensor
    episodes: torch.Tensor

    def __init__(self, class_ids: Sequence[int], ignore_index: int = IGNORE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        class_ids = [int(c) for c in class_ids]
        if not class_ids or len(set(class_ids)) != len(class_ids):
            raise InputError(f"FewShotIoU class_ids={class_ids}: give the fold's class ids, each once.")
        self.class_ids = class_ids
        self.ignore_index = ignore_index
        lookup = torch.full((max(class_ids) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(class_ids)] = torch.arange(len(class_ids))
        self.register_buffer("_slot", lookup, persistent=False)
        n = len(class_ids)
        for name in ("inter_fg", "union_fg", "inter_bg", "union_bg", "episodes"):  # episodes: scored per class
            self.add_state(name, default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, class_id: torch.Tensor) -> None:
        """Add a batch of scored episodes.

        Args:
            preds: [B, H, W] binary predictions, every value 0 or 1 (bool, integer, or float exactly
                0.0 / 1.0). Logits or probabilities are refused, not thresholded: threshold them
                first (`logits > 0`, `probs > 0.5`).
            target: [B, H, W], every value 0 (background), 1 (object) or `ignore_index`.
            class_id: [B], the class of each episode, among the metric's `class_ids`.
        """
        if preds.shape != target.shape or preds.dim() != 3:
            raise InputError(
                f"FewShotIoU.update: preds {tuple(preds.shape)} and target {tuple(target.shape)} must "
                "both be [B, H, W] (score predictions at the target's size)."
            )
        if not _only(preds, (0, 1)):
            raise InputError(
                f"FewShotIoU.update: preds ({preds.dtype}) hold values other than 0 and 1: pass binary "
                "predictions (threshold logits with `logits > 0`, probabilities with `probs > 0.5`)."
            )
        if not _only(target, (0, 1, self.ignore_index)):
            raise InputError(
                f"FewShotIoU.update: target holds values other than 0, 1 and ignore_index={self.ignore_index}: "
                "pass the episode's binary mask (1 = the class's object, 0 = background)."
            )
        class_id = torch.as_tensor(class_id, device=self._slot.device).long().reshape(-1)
        known = (class_id >= 0) & (class_id < self._slot.numel())
        slots = torch.where(known, self._slot[class_id.clamp(0, self._slot.numel() - 1)], -1)
        if class_id.numel() != preds.shape[0] or (slots < 0).any():
            raise InputError(
                f"FewShotIoU.update: class ids {class_id.tolist()} must be one per sample and among "
                f"the metric's classes {self.class_ids}."
            )
        valid = target != self.ignore_index
        pred_fg = preds.bool() & valid
        true_fg = (target == 1) & valid
        pred_bg = ~preds.bool() & valid
        true_bg = (target == 0) & valid
        for name, a, b in (("fg", pred_fg, true_fg), ("bg", pred_bg, true_bg)):
            inter, union = _overlap(a, b)
            getattr(self, f"inter_{name}").index_add_(0, slots.to(inter.device), inter)
            getattr(self, f"union_{name}").index_add_(0, slots.to(union.device), union)
        self.episodes.index_add_(0, slots.to(self.episodes.device), torch.ones_like(slots, device=self.episodes.device))

    def _wrap_compute(self, compute: Callable[..., Any]) -> Callable[..., Any]:
        # torchmetrics squeezes every one-element tensor of compute()'s result to 0-d, which
        # would make per_class of a one-class fold a scalar; it stays [n] here, in class_ids order (episodes too).
        wrapped = _without_lone_update_warning(self, super()._wrap_compute(compute))

        @functools.wraps(wrapped)
        def keep_per_class(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            result = wrapped(*args, **kwargs)
            return {**result, "per_class": result["per_class"].reshape(-1), "episodes": result["episodes"].reshape(-1)}

        return keep_per_class

    def compute(self) -> dict[str, torch.Tensor]:
        """miou and fbiou (percent), per-class IoU (percent, in class_ids order; NaN for a class no
        episode was scored for, which the mIoU leaves out) and the episodes scored per class.
        Refused (InputError) when no pixel was scored on any process since the metric was made or reset."""
        # The states are summed across processes here, so every process decides alike.
        if int(self.union_fg.sum() + self.union_bg.sum()) == 0:
            raise InputError(
                "FewShotIoU.compute: nothing to score, no pixel was counted (no update() since the metric was "
                "made or reset, or every target pixel was ignore_index): update it with at least one episode first."
            )
        per_class = self.inter_fg.double() / self.union_fg.double().clamp(min=1)
        per_class[self.episodes == 0] = float("nan")
        fg = self.inter_fg.sum().double() / self.union_fg.sum().double().clamp(min=1)
        bg = self.inter_bg.sum().double() / self.union_bg.sum().double().clamp(min=1)
        return {
            "miou": 100 * per_class.nanmean().float(),
            "fbiou": 100 * ((fg + bg) / 2).float(),
            "per_class": 100 * per_class.float(),
            "episodes": self.episodes.clone(),
        }


class SupportGap(Metric):
    """The support gap: mIoU with the true supports minus mIoU with swapped supports, on one
    subset of episodes, each episode's foreground counts kept apart, summed across processes.

    Both figures are over the episodes scored both ways (a run cut short by limit_*_batches may
    miss some), with the metric's rule: per class of those episodes, intersections and unions
    summed over its episodes; mIoU = 100 * mean over those classes of I_fg / max(U_fg, 1).

    Args:
        episodes: the subset's episode indices.
        classes: each episode's class (the query's class, also under swapped supports).
        ignore_index: target value that counts as neither foreground nor background.
    """

    full_state_update = False
    _slot: torch.Tensor
    _class: torch.Tensor
    inter: torch.Tensor
    union: torch.Tensor
    seen: torch.Tensor

    def __init__(
        self, episodes: Sequence[int], classes: Sequence[int], ignore_index: int = IGNORE, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        episodes, classes = [int(i) for i in episodes], [int(c) for c in classes]
        if not episodes or len(set(episodes)) != len(episodes) or len(classes) != len(episodes) or min(episodes) < 0:
            raise InputError(f"SupportGap: give distinct episode indices >= 0 and one class each, not {episodes}.")
        self.episodes, self.classes, self.ignore_index = episodes, classes, ignore_index
        k = len(episodes)
        lookup = torch.full((max(episodes) + 1,), k, dtype=torch.long)  # k: not in the subset
        lookup[torch.tensor(episodes)] = torch.arange(k)
        self.register_buffer("_slot", lookup, persistent=False)
        self.class_ids = sorted(set(classes))
        self.register_buffer("_class", torch.tensor([self.class_ids.index(c) for c in classes]), persistent=False)
        for name in ("inter", "union", "seen"):  # [true, swapped] x [the subset's episodes, one slot for the others]
            self.add_state(name, default=torch.zeros(2, k + 1, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, preds: Sequence[torch.Tensor], target: Sequence[torch.Tensor], index: torch.Tensor, swapped: bool
    ) -> None:
        """Add a batch: binary predictions and targets ([H, W] each, sizes may differ between
        episodes), the episodes' indices, and whether their supports were swapped. Episodes
        outside the subset are left out (counted nowhere)."""
        if all(p.shape == preds[0].shape for p in preds):
            inter, union = _foreground(torch.stack(list(preds)), torch.stack(list(target)), self.ignore_index)
        else:
            pairs = [_foreground(p[None], t[None], self.ignore_index) for p, t in zip(preds, target, strict=True)]
            inter, union = torch.cat([i for i, _ in pairs]), torch.cat([u for _, u in pairs])
        index = torch.as_tensor(index, device=self._slot.device).long().reshape(-1)
        k = len(self.episodes)
        slots = torch.where(index < self._slot.numel(), self._slot[index.clamp(0, self._slot.numel() - 1)], k)
        row = int(swapped)
        self.inter[row].index_add_(0, slots.to(inter.device), inter)
        self.union[row].index_add_(0, slots.to(union.device), union)
        self.seen[row].index_add_(0, slots.to(inter.device), torch.ones_like(inter))

    def _wrap_compute(self, compute: Callable[..., Any]) -> Callable[..., Any]:
        return _without_lone_update_warning(self, super()._wrap_compute(compute))

    def compute(self) -> dict[str, torch.Tensor]:
        """true and swap mIoU (percent), gap = true - swap, and episodes: how many were scored
        both ways (0: nothing to report; the figures are then NaN)."""
        k = len(self.episodes)
        both = (self.seen[0, :k] > 0) & (self.seen[1, :k] > 0)
        classes = self._class[both]
        n = len(self.class_ids)
        present = torch.zeros(n, dtype=torch.long, device=both.device).index_add_(0, classes, torch.ones_like(classes))
        figures = []
        for row in (0, 1):
            inter = torch.zeros(n, dtype=torch.long, device=both.device).index_add_(
                0, classes, self.inter[row, :k][both]
            )
            union = torch.zeros(n, dtype=torch.long, device=both.device).index_add_(
                0, classes, self.union[row, :k][both]
            )
            per_class = (inter.double() / union.double().clamp(min=1))[present > 0]
            figures.append(100 * per_class.mean().float())  # as FewShotIoU.compute; NaN over no class
        true, swap = figures
        return {"true": true, "swap": swap, "gap": true - swap, "episodes": both.sum()}


def _without_lone_update_warning(metric: Metric, compute: Callable[..., Any]) -> Callable[..., dict[str, torch.Tensor]]:
    """`compute` without torchmetrics' warning that this process made no update: compute() decides
    on the states summed over processes, so one process with no batch (more processes than
    batches) is fine."""

    @functools.wraps(compute)
    def quiet(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=f"The ``compute`` method of metric {type(metric).__name__} was called before"
            )
            return cast(dict[str, torch.Tensor], compute(*args, **kwargs))

    return quiet


def _overlap(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union of each sample ([B] each) of two [B, H, W] boolean masks."""
    return (a & b).sum((1, 2)), (a | b).sum((1, 2))


def _foreground(preds: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground intersection and union of each episode ([B] each) of [B, H, W] predictions and targets."""
    valid = target != ignore_index
    return _overlap(preds.bool() & valid, (target == 1) & valid)


def _only(values: torch.Tensor, allowed: tuple[int, ...]) -> bool:
    """Whether every element of `values` equals one of `allowed` (bool counts as 0 / 1)."""
    if values.dtype == torch.bool:
        return True
    ok = torch.zeros_like(values, dtype=torch.bool)
    for value in allowed:
        ok |= values == value
    return bool(ok.all())


def score_at_original_size(logits: torch.Tensor, targets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Query logits [B, 1, S, S] -> binary predictions at each target's [H, W] size, resized
    bilinearly with align_corners=True and thresholded at 0, as the published evaluation does."""
    if all(t.shape == targets[0].shape for t in targets):
        resized = F.interpolate(logits.float(), size=tuple(targets[0].shape), mode="bilinear", align_corners=True)
        return list((resized[:, 0] > 0).long())
    return [
        (F.interpolate(lg[None].float(), size=tuple(t.shape), mode="bilinear", align_corners=True)[0, 0] > 0).long()
        for lg, t in zip(logits, targets, strict=True)
    ]


class SupportMaskIoU(Metric):
    """How well the masks a method decodes from weak support annotations (points, a box, a
    scribble) match the supports' true masks: the mean over those supports of 100 * |D & T| /
    |D | T|, summed across processes. Supports shown by their mask are not counted.
    """

    full_state_update = False
    total: torch.Tensor
    count: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, decoded: torch.Tensor, truth: torch.Tensor, weak: torch.Tensor) -> None:
        """decoded, truth [N, H, W] (non-zero: foreground); weak [N] bool: the supports to count."""
        d, t = decoded[weak].flatten(1) != 0, truth[weak].flatten(1) != 0
        union = (d | t).sum(1)
        iou = (d & t).sum(1).double() / union.clamp(min=1)
        self.total += 100 * iou[union > 0].sum()
        self.count += int((union > 0).sum())

    def compute(self) -> torch.Tensor:
        """The mean IoU, NaN when no weak support was seen."""
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)
