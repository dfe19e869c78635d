"""Final accuracy with and without an EMA of the weights, with and without trivial_augment, over several seeds, on the
demo and on a Fashion-MNIST subset; and what the policy costs per epoch on this machine.

    PYTHONPATH=. python benchmarks/ema_policy.py [--datasets demo fashion] [--seeds 0 1 2] [--demo-epochs 20]
        [--demo-size 64] [--fashion-epochs 4] [--fashion DIR] [--train-per-class 250] [--valid-per-class 100]
        [--fashion-bs 128] [--decay 0.999] [--work DIR]

demo: configs/demo.yaml (demo:folder, 1,200 training and 300 validation images, xresnet_tiny) for --demo-epochs at
--demo-size px from crops 1.5x as large (the recipe: 20 epochs at 64 px from 96 px crops).
fashion: configs/fashion_mnist.yaml (xresnet18, one grey channel, device-resident) for --fashion-epochs at batch
size --fashion-bs (the recipe's 256 leaves a subset few steps) on the first --train-per-class training and
--valid-per-class test images of each class of a folder made by scripts/idx_to_folder.py (--fashion, default
/tmp/fmnist):

    apt-get install dataset-fashion-mnist
    python scripts/idx_to_folder.py /usr/share/datasets/fashion-mnist /tmp/fmnist --names fashion

Each dataset trains two variants per seed (the spec's seed): `plain` (the recipe) and `trivial_augment`
(augment.policy: {kind: trivial_augment}), both with {name: ema, decay: --decay, warmup: true, validate: both}: the
EMA only watches, so one run gives the trained weights' accuracy and the average's (ema_accuracy) on the same
trajectory, and their difference is paired. Printed: the last epoch's accuracy of each run, then per dataset and
variant the mean and sample standard deviation over the seeds of the accuracy without and with the EMA and of their
difference, and the median seconds per training epoch (every epoch after the first) with the policy's ratio to the
plain recipe's. Written to WORK/results.csv. Accuracy does not depend on machine load; the seconds do, so read them
only from an otherwise idle machine. Toy check: --seeds 0 --demo-epochs 1 --fashion-epochs 1 --train-per-class 30
--valid-per-class 10 --fashion-bs 64.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from bench_common import table

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
POLICY = "augment.policy={kind: trivial_augment}"


def fashion_subset(source: Path, target: Path, per_class: dict[str, int]) -> Path:
    """target/{train,valid}/<class>/: the first per_class[split] files of each class of `source` (hard links)."""
    if not (source / "train").is_dir():
        raise SystemExit(f"{source}/train not found: convert Fashion-MNIST with scripts/idx_to_folder.py first")
    for split, count in per_class.items():
        for folder in sorted((source / split).iterdir()):
            files = sorted(folder.glob("*.png"))[:count]
            out = target / split / folder.name
            out.mkdir(parents=True, exist_ok=True)
            for file in files:
                if not (out / file.name).exists():
                    try:
                        os.link(file, out / file.name)
                    except OSError:  # another file system: copy
                        shutil.copy2(file, out / file.name)
    return target


def epoch_seconds(run: Path) -> float:
    """Median training-epoch seconds of a run, leaving out the first epoch (start-up, resident loading)."""
    with open(run / "metrics.csv", newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    return statistics.median(seconds[1:] or seconds)


def last_row(run: Path) -> dict[str, str]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))[-1]


def mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def _datasets(args: argparse.Namespace, work: Path) -> dict[str, tuple[Path, list[str]]]:
    """Each dataset's config and the overrides that cut it to this benchmark's size."""
    chosen: dict[str, tuple[Path, list[str]]] = {}
    if "demo" in args.datasets:
        item = round(1.5 * args.demo_size)
        chosen["demo"] = (
            CONFIGS / "demo.yaml",
            [
                f"train.stages.0.epochs={args.demo_epochs}",
                f"augment.size={args.demo_size}",
                f"data.item_tfm={{kind: resize, size: {item}, method: crop}}",
            ],
        )
    if "fashion" in args.datasets:
        subset = fashion_subset(
            args.fashion, work / "fashion-subset", {"train": args.train_per_class, "valid": args.valid_per_class}
        )
        chosen["fashion"] = (
            CONFIGS / "fashion_mnist.yaml",
            [f"data.path={subset}", f"train.stages.0.epochs={args.fashion_epochs}", f"data.bs={args.fashion_bs}"],
        )
    return chosen


def summary_rows(frame: pd.DataFrame) -> list[list[str]]:
    rows = []
    for (dataset, variant), group in frame.groupby(["dataset", "variant"], sort=False):
        plain = frame[(frame["dataset"] == dataset) & (frame["variant"] == "plain")]["seconds"]
        cost = statistics.median(group["seconds"]) / statistics.median(plain) if len(plain) else float("nan")
        rows.append(
            [
                str(dataset),
                str(variant),
                mean_sd(group["accuracy"].tolist()),
                mean_sd(group["ema_accuracy"].tolist()),
                mean_sd((group["ema_accuracy"] - group["accuracy"]).tolist()),
                f"{statistics.median(group['seconds']):.1f}",
                f"{cost:.2f}x",
            ]
        )
    return rows


def main() -> None:
    from imgcls.report.console import Console
    from imgcls.spec.load import load_spec
    from imgcls.train.run import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=["demo", "fashion"], default=["demo", "fashion"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demo-epochs", type=int, default=20)
    parser.add_argument("--demo-size", type=int, default=64, help="augment.size of the demo")
    parser.add_argument("--fashion-epochs", type=int, default=4)
    parser.add_argument("--fashion", type=Path, default=Path("/tmp/fmnist"), help="scripts/idx_to_folder.py output")
    parser.add_argument("--train-per-class", type=int, default=250)
    parser.add_argument("--valid-per-class", type=int, default=100)
    parser.add_argument("--fashion-bs", type=int, default=128)
    parser.add_argument("--decay", type=float, default=0.999, help="the EMA's decay (with timm's warm-up)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the subset and the runs (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="imgcls-ema-policy-"))
    work.mkdir(parents=True, exist_ok=True)
    ema = f"{{name: ema, decay: {args.decay}, warmup: true, validate: both}}"
    callbacks = f"callbacks=[{ema}, {{name: save_best, monitor: accuracy}}]"
    results: list[dict[str, Any]] = []
    for dataset, (config, sized) in _datasets(args, work).items():
        for variant, extra in (("plain", []), ("trivial_augment", [POLICY])):
            for seed in args.seeds:
                spec = load_spec(config, [*sized, *extra, callbacks, f"seed={seed}"])
                run = train(spec, work / f"{dataset}-{variant}-seed{seed}", console=Console(True, enabled=False))
                row = last_row(run)
                result = {
                    "dataset": dataset,
                    "variant": variant,
                    "seed": seed,
                    "accuracy": float(row["accuracy"]),
                    "ema_accuracy": float(row["ema_accuracy"]),
                    "seconds": epoch_seconds(run),
                }
                results.append(result)
                print(
                    f"{dataset:<8} {variant:<16} seed {seed}: accuracy {result['accuracy']:.4f}, "
                    f"ema_accuracy {result['ema_accuracy']:.4f}",
                    flush=True,
                )
    frame = pd.DataFrame(results)
    frame.to_csv(work / "results.csv", index=False, float_format="%.4f")
    header = ["dataset", "variant", "accuracy", "ema_accuracy", "ema - plain", "s/epoch (median)", "vs plain"]
    print(f"\nlast epoch, mean ± sd over {len(args.seeds)} seed(s):")
    print(table(summary_rows(frame), header))
    print(f"wrote {work / 'results.csv'}")


if __name__ == "__main__":
    main()
