"""How well `imgcls audit --labels` finds wrong labels: precision at k on the demo dataset with labels flipped.

    PYTHONPATH=. /work/main/.venv/bin/python benchmarks/label_audit_precision.py [--scale 1.0] [--flip 0.1]
        [--epochs 5] [--seed 0] [--work DIR]

The demo folder layout (demo:folder, 1,500 images at scale 1, generated under $IMGCLS_HOME if missing) is listed in
a CSV with --flip of ALL labels (training and validation) changed to another class at random, so the model also
trains on noisy labels. configs/demo.yaml is trained for --epochs on that CSV, then the run's validation items are
ranked by cleanlab (imgcls.evaluate.label_audit.audit_labels). Printed: precision at k, where k is the number of
flipped validation items (the share of the k most suspect items that really were flipped), and the precision and
recall of cleanlab's find_label_issues. A measurement of ranking quality, not a timing; toy check:
`--scale 0.05 --epochs 1`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from imgcls.data.demo import CLASSES, ensure_demo
from imgcls.evaluate.label_audit import audit_labels
from imgcls.spec.load import load_spec
from imgcls.train.run import train

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def flipped_csv(root: Path, flip: float, seed: int, out: Path) -> set[str]:
    """out: fname (relative to root), label (flipped for `flip` of the rows), is_valid; returns the flipped
    validation items."""
    rng = np.random.default_rng(seed)
    files = sorted(root.glob("*/*/*.jpg"))
    chosen = set(rng.choice(len(files), size=round(flip * len(files)), replace=False).tolist())
    rows, flipped = [], set()
    for number, file in enumerate(files):
        relative = file.relative_to(root).as_posix()
        label = file.parent.name
        if number in chosen:
            others = [c for c in CLASSES if c != label]
            label = others[int(rng.integers(len(others)))]
            if file.parent.parent.name == "valid":
                flipped.add(relative)
        rows.append({"fname": relative, "label": label, "is_valid": file.parent.parent.name == "valid"})
    pd.DataFrame(rows).to_csv(out, index=False)
    return flipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="demo size (1.0: 1,500 images)")
    parser.add_argument("--flip", type=float, default=0.1, help="share of labels flipped")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the demo recipe")
    parser.add_argument("--seed", type=int, default=0, help="which labels are flipped")
    parser.add_argument("--work", type=Path, default=None, help="folder for the CSV and the run (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="imgcls-label-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    path = "demo:folder" if args.scale == 1.0 else f"demo:folder@{args.scale:g}"
    flipped = flipped_csv(ensure_demo("folder", scale=args.scale), args.flip, args.seed, work / "labels.csv")
    overrides = [
        f"data.path={path}",
        f"data.items={{kind: csv, csv: {work / 'labels.csv'}, path_col: fname}}",
        "data.labels={kind: column, column: label}",
        "data.split={kind: column, column: is_valid}",
        f"train.stages.0.epochs={args.epochs}",
    ]
    run = train(load_spec(CONFIG, overrides), work / "run", quiet=True)
    audit = audit_labels(run)
    k = len(flipped)
    top = {s.item for s in audit.suspects[:k]}
    flagged = {s.item for s in audit.issues}
    print(
        f"{len(audit.suspects)} validation items, {k} flipped ({args.flip:.0%} of all labels flipped, seed {args.seed})"
    )
    if k == 0:
        print("no validation label was flipped: use a larger --scale or --flip")
        return
    print(f"precision at k={k}: {len(top & flipped) / k:.3f}")
    print(
        f"find_label_issues: {len(flagged)} flagged, precision {len(flagged & flipped) / max(len(flagged), 1):.3f}, "
        f"recall {len(flagged & flipped) / k:.3f}"
    )
    print(f"run: {run}")


if __name__ == "__main__":
    main()
