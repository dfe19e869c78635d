"""Runtime options fall back cleanly on the CPU, and say so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train.helpers import make_state, run_fit

from imgcls.spec.train import RuntimeSpec
from imgcls.train.callbacks.logging import TensorBoard
from imgcls.train.runtime import CPU_AUTO_PRECISION, cpu_has_fast_bf16, intra_op_threads, resolve_runtime


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_gpu_options_fall_back_on_the_cpu() -> None:
    runtime = resolve_runtime(RuntimeSpec(device="cuda", precision="fp16", channels_last=True, compile=True))
    assert runtime.device.type == "cpu" and runtime.precision == "fp32" and runtime.compile
    assert runtime.channels_last  # harmless on the CPU, and what was asked for
    notes = " ".join(runtime.notes)
    assert "no CUDA device" in notes and "fp32 on the CPU" in notes
    assert runtime.grad_scaler() is None
    auto = resolve_runtime(RuntimeSpec())
    assert auto.device.type == "cpu" and not auto.channels_last and not auto.notes
    assert auto.precision == (CPU_AUTO_PRECISION if cpu_has_fast_bf16() else "fp32")


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
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
