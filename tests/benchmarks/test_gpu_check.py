"""benchmarks/gpu_check.sh: its steps run in turn within their limits, a failed or stopped step does not stop
the others, the summary marks each; and the whole script passes at toy sizes on the CPU (--cpu-smoke)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", REPO / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_failed_and_stopped_steps_do_not_stop_the_others(gpu_check: Any, tmp_path: Path) -> None:
    log = gpu_check.Log(tmp_path / "log.txt")
    steps = [
        gpu_check.Step("first", "prints", [_python("print('hello from first')")], 30),
        gpu_check.Step("broken", "exits 3", [_python("print('about to fail'); raise SystemExit(3)")], 30),
        gpu_check.Step("slow", "sleeps past its cap", [_python("import time; print('sleeping'); time.sleep(60)")], 2),
        gpu_check.Step("unhappy", "runs, but its check fails", [_python("print(1)")], 30, lambda o, log: ("", "bad")),
        gpu_check.Step("last", "still runs", [_python("print('hello from last')")], 30),
    ]
    started = time.perf_counter()
    outcomes = gpu_check.run_all(steps, dict(os.environ), budget=120, log=log)
    assert time.perf_counter() - started < 40  # the sleeper's process group was ended at its 2 s cap
    assert [o.status for o in outcomes] == ["ok", "FAILED (exit 3)", "TIMEOUT (2 s)", "FAILED", "ok"]
    assert outcomes[1].details == "about to fail" and outcomes[3].details == "bad"
    text = (tmp_path / "log.txt").read_text()
    assert "hello from first" in text and "hello from last" in text and "step 2/4 slow" in text
    table = gpu_check.summary_table(outcomes)
    assert "| broken " in table and "FAILED (exit 3)" in table and "TIMEOUT (2 s)" in table


def test_later_steps_keep_a_reserve_and_are_skipped_when_none_is_left(gpu_check: Any, tmp_path: Path) -> None:
    log = gpu_check.Log(tmp_path / "log.txt")
    greedy = gpu_check.Step("greedy", "wants 100 s", [_python("import time; time.sleep(60)")], 100)
    after = gpu_check.Step("after", "gets the reserve", [_python("print('ran')")], 100)
    outcomes = gpu_check.run_all([greedy, after], dict(os.environ), budget=gpu_check.RESERVE + 6, log=log)
    assert outcomes[0].status == "TIMEOUT (6 s)" and outcomes[1].status == "ok"  # 6 s for one, 15 s kept
    none_left = gpu_check.run_all([after, after], dict(os.environ), budget=gpu_check.RESERVE + 1, log=log)
    assert [o.status for o in none_left] == ["SKIPPED (no time left)", "ok"]


def test_toy_idx_files_convert_to_a_learnable_folder(gpu_check: Any, tmp_path: Path) -> None:
    idx = gpu_check.write_toy_idx(tmp_path / "idx", n_train=20, n_test=10)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "idx_to_folder.py"),
            str(idx),
            str(tmp_path / "out"),
            "--names",
            "fashion",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out" / "train").rglob("*.png"))) == 20
    assert len(list((tmp_path / "out" / "valid").rglob("*.png"))) == 10


@pytest.mark.slow
def test_the_cpu_smoke_run_passes_every_step(tmp_path: Path) -> None:
    """About 40 s on 2 idle cores (eight Python processes, each importing torch and timm)."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out), "--work", str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    names = [s["name"] for s in result["steps"]]
    assert names == ["environment", "pytest-gpu", "demo", "step", "fashion", "torchrun-1"]
    assert all(s["status"] == "ok" for s in result["steps"])
    assert set(result["step_fraction"]) >= {"pil", "cache", "device"}
    assert result["fashion_mnist"]["target"] == 0.94 and len(result["fashion_mnist"]["epochs"]) == 1
    log = (out / "gpu_check.log").read_text()
    assert "1 process(es) over gloo" in log and "=== summary" in log
    assert done.stdout.count("\n") > 50 and "=== summary" in done.stdout  # printed as well as logged
    assert {p.name for p in out.iterdir()} == {
        "gpu_check.log",
        "summary.md",
        "gpu_check.json",
        "pytest_gpu.xml",
        "setup.log",
    }
