"""Where training runs and how fast: device, precision, memory format, compile, and the process group.

Every option falls back cleanly on the CPU and says so in `notes`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from imgcls.spec.train import RuntimeSpec


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    compile: bool
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)
    threads: int = 1  # intra-op threads of this process (torch.set_num_threads)
    # The process group's backend (nccl, gloo) when this process joined one, else None.
    backend: str | None = None
    # What validation and every prediction run in: the training precision on CUDA, fp32 on the CPU, where
    # bf16 speeds the training step up but evaluation is a small share of the time, and fp32 keeps a run's
    # metrics.csv, its closing report, tta-eval, predict and its fp32 export in agreement.
    eval_precision: str | None = None

    @property
    def evaluation_precision(self) -> str:
        return self.precision if self.eval_precision is None else self.eval_precision

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """In a process group: several processes, or one that torchrun started (DDP and NCCL on one GPU)."""
        return self.world > 1 or self.backend is not None

    @contextlib.contextmanager
    def autocast(self, evaluating: bool = False) -> Iterator[None]:
        """Mixed precision around the forward pass and the loss (no-op in fp32); `evaluating` uses
        `evaluation_precision`."""
        precision = self.evaluation_precision if evaluating else self.precision
        if precision == "fp32":
            yield
            return
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            yield

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs dynamic loss scaling (steps with inf/NaN gradients are skipped); bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None


# What `precision: auto` picks on a CPU with bf16 matrix units, with channels_last: on a 2-core Xeon with AMX the
# training step ran 1.0-2.6x as fast as fp32 (xresnet18 at 28 px 1.00, at 64 px 1.60; resnet9 at 28 px 2.57;
# timm resnet18 at 128 px 2.10), and never slower; bf16 alone was 0.93x on xresnet18 at 28 px (BENCHMARKS.md §10).
CPU_AUTO_PRECISION = "bf16"


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _quota_in(folder: Path) -> float | None:
    """Cores' worth of CPU time the cgroup `folder` allows: v2 cpu.max ('150000 100000' is 1.5, 'max 100000'
    none), v1 cpu.cfs_quota_us over cpu.cfs_period_us (a quota of -1 is none)."""
    try:
        if (folder / "cpu.max").is_file():
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if (folder / "cpu.cfs_quota_us").is_file():
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            return None if quota_us < 0 else quota_us / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return None


def cpu_quota(root: Path = CGROUP_ROOT, own: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (docker --cpus, a Kubernetes CPU limit), or None without
    one: the smallest quota in the hierarchy's root and in the process's own cgroup, v2 or v1."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        lines = []
    folders = [root, root / "cpu", root / "cpu,cpuacct"]
    for line in lines:  # "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1)
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        relative = path.strip("/")
        if controllers == "":
            folders.append(root / relative)
        elif "cpu" in controllers.split(","):
            folders += [root / "cpu" / relative, root / "cpu,cpuacct" / relative]
    quotas = [q for q in (_quota_in(folder) for folder in folders if _under_root(folder, root)) if q is not None]
    return min(quotas) if quotas else None


def _under_root(folder: Path, root: Path) -> bool:
    """Whether `folder` stays under `root` (a cgroup path of '..' would leave it)."""
    return ".." not in folder.relative_to(root).parts


def cores_for(affinity: int, quota: float | None) -> int:
    """The cores' worth of threads a process can keep busy: its affinity mask, capped by a cgroup quota (rounded
    down, at least 1: with 1.5 cores of quota a second thread would be throttled at every barrier)."""
    return affinity if quota is None else max(1, min(affinity, int(quota)))


def available_cpus() -> int:
    """The cores this process may run on: its affinity mask (a container or taskset may allow fewer), capped by
    a cgroup CPU quota (`docker --cpus=1` leaves every core in the mask)."""
    return cores_for(len(allowed_cpus()), cpu_quota())


def intra_op_threads(requested: int | str, local_world: int = 1, cpus: int | None = None) -> int:
    """runtime.threads: a number as given; auto: $OMP_NUM_THREADS when set, else this process's share of the
    cores it may use (each of `local_world` training processes on the machine gets an equal share, at least one).
    torch's own default is every core of the machine, even where a container allows two of 64."""
    if isinstance(requested, int):
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    total = available_cpus() if cpus is None else cpus
    return max(1, total // max(local_world, 1))


def allowed_cpus() -> set[int]:
    """The ids of the cores this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return set(range(os.cpu_count() or 1))


def governs_threads(spec: RuntimeSpec, runtime: Runtime) -> bool:
    """Whether training adapts its thread count to other processes' load (train/callbacks/threads.py): only
    where nothing fixed the count (runtime.threads auto, no $OMP_NUM_THREADS), on the CPU, in one process
    (torchrun's ranks would each count the others as load), with more than one core and no cgroup quota."""
    fixed = spec.threads != "auto" or os.environ.get("OMP_NUM_THREADS", "").isdigit()
    # Under a cgroup quota the share is fixed by the quota, and /proc/stat shows the whole host's load.
    cpu = runtime.device.type == "cpu" and not runtime.distributed and cpu_quota() is None
    return not fixed and cpu and runtime.threads > 1


def _device(requested: str, local_rank: int, notes: list[str]) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if requested != "auto":
            notes.append(f"runtime.device is {requested} but no CUDA device is available: training on the CPU")
        return torch.device("cpu")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    return torch.device("cuda", local_rank)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """bf16 matrix units on the CPU: AMX tiles (Sapphire Rapids and later) or AVX512-BF16 instructions."""
    found = cpu_flags() if flags is None else flags
    return bool(found & {"amx_bf16", "avx512_bf16"})


def _cpu_precision(requested: str, notes: list[str], fast: bool | None = None) -> str:
    """`fast`: whether the CPU has bf16 units (default: read from /proc/cpuinfo)."""
    if requested == "fp16":
        notes.append("runtime.precision fp16 needs a CUDA device: using fp32 on the CPU")
        return "fp32"
    fast = cpu_has_fast_bf16() if fast is None else fast
    if requested == "bf16" and not fast:
        notes.append("this CPU has neither AMX nor AVX512-BF16: bf16 would be emulated, using fp32")
        return "fp32"
    if requested == "auto":
        return CPU_AUTO_PRECISION if fast else "fp32"
    return requested


def _precision(requested: str, device: torch.device, notes: list[str]) -> str:
    if device.type != "cuda":
        return _cpu_precision(requested, notes)
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        notes.append("this GPU has no bf16: using fp16 with a grad scaler")
        return "fp16"
    return requested


def auto_channels_last(device: torch.device, precision: str) -> bool:
    """channels_last: auto. On CUDA always; on the CPU with bf16 (oneDNN's bf16 kernels want NHWC: 1.00-1.30x
    bf16 in NCHW), not with fp32, where it measured 0.92-1.29x across four models (BENCHMARKS.md §10)."""
    return device.type == "cuda" or precision == "bf16"


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


# What torchrun (or any env:// launcher) sets for every process it starts, a single one included.
_LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _process_group(cuda: bool) -> tuple[int, int, int, int, str | None]:
    """(rank, world, local_rank, local_world, backend) from torchrun's environment, joining its process group.

    A single process joins too when torchrun started it (`--nproc-per-node=1`): then the DDP wrapper, the
    collectives and NCCL run exactly as on several GPUs, which is how a one-GPU machine checks that path."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not all(name in os.environ for name in _LAUNCHER_ENV):
        return 0, 1, 0, 1, None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    rank, size = dist.get_rank(), dist.get_world_size()
    return rank, size, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), str(dist.get_backend())


def resolve_runtime(spec: RuntimeSpec, distributed: bool = True) -> Runtime:
    """The runtime the spec asks for. `distributed` joins torchrun's process group when there is one;
    evaluation after training (rank 0's report, tta-eval, interpret, predict) runs as one process."""
    notes: list[str] = []
    cuda = torch.cuda.is_available() and spec.device != "cpu"  # runtime.device: cpu on a GPU machine: gloo
    group = _process_group(cuda) if distributed else (0, 1, _local_rank(), 1, None)
    rank, world, local_rank, local_world, backend = group
    device = _device(spec.device, local_rank, notes)
    precision = _precision(spec.precision, device, notes)
    channels_last = auto_channels_last(device, precision) if spec.channels_last == "auto" else bool(spec.channels_last)
    threads = intra_op_threads(spec.threads, local_world)
    torch.set_num_threads(threads)
    return Runtime(
        device,
        precision,
        channels_last,
        spec.compile,
        rank,
        world,
        local_rank,
        local_world,
        tuple(notes),
        threads,
        backend,
        eval_precision="fp32" if device.type == "cpu" else None,
    )
