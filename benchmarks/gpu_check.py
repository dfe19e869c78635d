"""Issue 18: every CUDA check of imgcls as one prepared run that fits a 15-minute GPU lease (8 minutes of it).

    bash benchmarks/gpu_check.sh               # on a GPU machine, from the repository root (see docs_snippets)
    bash benchmarks/gpu_check.sh --cpu-smoke   # the same steps at toy sizes on the CPU (the suite runs this)

Steps, each a subprocess with its own time limit (a step that fails or runs out of time is marked so in the
summary and the next one starts; the limits are cut so that the whole run ends within --budget seconds):

0. environment  nvidia-smi, python, torch, torchvision, the GPU, pydantic
1. pytest-gpu   pytest -m gpu (junit XML with the measured differences as properties)
2. demo         configs/demo.yaml on CUDA with bf16, channels_last and torch.compile: time and accuracy
3. step         resnet50 @224 bf16 step fed by the data path / fed one device batch: decode pil, cache, device
4. fashion      configs/fashion_mnist.yaml in resident mode until 94% validation accuracy or its 12 epochs
5. torchrun     the demo under torchrun --nproc-per-node=1 with NCCL (and one process per GPU where there
                are several)
6. summary      one table: printed, and written to OUT/summary.md with everything in OUT/gpu_check.json

Everything printed is also written to OUT/gpu_check.log (OUT: --out, else $OUT, else bench-out/gpu-check).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
GOAL_FASHION = 0.94
# Fashion-MNIST's four IDX files (Debian's dataset-fashion-mnist), carried into the repository's ignored data/.
FASHION_IDX = REPO / "data" / "fashion-mnist"
# What a step is left at least, when an earlier one ran long: enough to start Python and fail clearly.
RESERVE = 15.0


Check = Callable[[str, "Log"], tuple[str, "str | None"]]


class Log:
    """Print and append to the log file, line by line, so that a killed run keeps what it printed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle: TextIO = open(path, "a", buffering=1)  # noqa: SIM115 - open for the whole run

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.handle.write(text + "\n")


@dataclass
class Step:
    name: str
    title: str
    commands: list[list[str]]
    cap: float  # seconds at most
    # After the commands ran (also when one failed): the details for the summary and an error or None, from the
    # output and the step's result files; it may log more lines (the measured figures).
    check: Check = lambda output, log: ("", None)
    before: Callable[[], None] | None = None  # in this process, inside the step's time (toy data)
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    name: str
    status: str  # ok | FAILED ... | TIMEOUT | SKIPPED ...
    seconds: float
    details: str = ""


def run_command(command: list[str], env: dict[str, str], timeout: float, log: Log) -> tuple[int | None, str]:
    """(exit code or None on timeout, the output); the output is streamed to the log as it comes."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: a timeout ends torchrun's workers and DataLoader's too
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            log(lines[-1])

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = process.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        code = None
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5.0)
    return code, "\n".join(lines)


def run_step(step: Step, env: dict[str, str], timeout: float, log: Log) -> Outcome:
    """The step's commands in turn (the first that fails or times out ends it), then its check."""
    started = time.perf_counter()
    outputs, status = [], "ok"
    try:
        if step.before is not None:
            step.before()
        for command in step.commands:
            left = timeout - (time.perf_counter() - started)
            log(f"$ {' '.join(command)}")
            code, output = run_command(command, env, left, log)
            outputs.append(output)
            if code is None:
                status = f"TIMEOUT ({timeout:.0f} s)"
                break
            if code != 0:
                status = f"FAILED (exit {code})"
                break
    except Exception as err:  # a toy-data writer or a missing input must not stop the other steps
        return Outcome(step.name, "FAILED", time.perf_counter() - started, f"{type(err).__name__}: {err}")
    try:
        details, error = step.check("\n".join(outputs), log)
    except Exception as err:  # no result file after a failure, say: keep the failure's own message
        details, error = "", f"{type(err).__name__}: {err}" if status == "ok" else None
    if status == "ok" and error is not None:
        status = "FAILED"
    if status != "ok" and not details:
        details = error or _last_line("\n".join(outputs))
    elif error is not None:
        details = f"{details}; {error}" if details else error
    return Outcome(step.name, status, time.perf_counter() - started, details)


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def run_all(steps: list[Step], env: dict[str, str], budget: float, log: Log) -> list[Outcome]:
    """Each step in turn, within its cap and what the budget leaves (RESERVE kept for every later step)."""
    start = time.perf_counter()
    outcomes = []
    for number, step in enumerate(steps):
        elapsed = time.perf_counter() - start
        later = len(steps) - number - 1
        timeout = min(step.cap, budget - elapsed - RESERVE * later)
        stamp = time.strftime("%H:%M:%S")
        log(f"\n=== [{stamp} +{elapsed:5.1f} s] step {number}/{len(steps) - 1} {step.name}: {step.title}")
        log(f"=== limit {timeout:.0f} s")
        if timeout < min(step.cap, 5.0):  # too little to start Python and import torch
            outcome = Outcome(step.name, "SKIPPED (no time left)", 0.0)
        else:
            outcome = run_step(step, env, timeout, log)
        log(f"=== {step.name}: {outcome.status} in {outcome.seconds:.1f} s {outcome.details}")
        outcomes.append(outcome)
    return outcomes


# --- what each step checks and reports -------------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def pytest_report(xml: Path) -> Check:
    def check(output: str, log: Log) -> tuple[str, str | None]:
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        assert suite is not None
        counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
        properties = []
        for case in suite.iter("testcase"):
            for prop in case.iter("property"):
                value = float(prop.get("value", "nan"))
                properties.append(f"{case.get('name')}: {prop.get('name')} {value:.4g}")
        passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        details = f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
        for line in properties:
            log(f"  measured: {line}")
        return details, None

    return check


def training_report(path: Path, label: str) -> Check:
    def check(output: str, log: Log) -> tuple[str, str | None]:
        result = _json(path)
        if not result:
            return "", f"no result in {path.name}"
        text = (
            f"{label}: {result['metric']} final {result['final']:.4f} (best {result['best']:.4f}) after "
            f"{len(result['epochs'])} epoch(s), {result['seconds']:.1f} s"
        )
        if result["target"] is not None:
            hit = result["reached"]
            goal = f"{result['target']:.0%}"
            text += (
                f"; {goal} at epoch {hit['epoch']:.0f}, {hit['wall_seconds']:.1f} s" if hit else f"; {goal} not reached"
            )
        return text, None

    return check


def fraction_report(path: Path) -> Check:
    def check(output: str, log: Log) -> tuple[str, str | None]:
        result = _json(path)
        parts = [f"{name} {result[name]['fraction']:.3f}" for name in ("pil", "cache", "device") if name in result]
        if not parts:
            return "", f"no result in {path.name}"
        return "fraction of the one-batch step: " + ", ".join(parts) + " (goal 0.9)", None

    return check


def torchrun_report(runs: list[tuple[Path, int]], backend: str) -> Check:
    def check(output: str, log: Log) -> tuple[str, str | None]:
        parts = []
        for run, processes in runs:
            marker = f"{processes} process(es) over {backend}"
            if marker not in output:
                return "", f"'{marker}' is not in the output: the process group was not joined"
            with open(run / "metrics.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
            seconds = sum(float(r["seconds"]) for r in rows)
            parts.append(f"{marker}: accuracy {float(rows[-1]['accuracy']):.4f}, {seconds:.1f} s in the epochs")
        return "; ".join(parts), None

    return check


def environment_report(smoke: bool) -> Check:
    def check(output: str, log: Log) -> tuple[str, str | None]:
        info = dict(line.split("=", 1) for line in output.splitlines() if line.startswith("env:") and "=" in line)
        details = f"{info.get('env:device', '?')}, torch {info.get('env:torch', '?')}"
        if not smoke and info.get("env:cuda") != "True":
            return details, "torch sees no CUDA device"
        return details, None

    return check


ENV_PROBE = (
    "import os, sys, torch, torchvision; print('env:python=' + sys.version.split()[0]); "
    "print('env:torch=' + torch.__version__); print('env:torchvision=' + torchvision.__version__); "
    "print('env:cuda=' + str(torch.cuda.is_available())); "
    "print('env:device=' + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')); "
    "print('env:gpus=' + str(torch.cuda.device_count())); print('env:cores=' + str(len(os.sched_getaffinity(0)))); "
    "import pydantic; print('env:pydantic=' + pydantic.VERSION)"
)


# --- the steps ---------------------------------------------------------------------------------------------------

DEMO_TOY = [
    "data.path=demo:folder@0.05",
    "train.stages.0.epochs=1",
    "data.item_tfm.size=40",
    "augment.size=32",
    "data.num_workers=0",
]


def _sets(assignments: list[str]) -> list[str]:
    return [part for a in assignments for part in ("--set", a)]


def gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return len([line for line in done.stdout.splitlines() if line.startswith("GPU ")])


def gpu_test_files() -> list[str]:
    """The test files that mark a test with pytest.mark.gpu, relative to the repository."""
    found = [p for p in sorted((REPO / "tests").rglob("test_*.py")) if "@pytest.mark.gpu" in p.read_text()]
    return [str(p.relative_to(REPO)) for p in found]


def write_toy_idx(folder: Path, n_train: int = 200, n_test: int = 50) -> Path:
    """Fashion-MNIST-shaped IDX files (28x28 grey, 10 classes) whose class is a bright bar's row: learnable."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(18)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        labels = [rng.randrange(10) for _ in range(count)]
        pixels = bytearray()
        for label in labels:
            image = [rng.randrange(0, 60) for _ in range(28 * 28)]
            for column in range(4, 24):
                image[(2 + 2 * label) * 28 + column] = 255
            pixels += bytes(image)
        for kind, body, shape in (
            ("images-idx3", bytes(pixels), (count, 28, 28)),
            ("labels-idx1", bytes(labels), (count,)),
        ):
            header = struct.pack(">HBB", 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as handle:
                handle.write(header + body)
    return folder


def build_steps(args: argparse.Namespace, work: Path, out: Path) -> list[Step]:
    smoke = args.cpu_smoke
    runs = work / "runs"
    toy = _sets(DEMO_TOY) if smoke else []
    steps = [Step("environment", "versions and the device", [[PY, "-c", ENV_PROBE]], 30, environment_report(smoke))]
    if not smoke:
        steps[0].commands.insert(0, ["nvidia-smi"])
    xml = out / "pytest_gpu.xml"
    pytest = [PY, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:xdist"]
    # The smoke run collects only the files that hold GPU tests (collecting the whole suite costs ~15 s there).
    targets = gpu_test_files() if smoke else ["tests"]
    steps.append(
        Step("pytest-gpu", "pytest -m gpu", [[*pytest, f"--junitxml={xml}", *targets]], 110, pytest_report(xml))
    )

    demo_json = work / "demo.json"
    fast = ["runtime.precision=bf16", "runtime.channels_last=true", "runtime.compile=true"]
    demo = [PY, "benchmarks/train_to_target.py", "configs/demo.yaml", *_sets(fast), *toy]
    demo += ["--out", str(runs / "demo-compiled"), "--json", str(demo_json)]
    steps.append(
        Step(
            "demo", "configs/demo.yaml, bf16 + channels_last + compile", [demo], 150, training_report(demo_json, "demo")
        )
    )

    step_json = work / "step_fraction.json"
    fraction = [PY, "benchmarks/step_fraction.py", "--json", str(step_json), "--work", str(work / "step")]
    fraction += ["--smoke", "--data", str(work / "step-jpegs")] if smoke else []
    steps.append(
        Step(
            "step",
            "resnet50 step fed by the data path / by one device batch",
            [fraction],
            150,
            fraction_report(step_json),
        )
    )

    steps.append(fashion_step(args, work, smoke))
    steps.extend(torchrun_steps(work, smoke, toy))
    return steps


def fashion_step(args: argparse.Namespace, work: Path, smoke: bool) -> Step:
    idx = work / "toy-idx" if smoke else args.fashion_idx
    folder = work / "fashion-mnist"
    result = work / "fashion_mnist.json"
    convert = [PY, "scripts/idx_to_folder.py", str(idx), str(folder), "--names", "fashion"]
    overrides = [f"data.path={folder}", "data.mode=resident"]
    if smoke:
        overrides += ["data.bs=32", "train.stages.0.epochs=1", "data.num_workers=0", "model.arch=xresnet_tiny"]
    train = [PY, "benchmarks/train_to_target.py", "configs/fashion_mnist.yaml", *_sets(overrides)]
    train += ["--target", str(GOAL_FASHION), "--stop-at-target", "--out", str(work / "runs" / "fashion-mnist")]
    train += ["--json", str(result)]

    def before() -> None:
        if smoke:
            write_toy_idx(idx)
        elif not (idx / "train-images-idx3-ubyte.gz").is_file() and not (idx / "train-images-idx3-ubyte").is_file():
            raise FileNotFoundError(
                f"no Fashion-MNIST IDX files in {idx}: run benchmarks/gpu_check_prepare.sh and carry data/fashion-mnist"
            )

    # A conversion cut short by a time limit leaves no marker, and is done again (from scratch) by the next run.
    done = folder / ".converted"
    mark = [PY, "-c", f"import pathlib; pathlib.Path({str(done)!r}).touch()"]
    commands = (
        [train]
        if done.is_file()
        else [[PY, "-c", f"import shutil; shutil.rmtree({str(folder)!r}, True)"], convert, mark, train]
    )
    return Step(
        "fashion",
        "configs/fashion_mnist.yaml, resident, until 94%",
        commands,
        170,
        training_report(result, "fashion-mnist"),
        before,
    )


def torchrun_steps(work: Path, smoke: bool, toy: list[str]) -> list[Step]:
    backend = "gloo" if smoke else "nccl"
    counts = [1]
    gpus = 0 if smoke else gpu_count()
    if gpus > 1:
        counts.append(gpus)
    steps = []
    for processes in counts:
        run = work / "runs" / f"demo-torchrun-{processes}"
        launch = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command = [*launch, "-m", "imgcls", "train", "configs/demo.yaml", "--out", str(run), *toy]
        title = f"the demo under torchrun --nproc-per-node={processes} ({backend})"
        steps.append(Step(f"torchrun-{processes}", title, [command], 100, torchrun_report([(run, processes)], backend)))
    return steps


# --- the summary ---------------------------------------------------------------------------------------------------


def summary_table(outcomes: list[Outcome]) -> str:
    rows = [[o.name, o.status, f"{o.seconds:.1f}", o.details] for o in outcomes]
    header = ["step", "result", "seconds", "details"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same steps at toy sizes on the CPU")
    parser.add_argument("--out", type=Path, default=None, help="where the log and results go (default $OUT)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for every step together (455; smoke 240)")
    parser.add_argument("--fashion-idx", type=Path, default=FASHION_IDX, help="folder with the four IDX files")
    parser.add_argument("--only", nargs="*", default=None, help="run only these steps (environment always runs)")
    parser.add_argument("--dry-run", action="store_true", help="print the steps' commands and limits, run nothing")
    return parser.parse_args(argv)


def child_env(work: Path, smoke: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(PYTHONUNBUFFERED="1", IMGCLS_HOME=str(work / "imgcls-home"), HF_HUB_OFFLINE="1")
    if smoke:  # a shared CPU: one thread per process
        env["OMP_NUM_THREADS"] = "1"
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(os.environ.get("OUT") or REPO / "bench-out" / "gpu-check")
    work = (
        args.work or Path(os.environ.get("TMPDIR", "/tmp")) / f"imgcls-gpu-check-{'smoke' if args.cpu_smoke else 'gpu'}"
    )
    # Data (generated JPEGs, the demo, Fashion-MNIST's folder) is kept for a rerun on a warm machine; runs are not.
    shutil.rmtree(work / "runs", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log")
    # 455 s of steps, plus the wheels' install before and at most 15 s to end a step that ran out of time: 8 minutes.
    budget = args.budget or (240.0 if args.cpu_smoke else 455.0)
    mode = "--cpu-smoke (toy sizes, CPU)" if args.cpu_smoke else "GPU"
    log(f"imgcls gpu_check {mode}: {time.strftime('%Y-%m-%d %H:%M:%S')}, budget {budget:.0f} s, out {out}, work {work}")
    steps = build_steps(args, work, out)
    if args.only:
        steps = [s for s in steps if s.name == "environment" or s.name in args.only]
    if args.dry_run:
        for step in steps:
            log(f"{step.name} (at most {step.cap:.0f} s): {step.title}")
            for command in step.commands:
                log(f"  $ {' '.join(command)}")
        return 0
    started = time.perf_counter()
    outcomes = run_all(steps, child_env(work, args.cpu_smoke), budget, log)
    table = summary_table(outcomes)
    total = time.perf_counter() - started
    log(f"\n=== summary ({mode}, {total:.0f} s in all)\n{table}")
    (out / "summary.md").write_text(f"gpu_check {mode}, {time.strftime('%Y-%m-%d %H:%M')}, {total:.0f} s\n\n{table}\n")
    results = {"mode": mode, "seconds": total, "steps": [o.__dict__ for o in outcomes]}
    for name in ("demo", "step_fraction", "fashion_mnist"):
        results[name] = _json(work / f"{name}.json")
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
