"""Shared by the benchmark scripts: a deterministic photo-like JPEG folder, timing and table helpers.

The generator is the benchmarks' own (not imgcls.data.demo) so that the files, and therefore the numbers, do
not change when the package's demo data does. It needs only numpy and Pillow, so it runs in any venv.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw

T = TypeVar("T")
SHAPES = ("circle", "cross", "ring", "square", "triangle")
DATA_VERSION = 1
_MARKER = "bench-data.json"
# Every 5th image of each class is validation: 20%, the fastai/imgcls default valid_pct.
VALID_EVERY = 5


@dataclass(frozen=True)
class DataParams:
    """What a generated folder holds; written next to the files so that a mismatch regenerates them."""

    classes: int
    per_class: int
    min_px: int = 300
    max_px: int = 600
    quality: int = 90
    seed: int = 20261123

    def as_dict(self) -> dict[str, int]:
        return {"version": DATA_VERSION, **self.__dict__}


def default_data_dir(params: DataParams) -> Path:
    """A temp folder named after the parameters, so a second run finds and reuses it."""
    name = f"imgcls-bench-v{DATA_VERSION}-{params.classes}x{params.per_class}-{params.min_px}-{params.max_px}"
    return Path(tempfile.gettempdir()) / name


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Gradient + low-frequency blotches + sensor-like noise (std 6 grey levels), HWC float in [0, 255].

    The noise matters: without it a JPEG compresses 5-10x smaller than a photo and decodes unrealistically fast.
    """
    base = rng.uniform(40, 215, size=3).astype(np.float32)
    tilt = rng.uniform(-60, 60, size=(2, 3)).astype(np.float32)
    u = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :, None]
    v = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None, None]
    coarse = rng.normal(128, 22, size=(max(height // 24, 2), max(width // 24, 2), 3))
    blotches = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    image = np.asarray(blotches, dtype=np.float32) + (base - 128) + u * tilt[0] + v * tilt[1]
    image += rng.standard_normal(size=(height, width, 3), dtype=np.float32) * 6
    return np.clip(image, 0, 255)


def _draw(
    draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], r: float, colour: tuple[int, ...]
) -> None:
    x, y = centre
    angle = (x * 7.0) % 90.0  # polygons turn with their position: a cheap, deterministic rotation
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif shape == "ring":
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=max(int(r * 0.35), 2))
    elif shape == "square":
        draw.regular_polygon((x, y, r), 4, rotation=angle, fill=colour)
    elif shape == "triangle":
        draw.regular_polygon((x, y, r), 3, rotation=angle, fill=colour)
    else:  # cross
        bar = r * 0.32
        draw.rectangle((x - r, y - bar, x + r, y + bar), fill=colour)
        draw.rectangle((x - bar, y - r, x + bar, y + r), fill=colour)


def render_image(rng: np.random.Generator, shape: str, params: DataParams) -> Image.Image:
    """One image: random width in [min_px, max_px], aspect 0.6-1.6 (clipped to the same range), one shape."""
    width = int(rng.integers(params.min_px, params.max_px + 1))
    height = int(np.clip(width / rng.uniform(0.6, 1.6), params.min_px, params.max_px))
    image = Image.fromarray(_background(rng, width, height).astype(np.uint8))
    short = min(width, height)
    radius = short * rng.uniform(0.18, 0.3)
    x = width / 2 + rng.uniform(-0.2, 0.2) * short
    y = height / 2 + rng.uniform(-0.2, 0.2) * short
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    _draw(ImageDraw.Draw(image), shape, (x, y), radius, colour)
    return image


def _write_image(root: Path, params: DataParams, class_index: int, number: int) -> None:
    """One file of the folder: its own generator, so the files do not depend on the order they are written in."""
    shape = SHAPES[class_index]
    rng = np.random.default_rng([params.seed, class_index, number])
    render_image(rng, shape, params).save(root / shape / f"{number:04d}.jpg", quality=params.quality)


def ensure_data(root: Path, params: DataParams, workers: int = 1) -> Path:
    """Generate `root/<class>/<i>.jpg` and `root/valid.txt` unless `root` already holds exactly `params`
    (in `workers` processes: 3,200 files of 300-600 px take ~50 s in one)."""
    marker = root / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params.as_dict():
        return root
    if params.classes > len(SHAPES):
        raise ValueError(f"at most {len(SHAPES)} classes, got {params.classes}")
    shutil.rmtree(root, ignore_errors=True)
    jobs = [(c, n) for c in range(params.classes) for n in range(params.per_class)]
    for shape in SHAPES[: params.classes]:
        (root / shape).mkdir(parents=True, exist_ok=True)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_image, *zip(*[(root, params, c, n) for c, n in jobs], strict=True), chunksize=16))
    else:
        for class_index, number in jobs:
            _write_image(root, params, class_index, number)
    valid = [f"{SHAPES[c]}/{n:04d}.jpg" for c, n in jobs if n % VALID_EVERY == 0]
    (root / "valid.txt").write_text("\n".join(valid) + "\n")
    marker.write_text(json.dumps(params.as_dict()))
    return root


def image_files(root: Path) -> list[Path]:
    """Every JPEG under root, sorted (the order imgcls collects items in)."""
    return sorted(root.glob("*/*.jpg"))


def describe_data(root: Path) -> str:
    files = image_files(root)
    sizes = []
    for file in files[:: max(1, len(files) // 100)]:
        with Image.open(file) as image:
            sizes.append(image.size)
    kb = sum(f.stat().st_size for f in files) / len(files) / 1024
    widths, heights = [s[0] for s in sizes], [s[1] for s in sizes]
    return (
        f"{len(files)} JPEGs in {root}: widths {min(widths)}-{max(widths)} px, heights {min(heights)}-"
        f"{max(heights)} px, mean {kb:.0f} KB"
    )


# --- timing and reporting ---------------------------------------------------------------------------------


def timed(run: Callable[[], T]) -> tuple[T, float]:
    """(what `run` returns, seconds it took)."""
    start = time.perf_counter()
    items = run()
    return items, time.perf_counter() - start


def summarize(rates: Sequence[float]) -> str:
    """'median (min-max)' of a list of rates."""
    if not rates:
        return "n/a"
    return f"{statistics.median(rates):8.1f} ({min(rates):.1f}-{max(rates):.1f})"


def ratio(ours: Sequence[float], base: Sequence[float]) -> float:
    """Ratio of medians; nan when either side has no value."""
    if not ours or not base:
        return math.nan
    return statistics.median(ours) / statistics.median(base)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table (pastes straight into BENCHMARKS.md)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def cpu_model() -> str:
    """The CPU's model name (lscpu's 'Model name') and the cores this process may use."""
    name = "unknown CPU"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                name = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return f"{name}, {cores} cores"


# --- the recipe, on each side -------------------------------------------------------------------------------


def imgcls_spec(root: Path, item_size: int, size: int, bs: int, workers: int, **extra: Any) -> Any:
    """imgcls's spec for the shared recipe: resize `item_size` crop on the CPU, augment to `size`, min_scale 0.75,
    the split in root/valid.txt, no normalization (fastai adds none to an unpretrained learner either).

    `extra` adds top-level sections (model, train, runtime, seed); a train section is required by the spec.
    """
    from imgcls.spec.load import spec_from_dict

    raw: dict[str, Any] = {
        "data": {
            "path": str(root),
            "split": {"kind": "file", "file": "valid.txt"},
            "item_tfm": {"kind": "resize", "size": item_size, "method": "crop"},
            "bs": bs,
            "num_workers": workers,
            "normalize": "none",
        },
        "augment": {"size": size, "min_scale": 0.75},
        "train": {"stages": [{"schedule": "fit_one_cycle", "epochs": 1}]},
        **extra,
    }
    return spec_from_dict(raw, origin="benchmark")


def imgcls_train_loader(spec: Any, device: Any, channels_last: bool = False) -> tuple[Any, Any]:
    """(the training split's batches, DataBundle), built as `imgcls train` builds them (the Pipeline)."""
    from imgcls.train.builder import Pipeline
    from imgcls.train.runtime import Runtime

    runtime = Runtime(device, "fp32", channels_last=channels_last, compile=False)
    pipeline = Pipeline(spec, runtime)
    return pipeline.stage_loaders(0).train, pipeline.data


def pick_device(name: str) -> Any:
    """auto -> cuda when available, else cpu."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: Any) -> None:
    """Wait for the device, so that a timer measures finished work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the training step, fed by a loader or by one batch already on the device ------------------------------------


def step_state(spec: Any) -> tuple[Any, Any]:
    """(TrainState, FitContext) for imgcls's train_batch on `spec`'s model and runtime, at the start of a phase
    that never advances (the one-cycle schedule stays at its start: it does not change a step's cost)."""
    from imgcls.train.builder import Pipeline, place_model
    from imgcls.train.callbacks.base import CallbackList
    from imgcls.train.loop import FitContext, InterruptFlag
    from imgcls.train.optim import build_optimizer
    from imgcls.train.runtime import resolve_runtime
    from imgcls.train.schedule import stage_phases
    from imgcls.train.state import Position, TrainState

    runtime = resolve_runtime(spec.runtime)
    pipeline = Pipeline(spec, runtime)
    model = place_model(pipeline.new_model(), runtime)
    phase = stage_phases(spec.train.stages[0])[0]
    optimizer = build_optimizer(model, model.param_groups(), spec.train, phase)  # type: ignore[operator]
    state = TrainState(model, optimizer, pipeline.loss, runtime, pipeline.target, Path(), phase, "fit", Position())
    state.n_batches = 1 << 30
    ctx = FitContext(None, dict, CallbackList([]), runtime.grad_scaler(), InterruptFlag(), int, log_every=1 << 30)
    model.train()
    return state, ctx


def step_rounds(state: Any, ctx: Any, loader: Any, rounds: int) -> dict[str, Any]:
    """One warm-up epoch fed by `loader` (worker start, allocator, and a presize cache's first fill), then `rounds`
    of: an epoch fed by the loader, and as many steps fed its first batch again. images/s of each, and their
    ratio of medians: the fraction of the step's own throughput that the data path sustains."""
    from imgcls.train.loop import train_batch

    device = state.runtime.device
    kept: list[Any] = []

    def fed_by_loader(epoch: int) -> int:
        loader.set_epoch(epoch)
        n = 0
        for batch in loader:
            train_batch(state, ctx, batch)
            n += batch.images.shape[0]
            if not kept:
                kept.append(batch)
        sync(device)
        return n

    def fed_by_one_batch(steps: int) -> int:
        for _ in range(steps):
            train_batch(state, ctx, kept[0])
        sync(device)
        return steps * int(kept[0].images.shape[0])

    _, warm_up = timed(lambda: fed_by_loader(0))
    steps = len(loader)
    loader_rates, cached_rates = [], []
    for number in range(rounds):
        n, seconds = timed(lambda epoch=number + 1: fed_by_loader(epoch))
        loader_rates.append(n / seconds)
        n, seconds = timed(lambda: fed_by_one_batch(steps))
        cached_rates.append(n / seconds)
    return {
        "loader_rates": loader_rates,
        "cached_rates": cached_rates,
        "fraction": ratio(loader_rates, cached_rates),
        "steps_per_epoch": steps,
        "warm_up_seconds": warm_up,
    }
