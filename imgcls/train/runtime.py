"""Where training runs and how fast: device, precision, memory format, compile, and the process group.

Every option falls back cleanly on the CPU and says so in `notes`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

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
    # The process group's backend (nccl, gloo) when this process joined one, else None.
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """In a process group: several processes, or one that torchrun started (DDP and NCCL on one GPU)."""
        return self.world > 1 or self.backend is not None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision around the forward pass and the loss (no-op in fp32)."""
        if self.precision == "fp32":
            yield
            return
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            yield

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs dynamic loss scaling (steps with inf/NaN gradients are skipped); bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None


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


def _precision(requested: str, device: torch.device, notes: list[str]) -> str:
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            notes.append(f"runtime.precision {requested} needs a CUDA device: using fp32 on the CPU")
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        notes.append("this GPU has no bf16: using fp16 with a grad scaler")
        return "fp16"
    return requested


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
    channels_last = device.type == "cuda" if spec.channels_last == "auto" else bool(spec.channels_last)
    compile_model = spec.compile
    if compile_model and device.type != "cuda":
        notes.append("runtime.compile is for CUDA here: running eagerly on the CPU")
        compile_model = False
    return Runtime(
        device, precision, channels_last, compile_model, rank, world, local_rank, local_world, tuple(notes), backend
    )
