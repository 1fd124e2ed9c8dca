"""Episodic K-shot data: the dataset that turns episodes into tensors, and the DataModules.

A benchmark plugs in by subclassing `FewShotDataModule` and implementing `episodes(split)`,
`image_reader(split)` and `class_ids(split)`; sampling, augmentation, resizing, sharding over
processes and collation are shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import albumentations as A
import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fssam2.cache import CacheConfig, FeatureCache
from fssam2.episodes import EpisodeRule, EpisodeSampler, QueryCycleEpisodes, check_shot, episode_rng
from fssam2.errors import InputError
from fssam2.synthetic import SyntheticBenchmark

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
IGNORE = 255
ImageReader = Callable[[str], tuple[np.ndarray, np.ndarray]]


def training_augmentation() -> A.Compose:
    """The published recipe, drawn independently per image: rotation +-10 deg, 5x5 Gaussian
    blur, horizontal flip. Pixels rotated in from outside the image are ignored in the mask."""
    return A.Compose(
        [
            A.Rotate(limit=10, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE, p=0.5),
            A.GaussianBlur(blur_limit=(5, 5), p=0.5),
            A.HorizontalFlip(p=0.5),
        ]
    )


def to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> normalised float [3, size, size] (plain resize, aspect not kept)."""
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return torch.from_numpy((resized - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)


def binary_target(label: np.ndarray, class_id: int) -> np.ndarray:
    """Label map -> {0, 1, 255}: the class is 1, ignored pixels stay 255, the rest is 0."""
    return np.where(label == IGNORE, IGNORE, label == class_id).astype(np.uint8)


class EpisodeDataset(Dataset):
    """Items are indexed by (episode index, epoch) pairs, as `EpisodeSampler` yields them.

    Each item: support_images [K, 3, S, S], support_masks [K, S, S] in {0, 1},
    query_image [3, S, S], query_mask [S, S] in {0, 1, 255} (loss target at input size),
    query_target [H, W] in {0, 1, 255} (the query's original size, for scoring),
    class_id, index, query and supports (image ids).
    """

    def __init__(
        self, episodes: EpisodeRule, read: ImageReader, image_size: int, augment: bool, image_cache_mb: float = 0.0
    ) -> None:
        self.episodes, self.read, self.size = episodes, read, image_size
        self.augmentation = training_augmentation() if augment else None
        # Decoded images, kept (per process) when nothing alters them: evaluation reads each image many times.
        self.image_cache_mb = image_cache_mb if self.augmentation is None else 0.0
        self._decoded: FeatureCache | None = None

    def __len__(self) -> int:
        return len(self.episodes)

    def _read(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        if self.image_cache_mb <= 0:
            return self.read(image_id)
        if self._decoded is None:  # made in the process that reads (a data-loading worker)
            self._decoded = FeatureCache(CacheConfig(max_megabytes=self.image_cache_mb))

        def decode(_: list[int]) -> list[tuple[torch.Tensor, ...]]:
            return [tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in self.read(image_id))]

        ((image, label),) = self._decoded.fetch("decoded", [image_id], decode)
        return image.numpy(), label.numpy()  # read-only use below: every step makes new arrays

    def _prepare(self, image_id: str, class_id: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        image, label = self._read(image_id)
        target = binary_target(label, class_id)
        if self.augmentation is not None:
            out = self.augmentation(image=image, mask=target)
            image, target = out["image"], out["mask"]
        resized = cv2.resize(target, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        return to_input(image, self.size), resized, target

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        episode = self.episodes.episode(index, epoch)
        if self.augmentation is not None:
            # Drawn after the protocol's draws, so augmentation never changes the episode.
            self.augmentation.set_random_seed(int(episode_rng(self.episodes.seed, index, epoch).integers(2**31)))
        supports = [self._prepare(s, episode.class_id) for s in episode.supports]
        query_image, query_mask, query_target = self._prepare(episode.query, episode.class_id)
        return {
            "support_images": torch.stack([s[0] for s in supports]),
            "support_masks": torch.from_numpy(np.stack([s[1] == 1 for s in supports])).float(),
            "query_image": query_image,
            "query_mask": torch.from_numpy(query_mask).long(),
            "query_target": torch.from_numpy(query_target).long(),
            "class_id": episode.class_id,
            "index": index,
            "query": episode.query,
            "supports": episode.supports,
        }


def collate_episodes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the fixed-size fields; keep query_target a list (original sizes may differ) and
    supports a list of each episode's K ids."""
    as_lists = ("query_target", "supports")
    out = torch.utils.data.default_collate([{k: v for k, v in it.items() if k not in as_lists} for it in items])
    for key in as_lists:
        out[key] = [it[key] for it in items]
    return out


class FewShotDataModule(L.LightningDataModule):
    """Samples episodic K-shot tasks for one fold of a benchmark.

    Args:
        fold: which classes are held out (tested on) and which train.
        shot: K, support images per episode (training and evaluation).
        batch_size: episodes per batch and process.
        num_workers: data-loading worker processes.
        seed: episode seed of the test split; validation during fit uses seed + 1, so that
            choosing the best checkpoint never looks at a test episode; training uses seed + 2
            with the epoch in the generator.
        test_episodes: episodes of a test run.
        val_episodes: episodes of each validation during fit.
        augment: apply the training augmentation to training episodes.
        image_cache_mb: decoded images kept per data-loading process in evaluation, least
            recently used dropped first; 0 decodes every image of every episode.
    """

    def __init__(
        self,
        fold: int = 0,
        shot: int = 1,
        batch_size: int = 8,
        num_workers: int = 4,
        seed: int = 42,
        test_episodes: int = 1000,
        val_episodes: int = 1000,
        augment: bool = True,
        image_cache_mb: float = 512.0,
    ) -> None:
        super().__init__()
        check_shot(shot)
        if batch_size < 1:
            raise InputError(f"data.batch_size={batch_size} must be >= 1.")
        self.fold, self.shot, self.batch_size = fold, shot, batch_size
        self.num_workers, self.seed, self.augment = num_workers, seed, augment
        self.image_cache_mb = image_cache_mb
        self.test_episodes, self.val_episodes = test_episodes, val_episodes
        self.image_size: int | None = None  # set from the model in setup(), or by hand
        # Stored in checkpoints (datamodule_hyper_parameters), and so in exported adapters.
        self.save_hyperparameters({"dataset": type(self).__name__, "fold": fold, "shot": shot, "seed": seed})
        self._datasets: dict[str, EpisodeDataset] = {}

    # what a benchmark provides
    def episodes(self, split: str) -> EpisodeRule:
        raise NotImplementedError

    def image_reader(self, split: str) -> ImageReader:
        """A picklable callable: image id -> (image [H, W, 3] uint8 RGB, label map [H, W] uint8).
        Data-loading workers receive it, never the DataModule (which holds the Trainer)."""
        raise NotImplementedError

    def class_ids(self, split: str) -> list[int]:
        """1-based label values of the split's classes."""
        raise NotImplementedError

    def split_seed(self, split: str) -> int:
        return self.seed + {"test": 0, "val": 1, "train": 2}[split]

    # shared machinery
    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.image_size = self.trainer.lightning_module.model.image_size
        if self.image_size is None:
            raise InputError(
                "FewShotDataModule.image_size is unset: attach it to a Trainer or set it to the model's input size."
            )

    def dataset(self, split: str) -> EpisodeDataset:
        if split not in self._datasets:
            self._datasets[split] = EpisodeDataset(
                self.episodes(split),
                self.image_reader(split),
                self.image_size,
                augment=self.augment and split == "train",
                image_cache_mb=0.0 if split == "train" else self.image_cache_mb,
            )
        return self._datasets[split]

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = EpisodeSampler(
            len(dataset), shuffle=split == "train", seed=self.split_seed(split), rank=rank, world_size=world
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_episodes,
            persistent_workers=self.num_workers > 0,
            drop_last=split == "train" and len(sampler) >= self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


class SyntheticDataModule(FewShotDataModule):
    """The built-in synthetic benchmark (see `fssam2.synthetic`), PASCAL-5i-shaped: 20 classes,
    4 folds, query images cycling through the fold's list. Needs no files.

    Args:
        benchmark_seed: seed of the rendered images.
        image_side: side of the rendered images (their "original size").
        pool_sizes: images rendered for train / val / test.
        **kwargs: see `FewShotDataModule`.
    """

    def __init__(
        self,
        benchmark_seed: int = 0,
        image_side: int = 128,
        pool_sizes: tuple[int, int, int] = (1200, 240, 480),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.benchmark = SyntheticBenchmark(image_size=image_side, pool_sizes=tuple(pool_sizes), seed=benchmark_seed)
        self.benchmark.fold_classes(self.fold)  # validates the fold

    def class_ids(self, split: str) -> list[int]:
        return self.benchmark.split_classes(split, self.fold)

    def episodes(self, split: str) -> QueryCycleEpisodes:
        images, by_class = self.benchmark.lists(split, self.fold)
        length = {"train": None, "val": self.val_episodes, "test": self.test_episodes}[split]
        return QueryCycleEpisodes(
            images, by_class, self.benchmark.present, self.class_ids(split), self.shot, self.split_seed(split), length
        )

    def image_reader(self, split: str) -> ImageReader:
        return self.benchmark.read
