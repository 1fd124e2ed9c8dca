"""Callbacks the CLI adds by default: checkpoints in the run folder (written atomically), test
results on disk, and a W&B report of each test."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fssam2.benchmarks import write_png
from fssam2.data import IMAGENET_MEAN, IMAGENET_STD
from fssam2.segment import tint


class TestResults(L.Callback):
    """Writes `<run dir>/test_metrics.json` after `test`: mIoU, FB-IoU, per-class IoU and the
    episode setting, support control included, written through a temporary file so a reader
    never sees half of it."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        dm = trainer.datamodule
        result = {
            "miou": metrics.get("test/miou"),
            "fbiou": metrics.get("test/fbiou"),
            "per_class": {k.rsplit("_", 1)[-1]: v for k, v in metrics.items() if k.startswith("test/iou_class_")},
            "data": type(dm).__name__,
            "fold": getattr(dm, "fold", None),
            "shot": getattr(dm, "shot", None),
            "episodes": len(dm.dataset("test")) if dm is not None else None,
            "seed": getattr(dm, "seed", None),
            "support_control": getattr(dm, "support_control", None),  # which supports the number came from
            "encoder_passes": metrics.get("test/encoder_passes"),  # None without the feature cache
            "memory_encoder_passes": metrics.get("test/memory_encoder_passes"),
        }
        path = Path(trainer.default_root_dir) / "test_metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, path)


def _to_rgb(image: torch.Tensor) -> np.ndarray:
    """Normalised [3, S, S] -> uint8 [S, S, 3]."""
    rgb = image.detach().float().cpu().permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(rgb, 0, 255).astype(np.uint8)


class PredictionWriter(L.Callback):
    """`fssam2 predict`: each test episode's predicted mask, at the query's original size, as
    `<run dir>/predictions/<episode>_<query id>_class<c>.png` (0 / 255), written atomically."""

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        folder = Path(trainer.default_root_dir) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        for pred in outputs:
            name = f"{pred['index']:05d}_{pred['query'].replace('/', '__')}_class{pred['class_id']}.png"
            write_png(pred["mask"].numpy().astype(np.uint8) * 255, folder / name)


class WandbTestReport(L.Callback):
    """On W&B only: the test's per-class IoU as a table, and overlays (supports with their masks,
    query, prediction, ground truth) for the first `episodes` test episodes, always the same ones."""

    def __init__(self, episodes: int = 8) -> None:
        self.episodes = episodes
        self.rows: list[np.ndarray] = []

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if (
            not trainer.is_global_zero
            or not self._logger(trainer)
            or len(self.rows) >= self.episodes
            or outputs is None
        ):
            return
        size = batch["query_image"].shape[-1]
        for i, pred in enumerate(outputs["preds"]):
            if len(self.rows) >= self.episodes:
                break
            pred = F.interpolate(pred[None, None].float(), size=(size, size), mode="nearest")[0, 0].bool().cpu().numpy()
            truth = (batch["query_mask"][i] == 1).cpu().numpy()
            query = _to_rgb(batch["query_image"][i])
            tiles = [
                tint(_to_rgb(img), m.bool().cpu().numpy(), (0, 200, 255))
                for img, m in zip(batch["support_images"][i], batch["support_masks"][i], strict=True)
            ]
            tiles += [query, tint(query, pred, (255, 60, 60)), tint(query, truth, (60, 255, 60))]
            self.rows.append(np.concatenate(tiles, axis=1))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._logger(trainer)
        if not trainer.is_global_zero or logger is None:
            return
        per_class = [
            [k.rsplit("_", 1)[-1], float(v)]
            for k, v in trainer.callback_metrics.items()
            if k.startswith("test/iou_class_")
        ]
        logger.log_table("test/per_class_iou", columns=["class", "iou"], data=per_class)
        if self.rows:
            control = getattr(trainer.datamodule, "support_control", "none")
            shown = "supports (blue)" if control == "none" else f"supports (blue, support_control={control})"
            logger.log_image(
                "test/episodes",
                images=self.rows,
                caption=[f"{shown} | query | prediction (red) | ground truth (green)"] * len(self.rows),
            )

    @staticmethod
    def _logger(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<dir>/.<name>.tmp`, fsyncs it, then renames it onto `<dir>/<name>`: a process
    killed while saving (or a full disk) leaves the previous checkpoint whole, and the partial
    file is the hidden .tmp, which the next save overwrites.

    Lightning's own save serialises into memory, writes a temporary file in the *system* temp dir
    and moves it over: atomic only when that dir shares the checkpoint's filesystem (otherwise the
    move copies into the target), never fsynced, and a killed save leaves the temp file behind.
    URLs (s3://, file://, ...) keep Lightning's behaviour."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if os.name == "posix":  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose default folder is `<trainer.default_root_dir>/checkpoints`, so
    checkpoints are found at a fixed place whatever the logger (W&B nests them under a run id),
    and which makes the Trainer write every checkpoint with `AtomicCheckpointIO`.

    Resuming with `--ckpt_path <dir>/last.ckpt` keeps writing best.ckpt / last.ckpt (no -v1
    copies): ModelCheckpoint restores its paths from the checkpoint when the folder is the same,
    and a save onto the path it recorded replaces that file."""

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 - Lightning's signature
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        # Only Lightning's default is replaced: a CheckpointIO the user configured is kept.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        super().setup(trainer, pl_module, stage)
