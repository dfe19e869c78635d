"""The thread governor: the load it reads from /proc, the count it picks, and when it changes torch's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from imgcls.spec.train import RuntimeSpec
from imgcls.train.callbacks.threads import CpuSample, ThreadGovernor, others_cores, read_sample, threads_for
from imgcls.train.runtime import Runtime, governs_threads

HZ = 100  # USER_HZ on Linux


def _proc(tmp_path: Path, per_cpu: dict[int, tuple[int, int]], own: tuple[int, int]) -> Path:
    """A fake /proc: cpuN lines with (busy user ticks, idle ticks), and this process's (utime, stime)."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]
    for cpu, (busy, idle) in per_cpu.items():
        # user nice system idle iowait irq softirq steal guest guest_nice
        lines.append(f"cpu{cpu} {busy} 0 0 {idle} 7 0 0 0 0 0")
    (tmp_path / "self").mkdir(exist_ok=True)
    (tmp_path / "stat").write_text("\n".join([*lines, "intr 12345", "ctxt 99"]) + "\n")
    fields = ["S", *["0"] * 10, str(own[0]), str(own[1]), *["0"] * 30]
    (tmp_path / "self" / "stat").write_text(f"4242 (my (odd) name) {' '.join(fields)}\n")
    return tmp_path


def test_read_sample_counts_the_allowed_cores_and_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("imgcls.train.callbacks.threads._ticks", lambda: float(HZ))
    proc = _proc(tmp_path, {0: (300, 50), 1: (200, 10), 2: (5000, 0)}, own=(120, 30))
    sample = read_sample({0, 1}, proc)
    assert sample is not None
    assert sample.busy_s == pytest.approx(5.0)  # 300 + 200 ticks on cores 0 and 1; core 2 is not ours
    assert sample.own_s == pytest.approx(1.5)  # utime + stime, read after the ')' of a name with spaces
    assert read_sample({0}, tmp_path / "missing") is None


def test_others_cores_is_busy_time_less_our_own_per_second() -> None:
    before, after = CpuSample(10.0, 4.0, 100.0), CpuSample(20.0, 12.0, 105.0)
    assert others_cores(before, after) == pytest.approx(0.4)  # 10 s busy, 8 of them ours, over 5 s
    assert others_cores(after, after) == 0.0
    assert others_cores(CpuSample(0, 0, 0), CpuSample(1.0, 2.0, 1.0)) == 0.0  # never negative


@pytest.mark.parametrize(
    ("cpus", "others", "threads"), [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.0, 1), (8, 2.2, 6)]
)
def test_threads_for_gives_one_thread_per_free_core(cpus: int, others: float, threads: int) -> None:
    assert threads_for(cpus, others) == threads


class _Fake:
    """A clock and a load that the test moves: `others` cores busy besides our own 1 core."""

    def __init__(self) -> None:
        self.now, self.busy, self.own, self.others = 0.0, 0.0, 0.0, 0.0
        self.set_to: list[int] = []
        self.said: list[str] = []

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.own += seconds
        self.busy += seconds * (1.0 + self.others)

    def sample(self) -> CpuSample:
        return CpuSample(self.busy, self.own, self.now)


def _governor(fake: _Fake) -> ThreadGovernor:
    governor = ThreadGovernor({0, 1}, fake.said.append, fake.sample, fake.set_to.append, clock=lambda: fake.now)
    governor.threads = 2
    return governor


def _run(governor: ThreadGovernor, fake: _Fake, seconds: float, step: float = 0.5) -> None:
    state: Any = SimpleNamespace()
    for _ in range(round(seconds / step)):
        fake.advance(step)
        governor.on_batch_end(state)


def test_governor_drops_to_one_thread_at_the_first_check_and_returns_after_two() -> None:
    fake = _Fake()
    governor = _governor(fake)
    fake.others = 1.0  # another process takes a core from the start
    governor.on_fit_start(SimpleNamespace())  # type: ignore[arg-type]
    _run(governor, fake, 0.5)
    assert fake.set_to == []  # before the first check (1 s)
    _run(governor, fake, 0.5)
    assert fake.set_to == [1] and governor.threads == 1
    assert "2 -> 1" in fake.said[0] and "1.0 of 2 cores" in fake.said[0]
    fake.others = 0.0  # it ends: back to 2 threads after two checks 5 s apart agree
    _run(governor, fake, 5.0)
    assert fake.set_to == [1]
    _run(governor, fake, 5.0)
    assert fake.set_to == [1, 2] and governor.threads == 2


def test_governor_ignores_a_burst_that_one_check_sees() -> None:
    fake = _Fake()
    governor = _governor(fake)
    governor.on_fit_start(SimpleNamespace())  # type: ignore[arg-type]
    _run(governor, fake, 1.0)  # first check: quiet, stays at 2
    fake.others = 1.0
    _run(governor, fake, 5.0)  # one check sees the burst
    fake.others = 0.0
    _run(governor, fake, 10.0)
    assert fake.set_to == [] and fake.said == []


def _runtime(device: str = "cpu", threads: int = 2, world: int = 1) -> Runtime:
    return Runtime(torch.device(device), "fp32", False, False, world=world, threads=threads)


def test_governs_threads_only_where_nothing_fixed_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    auto = RuntimeSpec()
    assert governs_threads(auto, _runtime())
    assert not governs_threads(RuntimeSpec(threads=2), _runtime())
    assert not governs_threads(auto, _runtime(threads=1))  # one core: nothing to give up
    assert not governs_threads(auto, _runtime(world=2))  # torchrun's ranks would count each other as load
    assert not governs_threads(auto, _runtime(device="meta"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not governs_threads(auto, _runtime())
