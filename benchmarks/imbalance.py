"""Class imbalance: minority-class recall and macro F1 with and without the corrections, on the demo shapes with one
class cut to 10% of the others in training.

    PYTHONPATH=. python benchmarks/imbalance.py [--scale 1.0] [--minority ring] [--keep 0.1] [--epochs 20]
        [--size 64] [--item-size 96] [--seeds 0 1 2] [--variants none class_weights balanced focal] [--work DIR]

The demo folder layout (demo:folder at --scale: 240 training and 60 validation images per class at 1.0, generated
under $IMGCLS_HOME if missing) is listed in a CSV in which the --minority class keeps --keep of its training images
(the first ones by name) and every other class all of them. Validation stays balanced, so the minority's recall is
measured on as many images as any other class's. Each variant trains configs/demo.yaml (20 epochs at 64 px from
96 px crops, unless --epochs, --size and --item-size say otherwise) with one change:

    none           as configs/demo.yaml is
    class_weights  train.loss.class_weights: auto       (N / (C * n_c): the minority weighs 10x any other class)
    balanced       data.sampler: balanced               (every class drawn with probability 1/5)
    focal          train.loss: {name: focal, gamma: 2}

once per seed (the spec's seed: weight initialisation, data order, augmentation). The last epoch's weights are
evaluated on the validation set: the minority's recall and precision, macro F1, balanced accuracy and accuracy,
printed per run and as mean and sample standard deviation over the seeds (a markdown table for BENCHMARKS.md), and
written to WORK/results.csv. A measurement of accuracy, not a timing. Toy check: --scale 0.05 --epochs 1
--seeds 0.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from bench_common import table

from imgcls.data.demo import CLASSES, ensure_demo

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
VARIANTS: dict[str, list[str]] = {
    "none": [],
    "class_weights": ["train.loss.class_weights=auto"],
    "balanced": ["data.sampler=balanced"],
    "focal": ["train.loss={name: focal, gamma: 2}"],
}
SCORES = ("minority_recall", "minority_precision", "f1_macro", "balanced_accuracy", "accuracy")


def imbalanced_csv(root: Path, minority: str, keep: float, out: Path) -> dict[str, int]:
    """out: fname (relative to root), label, is_valid, with only `keep` of the minority's training images;
    returns the training counts."""
    rows = []
    for split in ("train", "valid"):
        for label in CLASSES:
            files = sorted((root / split / label).glob("*.jpg"))
            if split == "train" and label == minority:
                files = files[: max(1, round(keep * len(files)))]
            rows += [
                {"fname": f.relative_to(root).as_posix(), "label": label, "is_valid": split == "valid"} for f in files
            ]
    frame = pd.DataFrame(rows)
    frame.to_csv(out, index=False)
    train = frame[~frame["is_valid"]]
    return {label: int((train["label"] == label).sum()) for label in CLASSES}


def evaluate_run(run: Path, minority: str) -> dict[str, float]:
    """The last checkpoint on the validation set: the minority's recall and precision, and the macro scores."""
    from imgcls.evaluate.load import load_run
    from imgcls.targets.category import confusion_matrix, per_class_report
    from imgcls.train.evaluation import evaluate
    from imgcls.train.metrics import accuracy, balanced_accuracy, f1_macro

    loaded = load_run(run, "last")
    predictions = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    outputs, targets = predictions.outputs, predictions.targets.long()
    vocab = list(loaded.target.vocab)
    matrix = confusion_matrix(targets.numpy(), outputs.argmax(dim=-1).numpy(), len(vocab))
    report = per_class_report(matrix, vocab).set_index("class")
    return {
        "minority_recall": float(report.loc[minority, "recall"]),
        "minority_precision": float(report.loc[minority, "precision"]),
        "f1_macro": f1_macro(outputs, targets, 0.5),
        "balanced_accuracy": balanced_accuracy(outputs, targets),
        "accuracy": accuracy(outputs, targets),
    }


def mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    from imgcls.report.console import Console
    from imgcls.spec.load import load_spec
    from imgcls.train.run import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="demo size (1.0: 300 images per class)")
    parser.add_argument("--minority", choices=CLASSES, default="ring", help="the class cut down in training")
    parser.add_argument("--keep", type=float, default=0.1, help="share of the minority's training images kept")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the demo recipe")
    parser.add_argument("--size", type=int, default=64, help="augment.size")
    parser.add_argument("--item-size", type=int, default=96, help="the item transform's crop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=None, help="folder for the CSV and the runs (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="imgcls-imbalance-"))
    work.mkdir(parents=True, exist_ok=True)
    root = ensure_demo("folder", scale=args.scale)
    counts = imbalanced_csv(root, args.minority, args.keep, work / "labels.csv")
    print(
        f"training counts: {counts}; validation balanced; {args.epochs} epoch(s) at {args.size} px; seeds {args.seeds}"
    )
    common = [
        f"data.path={'demo:folder' if args.scale == 1.0 else f'demo:folder@{args.scale:g}'}",
        f"data.items={{kind: csv, csv: {work / 'labels.csv'}, path_col: fname}}",
        "data.labels={kind: column, column: label}",
        "data.split={kind: column, column: is_valid}",
        f"train.stages.0.epochs={args.epochs}",
        f"augment.size={args.size}",
        f"data.item_tfm={{kind: resize, size: {args.item_size}, method: crop}}",
        "train.metrics=[accuracy, f1_macro, balanced_accuracy]",
    ]
    results: list[dict[str, Any]] = []
    for variant in args.variants:
        for seed in args.seeds:
            spec = load_spec(CONFIG, [*common, *VARIANTS[variant], f"seed={seed}"])
            run = train(spec, work / f"{variant}-seed{seed}", console=Console(True, enabled=False))
            scores = evaluate_run(run, args.minority)
            results.append({"variant": variant, "seed": seed, **scores})
            print(f"{variant:<14} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    frame = pd.DataFrame(results)
    frame.to_csv(work / "results.csv", index=False, float_format="%.4f")
    rows = [[v, *(mean_sd(frame[frame["variant"] == v][s].tolist()) for s in SCORES)] for v in args.variants]
    print(f"\nmean ± sd over {len(args.seeds)} seed(s), minority '{args.minority}' at {counts[args.minority]} images:")
    print(table(rows, ["variant", *SCORES]))
    print(f"wrote {work / 'results.csv'}")


if __name__ == "__main__":
    main()
