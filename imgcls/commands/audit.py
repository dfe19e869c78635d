"""`imgcls audit`: print what the data audit found and what to do about it, and write its files.

The findings come from imgcls.data.audit (and imgcls.evaluate.label_audit with --labels); this module only
chooses the folder, writes the CSVs, JSON and PNGs, prints, and turns --fail-on into the exit code.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from imgcls.data.audit import (
    FINDINGS,
    HASH_BITS,
    HASH_SIZE,
    MAX_IMBALANCE,
    TINY_PX,
    DataAudit,
    DuplicateGroup,
    audit_data,
    example_pairs,
    thumbnail,
)
from imgcls.data.datablock import DataBundle, build_data
from imgcls.data.loaders import default_workers
from imgcls.errors import ImgclsError
from imgcls.report.audit_plots import ShownPair, plot_class_counts, plot_duplicate_pairs, plot_sizes
from imgcls.report.console import Console
from imgcls.report.plots import image_grid
from imgcls.spec.schema import Spec

if TYPE_CHECKING:
    from imgcls.evaluate.label_audit import LabelAudit

FAIL_EXIT_CODE = 5  # a finding named in --fail-on is present (0: none is; 1-4 and 130: imgcls's own errors)
DEFAULT_MAX_IMBALANCE = MAX_IMBALANCE  # --max-imbalance unless given
DEFAULT_K = 8
_OUTPUTS = (
    "audit.json",
    "unreadable.csv",
    "exact_duplicates.csv",
    "near_duplicates.csv",
    "leakage.csv",
    "class_counts.csv",
    "images.csv",
    "duplicates.png",
    "sizes.png",
    "class_counts.png",
    "suspect_labels.csv",
    "suspect_labels.png",
)


@dataclass(frozen=True)
class AuditOptions:
    out: Path | None = None
    labels_run: Path | None = None
    checkpoint: str = "best"
    fail_on: tuple[str, ...] = ()
    workers: int | None = None  # None: the spec's data.num_workers
    max_imbalance: float = DEFAULT_MAX_IMBALANCE
    k: int = DEFAULT_K
    quiet: bool = False
    folds: int | None = None  # suspect labels of every item by K-fold cross-validation of the spec's recipe
    fold_epochs: int | None = None  # every stage's epochs in the fold trainings (default: the spec's)


def parse_fail_on(text: str | None) -> tuple[str, ...]:
    """'leakage,unreadable' -> ('leakage', 'unreadable'); an unknown name raises ValueError listing the valid ones."""
    from imgcls.registry import did_you_mean

    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    for name in names:
        if name not in FINDINGS:
            raise ValueError(
                f"unknown finding '{name}'{did_you_mean(name, list(FINDINGS))}; valid: {', '.join(FINDINGS)}"
            )
    return names


def default_folder(spec: Spec) -> Path:
    """runs/<name>-audit: next to the runs, overwritten by the next audit of the same spec name."""
    return Path("runs") / f"{spec.name or 'run'}-audit"


# --- files ----------------------------------------------------------------------------------------------------


def _group_rows(audit: DataAudit, groups: list[DuplicateGroup]) -> list[dict[str, Any]]:
    rows = []
    for group in groups:
        for member, distance in zip(group.members, group.distances, strict=True):
            item, record = audit.items[member], audit.records[member]
            rows.append(
                {
                    "kind": group.kind,
                    "group": group.number,
                    "item": item.path,
                    "split": item.split,
                    "label": item.label,
                    "distance": distance,
                    "width": record.width,
                    "height": record.height,
                    "mode": record.mode,
                }
            )
    return rows


def _write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path, float_format: str | None = None) -> None:
    pd.DataFrame.from_records(rows, columns=columns).to_csv(path, index=False, float_format=float_format)


def _image_rows(audit: DataAudit) -> list[dict[str, Any]]:
    rows = []
    for index, item in audit.items.items():
        record = audit.records[index]
        rows.append(
            {
                "path": item.path,
                "split": item.split,
                "label": item.label,
                "mode": record.mode,
                "format": record.format,
                "width": record.width if record.readable else "",
                "height": record.height if record.readable else "",
                "aspect": round(record.width / record.height, 4) if record.readable and record.height else "",
                "exif_orientation": record.orientation if record.readable else "",
                "error": record.error,
            }
        )
    return rows


def write_tables(audit: DataAudit, folder: Path) -> list[str]:
    """One CSV per finding, every one written (with its header) even when empty, so scripts can rely on them."""
    unreadable = [
        {"item": audit.items[r.index].path, "split": audit.items[r.index].split, "label": audit.items[r.index].label}
        | {"reason": r.error}
        for r in audit.unreadable()
    ]
    _write_csv(unreadable, ["item", "split", "label", "reason"], folder / "unreadable.csv")
    exact = ["group", "item", "split", "label", "width", "height", "mode"]
    _write_csv(_group_rows(audit, audit.exact), exact, folder / "exact_duplicates.csv")
    near = ["group", "item", "split", "label", "distance", "width", "height"]
    _write_csv(_group_rows(audit, audit.near), near, folder / "near_duplicates.csv")
    leaks = ["kind", "group", "item", "split", "label", "distance"]
    _write_csv(_group_rows(audit, audit.leakage), leaks, folder / "leakage.csv")
    counts = audit.class_counts
    classes = (
        [] if counts is None else [{"label": n, "train": c, "valid": counts.valid[n]} for n, c in counts.train.items()]
    )
    _write_csv(classes, ["label", "train", "valid"], folder / "class_counts.csv")
    columns = ["path", "split", "label", "mode", "format", "width", "height", "aspect", "exif_orientation", "error"]
    _write_csv(_image_rows(audit), columns, folder / "images.csv")
    return [
        "unreadable.csv",
        "exact_duplicates.csv",
        "near_duplicates.csv",
        "leakage.csv",
        "class_counts.csv",
        "images.csv",
    ]


def _shown_pairs(audit: DataAudit, k: int) -> list[ShownPair]:
    shown = []
    for pair in example_pairs(audit, k):
        first, second = audit.items[pair.first], audit.items[pair.second]
        sizes = [f"{audit.records[i].width}x{audit.records[i].height}" for i in (pair.first, pair.second)]
        how = "same pixels" if pair.group.kind == "exact" else f"hashes {pair.distance} of {HASH_BITS} bits apart"
        caption = f"{'LEAK: ' if pair.leaks else ''}{pair.group.kind} group {pair.group.number}: {how}"
        shown.append(
            ShownPair(
                thumbnail(audit.root / first.path),
                thumbnail(audit.root / second.path),
                f"{first.split}/{first.label}\n{Path(first.path).name} ({sizes[0]})",
                f"{second.split}/{second.label}\n{Path(second.path).name} ({sizes[1]})",
                caption,
                pair.leaks,
            )
        )
    return shown


def write_plots(audit: DataAudit, folder: Path, k: int) -> list[str]:
    written = []
    pairs = _shown_pairs(audit, k)
    if pairs:
        plot_duplicate_pairs(pairs, folder / "duplicates.png")
        written.append("duplicates.png")
    readable = audit.readable()
    if readable:
        widths = np.array([r.width for r in readable], dtype=np.float64)
        heights = np.array([r.height for r in readable], dtype=np.float64)
        splits = [audit.items[r.index].split for r in readable]
        plot_sizes(widths, heights, splits, TINY_PX, folder / "sizes.png")
        written.append("sizes.png")
    if audit.class_counts is not None:
        plot_class_counts(audit.class_counts.train, audit.class_counts.valid, folder / "class_counts.png")
        written.append("class_counts.png")
    return written


def write_suspects(labels: LabelAudit, root: Path, folder: Path, k: int) -> list[str]:
    rows = [
        {"item": s.item, "given_label": s.given, "suggested_label": s.suggested, "score": s.score, "issue": s.issue}
        for s in labels.suspects
    ]
    columns = ["item", "given_label", "suggested_label", "score", "issue"]
    _write_csv(rows, columns, folder / "suspect_labels.csv", float_format="%.6f")
    top = labels.suspects[:k]
    if not top:
        return ["suspect_labels.csv"]
    images = [thumbnail(root / s.item) for s in top]
    titles = [
        f"{s.item}\ngiven {s.given}, suggested {s.suggested}\nscore {s.score:.3f}{' (issue)' if s.issue else ''}"
        for s in top
    ]
    ncols = int(np.ceil(np.sqrt(len(images))))
    image_grid(images, titles, folder / "suspect_labels.png", ncols=ncols, suptitle="most suspect labels (cleanlab)")
    return ["suspect_labels.csv", "suspect_labels.png"]


def _spread(spread: Any) -> dict[str, float]:
    return {"min": spread.minimum, "median": spread.median, "max": spread.maximum}


def audit_summary(audit: DataAudit, spec: Spec, options: AuditOptions, labels: LabelAudit | None) -> dict[str, Any]:
    """audit.json: every finding's count, the tables' totals, and how duplicates were found."""
    sizes = audit.sizes()
    counts = audit.class_counts
    present = audit.findings(options.max_imbalance)
    return {
        "spec": spec.name,
        "data_path": spec.data.path,
        "root": str(audit.root),
        "counts": audit.counts(),
        "findings": present,
        "fail_on": list(options.fail_on),
        "failed": [name for name in options.fail_on if name in present],
        "duplicates": {
            "exact": "BLAKE2b-128 of the decoded RGB pixels and their size",
            "near": f"imagehash phash + dhash, hash_size {HASH_SIZE} ({HASH_BITS} bits), summed Hamming distance",
            "near_threshold_bits": audit.threshold,
        },
        "modes": audit.modes(),
        "formats": audit.formats(),
        "sizes": {
            "width": _spread(sizes.width),
            "height": _spread(sizes.height),
            "aspect": _spread(sizes.aspect),
            "tiny_px": TINY_PX,
            "tiny": sizes.tiny,
        },
        "class_counts": None
        if counts is None
        else {"train": counts.train, "valid": counts.valid, "imbalance": counts.imbalance},
        "max_imbalance": options.max_imbalance,
        "labels": None
        if labels is None
        else {
            "run": str(labels.run),
            "checkpoint": str(labels.checkpoint),
            "method": f"cleanlab {labels.method} scores, find_label_issues",
            "items": len(labels.suspects),
            "issues": len(labels.issues),
            "folds": labels.folds,
            "fold_runs": [str(run) for run in labels.fold_runs],
            "fold_epochs": options.fold_epochs,
        },
    }


# --- the console ----------------------------------------------------------------------------------------------


def _classes_line(audit: DataAudit) -> str:
    counts = audit.class_counts
    if counts is None:
        return "none (not a category or multi-label target)"
    shown = list(counts.train.items())[:12]
    listed = ", ".join(f"{name} {count}/{counts.valid[name]}" for name, count in shown)
    more = f", ... ({len(counts.train)} in class_counts.csv)" if len(counts.train) > len(shown) else ""
    ratio = "n/a" if counts.imbalance is None else f"{counts.imbalance:.2f}"
    return f"{len(counts.train)} (train/valid): {listed}{more}; imbalance {ratio} (largest / smallest training class)"


def print_findings(console: Console, audit: DataAudit) -> None:
    counts, sizes = audit.counts(), audit.sizes()
    leaked, exact = audit.leaked_valid()
    modes = ", ".join(f"{mode} {count}" for mode, count in audit.modes().items()) or "-"
    formats = ", ".join(f"{name or '?'} {count}" for name, count in audit.formats().items()) or "-"
    w, h, a = sizes.width, sizes.height, sizes.aspect
    lines = [
        ("unreadable", f"{counts['unreadable']} file(s)"),
        (
            "exact duplicates",
            f"{len(audit.exact)} group(s), {counts['exact_duplicate_items']} items (same decoded pixels)",
        ),
        (
            "near duplicates",
            f"{len(audit.near)} group(s), {counts['near_duplicate_items']} items (phash + dhash, {HASH_BITS} bits, "
            f"at most {audit.threshold} bits apart)",
        ),
        ("leakage", f"{len(leaked)} validation item(s) duplicate training items ({len(exact)} exactly)"),
        ("label conflicts", f"{counts['conflicting_label_groups']} duplicate group(s) with different labels"),
        ("modes", f"{modes} (as stored; every image is converted to RGB when read)"),
        ("formats", formats),
        (
            "sizes",
            f"width {w.minimum:.0f}..{w.maximum:.0f} px (median {w.median:.0f}), "
            f"height {h.minimum:.0f}..{h.maximum:.0f} (median {h.median:.0f}), "
            f"aspect {a.minimum:.2f}..{a.maximum:.2f} (median {a.median:.2f}); "
            f"{sizes.tiny} under {TINY_PX} px; {counts['exif_rotated']} EXIF-rotated",
        ),
        ("classes", _classes_line(audit)),
    ]
    for name, text in lines:
        console.info(f"{name:<18}{text}")


def verdict(audit: DataAudit, max_imbalance: float, labels: LabelAudit | None) -> list[str]:
    """What to do, one line per finding, most urgent first."""
    counts = audit.counts()
    leaked, exact = audit.leaked_valid()
    lines = []
    if leaked:
        lines.append(
            f"{len(leaked)} validation image(s) duplicate training images (leakage; {len(exact)} exact, "
            f"{len(leaked) - len(exact)} near): remove them or move each group to one split; see leakage.csv"
        )
    if counts["unreadable"]:
        lines.append(
            f"{counts['unreadable']} file(s) cannot be read: delete or replace them, or set data.on_bad_image: skip; "
            "see unreadable.csv"
        )
    if counts["conflicting_label_groups"]:
        lines.append(
            f"{counts['conflicting_label_groups']} duplicate group(s) have different labels: one label of each is "
            "likely wrong; check them in exact_duplicates.csv / near_duplicates.csv"
        )
    if audit.exact:
        lines.append(
            f"{len(audit.exact)} group(s) of exact duplicates ({counts['exact_duplicate_extra_copies']} extra "
            "copies): keep one file of each; see exact_duplicates.csv"
        )
    if audit.near:
        lines.append(
            f"{len(audit.near)} group(s) of near duplicates (resized or re-encoded copies): look at duplicates.png "
            "and keep one of each; see near_duplicates.csv"
        )
    lines.extend(_balance_lines(audit, max_imbalance))
    if labels is not None and labels.issues:
        lines.append(
            f"{len(labels.issues)} of {len(labels.suspects)} labels of the {labels.scope} look wrong (cleanlab): "
            "check the top of suspect_labels.csv and suspect_labels.png, fix the labels that are wrong"
        )
    return lines


def _balance_lines(audit: DataAudit, max_imbalance: float) -> list[str]:
    lines = []
    ratio = audit.class_counts.imbalance if audit.class_counts is not None else None
    if ratio is not None and ratio > max_imbalance:
        lines.append(
            f"the largest training class has {ratio:.1f}x the items of the smallest (more than {max_imbalance:g}x): "
            "judge per-class recall (imgcls interpret), not accuracy alone, and collect more of the rare classes"
        )
    tiny = audit.sizes().tiny
    if tiny:
        lines.append(
            f"{tiny} image(s) under {TINY_PX} px on a side: check they are not icons or thumbnails; see images.csv"
        )
    return lines


def _all_clear(audit: DataAudit, labels: LabelAudit | None) -> str:
    text = "no problems found: no unreadable files, duplicates or leakage"
    if audit.class_counts is not None and audit.class_counts.imbalance is not None:
        text += f"; classes balanced ({audit.class_counts.imbalance:.2f})"
    if labels is not None:
        text += f"; cleanlab flags no label of the {labels.scope}"
    return text


def _print_suspects(console: Console, labels: LabelAudit, k: int) -> None:
    console.info(
        f"{'suspect labels':<18}{len(labels.issues)} of {len(labels.suspects)} {labels.scope} flagged by cleanlab "
        f"(find_label_issues; ranked by {labels.method}) with {labels.checkpoint}"
    )
    for suspect in labels.suspects[:k]:
        flag = "  issue" if suspect.issue else ""
        console.info(
            f"  {suspect.item}: given {suspect.given}, suggested {suspect.suggested}, score {suspect.score:.3f}{flag}"
        )


# --- the command ----------------------------------------------------------------------------------------------


def _workers(spec: Spec, options: AuditOptions) -> int:
    if options.workers is not None:
        return options.workers
    return default_workers() if spec.data.num_workers == "auto" else spec.data.num_workers


def _scan(data: DataBundle, workers: int, console: Console) -> DataAudit:
    console.start_bar(len(data.split.train) + len(data.split.valid), "audit")
    try:
        return audit_data(data, workers, progress=console.advance_bar)
    finally:
        console.stop_bar()


def _fold_labels(spec: Spec, options: AuditOptions, folder: Path, console: Console) -> LabelAudit:
    from imgcls.evaluate.label_audit import audit_labels_folds  # training: only when asked

    assert options.folds is not None
    for old in folder.glob("fold-*"):  # an earlier audit's fold runs: this audit's folds replace them
        if old.is_dir() and old.name.removeprefix("fold-").isdigit() and (old / "checkpoints").is_dir():
            shutil.rmtree(old)
    epochs = "the spec's epochs" if options.fold_epochs is None else f"{options.fold_epochs} epoch(s) per stage"
    console.info(f"suspect labels: {options.folds} trainings of the spec's recipe ({epochs}), one per held-out fold")
    return audit_labels_folds(spec, options.folds, folder, options.fold_epochs, console)


def _labels(spec: Spec, options: AuditOptions, folder: Path, console: Console) -> LabelAudit | None:
    if options.folds is not None:
        if options.labels_run is not None:
            raise ImgclsError(
                "--labels RUN and --folds K are two ways to rank the labels; give one",
                hint="--labels ranks a trained run's validation items, --folds every item by cross-validation",
            )
        return _fold_labels(spec, options, folder, console)
    if options.fold_epochs is not None:
        raise ImgclsError("--fold-epochs applies to --folds K only")
    if options.labels_run is None:
        return None
    from imgcls.evaluate.label_audit import audit_labels  # torch models and timm: only when asked

    labels = audit_labels(options.labels_run, options.checkpoint, console)
    if labels.data != spec.data:
        console.warn(
            f"{options.labels_run} was trained on other data settings than {spec.name or 'this spec'}'s; "
            "the suspect labels are about the run's own validation items"
        )
    return labels


def run_audit(spec: Spec, options: AuditOptions) -> int:
    """`imgcls audit`: scan, print, write; returns the exit code (FAIL_EXIT_CODE when --fail-on matches)."""
    console = Console(options.quiet)
    data = build_data(spec.data, options.quiet)
    workers = _workers(spec, options)
    console.info(
        f"audit: {spec.data.path} -> {data.items.root}: {len(data.split.train)} train / {len(data.split.valid)} "
        f"valid items, each decoded once ({f'{workers} worker processes' if workers else 'in this process'})"
    )
    audit = _scan(data, workers, console)
    folder = options.out or default_folder(spec)
    folder.mkdir(parents=True, exist_ok=True)
    labels = _labels(spec, options, folder, console)
    for name in _OUTPUTS:  # a previous audit's files would otherwise pass for this one's
        (folder / name).unlink(missing_ok=True)
    written = write_tables(audit, folder) + write_plots(audit, folder, options.k)
    if labels is not None:
        written += write_suspects(labels, data.items.root, folder, options.k)
    summary = audit_summary(audit, spec, options, labels)
    (folder / "audit.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_findings(console, audit)
    if labels is not None:
        _print_suspects(console, labels, options.k)
    lines = verdict(audit, options.max_imbalance, labels)
    console.info("verdict:")
    for line in lines or [_all_clear(audit, labels)]:
        console.info(f"  - {line}")
    console.info(f"wrote {folder}/: audit.json, {', '.join(written)}")
    if summary["failed"]:
        console.info(
            f"--fail-on {','.join(options.fail_on)}: {', '.join(summary['failed'])} found, exit code {FAIL_EXIT_CODE}"
        )
        return FAIL_EXIT_CODE
    return 0


__all__ = ["DEFAULT_K", "DEFAULT_MAX_IMBALANCE", "FAIL_EXIT_CODE", "AuditOptions", "parse_fail_on", "run_audit"]
