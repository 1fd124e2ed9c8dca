"""Measuring a run: its peak memory, and what a Trainer precision means for the tensors.

One home for both, used by `fssam2 doctor`, the plan report and the scripts under `experiments/`:
`PeakMemory` for one process (or the device), `HostMemory` for a process and its data-loading workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from fssam2.errors import InputError

LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None


def status_bytes(field: str, pid: int | str = "self") -> int:
    """A memory line of /proc/PID/status (given in kB) in bytes; KeyError when the process has none
    (a kernel thread), OSError when it is gone."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def free_garbage() -> None:
    """Collect garbage and give freed heap pages back, so that RSS counts live memory only."""
    gc.collect()
    if LIBC is not None:
        LIBC.malloc_trim(0)


class PeakMemory:
    """Peak memory since the last `start()`: allocated tensors on CUDA; on CPU the process's peak
    RSS (VmHWM, reset through /proc/self/clear_refs). `baseline` is the level at construction,
    `at_start` the level at the last `start()`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cpu" and not Path("/proc/self/clear_refs").exists():
            raise InputError("Measuring CPU memory needs Linux's /proc/self: run fssam2 doctor with --no-measure here.")
        self.settle()
        self.baseline = self._level()
        self.at_start = self.baseline

    def _level(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else status_bytes("VmRSS")

    def settle(self) -> None:
        """Collect garbage and give freed heap pages back, so that levels count live memory only."""
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.synchronize(self.device)
        else:
            free_garbage()

    def start(self) -> None:
        self.settle()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS
        self.at_start = self._level()

    def peak(self) -> int:
        """The whole peak in bytes since `start()` (weights included on CUDA; the process's RSS on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        return status_bytes("VmHWM")


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and all its descendants (Linux /proc; 0 for a process gone)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/PID/stat: "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += status_bytes("VmRSS", p)
        except (OSError, KeyError):
            pass  # exited, or a kernel thread without memory
        todo.extend(children.get(p, []))
    return total


class HostMemory:
    """Peak host memory of this process and its descendants (data-loading workers included), sampled
    by a background thread every `interval` seconds while inside `with`: a sampled peak, so a spike
    shorter than the interval can be missed. A sample scans /proc (about 2 ms with 120 processes: a
    few per cent of one core at 50 ms). `at_start` is the level on entering (after freeing what is
    garbage), `rise` the peak above it. Linux only."""

    def __init__(self, interval: float = 0.05) -> None:
        if not Path("/proc/self/status").exists():
            raise InputError("Measuring host memory needs Linux's /proc: run this on Linux.")
        self.interval = interval
        self.peak = 0  # bytes, the largest sum seen
        self.at_start = 0  # bytes, on entering
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak = max(self.peak, tree_rss(os.getpid()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @property
    def rise(self) -> int:
        return self.peak - self.at_start

    def __enter__(self) -> HostMemory:
        free_garbage()
        self._stop.clear()
        self.at_start = self.peak = tree_rss(os.getpid())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


@dataclass(frozen=True)
class Precision:
    """What a Lightning `trainer.precision` value does to the tensors."""

    dtype: torch.dtype | None  # the dtype the model computes in; None: float32
    mixed: bool  # True: autocast to dtype over float32 weights ("bf16-mixed"); False: the whole model in dtype

    @property
    def weights(self) -> torch.dtype | None:
        """The dtype to cast the whole model to (None: keep float32)."""
        return None if self.mixed else self.dtype

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """The context the forward pass runs in."""
        return torch.autocast(device_type, dtype=self.dtype) if self.mixed else contextlib.nullcontext()


FLOAT32 = Precision(None, mixed=False)  # "32-true"

_MIXED = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}
_TRUE = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64, "64": torch.float64}


def parse_precision(precision: str | int | None) -> Precision:
    """A Lightning precision value (None: "32-true") as the dtype it computes in; InputError for another value."""
    value = "32-true" if precision is None else str(precision)
    if value in _MIXED:
        return Precision(_MIXED[value], mixed=True)
    if value in _TRUE:
        return Precision(_TRUE[value], mixed=False)
    if value in ("32-true", "32"):
        return FLOAT32
    raise InputError(
        f"trainer.precision={value} is not a Lightning precision: use 32-true, bf16-mixed, 16-mixed, bf16-true, "
        "16-true or 64-true."
    )
