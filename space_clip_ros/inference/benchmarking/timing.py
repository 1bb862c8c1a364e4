"""Latency measurement: warm-up, repeated timings, robust statistics, interleaved A/B rounds.

Timings on a shared machine drift with other processes' load. Candidates that are compared are
therefore timed in rounds (A, B, A, B, ...) rather than one after the other, so that a burst of
load hits all of them alike, and the median is reported (the p95 shows the tail).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated latency samples, in milliseconds."""

    median_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @classmethod
    def from_seconds(cls, samples: list[float]) -> TimingStats:
        if not samples:
            raise ValueError("no timing samples")
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        return cls(
            median_ms=float(np.median(ms)),
            p95_ms=float(np.percentile(ms, 95)),
            mean_ms=float(ms.mean()),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            repeats=int(ms.size),
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def device_synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued device work (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclass
class StageClock:
    """Wall time per named stage of one piece of work (e.g. a frame), accumulated across stamps.

    ``stamp(stage)`` charges the time since the previous stamp (or since ``start()``/creation) to
    ``stage``. The device is synchronised at each stamp so that queued GPU work is charged to the
    stage that queued it; with the default no-op synchroniser a clock costs two clock reads.
    """

    synchronize: Callable[[], None] = lambda: None
    seconds: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)

    def start(self) -> None:
        self.synchronize()
        self._last = time.perf_counter()

    def stamp(self, stage: str) -> None:
        self.synchronize()
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + (now - self._last)
        self._last = now


def time_interleaved(
    candidates: dict[str, Callable[[], Any]],
    warmup: int,
    repeats: int,
    synchronize: Callable[[], None] = lambda: None,
    lead_in: int = 0,
) -> dict[str, TimingStats]:
    """Time each zero-argument callable ``repeats`` times, one round of all candidates at a time.

    Every candidate first runs ``warmup`` times untimed (lazy initialisation, allocator and cache
    warm-up, CUDA graph capture, autotuning). With ``lead_in``, each timed call follows that many
    untimed calls of the same candidate, so that it meets what that candidate leaves behind, as it
    would running alone, and not what the previous one left: torch's OpenMP workers spin for some
    milliseconds after an operator returns, and an ONNX Runtime graph timed right after a 2-thread
    torch model took 10-14 ms (10-14 %) longer on a 2-core Zen 5 (docs/benchmarks.md).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if lead_in < 0:
        raise ValueError(f"lead_in must be >= 0, got {lead_in}")
    for function in candidates.values():
        for _ in range(warmup):
            function()
        synchronize()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, function in candidates.items():
            for _ in range(lead_in):
                function()
            synchronize()
            start = time.perf_counter()
            function()
            synchronize()
            samples[name].append(time.perf_counter() - start)
    return {name: TimingStats.from_seconds(values) for name, values in samples.items()}


def time_call(
    function: Callable[[], Any], warmup: int, repeats: int, synchronize: Callable[[], None] = lambda: None
) -> TimingStats:
    """Time one callable (see :func:`time_interleaved`)."""
    return time_interleaved({"call": function}, warmup, repeats, synchronize)["call"]


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` torch intra-op threads, then restore the previous count.

    For timing two paths with different thread settings in one process (the setting is global).
    """
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != previous:
            torch.set_num_threads(previous)
