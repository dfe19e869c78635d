"""Fewer intra-op threads while other processes keep this process's cores busy (`runtime.threads: auto`).

Every parallel region of a CPU step waits for its slowest thread. When another process takes one of two cores,
the thread that shares its core runs half the time, and the other spins at the barrier: a 28 px xresnet18 epoch
on 2 Xeon cores went from 9 s to 49 s beside one busy process with 2 threads, and took 17 s with 1 (BENCHMARKS.md
§10). So every few seconds the governor reads how busy the cores are (/proc/stat) and how much of that is this
process (/proc/self/stat), and runs one thread per core that the others leave free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from imgcls.train.callbacks.base import Callback
from imgcls.train.state import TrainState

# The first look comes soon (a run that starts beside a busy process should not spend long at the wrong count),
# later ones every few seconds: reading the two files costs about 0.1 ms.
FIRST_CHECK_S = 1.0
CHECK_EVERY_S = 5.0


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds: all work on the allowed cores, this process's own, and the wall clock."""

    busy_s: float
    own_s: float
    wall_s: float


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def read_sample(cpus: set[int], proc: Path = Path("/proc")) -> CpuSample | None:
    """None where /proc cannot be read (macOS, Windows, a locked-down container)."""
    try:
        stat = (proc / "stat").read_text().splitlines()
        own = (proc / "self" / "stat").read_text()
    except OSError:
        return None
    busy = 0
    for line in stat:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
            fields = [int(v) for v in rest.split()]
            busy += sum(fields[:3]) + sum(fields[5:8])
    # utime and stime are fields 14 and 15; the command name (field 2) may hold spaces, so count after ')'
    after = own.rsplit(")", 1)[1].split()
    own_ticks = int(after[11]) + int(after[12])
    return CpuSample(busy / _ticks(), own_ticks / _ticks(), time.monotonic())


def others_cores(before: CpuSample, after: CpuSample) -> float:
    """Cores kept busy by other processes (data workers included) between two samples."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return 0.0
    return max(0.0, ((after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall)


def threads_for(cpus: int, others: float) -> int:
    """One thread per core the other processes leave free, at least one: 2 cores with 0.4 busy -> 2, 0.6 -> 1."""
    return max(1, min(cpus, round(cpus - others)))


class ThreadGovernor(Callback):
    """Sets torch's intra-op threads to `threads_for` the measured load; a change needs two checks that agree."""

    name = "threads"
    order = 5

    def __init__(
        self,
        cpus: set[int],
        say: Callable[[str], None],
        sample: Callable[[], CpuSample | None] | None = None,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cpus, self.say, self.set_threads, self.clock = cpus, say, set_threads, clock
        self._sample = sample or (lambda: read_sample(cpus))
        self.threads = torch.get_num_threads()
        self._last: CpuSample | None = None
        self._proposed: int | None = None
        self._interval = FIRST_CHECK_S

    def on_fit_start(self, state: TrainState) -> None:
        self._last, self._interval = self._sample(), FIRST_CHECK_S

    def on_batch_end(self, state: TrainState) -> None:
        if self._last is None or self.clock() - self._last.wall_s < self._interval:
            return
        now = self._sample()
        if now is None:
            return
        others = others_cores(self._last, now)
        self._last, self._interval = now, CHECK_EVERY_S
        wanted = threads_for(len(self.cpus), others)
        # The first check decides alone; later a change must be seen twice in a row (10 s), so that a short burst
        # of other work does not flip the count back and forth.
        first = self._proposed is None
        if wanted == self.threads or (not first and wanted != self._proposed):
            self._proposed = wanted
            return
        self._proposed = wanted
        self.set_threads(wanted)
        self.say(
            f"threads: {self.threads} -> {wanted} (other processes keep {others:.1f} of {len(self.cpus)} cores busy; "
            "runtime.threads: N fixes the count)"
        )
        self.threads = wanted
