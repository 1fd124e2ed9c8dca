"""The episode protocol: which (query, class, supports) episode i of a split is.

Episode `index` of a split with seed `seed` in epoch `epoch` (test / val runs use epoch -1) is
drawn from ``numpy.random.default_rng((seed, index, epoch + 1))`` (DESIGN.md, "Episode sampling,
exactly"), so the set of episodes never depends on workers, batch size or process count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from fssam2.errors import InputError

EVAL_EPOCH = -1  # the epoch test and validation episodes are drawn with


@dataclass(frozen=True)
class Episode:
    index: int  # position in the split's episode sequence
    query: str  # image id of the query
    class_id: int  # 1-based label value of the class to segment
    supports: tuple[str, ...]  # K distinct image ids of that class, never the query


class EpisodeRule(Protocol):
    """What a dataset's episode rule offers (QueryCycleEpisodes, ClassFirstEpisodes, FolderEpisodes)."""

    seed: int
    classes: list[int]

    def __len__(self) -> int: ...

    def episode(self, index: int, epoch: int = EVAL_EPOCH) -> Episode: ...


def episode_rng(seed: int, index: int, epoch: int) -> np.random.Generator:
    """The generator episode `index` draws from."""
    return np.random.default_rng((seed, index, epoch + 1))


class QueryCycleEpisodes:
    """The PASCAL-5i rule: the query cycles through the list, the class is drawn among the
    split's classes present in the query, the supports among that class's other images.

    Args:
        images: the split's data list, in file order.
        by_class: 1-based class -> image ids, in list order (the class-file dict).
        present: image id -> 1-based classes present in its label map.
        classes: the split's 1-based classes.
        shot: K, supports per episode.
        seed: episode seed of the split.
        length: number of episodes; None = one per image of the list.
    """

    def __init__(
        self,
        images: Sequence[str],
        by_class: Mapping[int, Sequence[str]],
        present: Callable[[str], Sequence[int]] | Mapping[str, Sequence[int]],
        classes: Sequence[int],
        shot: int,
        seed: int,
        length: int | None = None,
    ) -> None:
        check_shot(shot)
        if not images:
            raise InputError("The split's data list is empty: no episode can be drawn.")
        self.images = list(images)
        self.by_class = {int(c): list(ids) for c, ids in by_class.items()}
        self._present = present if callable(present) else present.__getitem__
        self.classes = sorted(int(c) for c in classes)
        self.shot = shot
        self.seed = seed
        self.length = len(self.images) if length is None else length
        _check_class_sizes(self.by_class, self.classes, shot)

    def __len__(self) -> int:
        return self.length

    def episode(self, index: int, epoch: int = EVAL_EPOCH) -> Episode:
        rng = episode_rng(self.seed, index, epoch)
        query = self.images[index % len(self.images)]
        split = set(self.classes)
        present = sorted(c - 1 for c in self._present(query) if c in split)  # 0-based, ascending
        if not present:
            raise InputError(f"Image {query!r} is listed but holds none of the split's classes {self.classes}.")
        c = int(rng.choice(present))
        pool = [x for x in self.by_class[c + 1] if x != query]
        supports = rng.choice(pool, self.shot, replace=False)
        return Episode(index=index, query=query, class_id=c + 1, supports=tuple(str(s) for s in supports))


class EpisodeSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """Yields (episode index, epoch) pairs, sharded over processes without padding.

    Evaluation: process r of N gets indices r, r + N, ... so every episode runs exactly once.
    Training: a permutation seeded by (seed, epoch), cut to a multiple of N so that every
    process runs the same number of steps. Lightning calls `set_epoch` before each epoch.
    """

    def __init__(self, length: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = EVAL_EPOCH if not shuffle else 0

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            self.epoch = epoch

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.length, self.world_size))
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.length)
        usable = self.length - self.length % self.world_size
        indices: list[int] = order[self.rank : usable : self.world_size].tolist()
        return indices

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self._indices()])

    def __len__(self) -> int:
        return len(self._indices())


class ClassFirstEpisodes:
    """The COCO-20i rule: the class is drawn first among the split's classes (in the published
    order), then the query among that class's images, then the supports among the others.

    Args:
        by_class: 1-based class -> image ids, in list order.
        classes: the split's 1-based classes in draw order (see `coco_classes`).
        shot, seed, length: as for `QueryCycleEpisodes`; length is required.
    """

    def __init__(
        self, by_class: Mapping[int, Sequence[str]], classes: Sequence[int], shot: int, seed: int, length: int
    ) -> None:
        check_shot(shot)
        self.by_class = {int(c): list(ids) for c, ids in by_class.items()}
        self.classes = [int(c) for c in classes]
        self.shot, self.seed, self.length = shot, seed, length
        _check_class_sizes(self.by_class, self.classes, shot)

    def __len__(self) -> int:
        return self.length

    def episode(self, index: int, epoch: int = EVAL_EPOCH) -> Episode:
        rng = episode_rng(self.seed, index, epoch)
        c = int(rng.choice([k - 1 for k in self.classes]))  # 0-based, as the rule is written
        query = str(rng.choice(self.by_class[c + 1]))
        supports = rng.choice([x for x in self.by_class[c + 1] if x != query], self.shot, replace=False)
        return Episode(index=index, query=query, class_id=c + 1, supports=tuple(str(s) for s in supports))


# Domain-shift folds: 0-based PASCAL classes held out for models trained on COCO-20i fold f - 10.
PASCAL_DOMAIN_SHIFT = {10: [0, 3, 8, 10, 11, 14], 11: [12, 17, 1, 5], 12: [2, 6, 15, 16, 18, 19], 13: [4, 7, 9, 13]}


def pascal_classes(split: str, fold: int) -> list[int]:
    """1-based PASCAL-5i classes of a split: fold f holds out 5f+1..5f+5 and trains on the other 15;
    a COCO->PASCAL fold (10-13, test only) holds out `PASCAL_DOMAIN_SHIFT[fold]`."""
    if fold in PASCAL_DOMAIN_SHIFT:
        return sorted(c + 1 for c in PASCAL_DOMAIN_SHIFT[fold])
    held_out = list(range(5 * fold + 1, 5 * fold + 6))
    return held_out if split != "train" else [c for c in range(1, 21) if c not in held_out]


def coco_classes(split: str, fold: int) -> list[int]:
    """1-based COCO-20i classes of a split, in the order the published sampling draws from:
    held-out classes fold + 4v + 1 (v = 0..19), training classes ascending."""
    held_out = [fold + 4 * v + 1 for v in range(20)]
    return held_out if split != "train" else [c for c in range(1, 81) if c not in held_out]


class FolderEpisodes:
    """The FSS-1000 rule, for any folder-per-class dataset: episode i is the i-th image of the
    split (categories sorted by name, images by name as strings, so "10" comes right after "1"),
    the supports are K other images of its category, drawn from `members` in the given order.

    Args:
        members: category -> image names in support-draw order (FSS-1000: "1".."10" numerically).
        shot, seed: as for `QueryCycleEpisodes`.
        queries: category -> the names among its members that are queries; None = all members
            (the folder dataset's validation queries only the images held out of training).
    """

    def __init__(
        self,
        members: Mapping[str, Sequence[str]],
        shot: int,
        seed: int,
        queries: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        check_shot(shot)
        self.members = {c: [str(n) for n in members[c]] for c in sorted(members)}
        _check_class_sizes(self.members, list(self.members), shot)
        asked = self.members if queries is None else {c: [str(n) for n in queries.get(c, ())] for c in self.members}
        self.queries = [
            (slot, c, n) for slot, c in enumerate(self.members) for n in sorted(asked[c], key=lambda n: f"{n}.jpg")
        ]
        self.shot, self.seed = shot, seed
        self.classes = list(range(1, len(self.members) + 1))

    def __len__(self) -> int:
        return len(self.queries)

    def episode(self, index: int, epoch: int = EVAL_EPOCH) -> Episode:
        rng = episode_rng(self.seed, index, epoch)
        slot, category, name = self.queries[index % len(self)]
        supports = rng.choice([n for n in self.members[category] if n != name], self.shot, replace=False)
        return Episode(
            index=index,
            query=f"{category}/{name}",
            class_id=slot + 1,
            supports=tuple(f"{category}/{n}" for n in supports),
        )


def check_shot(shot: int) -> None:
    if shot < 1:
        raise InputError(f"data.shot={shot}: an episode needs at least one support image (shot >= 1).")


def _check_class_sizes(by_class: Mapping[Any, Sequence[str]], classes: Sequence[Any], shot: int) -> None:
    """Every class (a label value, or a category name) needs the query plus `shot` supports."""
    short = {c: len(by_class.get(c, [])) for c in classes if len(by_class.get(c, [])) < shot + 1}
    if short:
        shown = sorted(short)[:5]
        raise InputError(
            f"Classes {shown} have fewer than shot + 1 = {shot + 1} images ({ {c: short[c] for c in shown} }"
            f"{f', {len(short)} classes in all' if len(short) > 5 else ''}): "
            "lower data.shot or add images of those classes."
        )
