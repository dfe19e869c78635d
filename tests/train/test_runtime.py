"""Runtime options fall back cleanly on the CPU, and say so."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import needs_cuda
from train.helpers import SyntheticBatches, make_state, run_fit

from imgcls.models.factory import create_model
from imgcls.spec.train import HeadSpec, ModelSpec, RuntimeSpec
from imgcls.train.builder import wrap_model
from imgcls.train.callbacks.base import Callback
from imgcls.train.callbacks.logging import TensorBoard
from imgcls.train.runtime import (
    CPU_AUTO_PRECISION,
    Runtime,
    _cpu_precision,
    auto_channels_last,
    cores_for,
    cpu_has_fast_bf16,
    cpu_quota,
    intra_op_threads,
    resolve_runtime,
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_gpu_options_fall_back_on_the_cpu() -> None:
    runtime = resolve_runtime(RuntimeSpec(device="cuda", precision="fp16", channels_last=True, compile=True))
    assert runtime.device.type == "cpu" and runtime.precision == "fp32" and runtime.compile
    assert runtime.channels_last  # harmless on the CPU, and what was asked for
    notes = " ".join(runtime.notes)
    assert "no CUDA device" in notes and "fp32 on the CPU" in notes
    assert runtime.grad_scaler() is None
    auto = resolve_runtime(RuntimeSpec())
    assert auto.device.type == "cpu" and not auto.notes
    assert auto.precision == (CPU_AUTO_PRECISION if cpu_has_fast_bf16() else "fp32")
    assert auto.channels_last == (auto.precision == "bf16")  # NHWC for oneDNN's bf16 kernels only
    assert auto.evaluation_precision == "fp32"  # on the CPU every evaluation is fp32


def test_auto_precision_on_the_cpu_follows_its_bf16_units() -> None:
    notes: list[str] = []
    assert _cpu_precision("auto", notes, fast=True) == "bf16" == CPU_AUTO_PRECISION
    assert _cpu_precision("auto", notes, fast=False) == "fp32" and not notes
    assert _cpu_precision("bf16", notes, fast=False) == "fp32" and "emulated" in notes[0]
    assert _cpu_precision("fp32", [], fast=True) == "fp32"
    assert auto_channels_last(torch.device("cpu"), "bf16") and not auto_channels_last(torch.device("cpu"), "fp32")
    assert auto_channels_last(torch.device("cuda"), "fp32")


def test_bf16_on_the_cpu_needs_bf16_units() -> None:
    assert cpu_has_fast_bf16({"avx2", "amx_bf16", "amx_tile"}) and cpu_has_fast_bf16({"avx512_bf16"})
    assert not cpu_has_fast_bf16({"avx2", "avx512f", "avx512_vnni"})
    runtime = resolve_runtime(RuntimeSpec(precision="bf16"))
    assert runtime.precision == ("bf16" if cpu_has_fast_bf16() else "fp32")


def test_the_thread_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert intra_op_threads("auto", cpus=2) == 2  # every core this process may use
    assert intra_op_threads("auto", local_world=4, cpus=16) == 4  # torchrun: a share each
    assert intra_op_threads("auto", local_world=4, cpus=2) == 1  # at least one
    assert intra_op_threads(3, cpus=2) == 3  # as given
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert intra_op_threads("auto", cpus=64) == 1  # the user's word


def _cgroup(tmp_path: Path, own: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "own").write_text(own)
    return root, tmp_path / "own"


def test_a_cgroup_quota_caps_the_cores(tmp_path: Path) -> None:
    # v2, in the container's own root: docker --cpus=1.5
    assert cpu_quota(*_cgroup(tmp_path / "a", "0::/\n", {"cpu.max": "150000 100000\n"})) == 1.5
    assert cpu_quota(*_cgroup(tmp_path / "b", "0::/\n", {"cpu.max": "max 100000\n"})) is None
    # v2, the process's own cgroup below the root; the smallest quota wins
    nested = {"cpu.max": "400000 100000\n", "kubepods/pod1/cpu.max": "200000 100000\n"}
    assert cpu_quota(*_cgroup(tmp_path / "c", "0::/kubepods/pod1\n", nested)) == 2.0
    # v1: quota over period, -1 is none
    v1 = {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    assert cpu_quota(*_cgroup(tmp_path / "d", "4:cpu,cpuacct:/\n", v1)) == 0.5
    v1_none = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    assert cpu_quota(*_cgroup(tmp_path / "e", "4:cpu:/\n", v1_none)) is None
    assert cpu_quota(tmp_path / "missing", tmp_path / "missing-own") is None  # no cgroup file system
    assert cores_for(16, None) == 16
    assert cores_for(16, 1.5) == 1  # a second thread would be throttled at every barrier
    assert cores_for(16, 4.0) == 4 and cores_for(2, 4.0) == 2 and cores_for(8, 0.5) == 1


@pytest.mark.gpu
@needs_cuda
def test_auto_runtime_on_a_gpu() -> None:
    runtime = resolve_runtime(RuntimeSpec())
    assert runtime.device.type == "cuda" and runtime.precision in ("bf16", "fp16") and runtime.channels_last
    with runtime.autocast():
        out = torch.nn.Linear(4, 4).cuda()(torch.randn(2, 4, device="cuda"))
    assert out.dtype in (torch.bfloat16, torch.float16)


def test_tensorboard_writes_events(tmp_path: Path) -> None:
    state = make_state(tmp_path, epochs=1)
    run_fit(state, [TensorBoard(tmp_path / "tb", log_every=1)])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_one_process_started_by_torchrun_joins_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun --nproc-per-node=1 sets these four; the run then goes through DDP and the collectives."""
    import torch.distributed as dist

    assert not resolve_runtime(RuntimeSpec(device="cpu")).distributed  # a plain start: no group
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    try:
        runtime = resolve_runtime(RuntimeSpec(device="cpu"))
        assert runtime.distributed and runtime.world == 1 and runtime.backend == "gloo"
        assert dist.is_initialized() and dist.get_world_size() == 1
        assert resolve_runtime(RuntimeSpec(device="cpu"), distributed=False).backend is None  # evaluation
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class _Losses(Callback):
    """Every batch's loss and the dtype the model's outputs had (autocast's)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.dtypes: set[torch.dtype] = set()

    def on_batch_end(self, state: Any) -> None:
        self.losses.append(float(state.loss_value.detach()))
        self.dtypes.add(state.preds.dtype)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_a_tiny_model_to_a_falling_loss(tmp_path: Path, precision: str) -> None:
    runtime = Runtime(torch.device("cuda"), precision, channels_last=True, compile=False)
    state = make_state(tmp_path, epochs=6, lr=5e-3, runtime=runtime)
    scaler = runtime.grad_scaler()
    assert (scaler is not None) == (precision == "fp16")  # fp16 needs loss scaling, bf16 does not
    record = _Losses()
    run_fit(state, [record], SyntheticBatches(n=8, bs=16, device="cuda", learnable=True), scaler)
    assert record.dtypes == {torch.bfloat16 if precision == "bf16" else torch.float16}
    assert all(math.isfinite(v) for v in record.losses)
    first, last = sum(record.losses[:8]) / 8, sum(record.losses[-8:]) / 8
    assert last < 0.6 * first, (first, last)
    if scaler is not None:
        assert math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0


@pytest.mark.gpu
@needs_cuda
def test_channels_last_and_compile_give_the_eager_outputs() -> None:
    """fp32 with TF32 off, so that the three differ only by kernel choice and fusion: within 1e-4."""
    torch.manual_seed(0)
    model = create_model(ModelSpec(arch="xresnet_tiny", head=HeadSpec(lin_ftrs=[], ps=0.0)), n_out=5).cuda()
    x = torch.rand(8, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    runtime = Runtime(torch.device("cuda"), "fp32", channels_last=False, compile=True)
    compiled = wrap_model(copy.deepcopy(model), runtime)  # what training wraps the model in
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
        for train in (False, True):  # eval: running statistics; train: batch statistics
            for net in (model, last, compiled):
                net.train(train)
            with torch.no_grad():
                eager = model(x)
                assert torch.allclose(last(x.contiguous(memory_format=torch.channels_last)), eager, atol=1e-4)
                assert torch.allclose(compiled(x), eager, atol=1e-4)


def test_compile_on_the_cpu_gives_the_eager_outputs() -> None:
    """Inductor on the CPU (runtime.compile: true), in training mode, through trimmed convolutions: at 16 px
    xresnet_tiny's last stages see 2x2 and 1x1 maps. Within 1e-4 of eager (fusion reorders float sums)."""
    torch.manual_seed(0)
    model = create_model(ModelSpec(arch="xresnet_tiny", head=HeadSpec(lin_ftrs=[], ps=0.0)), n_out=5).train()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    compiled = wrap_model(copy.deepcopy(model), Runtime(torch.device("cpu"), "fp32", channels_last=False, compile=True))
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-4)
