"""Episodic K-shot data: the dataset that turns episodes into tensors, and the DataModules.

A benchmark plugs in by subclassing `FewShotDataModule` and implementing `episodes(split)`,
`image_reader(split)` and `class_ids(split)`; sampling, augmentation, resizing, sharding over
processes and collation are shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, Literal, cast, get_args

import albumentations as A
import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fssam2.annotations import (
    PAD_LABEL,
    SupportAnnotation,
    annotate,
    annotation_rng,
    check_support_annotation,
    pad_prompts,
    support_kind,
)
from fssam2.cache import CacheConfig, FeatureCache, check_budget
from fssam2.episodes import (
    EVAL_EPOCH,
    Episode,
    EpisodeRule,
    EpisodeSampler,
    QueryCycleEpisodes,
    check_shot,
    episode_rng,
)
from fssam2.errors import InputError
from fssam2.metric import IGNORE
from fssam2.plan import (
    GAP_CONTROL,
    EvalPlan,
    ItemKey,
    KeySampler,
    PlanSampler,
    Shown,
    build_plan,
    item_keys,
    unplanned_batches,
)
from fssam2.synthetic import SyntheticBenchmark

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
ImageReader = Callable[[str], tuple[np.ndarray, np.ndarray]]
SupportControl = Literal["none", "swap", "blank"]
EvalOrder = Literal["planned", "index"]
GapEpisodes = int | str  # an int >= 0 or "all" (checked by check_gap_episodes, whose one line names the option)
GAP_STREAM = 0x6A70  # the support-gap subset's random stream, apart from the episodes' own draws
SHOT_STREAM = 0x5407  # the random stream of each training batch's K under data.train_shots


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Data-loading workers when `num_workers` is not given: the cores beyond the main process's
    one, at most 4 (more rarely pays for episodes of a few images)."""
    return max(0, min(4, cpu_cores() - 1))


def check_support_control(control: str) -> None:
    """One line naming the option and its values (the CLI's Literal type checks it too)."""
    allowed = get_args(SupportControl)
    if control not in allowed:
        raise InputError(f"data.support_control={control!r} is not one of {', '.join(allowed)}: pick one of those.")


def check_gap_episodes(value: object) -> None:
    """data.gap_episodes: an int >= 0 or "all"; else one line naming the option."""
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return
    raise InputError(
        f"data.gap_episodes={value!r} is not a number of episodes: give an int >= 0 (0 turns the support gap off) "
        "or all (every evaluation episode)."
    )


def check_train_shots(value: object) -> None:
    """One-line InputError unless `value` is None or [low, high] with 1 <= low <= high."""
    ok = value is None or (
        isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)
    )
    if not ok or (value is not None and not 1 <= value[0] <= value[1]):  # type: ignore[index]
        raise InputError(
            f"data.train_shots={list(value) if isinstance(value, tuple) else value!r} must be [low, high] with 1 <= low <= high (e.g. [1, 5]), or null: data.shot."
        )


class ShotBatches(torch.utils.data.Sampler):
    """Training batches of `sampler`'s keys, each showing K supports, K drawn per batch from
    [low, high] with (seed, epoch, batch number): the same in every run, for any number of
    workers, and the same on every process at a step. Episodes are drawn with `high` supports
    and a batch shows the first K of them (a uniform K of them: the draw is without replacement,
    in random order)."""

    def __init__(
        self, sampler: EpisodeSampler, batch_size: int, drop_last: bool, shots: tuple[int, int], seed: int
    ) -> None:
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.shots, self.seed = shots, seed

    def __iter__(self) -> Iterator[list[ItemKey]]:
        keys = list(self.sampler)
        for n in range(len(self)):
            batch = keys[n * self.batch_size : (n + 1) * self.batch_size]
            rng = np.random.default_rng((self.seed, SHOT_STREAM, self.sampler.epoch + 1, n))
            shot = int(rng.integers(self.shots[0], self.shots[1] + 1))
            yield [(index, epoch, None, shot) for index, epoch in batch]

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


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


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> uint8 [3, size, size] (plain bilinear resize, aspect not kept): what
    batches carry, a quarter of the bytes of float32; `normalise` makes the model's input of it."""
    return torch.from_numpy(cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Images [..., 3, S, S] (uint8 0..255, or float pixel values) -> float32 normalised by ImageNet's
    mean and std, on the images' device. The same float32 arithmetic as normalising on the host."""
    mean = torch.from_numpy(IMAGENET_MEAN).to(images.device).view(3, 1, 1)
    std = torch.from_numpy(IMAGENET_STD).to(images.device).view(3, 1, 1)
    return (images.float() - mean) / std


def to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> normalised float [3, size, size] (plain resize, aspect not kept)."""
    return normalise(resize_image(image, size))


def binary_target(label: np.ndarray, class_id: int) -> np.ndarray:
    """Label map -> {0, 1, 255}: the class is 1, ignored pixels stay 255, the rest is 0."""
    return np.where(label == IGNORE, IGNORE, label == class_id).astype(np.uint8)


class EpisodeDataset(Dataset):
    """Items are indexed by (episode index, epoch) pairs, as `EpisodeSampler` yields them.

    Each item: support_images [K, 3, S, S] uint8, support_masks [K, S, S] in {0, 1},
    query_image [3, S, S] uint8 (the LightningModule normalises images on its device: `normalise`), query_mask [S, S] in {0, 1, 255} (loss target at input size),
    query_target [H, W] in {0, 1, 255} (the query's original size, for scoring),
    class_id (the query's class, which is scored), support_class (the class the support masks
    show; 0 for empty masks), index, query and supports (the ids of the support images shown).
    Under a support_annotation other than "mask", also support_points [K, P, 2] (x, y in input
    pixels), support_labels [K, P] (SAM's point labels, -1 padding; P = 0 for a support shown by
    its mask, or with an empty one) and support_kinds (K of "mask", "points", "box", "scribble"),
    drawn from the support's mask at input size (`fssam2.annotations`), from the episode alone.

    support_control changes the supports only, never the query, its targets or class_id:
    "swap" shows the supports (images and masks of the donor's class) of `donor(index)`, an episode
    of another class; "blank" shows the true support images with all-zero masks.
    A key (index, epoch, control) shows `control` for that item alone: the support-gap items of an
    evaluation (fssam2.plan.GAP_CONTROL), whose field `gap` is then true.
    image_size None: the episodes can be listed (`shown`, plans) but not loaded.
    """

    def __init__(
        self,
        episodes: EpisodeRule,
        read: ImageReader,
        image_size: int | None,
        augment: bool,
        image_cache_mb: float = 0.0,
        support_control: SupportControl = "none",
        support_annotation: SupportAnnotation = "mask",
        train: bool = False,
    ) -> None:
        check_support_control(support_control)
        check_support_annotation(support_annotation)
        if support_control == "swap" and len(set(episodes.classes)) < 2:
            raise InputError(
                f"data.support_control=swap needs >= 2 classes in the split, which has {list(episodes.classes)}: "
                "use none or blank."
            )
        self.episodes, self.read, self.size = episodes, read, image_size
        self.support_control = support_control
        self.support_annotation, self.train = support_annotation, train  # train: annotations drawn as in training
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
            # torch shares the array's memory and warns of a read-only one: a reader's may be (PIL's are).
            return [tuple(torch.from_numpy(np.require(a, requirements=("C", "W"))) for a in self.read(image_id))]

        ((image, label),) = self._decoded.fetch("decoded", [image_id], decode)
        return image.numpy(), label.numpy()  # read-only use below: every step makes new arrays

    def pixels(self, image_id: str) -> torch.Tensor:
        """An image as a batch carries it, uint8 [3, S, S] (evaluation: no augmentation)."""
        image, _ = self._read(image_id)
        return resize_image(image, self.input_size())

    def input_size(self) -> int:
        """S, the side images are resized to (an InputError while it is unset)."""
        if self.size is None:
            raise InputError(
                "FewShotDataModule.image_size is unset: set it to the model's input size (or attach the "
                "DataModule to a Trainer) before loading episodes."
            )
        return self.size

    def _prepare(
        self, image_id: str, class_id: int, pixels: bool = True
    ) -> tuple[torch.Tensor | None, np.ndarray, np.ndarray]:
        """(the image resized, or None when not `pixels`; the class's mask at input size; at the original size)."""
        image, label = self._read(image_id)
        target = binary_target(label, class_id)
        if self.augmentation is not None:
            out = self.augmentation(image=image, mask=target)
            image, target = out["image"], out["mask"]
        size = self.input_size()
        resized = cv2.resize(target, (size, size), interpolation=cv2.INTER_NEAREST)
        return resize_image(image, size) if pixels else None, resized, target

    def donor(self, index: int, epoch: int) -> Episode:
        """The episode whose supports episode `index` shows under "swap": the first of index + 1,
        index + 2, ... (cyclically) of another class whose supports are not this query. It depends
        on the index alone, so every run with the same episodes shows the same supports."""
        episode, n = self.episodes.episode(index, epoch), len(self.episodes)
        for step in range(1, n):
            other = self.episodes.episode((index + step) % n, epoch)
            if other.class_id != episode.class_id and episode.query not in other.supports:
                return other
        raise InputError(
            f"data.support_control=swap found no episode of another class than {episode.class_id} among "
            f"the split's {n} episodes: swap needs >= 2 classes; use none or blank."
        )

    def shown(self, index: int, epoch: int, control: SupportControl | None = None) -> tuple[Episode, Episode, Shown]:
        """(the episode, the episode whose supports it shows, what it asks of the encoders): the
        items and the evaluation plan (fssam2.plan) both come from here. control: a support-gap
        item's control instead of the dataset's."""
        episode = self.episodes.episode(index, epoch)
        shows = self.support_control if control is None else control
        shown = self.donor(index, epoch) if shows == "swap" else episode
        support_class = 0 if shows == "blank" else shown.class_id
        asked = Shown(
            index,
            episode.query,
            episode.class_id,
            shown.supports,
            support_class,
            gap=control is not None,
            kinds=self.support_kinds(index, epoch, len(shown.supports)) if shows != "blank" else (),
        )
        return episode, shown, asked

    def support_kinds(self, index: int, epoch: int, shot: int) -> tuple[str, ...]:
        """What each support of episode `index` shows (drawn as `annotations` draws it); () under
        the mask annotation. (A support whose mask is empty shows that mask, whatever was drawn.)"""
        if self.support_annotation == "mask":
            return ()
        return tuple(
            support_kind(self.support_annotation, annotation_rng(self.episodes.seed, index, epoch, p))
            for p in range(shot)
        )

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, epoch = key[0], key[1]
        control = cast(SupportControl | None, key[2]) if len(key) > 2 else None
        shot = key[3] if len(key) > 3 else None  # a training batch's K (data.train_shots)
        lean = len(key) > 4 and key[4] is not None  # whose pixels to ship: planned evaluation (`fssam2.plan.shipping`)
        episode, shown, asked = self.shown(index, epoch, control)
        shown_supports = shown.supports[:shot]
        ship = tuple(key[4]) if lean else (True,) * (len(shown_supports) + 1)
        if self.augmentation is not None:
            # Drawn after the protocol's draws, so augmentation never changes the episode.
            self.augmentation.set_random_seed(int(episode_rng(self.episodes.seed, index, epoch).integers(2**31)))
        supports = [self._prepare(s, shown.class_id, p) for s, p in zip(shown_supports, ship, strict=False)]
        masks = np.stack([s[1] == 1 for s in supports])
        if (self.support_control if control is None else control) == "blank":
            masks = np.zeros_like(masks)
        query_image, query_mask, query_target = self._prepare(episode.query, episode.class_id, ship[-1])
        images = [s[0] for s in supports] + [query_image]
        if lean:  # only the images the encoders will need, supports then query (`shipped` says whose)
            size = self.input_size()
            shipped = [image for image in images if image is not None]
            item: dict[str, Any] = {
                "shipped": torch.tensor(ship),
                "shipped_images": torch.stack(shipped) if shipped else torch.zeros(0, 3, size, size, dtype=torch.uint8),
            }
        else:
            item = {"support_images": torch.stack(cast(list[torch.Tensor], images[:-1])), "query_image": query_image}
        item |= {
            "support_masks": torch.from_numpy(masks).float(),
            "query_mask": torch.from_numpy(query_mask).long(),
            "query_target": torch.from_numpy(query_target).long(),
            "class_id": episode.class_id,
            # What the masks show: the feature cache keys support memories by it.
            "support_class": asked.support_class,
            "index": index,
            "query": episode.query,
            "supports": shown_supports,
            "gap": asked.gap,  # a support-gap item: scored for the support gap alone
        }
        if self.support_annotation != "mask":
            item.update(self.annotations(masks, index, epoch))
        return item

    def annotations(self, masks: np.ndarray, index: int, epoch: int) -> dict[str, Any]:
        """The weak annotations of an episode's support masks [K, S, S] bool (see the class doc)."""
        coords, labels, kinds = [], [], []
        for position, mask in enumerate(masks):
            rng = annotation_rng(self.episodes.seed, index, epoch, position)
            kind = support_kind(self.support_annotation, rng)
            c, lab = annotate(mask, kind, rng, self.train)
            coords.append(c)
            labels.append(lab)
            kinds.append(kind)
        points, point_labels = pad_prompts(coords, labels)
        return {"support_points": points, "support_labels": point_labels, "support_kinds": kinds}


def collate_episodes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the fixed-size fields; keep query_target a list (original sizes may differ),
    supports a list of each episode's K ids, gap a list of bools and support_kinds a list of each
    episode's K kinds; pad support_points / support_labels to the batch's most points (label -1)."""
    as_lists = ("query_target", "supports", "gap", "support_kinds")
    apart = ("support_points", "support_labels", "shipped_images")
    fixed = [{k: v for k, v in it.items() if k not in as_lists + apart} for it in items]
    out = torch.utils.data.default_collate(fixed)
    if "shipped" in items[0]:
        out["shipped_images"] = torch.cat([it["shipped_images"] for it in items])  # [shipped, 3, S, S]
    for key in as_lists:
        if key in items[0]:
            out[key] = [it[key] for it in items]
    if "support_points" in items[0]:
        k = len(items[0]["support_kinds"])
        coords = [c.numpy() for it in items for c in it["support_points"]]
        labels = [lab[lab != PAD_LABEL].numpy() for it in items for lab in it["support_labels"]]
        points, point_labels = pad_prompts([c[: len(lab)] for c, lab in zip(coords, labels, strict=True)], labels)
        out["support_points"] = points.reshape(len(items), k, -1, 2)
        out["support_labels"] = point_labels.reshape(len(items), k, -1)
    return out


class FewShotDataModule(L.LightningDataModule):
    """Samples episodic K-shot tasks for one fold of a benchmark.

    Args:
        fold: which classes are held out (tested on) and which train.
        shot: K, support images per episode (training and evaluation).
        batch_size: episodes per batch and process.
        num_workers: data-loading worker processes; None = one per CPU core this process may use
            beyond the one it runs on, at most 4 (`default_workers`: 0 on a single core), so that
            small machines are not oversubscribed.
        seed: episode seed of the test split; validation during fit uses seed + 1, so that
            choosing the best checkpoint never looks at a test episode; training uses seed + 2
            with the epoch in the generator.
        test_episodes: episodes of a test run.
        val_episodes: episodes of each validation during fit.
        augment: apply the training augmentation to training episodes.
        image_cache_mb: decoded images kept per data-loading process in evaluation, least
            recently used dropped first; 0 decodes every image of every episode.
        support_control: what the supports of evaluation episodes (val, test, predict) show;
            training episodes are never altered. "none": the episode's own supports; "swap":
            each episode keeps its query, target and class but gets the supports (images and
            masks) of another episode of a different class, the same one in every run (see
            `EpisodeDataset.donor`); "blank": the true support images with all-zero masks.
            The gap true minus swap is how much the support decides the mask.
        lean_loading: in a planned evaluation with the model's feature cache on, batches carry the
            pixels of an image only where the cache will first encode it (`fssam2.plan.shipping`);
            an image the encoders need that was not shipped (evicted) is read then. The same
            results; false ships every image of every episode.
        train_shots: [low, high]: each training batch shows K supports per episode, K drawn per
            batch from low..high (inclusive; seeded by the training seed, epoch and batch, the same
            K inside a batch); validation and test keep data.shot. null: training at data.shot.
        support_annotation: what a support shows the model, in training and evaluation alike:
            "mask" (its mask), "points", "box" or "scribble" drawn from its mask, or "mixed" (one
            of the four per support), drawn from the episode alone (`fssam2.annotations`, SANSA's
            settings; training draws 1..20 points and the scribble's preset and strokes).
        gap_episodes: validation and test also run this many of their episodes (a subset drawn
            from the split's seed, the same in every run and for any number of processes or
            workers) with swapped supports, and report the support gap, mIoU true minus swap on
            that subset (`support_gap_episodes`); "all": every episode; 0: no gap. Off when
            support_control is not none, or the split's episodes show fewer than two classes.
        eval_order: how evaluation episodes (val, test, predict) are run; the episodes and the
            metric are the same either way. "planned": grouped by class and query, so the
            feature cache reuses what it holds, and under DDP each process gets whole groups
            (balanced by the images they need) and runs exactly the batches one process runs
            (see `fssam2.plan`); predictions keep their episode index. "index": episode order,
            process r of N running episodes r, r + N, ... (the published loop's order).
    """

    # Whether image_reader's label maps hold every object of an image (not one binary mask):
    # the objectness oracle (fssam2.oracle) needs them.
    full_label_maps = False

    def __init__(
        self,
        fold: int = 0,
        shot: int = 1,
        batch_size: int = 8,
        num_workers: int | None = None,
        seed: int = 42,
        test_episodes: int = 1000,
        val_episodes: int = 1000,
        augment: bool = True,
        image_cache_mb: float = 512.0,
        support_control: SupportControl = "none",
        eval_order: EvalOrder = "planned",
        gap_episodes: GapEpisodes = 50,
        support_annotation: SupportAnnotation = "mask",
        train_shots: tuple[int, int] | None = None,
        lean_loading: bool = True,
    ) -> None:
        super().__init__()
        check_shot(shot)
        check_train_shots(train_shots)
        self.train_shots = None if train_shots is None else (int(train_shots[0]), int(train_shots[1]))
        self.lean_loading = lean_loading
        check_support_control(support_control)
        check_support_annotation(support_annotation)
        self.support_annotation = support_annotation
        check_gap_episodes(gap_episodes)
        self.gap_episodes = gap_episodes
        if batch_size < 1:
            raise InputError(f"data.batch_size={batch_size} must be >= 1.")
        check_budget(image_cache_mb, "data.image_cache_mb")
        if eval_order not in get_args(EvalOrder):
            raise InputError(f"data.eval_order={eval_order!r} is not one of planned, index: pick one of those.")
        self.eval_order = eval_order
        self.fold, self.shot, self.batch_size = fold, shot, batch_size
        if num_workers is not None and num_workers < 0:
            raise InputError(f"data.num_workers={num_workers} must be >= 0 (0 loads data in the main process).")
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.seed, self.augment = seed, augment
        self.image_cache_mb, self.support_control = image_cache_mb, support_control
        self.test_episodes, self.val_episodes = test_episodes, val_episodes
        self.image_size: int | None = None  # set from the model in setup(), or by hand
        # Stored in checkpoints (datamodule_hyper_parameters; exported adapters read dataset, fold
        # and shot there), and logged by Lightning to the run's logger (the W&B run config).
        self.save_hyperparameters(
            {
                "dataset": type(self).__name__,
                "fold": fold,
                "shot": shot,
                "seed": seed,
                "support_control": support_control,
                "gap_episodes": gap_episodes,
                "support_annotation": support_annotation,
                "train_shots": None if train_shots is None else list(train_shots),
            }
        )
        self._datasets: dict[str, EpisodeDataset] = {}
        self._plans: dict[tuple[str, bool], EvalPlan] = {}
        self._gap: dict[str, list[Episode]] = {}

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

    def class_names(self, split: str) -> dict[int, str]:
        """{class id: name} of the split's classes, as results report them (test_metrics.json's
        per_class); the ids as text where a benchmark has no names."""
        return {c: str(c) for c in self.class_ids(split)}

    def split_shot(self, split: str) -> int:
        """K the episodes of `split` are drawn with: data.shot, or for training under
        data.train_shots its high end (a batch shows the first K, `ShotBatches`)."""
        return self.train_shots[1] if split == "train" and self.train_shots is not None else self.shot

    @property
    def validates(self) -> bool:
        """Whether fit validates (on the val split, to pick best.ckpt); a DataModule without a
        validation split says False, and fit then runs no validation loop."""
        return True

    def split_seed(self, split: str) -> int:
        return self.seed + {"test": 0, "val": 1, "train": 2}[split]

    # shared machinery
    def check_fit(self) -> None:
        """Refuses settings that do not suit training (one line); the CLI asks before the run
        writes anything, setup("fit") again."""
        if self.support_control != "none":
            raise InputError(
                f"data.support_control={self.support_control} is for evaluation runs (test, validate, predict): "
                "under fit it would pick the best checkpoint on controlled episodes; fit with none."
            )

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit":
            self.check_fit()
            if not self.validates and self.trainer is not None:
                self.trainer.limit_val_batches = 0  # no val split: no validation loop (nor sanity check)
        if self.trainer is not None:
            # The model's input size; any LightningModule of fssam2 has `image_size` (the data imports no model).
            self.image_size = int(cast(Any, self.trainer.lightning_module).image_size)
        if self.image_size is None:
            raise InputError(
                "FewShotDataModule.image_size is unset: attach it to a Trainer or set it to the model's input size."
            )

    def dataset(self, split: str) -> EpisodeDataset:
        if split not in self._datasets:
            try:
                episodes = self.episodes(split)
            except InputError as err:
                if split != "train" or self.train_shots is None:
                    raise
                high = self.train_shots[1]
                raise InputError(
                    f"data.train_shots={list(self.train_shots)} draws training episodes with {high} supports: {err}"
                ) from err
            self._datasets[split] = EpisodeDataset(
                episodes,
                self.image_reader(split),
                self.image_size,
                augment=self.augment and split == "train",
                image_cache_mb=0.0 if split == "train" else self.image_cache_mb,
                support_control="none" if split == "train" else self.support_control,
                support_annotation=self.support_annotation,
                train=split == "train",
            )
        return self._datasets[split]

    def support_gap_episodes(self, split: str) -> list[Episode]:
        """The episodes of `split` that an evaluation also runs with swapped supports for the
        support gap, by index: the first data.gap_episodes of a permutation of the split's
        episodes drawn from (its seed, GAP_STREAM), so the subset depends on the seed and split
        alone (and a larger subset holds a smaller one). Empty for training, with gap_episodes 0,
        under a support control, or when the episodes show fewer than two classes (no swap)."""
        if split not in self._gap:
            found: list[Episode] = []
            if split != "train" and self.support_control == "none" and self.gap_episodes != 0:
                rule = self.episodes(split)  # not the dataset, which needs image_size (set up later)
                episodes = [rule.episode(i, EVAL_EPOCH) for i in range(len(rule))]
                if len({e.class_id for e in episodes}) >= 2:
                    size = len(episodes) if self.gap_episodes == "all" else min(int(self.gap_episodes), len(episodes))
                    order = np.random.default_rng((self.split_seed(split), GAP_STREAM)).permutation(len(episodes))
                    found = [episodes[i] for i in sorted(order[:size].tolist())]
            self._gap[split] = found
        return self._gap[split]

    def _gap_items(self, split: str) -> list[Shown]:
        dataset = self.dataset(split)
        return [dataset.shown(e.index, EVAL_EPOCH, GAP_CONTROL)[2] for e in self.support_gap_episodes(split)]

    def plan(self, split: str, gap: bool = True) -> EvalPlan:
        """The planned order of an evaluation split's episodes, whatever eval_order says; made once,
        from the supports the dataset shows (support controls included), with the support-gap
        items (`support_gap_episodes`) unless gap is false (predict runs none)."""
        if (split, gap) not in self._plans:
            dataset = self.dataset(split)
            shown = [dataset.shown(i, EVAL_EPOCH)[2] for i in range(len(dataset))]
            self._plans[split, gap] = build_plan(shown, self.batch_size, self._gap_items(split) if gap else ())
        return self._plans[split, gap]

    def eval_plan(self, split: str, gap: bool = True) -> EvalPlan | None:
        """The plan an evaluation of `split` runs (None under eval_order=index or for train)."""
        if split == "train" or self.eval_order != "planned":
            return None
        return self.plan(split, gap)

    def _loader(self, split: str, gap: bool = True) -> DataLoader:
        dataset = self.dataset(split)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        plan = self.eval_plan(split, gap)
        gap_items = self._gap_items(split) if gap and plan is None else []
        if plan is not None or gap_items:
            if plan is not None:
                lean = (split, dataset.input_size()) if self._lean() else None
                batches: KeySampler = PlanSampler(plan, rank, world, lean, self.batch_limit(split))
            else:  # episode order (as EpisodeSampler), then the support-gap items in batches of their own
                order = unplanned_batches(self.plan(split, gap), self.batch_size, rank, world, self.batch_limit(split))
                batches = KeySampler(item_keys(order))
            return DataLoader(
                dataset,
                batch_sampler=batches,
                num_workers=self.num_workers,
                collate_fn=collate_episodes,
                persistent_workers=self.num_workers > 0,
            )
        sampler = EpisodeSampler(
            len(dataset), shuffle=split == "train", seed=self.split_seed(split), rank=rank, world_size=world
        )
        if split == "train" and self.train_shots is not None:
            drop_last = len(sampler) >= self.batch_size
            shots = ShotBatches(sampler, self.batch_size, drop_last, self.train_shots, self.split_seed(split))
            return DataLoader(
                dataset,
                batch_sampler=shots,
                num_workers=self.num_workers,
                collate_fn=collate_episodes,
                persistent_workers=self.num_workers > 0,
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

    def batch_limit(self, split: str) -> int | float | None:
        """The trainer's limit_val_batches / limit_test_batches for an evaluation split (None: no
        trainer, or every batch): the planned order keeps a cut run's support gap (`fssam2.plan.cut_short`)."""
        limit = getattr(self.trainer, f"limit_{split}_batches", None) if self.trainer is not None else None
        return None if limit is None or limit == 1.0 and isinstance(limit, float) else limit

    def _lean(self) -> bool:
        """Whether a planned evaluation ships only what the encoders need: lean_loading, and the
        model (any LightningModule of fssam2 has `cache_config`; the data imports no model) caches."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return self.lean_loading and getattr(module, "cache_config", None) is not None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", gap=False)


def trainer_datamodule(trainer: L.Trainer) -> L.LightningDataModule | None:
    """`trainer.datamodule`: Lightning sets it on every Trainer at run time but does not declare it."""
    datamodule: L.LightningDataModule | None = trainer.datamodule  # type: ignore[attr-defined]
    return datamodule


class SyntheticDataModule(FewShotDataModule):
    """The built-in synthetic benchmark (see `fssam2.synthetic`), PASCAL-5i-shaped: 20 classes,
    4 folds, query images cycling through the fold's list. Needs no files.

    Args:
        family: what defines a class: "hue" (a hue band with a shape and a fill), "shape" (an
            outline in any colours and fill) or "texture" (a pattern in any colours and outline).
        benchmark_seed: seed of the rendered images.
        image_side: side of the rendered images (their "original size").
        pool_sizes: images rendered for train / val / test.
        **kwargs: see `FewShotDataModule`.
    """

    full_label_maps = True

    def __init__(
        self,
        family: str = "hue",
        benchmark_seed: int = 0,
        image_side: int = 128,
        pool_sizes: tuple[int, int, int] = (1200, 240, 480),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        n_train, n_val, n_test = pool_sizes
        self.benchmark = SyntheticBenchmark(
            image_size=image_side, pool_sizes=(n_train, n_val, n_test), seed=benchmark_seed, family=family
        )
        self.benchmark.fold_classes(self.fold)  # validates the fold

    def class_ids(self, split: str) -> list[int]:
        return self.benchmark.split_classes(split, self.fold)

    def episodes(self, split: str) -> QueryCycleEpisodes:
        images, by_class = self.benchmark.lists(split, self.fold)
        length = {"train": None, "val": self.val_episodes, "test": self.test_episodes}[split]
        return QueryCycleEpisodes(
            images,
            by_class,
            self.benchmark.present,
            self.class_ids(split),
            self.split_shot(split),
            self.split_seed(split),
            length,
        )

    def image_reader(self, split: str) -> ImageReader:
        return self.benchmark.read
