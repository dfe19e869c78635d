"""How well `imgcls audit --labels` (or `--folds K`) finds wrong labels: precision at k on the demo dataset with
labels flipped.

    PYTHONPATH=. /work/main/.venv/bin/python benchmarks/label_audit_precision.py [--scale 1.0] [--flip 0.1]
        [--epochs 5] [--seed 0] [--folds K] [--work DIR]

The demo folder layout (demo:folder, 1,500 images at scale 1, generated under $IMGCLS_HOME if missing) is listed in
a CSV with --flip of ALL labels (training and validation) changed to another class at random, so the model also
trains on noisy labels. Without --folds, configs/demo.yaml is trained for --epochs on that CSV, then the run's
validation items are ranked by cleanlab (imgcls.evaluate.label_audit.audit_labels); k is the number of flipped
validation items. With --folds K, every item is ranked from K trainings of the same recipe for --epochs, each
holding one stratified fold out (audit_labels_folds, what `imgcls audit --folds K --fold-epochs E` runs); k is the
number of flipped items of the whole set. Printed: precision at k (the share of the k most suspect items that
really were flipped), and the precision and recall of cleanlab's find_label_issues. A measurement of ranking
quality, not a timing; toy check: `--scale 0.05 --epochs 1` (with or without `--folds 3`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from imgcls.data.demo import CLASSES, ensure_demo
from imgcls.evaluate.label_audit import LabelAudit, audit_labels, audit_labels_folds
from imgcls.report.console import Console
from imgcls.spec.load import load_spec
from imgcls.train.run import train

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def flipped_csv(root: Path, flip: float, seed: int, out: Path) -> tuple[set[str], set[str]]:
    """out: fname (relative to root), label (flipped for `flip` of the rows), is_valid; returns the flipped
    validation items and all flipped items."""
    rng = np.random.default_rng(seed)
    files = sorted(root.glob("*/*/*.jpg"))
    chosen = set(rng.choice(len(files), size=round(flip * len(files)), replace=False).tolist())
    rows, flipped, valid = [], set(), set()
    for number, file in enumerate(files):
        relative = file.relative_to(root).as_posix()
        label = file.parent.name
        if number in chosen:
            others = [c for c in CLASSES if c != label]
            label = others[int(rng.integers(len(others)))]
            flipped.add(relative)
            if file.parent.parent.name == "valid":
                valid.add(relative)
        rows.append({"fname": relative, "label": label, "is_valid": file.parent.parent.name == "valid"})
    pd.DataFrame(rows).to_csv(out, index=False)
    return valid, flipped


def report(audit: LabelAudit, flipped: set[str], what: str) -> None:
    k = len(flipped)
    top = {s.item for s in audit.suspects[:k]}
    flagged = {s.item for s in audit.issues}
    print(f"{len(audit.suspects)} {what} ranked, {k} of them flipped")
    if k == 0:
        print("no ranked label was flipped: use a larger --scale or --flip")
        return
    print(f"precision at k={k}: {len(top & flipped) / k:.3f}")
    print(
        f"find_label_issues: {len(flagged)} flagged, precision {len(flagged & flipped) / max(len(flagged), 1):.3f}, "
        f"recall {len(flagged & flipped) / k:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="demo size (1.0: 1,500 images)")
    parser.add_argument("--flip", type=float, default=0.1, help="share of labels flipped")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the demo recipe")
    parser.add_argument("--seed", type=int, default=0, help="which labels are flipped")
    parser.add_argument("--folds", type=int, default=None, help="rank every item by K-fold cross-validation")
    parser.add_argument("--work", type=Path, default=None, help="folder for the CSV and the run (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="imgcls-label-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    path = "demo:folder" if args.scale == 1.0 else f"demo:folder@{args.scale:g}"
    root = ensure_demo("folder", scale=args.scale)
    flipped_valid, flipped = flipped_csv(root, args.flip, args.seed, work / "labels.csv")
    overrides = [
        f"data.path={path}",
        f"data.items={{kind: csv, csv: {work / 'labels.csv'}, path_col: fname}}",
        "data.labels={kind: column, column: label}",
        "data.split={kind: column, column: is_valid}",
        f"train.stages.0.epochs={args.epochs}",
    ]
    print(f"{len(flipped)} labels flipped ({args.flip:.0%} of all, seed {args.seed})")
    spec = load_spec(CONFIG, overrides)
    if args.folds is None:
        run = train(spec, work / "run", quiet=True)
        report(audit_labels(run), flipped_valid, "validation items")
        print(f"run: {run}")
        return
    console = Console(quiet=True)
    audit = audit_labels_folds(spec, args.folds, work / "folds", args.epochs, console)
    report(audit, flipped, f"items ({args.folds}-fold cross-validation, {args.epochs} epochs per fold)")
    print(f"fold runs: {work / 'folds'}")


if __name__ == "__main__":
    main()
