"""Issue 7: imgcls against fastai 2.8.12 on the same JPEG folder, split and recipe, in one run.

    PYTHONPATH=. /work/main/.venv/bin/python benchmarks/vs_fastai.py [--size 224] [--rounds 2] [--epochs 3]

Recipe on both sides: item resize `--item-size` (460) crop on the CPU in `--workers` DataLoader workers, batch
augmentation to `--size` with min_scale 0.75 (fastai: aug_transforms(size=..., min_scale=0.75); imgcls:
augment: {size, min_scale: 0.75}), no normalization, the split in <data>/valid.txt. Each side runs in its own
subprocess (fastai lives in its own venv, --fastai-python); rounds alternate the order (imgcls first, then
fastai first, ...) so that machine noise falls on both alike. Measured:

1. data path: images/s delivered to the device, no model, per epoch after a warm-up epoch.
2. training: `--arch` from scratch at `--train-size` for `--epochs` epochs of one-cycle at `--lr`; seconds per
   epoch (train + validation, as each side's own log records it) and the final validation accuracy.
3. GPU only: resnet50 @224 bf16 channels_last, imgcls's training step fed by its loader vs the same step fed
   one batch already on the device; the ratio is the fraction of step throughput the data path sustains.
   Skipped (with a message) without CUDA; `--step-smoke` runs the same code path on the CPU, tiny, as a check.

`--data DIR` takes any class-folder set: DIR/<class>/* with DIR/valid.txt, or DIR/train/<class>/* and
DIR/valid/<class>/* (a grandparent split, e.g. the Fashion-MNIST export of scripts/idx_to_folder.py with
--per-class). `--recipe small` is issue 19's recipe for small images of one size: no item transform, flip and
rotate 5 degrees, no warp or lighting, measured normalization (fastai's Normalize() measures one batch, imgcls's
`normalize: measure` four). `--seeds N` trains N rounds per side, alternating, round r with seed --seed + r, and
reports mean and spread; `--busy` keeps one other process busy on the CPU during training (a numpy loop).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_common import (
    DataParams,
    cpu_model,
    default_data_dir,
    ensure_data,
    imgcls_spec,
    imgcls_train_loader,
    pick_device,
    ratio,
    step_rounds,
    step_state,
    summarize,
    sync,
    table,
    timed,
)

REPO = Path(__file__).resolve().parent.parent
IMGCLS_PYTHON = "/work/main/.venv/bin/python"
# The same head on both sides: fastai's default (concat pool, 512 hidden, dropout 0.25/0.5), or concat pool and
# one linear layer, which trains from scratch in far fewer steps (what configs/demo.yaml uses).
HEADS: dict[str, dict[str, Any]] = {"fastai": {"lin_ftrs": None, "ps": 0.5}, "plain": {"lin_ftrs": [], "ps": 0.1}}
FASTAI_PYTHON = str(REPO / ".venv-bench" / "bin" / "python")
TARGET_DATA = 3.0  # issue 7: imgcls's data path >= 3x fastai's images/s
TARGET_TRAIN = 1.5  # issue 7: training >= 1.5x faster per epoch, at equal or better accuracy


# --- imgcls side (runs under --imgcls-python with PYTHONPATH = this repository) -------------------------------


def imgcls_data_path(cfg: dict[str, Any]) -> dict[str, Any]:
    """images/s of the training DeviceLoader, one entry per epoch (the first includes worker start)."""
    device = pick_device(cfg["device"])
    spec = imgcls_spec(Path(cfg["root"]), cfg["item_size"], cfg["size"], cfg["bs"], cfg["workers"])
    loader, _ = imgcls_train_loader(spec, device, channels_last=device.type == "cuda")

    def epoch() -> int:
        n = 0
        for batch in loader:
            n += batch.images.shape[0]
        sync(device)
        return n

    rates = []
    for number in range(cfg["data_epochs"]):
        loader.set_epoch(number)
        n, seconds = timed(epoch)
        rates.append(n / seconds)
    return {"rates": rates}


def _imgcls_train_spec(cfg: dict[str, Any]) -> Any:
    """The recipe as an imgcls spec (photo: presize and crop; small: images of one size, issue 19's augmentation)."""
    from imgcls.spec.load import spec_from_dict

    model = {"arch": cfg["arch"], "pretrained": False, "head": HEADS[cfg["head"]]}
    train = {
        "stages": [{"schedule": "fit_one_cycle", "epochs": cfg["epochs"], "lr_max": cfg["lr"]}],
        "metrics": ["accuracy"],
    }
    runtime = {"device": cfg["device"], **cfg.get("runtime", {})}
    if cfg["recipe"] == "photo":
        root, item, size, bs, workers = (
            Path(cfg["root"]),
            cfg["item_size"],
            cfg["train_size"],
            cfg["train_bs"],
            cfg["workers"],
        )
        return imgcls_spec(root, item, size, bs, workers, seed=cfg["seed"], model=model, train=train, runtime=runtime)
    split = {"kind": "grandparent"} if cfg["layout"] == "grandparent" else {"kind": "file", "file": "valid.txt"}
    raw = {
        "seed": cfg["seed"],
        "data": {
            "path": cfg["root"],
            "split": split,
            "bs": cfg["train_bs"],
            "num_workers": cfg["workers"],
            "normalize": "measure",
        },
        "augment": {"size": cfg["train_size"], "max_rotate": 5.0, "max_warp": 0.0, "max_lighting": 0.0},
        "model": model,
        "train": train,
        "runtime": runtime,
    }
    return spec_from_dict(raw, origin="benchmark")


def imgcls_training(cfg: dict[str, Any]) -> dict[str, Any]:
    """`imgcls.train.run.train` on the recipe; seconds and accuracy per epoch from its metrics.csv."""
    import csv

    from imgcls.train.run import train

    spec = _imgcls_train_spec(cfg)
    out = Path(tempfile.mkdtemp(prefix="imgcls-vs-fastai-")) / "run"
    _, total = timed(lambda: bool(train(spec, out, quiet=True)))
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "epoch_seconds": [float(r["seconds"]) for r in rows],
        "accuracy": [float(r["accuracy"]) for r in rows],
        "total_seconds": total,
    }


def imgcls_step(cfg: dict[str, Any]) -> dict[str, Any]:
    """imgcls's train_batch fed by its DeviceLoader vs fed one cached device batch, alternating rounds."""
    from imgcls.train.builder import Pipeline
    from imgcls.train.runtime import resolve_runtime

    spec = imgcls_spec(
        Path(cfg["root"]),
        cfg["item_size"],
        cfg["step_size"],
        cfg["step_bs"],
        cfg["workers"],
        model={"arch": cfg["step_arch"], "pretrained": False},
        runtime={"device": cfg["step_device"], "precision": cfg["step_precision"], "channels_last": True},
    )
    state, ctx = step_state(spec)
    loader = Pipeline(spec, resolve_runtime(spec.runtime)).stage_loaders(0).train
    return step_rounds(state, ctx, loader, cfg["step_rounds"])


# --- fastai side (runs under --fastai-python; needs no imgcls) ---------------------------------------------


def fastai_dls(cfg: dict[str, Any], size: int, bs: int) -> Any:
    """fastai's DataLoaders for the recipe: the same files and the same split as imgcls's."""
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        FuncSplitter,
        GrandparentSplitter,
        ImageBlock,
        Normalize,
        Resize,
        aug_transforms,
        get_image_files,
        parent_label,
        set_seed,
    )

    root = Path(cfg["root"])
    set_seed(cfg["seed"])
    if cfg.get("layout") == "grandparent":
        splitter: Any = GrandparentSplitter(train_name="train", valid_name="valid")
    else:
        valid = set((root / "valid.txt").read_text().split())
        splitter = FuncSplitter(lambda p: f"{Path(p).parent.name}/{Path(p).name}" in valid)
    if cfg.get("recipe") == "small":
        item_tfms: list[Any] = []
        batch_tfms = [*aug_transforms(size=size, max_rotate=5.0, max_warp=0.0, max_lighting=0.0), Normalize()]
    else:
        item_tfms = [Resize(cfg["item_size"])]
        batch_tfms = aug_transforms(size=size, min_scale=0.75)
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=parent_label,
        splitter=splitter,
        item_tfms=item_tfms,
        batch_tfms=batch_tfms,
    )
    return block.dataloaders(root, bs=bs, num_workers=cfg["workers"], device=pick_device(cfg["device"]))


def fastai_data_path(cfg: dict[str, Any]) -> dict[str, Any]:
    """images/s of dls.train, each batch forced (one element read back), one entry per epoch."""
    dls = fastai_dls(cfg, cfg["size"], cfg["bs"])
    device = pick_device(cfg["device"])

    def epoch() -> int:
        n = 0
        for images, _ in dls.train:
            n += images.shape[0]
        sync(device)
        return n

    rates = []
    for _ in range(cfg["data_epochs"]):
        n, seconds = timed(epoch)
        rates.append(n / seconds)
    return {"rates": rates}


def fastai_training(cfg: dict[str, Any]) -> dict[str, Any]:
    """vision_learner(arch, pretrained=False) + fit_one_cycle; epoch seconds measured by a callback."""
    from fastai.vision.all import Callback, accuracy, vision_learner, xresnet18

    class EpochTimer(Callback):
        """Seconds from before_epoch to after_epoch: training and validation, like imgcls's `seconds`."""

        def before_fit(self) -> None:
            self.seconds: list[float] = []

        def before_epoch(self) -> None:
            self.start = time.perf_counter()

        def after_epoch(self) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    def run() -> Any:
        dls = fastai_dls(cfg, cfg["train_size"], cfg["train_bs"])
        arch = xresnet18 if cfg["arch"] == "xresnet18" else cfg["arch"]  # a string is a timm model, like imgcls
        head = HEADS[cfg["head"]]
        learn = vision_learner(
            dls, arch, pretrained=False, metrics=accuracy, cbs=EpochTimer(), lin_ftrs=head["lin_ftrs"], ps=head["ps"]
        )
        with learn.no_bar(), learn.no_logging():
            learn.fit_one_cycle(cfg["epochs"], cfg["lr"])
        return learn

    learn, total = timed(run)
    names = list(learn.recorder.metric_names)  # epoch, train_loss, valid_loss, accuracy, time
    column = names.index("accuracy") - 1
    return {
        "epoch_seconds": learn.epoch_timer.seconds,
        "accuracy": [float(row[column]) for row in learn.recorder.values],
        "total_seconds": total,
    }


TASKS = {
    ("imgcls", "data"): imgcls_data_path,
    ("imgcls", "train"): imgcls_training,
    ("imgcls", "step"): imgcls_step,
    ("fastai", "data"): fastai_data_path,
    ("fastai", "train"): fastai_training,
}


def worker(side: str, task: str, config: Path, out: Path) -> None:
    """Subprocess entry: run one (side, task) with the JSON config, write the JSON result."""
    cfg = json.loads(config.read_text())
    result = TASKS[(side, task)](cfg)
    out.write_text(json.dumps(result))


# --- the orchestrator ----------------------------------------------------------------------------------------


def run_side(side: str, task: str, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run one side's task in a fresh subprocess of that side's python; its JSON result plus wall seconds."""
    python = args.imgcls_python if side == "imgcls" else args.fastai_python
    with tempfile.TemporaryDirectory(prefix="vs-fastai-") as scratch:
        config, out = Path(scratch) / "config.json", Path(scratch) / "result.json"
        config.write_text(json.dumps(cfg))
        env = dict(os.environ)
        if side == "imgcls":  # this worktree's imgcls wins over an editable install elsewhere
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = [python, str(Path(__file__).resolve()), "--worker", side, task, str(config), str(out)]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
            raise SystemExit(f"{side} {task} failed with exit code {done.returncode}")
        result: dict[str, Any] = json.loads(out.read_text())
    result["wall_seconds"] = wall
    return result


def alternate(
    task: str, rounds: int, cfg: dict[str, Any], args: argparse.Namespace, seeded: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """`rounds` rounds of both sides; odd rounds run fastai first; `seeded` gives round r the seed --seed + r."""
    results: dict[str, list[dict[str, Any]]] = {"imgcls": [], "fastai": []}
    for number in range(rounds):
        order = ["imgcls", "fastai"] if number % 2 == 0 else ["fastai", "imgcls"]
        round_cfg = {**cfg, "seed": cfg["seed"] + number} if seeded else cfg
        for side in order:
            result = run_side(side, task, round_cfg, args)
            results[side].append(result)
            brief = {k: v for k, v in result.items() if k != "wall_seconds"}
            print(f"  round {number + 1} {task:5s} {side:6s} {_short(brief)}  (load {os.getloadavg()[0]:.1f})")
    return results


def _short(result: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return " ".join(f"{key}={fmt(value)}" for key, value in result.items())


def report_data(results: dict[str, list[dict[str, Any]]]) -> float:
    """Table of images/s (steady: epochs after the first of each subprocess; cold: the first) and the ratio."""
    steady = {side: [r for res in runs for r in res["rates"][1:] or res["rates"]] for side, runs in results.items()}
    cold = {side: [res["rates"][0] for res in runs] for side, runs in results.items()}
    rows = [[side, summarize(steady[side]), summarize(cold[side])] for side in results]
    print(table(rows, ["side", "images/s steady, median (min-max)", "first epoch (incl. worker start)"]))
    value = ratio(steady["imgcls"], steady["fastai"])
    verdict = "meets" if value >= TARGET_DATA else "misses"
    print(f"\ndata path imgcls / fastai = {value:.2f}x (steady); {verdict} the issue-7 target of {TARGET_DATA}x")
    return value


def _mean_spread(values: list[float], digits: int = 1) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def report_training(results: dict[str, list[dict[str, Any]]]) -> float:
    """Seconds per epoch (all epochs, and epochs 2+), final accuracy, the whole command (wall, with imports and
    data loading): each as mean ± standard deviation over the rounds; the speed-ups fastai / imgcls."""
    rows, later, final, wall = [], {}, {}, {}
    for side, runs in results.items():
        every = [statistics.mean(res["epoch_seconds"]) for res in runs]
        later[side] = [statistics.mean(res["epoch_seconds"][1:] or res["epoch_seconds"]) for res in runs]
        final[side] = [res["accuracy"][-1] for res in runs]
        wall[side] = [res["wall_seconds"] for res in runs]
        accuracy = " ".join(f"{a:.3f}" for a in final[side])
        rows.append(
            [
                side,
                _mean_spread(every),
                _mean_spread(later[side]),
                f"{_mean_spread(final[side], 4)} ({accuracy})",
                _mean_spread(wall[side]),
            ]
        )
    header = ["side", "s/epoch, all epochs", "s/epoch, epochs 2+", "final accuracy", "whole command, s"]
    print(table(rows, header))
    speedup = statistics.mean(later["fastai"]) / statistics.mean(later["imgcls"])
    whole = statistics.mean(wall["fastai"]) / statistics.mean(wall["imgcls"])
    gap = statistics.mean(final["imgcls"]) - statistics.mean(final["fastai"])
    print(
        f"\nspeed-up fastai / imgcls: {speedup:.2f}x per epoch (epochs 2+), {whole:.2f}x for the whole command; "
        f"accuracy imgcls - fastai = {gap:+.4f} over {len(final['imgcls'])} round(s) per side"
    )
    return speedup


def report_step(result: dict[str, Any], cfg: dict[str, Any]) -> None:
    loader, cached = result["loader_rates"], result["cached_rates"]
    rows = [["fed by imgcls's DeviceLoader", summarize(loader)], ["fed one cached device batch", summarize(cached)]]
    print(table(rows, [f"{cfg['step_arch']} @{cfg['step_size']} {cfg['step_precision']} step", "images/s"]))
    print(f"\ndata-path fraction (loader-fed / cached) = {ratio(loader, cached):.3f}")


def gpu_step(cfg: dict[str, Any], args: argparse.Namespace) -> None:
    """The GPU-only measurement, or the CPU smoke test of its code path, or a clear skip."""
    import torch

    if args.step_smoke:
        cfg = {**cfg, "step_device": "cpu", "step_arch": "xresnet_tiny", "step_size": 64, "step_bs": 16}
        cfg.update(step_precision="fp32", step_rounds=1)
        print("\n## step smoke test on the CPU (tiny model; checks the code path, not a measurement)")
    elif not torch.cuda.is_available():
        print(
            "\n## GPU step: skipped, no CUDA device here (torch.cuda.is_available() is False); on a GPU machine "
            "this runs resnet50 @224 bf16 channels_last fed by imgcls's loader vs fed one cached batch"
        )
        return
    else:
        print(f"\n## GPU step on {torch.cuda.get_device_name(0)}")
    report_step(run_side("imgcls", "step", cfg, args), cfg)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--data", type=Path, default=None, help="image folder (generated if missing)")
    add("--n", type=int, default=200, help="images per class (default 200: 320 train / 80 valid)")
    add("--classes", type=int, default=2, help="classes, 2-5 (default 2)")
    add("--workers", type=int, default=None, help="DataLoader workers on both sides (default: imgcls's choice)")
    add("--bs", type=int, default=64, help="data-path batch size (default 64)")
    add("--item-size", type=int, default=460, help="item resize, px (default 460)")
    add("--size", type=int, default=224, help="data-path augmented size, px (224 or 128; default 224)")
    add("--rounds", type=int, default=3, help="data-path rounds per side (default 3)")
    add("--data-epochs", type=int, default=2, help="epochs per data-path round; the first is cold (default 2)")
    add("--arch", default="resnet18", help="resnet18 (timm, both sides) or xresnet18 (default resnet18)")
    add("--head", default="fastai", choices=sorted(HEADS), help="fastai's default head, or a plain linear one")
    add("--train-size", type=int, default=128, help="training size, px (default 128)")
    add("--train-bs", type=int, default=32, help="training batch size (default 32)")
    add("--epochs", type=int, default=4, help="training epochs (default 4)")
    add("--lr", type=float, default=3e-3, help="fit_one_cycle lr_max (default 3e-3)")
    add("--train-rounds", type=int, default=1, help="training runs per side, one seed (default 1)")
    add("--seeds", type=int, default=0, help="training rounds per side, round r with seed --seed + r (default off)")
    add("--recipe", default="photo", choices=["photo", "small"], help="photo: presize + crop; small: issue 19's")
    add("--busy", action="store_true", help="keep one other process busy on the CPU while training runs")
    add("--imgcls-set", nargs="*", default=[], help="runtime.* overrides for imgcls, e.g. precision=bf16")
    add("--skip", nargs="*", default=[], choices=["data", "train", "step"], help="parts to leave out")
    add("--step-smoke", action="store_true", help="run the GPU-step code path on the CPU with a tiny model")
    add("--device", default="auto", help="auto | cpu | cuda (default auto)")
    add("--seed", type=int, default=42)
    add("--imgcls-python", default=IMGCLS_PYTHON, help=f"python for imgcls (default {IMGCLS_PYTHON})")
    add("--fastai-python", default=FASTAI_PYTHON, help=f"python with fastai 2.8.12 (default {FASTAI_PYTHON})")
    add("--worker", nargs=4, metavar=("SIDE", "TASK", "CONFIG", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def config(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """What every worker subprocess reads: the recipe and the sizes, nothing side-specific."""
    workers = args.workers
    if workers is None:
        workers = min(8, len(os.sched_getaffinity(0)))  # imgcls.data.loaders.default_workers, without importing it
    layout = "valid_txt" if (root / "valid.txt").is_file() else "grandparent"
    runtime = {}
    for assignment in args.imgcls_set:
        key, _, value = assignment.partition("=")
        runtime[key.removeprefix("runtime.")] = json.loads(value) if value[:1] in "0123456789[{tf" else value
    return {
        "root": str(root),
        "layout": layout,
        "recipe": args.recipe,
        "runtime": runtime,
        "item_size": args.item_size,
        "size": args.size,
        "bs": args.bs,
        "workers": workers,
        "device": args.device,
        "seed": args.seed,
        "data_epochs": args.data_epochs,
        "arch": args.arch,
        "head": args.head,
        "train_size": args.train_size,
        "train_bs": args.train_bs,
        "epochs": args.epochs,
        "lr": args.lr,
        "step_device": "cuda",
        "step_arch": "resnet50",
        "step_size": 224,
        "step_bs": args.bs,
        "step_precision": "bf16",
        "step_rounds": 3,
    }


def cfg_layout(root: Path) -> str:
    return "valid.txt split" if (root / "valid.txt").is_file() else "train/ and valid/ folders"


@contextlib.contextmanager
def busy_process(on: bool) -> Iterator[None]:
    """One other process keeping a core busy (a numpy matrix-product loop, one thread), as a user's other work
    would; stopped afterwards."""
    if not on:
        yield
        return
    code = "import numpy as np\na = np.random.rand(256, 256)\nwhile True:\n    a = a @ a; a /= a.max()"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    burner = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        side, task, cfg_file, out = args.worker
        worker(side, task, Path(cfg_file), Path(out))
        return
    params = DataParams(classes=args.classes, per_class=args.n)
    if args.data is not None and not (args.data / "bench-data.json").is_file():
        root = args.data  # a class-folder set of the user's: read as it is
        described = f"class folders ({cfg_layout(root)})"
    else:
        root = ensure_data(args.data or default_data_dir(params), params)
        described = f"{args.classes} classes x {args.n} JPEGs"
    cfg = config(args, root)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}; load average {os.getloadavg()[0]:.1f}")
    print(f"imgcls: {args.imgcls_python} (PYTHONPATH {REPO}); fastai: {args.fastai_python}")
    print(f"data {root}: {described}; workers {cfg['workers']}; recipe {args.recipe}")
    if "data" not in args.skip:
        print(f"\n## data path: bs {args.bs}, resize {args.item_size} crop -> augment {args.size}, min_scale 0.75")
        report_data(alternate("data", args.rounds, cfg, args))
    if "train" not in args.skip:
        how = (
            f"resize {args.item_size} crop -> augment {args.train_size}, min_scale 0.75"
            if args.recipe == "photo"
            else f"{args.train_size} px, flip + rotate 5, no warp or lighting, measured normalization"
        )
        print(
            f"\n## training: {args.arch} from scratch, {args.epochs} epochs fit_one_cycle lr {args.lr}, bs "
            f"{args.train_bs}, {how}{'; one busy process beside it' if args.busy else ''}"
        )
        rounds, seeded = (args.seeds, True) if args.seeds else (args.train_rounds, False)
        with busy_process(args.busy):
            report_training(alternate("train", rounds, cfg, args, seeded))
    if "step" not in args.skip:
        gpu_step(cfg, args)
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
