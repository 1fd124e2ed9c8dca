"""Feature cache for evaluation: image-encoder features and support memories.

A test run repeats images across episodes (PASCAL-5i fold 0: 364 queries for 1000 episodes, and
the supports come from the same pool), so most encoder passes of the published loop recompute
features already computed. With the adapter fixed and no augmentation, an image's features
depend only on the image, and a support's memory on the image and its mask, so they can be kept
and reused. The cache holds them in memory up to a byte budget. Without a plan it evicts the least
recently used entry. With a plan (the future accesses of a planned evaluation, see fssam2.plan) it
follows Belady's rule: it drops the entry needed furthest in the future, and never keeps an entry
that no later step needs. Evicted entries are dropped or, with a spill folder, written to disk and
read back when needed. `Residency` makes these decisions on keys and sizes alone, so a replay
without tensors (`fssam2.plan_report.simulate`) decides exactly as a real run does.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from fssam2.errors import InputError

Entry = tuple[torch.Tensor, ...]  # one image's maps (or one support's memory), no batch dimension
Dtypes = tuple[torch.dtype, ...]  # an entry's dtypes as computed (under autocast they may differ)


ImageKey = tuple[str, str, int]  # (split, image id, size)
MemoryKey = tuple[Hashable, int]  # (image key, class)


def image_key(split: str, image_id: str, size: int) -> ImageKey:
    """The feature-cache key of an image's encoder features."""
    return (split, image_id, size)


def memory_key(image: Hashable, support_class: int) -> MemoryKey:
    """The feature-cache key of a support's memory: its image and the class its mask shows."""
    return (image, int(support_class))


@dataclass
class CacheConfig:
    """How evaluation caches image-encoder features (test, validate, predict; never training)."""

    max_megabytes: float = (
        4096.0  # memory budget; beyond it the entry needed furthest ahead (unplanned: least recently used) goes
    )
    half: bool = False  # keep float32 features in float16: half the memory, results change by fp16 rounding
    spill_dir: str | None = None  # evicted features are written under this folder (and reread) instead of dropped
    plan_only: bool = (
        False  # print the evaluation's plan (episodes, encoder passes, peak cache) and exit, running no model
    )

    def __post_init__(self) -> None:
        check_budget(self.max_megabytes, "model.feature_cache.max_megabytes")


def check_budget(megabytes: float, option: str) -> float:
    """A cache budget in megabytes: a finite number >= 0 (0 keeps nothing); else one line naming `option`."""
    if not (isinstance(megabytes, int | float) and math.isfinite(megabytes) and megabytes >= 0):
        raise InputError(f"{option}={megabytes} is not a budget: give megabytes >= 0 (0 keeps nothing).")
    return megabytes


@dataclass
class CacheStats:
    lookups: int = 0  # entries the forward pass asked for
    computed: int = 0  # entries that had to be computed (an encoder pass each)
    evictions: int = 0  # entries pushed out of memory, or not kept at all
    disk_reads: int = 0  # lookups served from the spill folder

    @property
    def hits(self) -> int:
        return self.lookups - self.computed


Uses = dict[Hashable, list[int]]  # key -> the ascending plan steps at which it will be asked for


class Residency:
    """Which keys a byte budget holds, and which to drop: the policy of `FeatureCache` on keys and
    sizes alone (no tensors), shared with the replay `fssam2.plan_report.simulate`.

    Without a plan: least recently used first. With `plan(uses)` and `clock` set to the current
    step: Belady's rule, i.e. the key whose next use (first planned step after `clock`) is furthest
    goes first; a key that no later step uses is not kept; and a new key is not kept when keeping it
    would drop only keys needed sooner than it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.peak = 0  # the most bytes held at once
        self.clock = 0
        self._sizes: OrderedDict[Hashable, int] = OrderedDict()  # least recently used first
        self._uses: Uses | None = None

    @property
    def planned(self) -> bool:
        return self._uses is not None

    def plan(self, uses: Uses | None) -> None:
        self._uses = uses

    def __contains__(self, key: Hashable) -> bool:
        return key in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def touch(self, key: Hashable) -> bool:
        """Whether `key` is held; a held key becomes the most recently used."""
        if key not in self._sizes:
            return False
        self._sizes.move_to_end(key)
        return True

    def next_use(self, key: Hashable) -> float:
        """The first planned step after the clock that asks for `key` (inf: none; 0 without a plan)."""
        if self._uses is None:
            return 0
        steps = self._uses.get(key, ())
        i = bisect.bisect_right(steps, self.clock)
        return steps[i] if i < len(steps) else math.inf

    def used_now(self, key: Hashable) -> bool:
        """Whether the plan's current step (the clock) asks for `key` (False without a plan)."""
        steps = self._uses.get(key, ()) if self._uses is not None else ()
        i = bisect.bisect_left(steps, self.clock)
        return i < len(steps) and steps[i] == self.clock

    def admit(self, key: Hashable, size: int, spare_current: bool = False) -> list[Hashable] | None:
        """Hold `key` (size bytes), dropping others as the policy says. Returns the dropped keys,
        or None when `key` itself is not held (too big, or, planned, not worth keeping). With
        `spare_current` (planned), no key the current step asks for is dropped."""
        if size > self.max_bytes:
            return None
        if self._uses is None:
            dropped = []
            while self.nbytes + size > self.max_bytes:
                old, old_size = self._sizes.popitem(last=False)
                self.nbytes -= old_size
                dropped.append(old)
        else:
            due = self.next_use(key)
            if due == math.inf:
                return None
            dropped, free = [], self.max_bytes - self.nbytes
            if free < size:
                # Furthest next use first; ties: least recently used first (a stable sort of LRU order).
                for old in sorted(self._sizes, key=self.next_use, reverse=True):
                    if free >= size or self.next_use(old) <= due:
                        break
                    if spare_current and self.used_now(old):
                        continue
                    dropped.append(old)
                    free += self._sizes[old]
                if free < size:
                    return None
            for old in dropped:
                self.nbytes -= self._sizes.pop(old)
        self._sizes[key] = size
        self.nbytes += size
        self.peak = max(self.peak, self.nbytes)
        return dropped

    def clear(self) -> None:
        self._sizes.clear()
        self.nbytes = 0


class FeatureCache:
    """Map from a key to a computed entry (image features, support memories), bounded by bytes;
    evicts the least recently used entry, or by the plan's next uses (see `Residency`).

    Args:
        config: budget, precision and spill folder.
    """

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.max_bytes = int(config.max_megabytes * 2**20)
        self.stats: dict[str, CacheStats] = {}  # per kind of entry
        self.residency = Residency(self.max_bytes)
        self._memory: dict[Hashable, tuple[Entry, Dtypes]] = {}  # as kept, and each tensor's dtype as computed
        self._on_disk: dict[Hashable, tuple[Path, torch.device]] = {}
        self._spill: Path | None = None
        if config.spill_dir is not None:
            parent = Path(config.spill_dir).expanduser()
            try:
                parent.mkdir(parents=True, exist_ok=True)
                self._spill = Path(tempfile.mkdtemp(prefix="fssam2-features-", dir=parent))
            except OSError as err:
                raise InputError(
                    f"feature_cache.spill_dir {parent} cannot be written ({err.strerror}): choose another folder."
                ) from err

    @property
    def nbytes(self) -> int:
        return self.residency.nbytes

    @property
    def peak_bytes(self) -> int:
        return self.residency.peak

    def plan(self, uses: Uses | None) -> None:
        """Evict by next use: `uses` maps each `(kind, key)` to the steps that will ask for it;
        set `clock` to the current step before each. None: least recently used."""
        self.residency.plan(uses)

    @property
    def clock(self) -> int:
        return self.residency.clock

    @clock.setter
    def clock(self, step: int) -> None:
        self.residency.clock = step

    def __len__(self) -> int:
        return len(self._memory) + len(self._on_disk)

    def __contains__(self, key: Hashable) -> bool:
        """`(kind, key) in cache`: held in memory or on disk."""
        return key in self._memory or key in self._on_disk

    def needed_later(self, kind: str, key: Hashable) -> bool:
        """Whether the plan asks for `(kind, key)` at a step after the clock (False without a plan)."""
        return self.residency.planned and self.residency.next_use((kind, key)) < math.inf

    def lookup(self, kind: str, keys: Sequence[Hashable]) -> list[Entry | None]:
        """The held entries of `keys`, None for each one not held."""
        stats = self.stats.setdefault(kind, CacheStats())
        stats.lookups += len(keys)
        return [self._get((kind, key), stats) for key in keys]

    def store(self, kind: str, keys: Sequence[Hashable], entries: Sequence[Entry]) -> None:
        """Computed entries of distinct `keys` (one encoder pass each), kept as the policy says."""
        self.stats.setdefault(kind, CacheStats()).computed += len(keys)
        for key, entry in zip(keys, entries, strict=True):
            self._put((kind, key), entry)

    def fetch(
        self,
        kind: str,
        keys: Sequence[Hashable],
        compute: Callable[[list[int]], list[Entry]],
        earlier: Mapping[Hashable, Entry] | None = None,
        unstored: Sequence[Hashable] = (),
    ) -> list[Entry]:
        """The entries of `keys` (equal keys promise equal entries). The missing ones come from
        `compute(positions)`, called once with the first position of each distinct missing key.
        `earlier`: entries an earlier call in this step looked up or computed, served as they are
        (hits); of those, the `unstored` ones were computed then and are stored now, with this
        call's, so that nothing this step still asks for is evicted before it is asked for."""
        earlier = earlier or {}
        rest = [key for key in keys if key not in earlier]
        held = iter(self.lookup(kind, rest))
        self.stats[kind].lookups += len(keys) - len(rest)
        entries = [earlier[key] if key in earlier else next(held) for key in keys]
        todo: dict[Hashable, int] = {}
        for i, (key, entry) in enumerate(zip(keys, entries, strict=True)):
            if entry is None:
                todo.setdefault(key, i)
        fresh = {key: earlier[key] for key in unstored}
        if todo:
            fresh.update(zip(todo, compute(list(todo.values())), strict=True))
        self.store(kind, list(fresh), list(fresh.values()))
        return [fresh[key] if entry is None else entry for key, entry in zip(keys, entries, strict=True)]

    def _get(self, key: Hashable, stats: CacheStats) -> Entry | None:
        if self.residency.touch(key):
            stored, dtypes = self._memory[key]
            return tuple(t.to(d) for t, d in zip(stored, dtypes, strict=True))
        spilled = self._on_disk.get(key)
        if spilled is None:
            return None
        path, device = spilled
        stored = torch.load(path, map_location=device, weights_only=True)
        stats.disk_reads += 1
        entry, dtypes = tuple(stored["tensors"]), tuple(getattr(torch, d) for d in stored["dtypes"])
        # A planned evaluation ships no pixels for what is held at the start of a step (fssam2.module
        # `_needed`): so a read-back pushes out nothing the step still asks for, and an entry not taken
        # back stays on disk (the step may ask for it again: a support shown twice in a batch).
        dropped = self.residency.admit(key, sum(t.numel() * t.element_size() for t in entry), spare_current=True)
        if dropped is not None:
            del self._on_disk[key]
            path.unlink()
            for old in dropped:
                self._evict(old, *self._memory.pop(old))
            self._memory[key] = (entry, dtypes)
        return tuple(t.to(d) for t, d in zip(entry, dtypes, strict=True))

    def _put(self, key: Hashable, entry: Entry) -> None:
        dtypes = tuple(t.dtype for t in entry)
        # A copy, not a view: a view would keep its whole batch alive, beyond the byte budget.
        # Features are kept in the precision they were computed in (bfloat16 under bf16 autocast);
        # `half` narrows only float32 / float64 ones.
        stored = tuple(
            t.detach().to(torch.float16, copy=True) if self._narrow(t) else t.detach().clone() for t in entry
        )
        self._keep(key, stored, dtypes)

    def _narrow(self, t: torch.Tensor) -> bool:
        return self.config.half and t.dtype in (torch.float32, torch.float64)

    def _keep(self, key: Hashable, entry: Entry, dtypes: Dtypes) -> None:
        dropped = self.residency.admit(key, sum(t.numel() * t.element_size() for t in entry))
        if dropped is None:
            self._evict(key, entry, dtypes)
            return
        for old in dropped:
            self._evict(old, *self._memory.pop(old))
        self._memory[key] = (entry, dtypes)

    def _evict(self, key: Hashable, entry: Entry, dtypes: Dtypes) -> None:
        kind = cast(tuple[str, Hashable], key)[0]  # every key here is (kind, key)
        self.stats.setdefault(kind, CacheStats()).evictions += 1
        if self._spill is None or self.residency.next_use(key) == math.inf:
            return  # nothing to spill to, or (planned) never needed again
        name = hashlib.sha1(repr(key).encode()).hexdigest()
        path = self._spill / f"{name}.pt"
        names = [str(d).removeprefix("torch.") for d in dtypes]
        torch.save({"tensors": [t.cpu() for t in entry], "dtypes": names}, path)
        self._on_disk[key] = (path, entry[0].device)

    def close(self) -> None:
        """Free the memory and delete the spill folder."""
        self._memory.clear()
        self._on_disk.clear()
        self.residency.clear()
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None
