"""Feature cache for evaluation: image-encoder features and support memories.

A test run repeats images across episodes (PASCAL-5i fold 0: 364 queries for 1000 episodes, and
the supports come from the same pool), so most encoder passes of the published loop recompute
features already computed. With the adapter fixed and no augmentation, an image's features
depend only on the image, and a support's memory on the image and its mask, so they can be kept
and reused. The cache holds them in memory up to a byte budget, evicting the least recently used;
evicted entries are dropped or, with a spill folder, written to disk and read back when needed.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fssam2.errors import InputError

Entry = tuple[torch.Tensor, ...]  # one image's maps (or one support's memory), no batch dimension


@dataclass
class CacheConfig:
    """How evaluation caches image-encoder features (test, validate, predict; never training)."""

    max_megabytes: float = 4096.0  # memory budget; least recently used features are evicted beyond it
    half: bool = False  # keep features in float16: half the memory, results change by fp16 rounding
    spill_dir: str | None = None  # evicted features are written under this folder (and reread) instead of dropped


@dataclass
class CacheStats:
    lookups: int = 0  # entries the forward pass asked for
    computed: int = 0  # entries that had to be computed (an encoder pass each)
    evictions: int = 0  # entries pushed out of memory
    disk_reads: int = 0  # lookups served from the spill folder

    @property
    def hits(self) -> int:
        return self.lookups - self.computed


class FeatureCache:
    """LRU map from a key to a computed entry (image features, support memories), bounded by bytes.

    Args:
        config: budget, precision and spill folder.
    """

    def __init__(self, config: CacheConfig) -> None:
        if config.max_megabytes < 0:
            raise InputError(f"feature_cache.max_megabytes={config.max_megabytes} must be >= 0 (0 keeps nothing).")
        self.config = config
        self.max_bytes = int(config.max_megabytes * 2**20)
        self.stats: dict[str, CacheStats] = {}  # per kind of entry
        self.nbytes = 0
        self._memory: OrderedDict[Hashable, tuple[Entry, torch.dtype]] = OrderedDict()
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

    def __len__(self) -> int:
        return len(self._memory) + len(self._on_disk)

    def __contains__(self, key: Hashable) -> bool:
        """`(kind, key) in cache`: held in memory or on disk."""
        return key in self._memory or key in self._on_disk

    def fetch(self, kind: str, keys: Sequence[Hashable], compute: Callable[[list[int]], list[Entry]]) -> list[Entry]:
        """The entries of `keys` (equal keys promise equal entries). The missing ones come from
        `compute(positions)`, called once with the first position of each distinct missing key."""
        stats = self.stats.setdefault(kind, CacheStats())
        entries = [self._get((kind, key), stats) for key in keys]
        todo: dict[Hashable, int] = {}
        for i, (key, entry) in enumerate(zip(keys, entries, strict=True)):
            if entry is None:
                todo.setdefault(key, i)
        stats.lookups += len(keys)
        stats.computed += len(todo)
        if not todo:
            return entries
        fresh = dict(zip(todo, compute(list(todo.values())), strict=True))
        for key, entry in fresh.items():
            self._put((kind, key), entry)
        return [fresh[key] if entry is None else entry for key, entry in zip(keys, entries, strict=True)]

    def _get(self, key: Hashable, stats: CacheStats) -> Entry | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            stored, dtype = self._memory[key]
            return tuple(t.to(dtype) for t in stored)
        spilled = self._on_disk.pop(key, None)
        if spilled is None:
            return None
        path, device = spilled
        stored = torch.load(path, map_location=device, weights_only=True)
        path.unlink()
        stats.disk_reads += 1
        entry, dtype = tuple(stored["tensors"]), getattr(torch, stored["dtype"])
        self._keep(key, entry, dtype)
        return tuple(t.to(dtype) for t in entry)

    def _put(self, key: Hashable, entry: Entry) -> None:
        dtype = entry[0].dtype
        # A copy, not a view: a view would keep its whole batch alive, beyond the byte budget.
        half = self.config.half
        stored = tuple(t.detach().to(torch.float16, copy=True) if half and t.is_floating_point() else t.detach().clone()
                       for t in entry)  # fmt: skip
        self._keep(key, stored, dtype)

    def _keep(self, key: Hashable, entry: Entry, dtype: torch.dtype) -> None:
        size = sum(t.numel() * t.element_size() for t in entry)
        if size > self.max_bytes:
            self._evict(key, entry, dtype)
            return
        while self.nbytes + size > self.max_bytes:
            old_key, (old_entry, old_dtype) = self._memory.popitem(last=False)
            self.nbytes -= sum(t.numel() * t.element_size() for t in old_entry)
            self._evict(old_key, old_entry, old_dtype)
        self._memory[key] = (entry, dtype)
        self.nbytes += size

    def _evict(self, key: Hashable, entry: Entry, dtype: torch.dtype) -> None:
        self.stats.setdefault(key[0], CacheStats()).evictions += 1
        if self._spill is None:
            return
        name = hashlib.sha1(repr(key).encode()).hexdigest()
        path = self._spill / f"{name}.pt"
        torch.save({"tensors": [t.cpu() for t in entry], "dtype": str(dtype).removeprefix("torch.")}, path)
        self._on_disk[key] = (path, entry[0].device)

    def close(self) -> None:
        """Free the memory and delete the spill folder."""
        self._memory.clear()
        self._on_disk.clear()
        self.nbytes = 0
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None
