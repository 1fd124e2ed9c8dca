"""The LightningModule: trains and evaluates a `FewShotSAM2`; the maths lives in model.py."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from fssam2.build import build_sam2
from fssam2.data import FewShotDataModule
from fssam2.errors import InputError
from fssam2.lora import LoRAConfig, mark_only_lora_trainable
from fssam2.metric import FewShotIoU
from fssam2.model import FewShotSAM2

IGNORE = 255


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + Dice (on the sigmoid), each a mean over the batch.

    logits [B, H, W]; target [B, H, W] in {0, 1, 255}, 255 left out of both terms.
    """
    valid = (target != IGNORE).float()
    fg = (target == 1).float()
    bce = F.binary_cross_entropy_with_logits(logits, fg, reduction="none")
    bce = (bce * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    prob = torch.sigmoid(logits) * valid
    inter = (prob * fg).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + fg.flatten(1).sum(1) + 1)
    return (bce + dice).mean()


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


class FSSAM2Module(L.LightningModule):
    """Meta-trains FS-SAM2 on episodes and scores it with the few-shot protocol.

    Args:
        sam2_config: SAM2 config, a packaged name or a yaml path (see `fssam2.build_sam2`).
        sam2_checkpoint: Meta's SAM2 checkpoint file; None = random initialisation.
        image_size: square input size (a multiple of 32); None = the config's.
        lora: LoRA placement and ranks; None = no LoRA layers.
        trainable: "lora" trains only the LoRA factors (the published setting); "all" trains
            every parameter the method uses (full fine-tuning, or a randomly initialised SAM2).
        lr: AdamW learning rate, decayed to 0 by a per-iteration cosine over the run.
        weight_decay: AdamW weight decay, not applied to 1-D parameters (biases, norms).
        betas: AdamW betas.
    """

    def __init__(
        self,
        sam2_config: str = "sam2.1_hiera_b+",
        sam2_checkpoint: str | None = None,
        image_size: int | None = None,
        lora: LoRAConfig | None = LoRAConfig(),  # noqa: B008 - a frozen-by-convention default
        trainable: Literal["lora", "all"] = "lora",
        lr: float = 1e-4,
        weight_decay: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if trainable == "lora" and lora is None:
            raise InputError(
                "model.trainable='lora' but model.lora is null: give a LoRA config or set model.trainable='all'."
            )
        self.model = FewShotSAM2(build_sam2(sam2_config, sam2_checkpoint, image_size=image_size), lora)
        self.model.train()  # build_sam2 returns eval mode; Lightning keeps submodule modes as found
        if trainable == "lora":
            mark_only_lora_trainable(self.model)
        else:
            self.model.requires_grad_(False)
            for _, param in self.model.used_parameters():
                param.requires_grad_(True)
        self.metrics = torch.nn.ModuleDict()

    def forward(
        self, support_images: torch.Tensor, support_masks: torch.Tensor, query_images: torch.Tensor
    ) -> torch.Tensor:
        return self.model(support_images, support_masks, query_images)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, FewShotDataModule):
            raise InputError(
                "FSSAM2Module needs a FewShotDataModule (the `data` option): it defines the fold's classes."
            )
        for split in {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ()):
            if f"{split}_iou" not in self.metrics:
                self.metrics[f"{split}_iou"] = FewShotIoU(datamodule.class_ids(split))

    def _step(self, batch: dict[str, Any], split: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Loss at the input size, metric at each query's original size; returns (loss, predictions)."""
        logits = self(batch["support_images"], batch["support_masks"], batch["query_image"])  # [B, 1, S, S]
        loss = bce_dice_loss(logits[:, 0].float(), batch["query_mask"])
        targets = batch["query_target"]
        with torch.no_grad():
            preds = score_at_original_size(logits.detach(), targets)
            metric = self.metrics[f"{split}_iou"]
            if all(p.shape == preds[0].shape for p in preds):
                metric.update(torch.stack(preds), torch.stack(targets), batch["class_id"])
            else:
                for p, t, c in zip(preds, targets, batch["class_id"], strict=True):
                    metric.update(p[None], t[None], c[None])
        batch_size = len(targets)
        self.log(
            f"{split}/loss",
            loss,
            on_step=split == "train",
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=split != "train",
            prog_bar=True,
        )
        return loss, preds

    def _log_epoch(self, split: str) -> None:
        metric = self.metrics[f"{split}_iou"]
        result = metric.compute()
        self.log(f"{split}/miou", result["miou"], prog_bar=True)
        self.log(f"{split}/fbiou", result["fbiou"])
        if split != "train":
            for class_id, iou in zip(metric.class_ids, result["per_class"], strict=True):
                self.log(f"{split}/iou_class_{class_id}", iou)
        metric.reset()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, "train")
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        finite = bool(torch.isfinite(loss))
        # Decided by all ranks together: a rank raising alone would leave the others waiting in backward.
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            where = "other ranks" if finite else f"episodes {batch['index'].tolist()}"
            raise FloatingPointError(
                f"Non-finite training loss in epoch {self.current_epoch}, global step {self.global_step}, "
                f"rank {self.global_rank} ({where}): lower model.lr or check the data; "
                "the last good checkpoint is kept."
            )
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The training randomness beyond the episodes (LoRA dropout) comes from torch's global RNG,
        # which a restarted process does not restore. Seeding it per batch from (train seed, epoch,
        # batch, rank) makes a resumed run draw what an uninterrupted one draws. (Per epoch is not
        # enough: Lightning creates the DataLoader iterator, which draws from this RNG, after
        # `on_train_epoch_start` in a running fit but before it in a resumed one.)
        seed = self.trainer.datamodule.split_seed("train")
        rng = np.random.default_rng((seed, self.current_epoch, batch_idx, self.global_rank))
        torch.manual_seed(int(rng.integers(2**63)))

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[torch.Tensor]]:
        return {"preds": self._step(batch, "test")[1]}

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        logits = self(batch["support_images"], batch["support_masks"], batch["query_image"])
        preds = score_at_original_size(logits, batch["query_target"])
        return [
            {"index": int(i), "query": q, "class_id": int(c), "mask": p.bool().cpu()}
            for i, q, c, p in zip(batch["index"], batch["query"], batch["class_id"], preds, strict=True)
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.hparams.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
