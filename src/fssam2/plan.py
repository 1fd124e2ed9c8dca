"""The plan of an evaluation: which batches run, in which order, on which process, and what each
batch will ask of the feature cache.

The episodes of an evaluation are fixed before it starts (seeded by index, see fssam2.episodes)
and the metric is a sum over episodes, so the order in which they run is free. The plan runs
them grouped by class (episodes of one class draw their queries and supports from one pool of
images), inside a group by query (an image's turns as a query come together), cut into batches
of `batch_size` episodes that never depend on the number of processes. Under DDP each process
gets whole units (a class, or several small classes), balanced by the images they need, so the
processes together encode about the fold's distinct images rather than N times them, and N
processes run exactly the batches one process runs.

`trace` lists, for one process's batches, the steps at which each image's features and each
support's memory will be asked for; the feature cache evicts by it (Belady's rule, see
`fssam2.cache.Residency`). This module imports no model code: the report of what a plan will
cost (`fssam2.plan_report`) sits above it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch

from fssam2.cache import ImageKey, MemoryKey, Uses, image_key, memory_key
from fssam2.episodes import EVAL_EPOCH
from fssam2.errors import InputError

MIN_UNIT_BATCHES = 4  # consecutive small classes (FSS-1000: 10 episodes each) share a unit up to this many batches


@dataclass(frozen=True)
class Shown:
    """What episode `index` asks of the encoders: its query (scored for `class_id`) and the
    supports it shows, whose masks show `support_class` (under a support control these are not
    the episode's own; see `fssam2.data.EpisodeDataset.shown`). gap: a support-gap item, episode
    `index` run a second time with swapped supports (see `EvalPlan.gap`). kinds: what each
    support shows; a weak one (a prompt instead of its mask) has its image features asked for at
    each batch showing it (its prompt is decoded from them), and its memory, that of the decoded
    mask, made anew (once a batch for a box, which the mask alone decides)."""

    index: int
    query: str
    class_id: int
    supports: tuple[str, ...]
    support_class: int
    gap: bool = False
    kinds: tuple[str, ...] = ()  # per support: what it shows ("mask", "points", "box", "scribble"); () masks


@dataclass
class EvalPlan:
    """Batches of episode indices in run order, and the units processes get whole.

    episodes: every episode of the split, `episodes[i].index == i`.
    batches: episode indices of each batch, in the order one process runs them.
    units: consecutive runs of batch positions; a process gets whole units.
    gap: the support-gap items (swapped supports, `gap` true), one per episode of the subset.
    gap_batches: positions in `gap` of each support-gap batch; a batch's items share their query's
        class and their supports' class. They never mix with the episodes' batches: a process runs
        its episodes' batches exactly as without them, then its support-gap batches, so the
        episodes' results and the cache's choices for them do not change.
    """

    episodes: list[Shown]
    batches: list[tuple[int, ...]]
    units: list[range]
    gap: list[Shown] = field(default_factory=list)
    gap_batches: list[tuple[int, ...]] = field(default_factory=list)

    def images(self, positions: Sequence[int]) -> set[str]:
        """The distinct images (queries and supports) the batches at `positions` show."""
        found: set[str] = set()
        for p in positions:
            for i in self.batches[p]:
                found.add(self.episodes[i].query)
                found.update(self.episodes[i].supports)
        return found

    def _owners(self, world_size: int) -> list[int]:
        """The process of each batch position.

        Units go whole to the process with the least work so far, largest first (longest
        processing time first), work being the distinct images a unit needs (its encoder passes
        on a process that has seen none of them). With fewer units than processes, the largest
        are halved at a batch boundary first. Batch contents never change."""
        if world_size > len(self.batches):
            raise InputError(
                f"{len(self.episodes)} evaluation episodes make {len(self.batches)} batches, fewer than the "
                f"{world_size} processes: use at most {len(self.batches)} processes, or a smaller data.batch_size."
            )
        units = [list(u) for u in self.units]
        while len(units) < world_size:
            big = max(range(len(units)), key=lambda u: (len(units[u]), -u))
            half = len(units[big]) // 2
            units[big : big + 1] = [units[big][:half], units[big][half:]]
        costs = [len(self.images(u)) for u in units]
        loads, owners = [0] * world_size, [0] * len(self.batches)
        for u in sorted(range(len(units)), key=lambda u: (-costs[u], u)):
            rank = min(range(world_size), key=lambda r: (loads[r], r))
            loads[rank] += costs[u]
            for p in units[u]:
                owners[p] = rank
        return owners

    def shard(self, rank: int, world_size: int) -> list[int]:
        """Positions of the batches process `rank` of `world_size` runs, in plan order (see `_owners`)."""
        if not 0 <= rank < world_size:
            raise InputError(f"Process rank {rank} is not in 0..{world_size - 1}.")
        return [p for p, owner in enumerate(self._owners(world_size)) if owner == rank]

    def gap_shard(self, rank: int, world_size: int) -> list[int]:
        """Positions of the support-gap batches process `rank` runs, in plan order. A support-gap
        batch shows queries of one class and supports of another, which two processes may hold:
        it goes where the fewest of its images are new (images its process's batches, and the
        support-gap batches given to it before, do not show); ties to the process running its
        first episode's own batch, then the lowest rank."""
        if not 0 <= rank < world_size:
            raise InputError(f"Process rank {rank} is not in 0..{world_size - 1}.")
        if not self.gap_batches:
            return []
        owners = self._owners(world_size)
        held: list[set[str]] = [set() for _ in range(world_size)]
        for p, owner in enumerate(owners):
            held[owner] |= self.images([p])
        batch_of = {i: p for p, batch in enumerate(self.batches) for i in batch}
        mine = []
        for g, batch in enumerate(self.gap_batches):
            shown = {image for j in batch for image in (self.gap[j].query, *self.gap[j].supports)}
            first = owners[batch_of[self.gap[batch[0]].index]]
            to = min(range(world_size), key=lambda r: (len(shown - held[r]), r != first, r))
            held[to] |= shown
            if to == rank:
                mine.append(g)
        return mine

    def rank_batches(self, rank: int = 0, world_size: int = 1, limit: int | float | None = None) -> list[list[Shown]]:
        """The episodes of each batch process `rank` runs, in its order: its episodes' batches,
        then its support-gap batches; with `limit` (the trainer's limit_*_batches for the split),
        ordered so that the batches that run hold the support-gap batches of the episodes they
        score (`cut_short`)."""
        mine = [[self.episodes[i] for i in self.batches[p]] for p in self.shard(rank, world_size)]
        gap = [[self.gap[j] for j in self.gap_batches[g]] for g in self.gap_shard(rank, world_size)]
        return cut_short(mine, gap, limit)


def batches_run(total: int, limit: int | float | None) -> int:
    """How many of `total` batches a trainer's limit_*_batches runs, as Lightning counts them:
    an int is a number of batches, a float a share (rounded down); None all."""
    if limit is None:
        return total
    return min(total, limit) if isinstance(limit, int) else int(total * limit)


def cut_short(
    episodes: list[list[Shown]], gap: list[list[Shown]], limit: int | float | None = None
) -> list[list[Shown]]:
    """A process's episodes' batches then its support-gap batches, in the order they run. When
    the trainer's `limit` (limit_*_batches) runs only the first n of them: the most episode
    batches that leave room for the support-gap batches of the episodes they hold, then those,
    so the support gap is measured on what is scored; the rest follow (they do not run)."""
    n = batches_run(len(episodes) + len(gap), limit)
    if n >= len(episodes) + len(gap):
        return episodes + gap
    for kept in range(min(n, len(episodes)), -1, -1):
        scored = {e.index for batch in episodes[:kept] for e in batch}
        replays = [g for g, batch in enumerate(gap) if any(e.index in scored for e in batch)]
        if kept + len(replays) <= n:
            break
    rest = [batch for g, batch in enumerate(gap) if g not in replays]
    return episodes[:kept] + [gap[g] for g in replays] + episodes[kept:] + rest


def build_plan(episodes: Sequence[Shown], batch_size: int, gap: Sequence[Shown] = ()) -> EvalPlan:
    """Group by class (ascending), order a group by (query, index), merge consecutive small
    groups into units of at least MIN_UNIT_BATCHES batches, and cut each unit into batches.
    The support-gap items `gap` (at most one per episode) are grouped by (query class, class of
    the supports they show), groups in the order of their first episode, items in their episodes'
    order, and each group is cut into batches of its own (so a batch needs the features of two
    classes at most); the episodes' batches are the same with them or without."""
    episodes = list(episodes)
    if [e.index for e in episodes] != list(range(len(episodes))):
        raise ValueError("build_plan needs every episode of the split, in index order.")
    if len({e.index for e in gap}) != len(gap) or not all(e.gap and 0 <= e.index < len(episodes) for e in gap):
        raise ValueError("build_plan's support-gap items are marked gap, each of a distinct episode of the split.")
    if batch_size < 1:
        raise InputError(f"data.batch_size={batch_size} must be >= 1.")
    groups: dict[int, list[Shown]] = defaultdict(list)
    for e in episodes:
        groups[e.class_id].append(e)
    merged: list[list[Shown]] = []
    for c in sorted(groups):
        group = sorted(groups[c], key=lambda e: (e.query, e.index))
        if merged and len(merged[-1]) < MIN_UNIT_BATCHES * batch_size:
            merged[-1].extend(group)
        else:
            merged.append(group)
    batches: list[tuple[int, ...]] = []
    units: list[range] = []
    for unit in merged:
        start = len(batches)
        batches += [tuple(e.index for e in unit[i : i + batch_size]) for i in range(0, len(unit), batch_size)]
        units.append(range(start, len(batches)))
    position = {i: n for n, i in enumerate(i for batch in batches for i in batch)}
    pairs: dict[tuple[int, int], list[int]] = defaultdict(list)  # insertion order: each pair's first episode
    for j in sorted(range(len(gap)), key=lambda j: position[gap[j].index]):
        pairs[gap[j].class_id, gap[j].support_class].append(j)
    gap_batches = [
        tuple(items[i : i + batch_size]) for items in pairs.values() for i in range(0, len(items), batch_size)
    ]
    return EvalPlan(episodes, batches, units, list(gap), gap_batches)


# What EpisodeDataset takes: (index, epoch[, control[, shot[, ship]]]); control None is the dataset's own,
# shot None all of the episode's supports (a training batch of data.train_shots shows its first
# `shot`), ship None every image's pixels, else one bool per support and one for the query (`shipping`).
ItemKey = tuple  # of one of the shapes above
Ship = tuple[bool, ...]
GAP_CONTROL: Literal["swap"] = "swap"  # the supports a support-gap item shows


def item_keys(batches: Sequence[Sequence[Shown]], ship: Sequence[Sequence[Ship]] | None = None) -> list[list[ItemKey]]:
    """The `EpisodeDataset` keys of batches: (index, EVAL_EPOCH), and for a support-gap item
    (index, EVAL_EPOCH, GAP_CONTROL); with `ship` (`shipping`), each key also says whose pixels to ship."""
    keys: list[list[ItemKey]] = []
    for n, batch in enumerate(batches):
        keys.append([])
        for j, e in enumerate(batch):
            key = (e.index, EVAL_EPOCH, GAP_CONTROL if e.gap else None)
            keys[-1].append((*key, None, ship[n][j]) if ship is not None else key if e.gap else key[:2])
    return keys


def shipping(batches: Sequence[Sequence[Shown]], split: str, size: int) -> list[list[Ship]]:
    """Whose pixels each episode of a process's `batches` ships (one bool per support, then the
    query): an image's, only in the batch where the feature cache will first encode it (its first
    image use in `trace`) and there in its first slot (the batch's other slots showing it take
    those pixels), so that with a cache holding what the plan needs, every image is read, resized
    and shipped once. A batch whose encoder needs an image that was not shipped (the cache
    evicted it) reads it then (`fssam2.module`)."""
    first: dict[Hashable, int] = {}
    for key, steps in trace(batches, split, size).items():
        kind, inner = cast(tuple[str, Hashable], key)
        if kind == "image":
            first[inner] = steps[0]
    out: list[list[Ship]] = []
    for step, batch in enumerate(batches):
        shipped: set[str] = set()  # in this batch
        rows = []
        for e in batch:
            row = []
            for image in (*e.supports, e.query):
                due = image not in shipped and first.get(image_key(split, image, size)) == step
                if due:
                    shipped.add(image)
                row.append(due)
            rows.append(tuple(row))
        out.append(rows)
    return out


class KeySampler(torch.utils.data.Sampler):
    """A DataLoader batch sampler over fixed batches of `EpisodeDataset` keys."""

    def __init__(self, batches: list[list[ItemKey]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[ItemKey]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class PlanSampler(KeySampler):
    """The planned batches of process `rank` of `world_size` (support-gap batches last; see
    `cut_short` for `limit`); with `lean` (split, input size), each key says whose pixels to
    ship (`shipping`)."""

    def __init__(
        self,
        plan: EvalPlan,
        rank: int = 0,
        world_size: int = 1,
        lean: tuple[str, int] | None = None,
        limit: int | float | None = None,
    ) -> None:
        batches = plan.rank_batches(rank, world_size, limit)
        super().__init__(item_keys(batches, None if lean is None else shipping(batches, *lean)))


def index_batches(episodes: Sequence[Shown], batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[Shown]]:
    """The unplanned order (data.eval_order=index): process `rank` runs episodes rank, rank + N,
    ... in batches of `batch_size`."""
    mine = list(episodes)[rank::world_size]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def unplanned_batches(
    plan: EvalPlan, batch_size: int, rank: int = 0, world_size: int = 1, limit: int | float | None = None
) -> list[list[Shown]]:
    """What process `rank` runs under data.eval_order=index: its episodes (`index_batches`), then
    its share of the support-gap items, by index, in batches of their own (see `cut_short` for `limit`)."""
    return cut_short(
        index_batches(plan.episodes, batch_size, rank, world_size),
        index_batches(sorted(plan.gap, key=lambda e: e.index), batch_size, rank, world_size),
        limit,
    )


def batch_keys(batch: Sequence[Shown], split: str, size: int) -> tuple[list[ImageKey], list[MemoryKey], list[ImageKey]]:
    """(support image keys, memory keys, query image keys) of a batch, as FSSAM2Module._logits makes them."""
    supports: list[ImageKey] = []
    memories: list[MemoryKey] = []
    for e in batch:
        for s in e.supports:
            supports.append(image_key(split, s, size))
            memories.append(memory_key(supports[-1], e.support_class))
    return supports, memories, [image_key(split, e.query, size) for e in batch]


def trace(batches: Sequence[Sequence[Shown]], split: str, size: int) -> Uses:
    """{(kind, key): the steps (batch positions) that will ask for it} for a process running
    `batches`: every support's memory at each of its batches; a query's image features at each
    of its batches; a support's image features only at the first batch showing its memory (the
    memory is then kept and the features are not needed again). A weak support (`Shown.kinds`):
    its image features at each of its batches, and no memory (each is the decode of its own prompt)."""
    uses: dict[Hashable, list[int]] = defaultdict(list)
    seen: set[Hashable] = set()
    for step, batch in enumerate(batches):
        supports, memories, queries = batch_keys(batch, split, size)
        for image, memory, kind in zip(supports, memories, support_kinds(batch), strict=True):
            if kind != "mask":
                _add(uses, ("image", image), step)
                continue
            _add(uses, ("memory", memory), step)
            if memory not in seen:
                seen.add(memory)
                _add(uses, ("image", image), step)
        for image in queries:
            _add(uses, ("image", image), step)
    return dict(uses)


def support_kinds(batch: Sequence[Shown]) -> list[str]:
    """Per support of a batch, episode-major: what it shows ("mask" unless `Shown.kinds` says)."""
    return [e.kinds[j] if e.kinds else "mask" for e in batch for j in range(len(e.supports))]


def _add(uses: dict[Hashable, list[int]], key: Hashable, step: int) -> None:
    steps = uses[key]
    if not steps or steps[-1] != step:
        steps.append(step)
