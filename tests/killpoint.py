"""Test-only classes for tests/test_resume.py, given to the real CLI by class path (the tests put
this folder on PYTHONPATH): a place to be killed or to crash, a slow save, a metrics dump, NaN data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset

from fssam2.data import EpisodeDataset, SyntheticDataModule


class KillPoint(L.Callback):
    """At batch `batch` of epoch `epoch`, before its step: write `marker` and wait to be killed."""

    def __init__(self, marker: str, epoch: int, batch: int) -> None:
        self.marker, self.epoch, self.batch = marker, epoch, batch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            # Written aside and renamed: the test reads the marker as soon as it appears.
            tmp = Path(f"{self.marker}.tmp")
            tmp.write_text(str(trainer.global_step))
            tmp.replace(self.marker)
            time.sleep(600)


class Crash(L.Callback):
    """At batch `batch` of epoch `epoch`, before its step: raise, as a crash in the training step
    would (the fit ends, and what it saved stays on disk as it was)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError(f"crash at epoch {self.epoch}, batch {self.batch}")


class SlowSave(L.Callback):
    """From epoch `epoch` on, every checkpoint carries `megabytes` of ballast, so writing it
    takes a while; `marker` is written when the first such save starts."""

    def __init__(self, marker: str, epoch: int, megabytes: int = 300) -> None:
        self.marker, self.epoch, self.megabytes = marker, epoch, megabytes

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.current_epoch >= self.epoch:
            checkpoint["ballast"] = torch.ones(self.megabytes * 2**18)  # float32: 4 bytes each
            Path(self.marker).touch()


class MetricsDump(L.Callback):
    """At the end of fit, `trainer.callback_metrics` as JSON floats to `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        Path(self.path).write_text(json.dumps(metrics, indent=1, sort_keys=True))


class _NaNQueries(Dataset):
    def __init__(self, inner: EpisodeDataset, from_epoch: int) -> None:
        self.inner, self.from_epoch = inner, from_epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        item = self.inner[key]
        if key[1] >= self.from_epoch:
            item["query_image"] = torch.full(item["query_image"].shape, float("nan"))  # normalise keeps NaN
        return item


class NaNFromEpoch(SyntheticDataModule):
    """The synthetic benchmark whose training query images are NaN from epoch `nan_from_epoch` on
    (on process `nan_rank` only, when given)."""

    def __init__(self, nan_from_epoch: int = 1, nan_rank: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_from_epoch, self.nan_rank = nan_from_epoch, nan_rank

    def dataset(self, split: str) -> Dataset:
        dataset = super().dataset(split)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if split == "train" and not isinstance(dataset, _NaNQueries) and self.nan_rank in (None, rank):
            dataset = self._datasets[split] = _NaNQueries(dataset, self.nan_from_epoch)
        return dataset
