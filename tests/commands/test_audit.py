"""`imgcls audit` end to end: files and their columns, audit.json counts, the verdict, --fail-on exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from planted import EXPECTED, broken_folder, planted_folder
from typer.testing import CliRunner  # noqa: TID251 - the exit codes and messages a user sees

from imgcls.cli import app
from imgcls.commands.audit import FAIL_EXIT_CODE, parse_fail_on

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture(scope="module")
def planted_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted")
    root = planted_folder(folder / "images")
    spec = folder / "planted.yaml"
    spec.write_text(
        f"name: planted\ndata: {{path: {root}, split: {{kind: grandparent}}, num_workers: 0}}\n"
        "train: {stages: [{schedule: fit_one_cycle}]}\n"
    )
    return spec


def test_files_columns_and_counts(planted_spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    code, output = _invoke("audit", str(planted_spec), "--out", str(out))
    assert code == 0, output
    summary = json.loads((out / "audit.json").read_text())
    assert {key: summary["counts"][key] for key in EXPECTED} == EXPECTED
    assert summary["findings"] == ["leakage", "duplicates"] and summary["failed"] == []
    assert summary["duplicates"]["near_threshold_bits"] == 16
    columns = {
        "unreadable.csv": ["item", "split", "label", "reason"],
        "exact_duplicates.csv": ["group", "item", "split", "label", "width", "height", "mode"],
        "near_duplicates.csv": ["group", "item", "split", "label", "distance", "width", "height"],
        "leakage.csv": ["kind", "group", "item", "split", "label", "distance"],
        "class_counts.csv": ["label", "train", "valid"],
        "images.csv": ["path", "split", "label", "mode", "format", "width", "height", "aspect", "exif_orientation"]
        + ["error"],
    }
    for name, expected in columns.items():
        assert list(pd.read_csv(out / name).columns) == expected, name
    assert len(pd.read_csv(out / "images.csv")) == EXPECTED["items"]
    assert len(pd.read_csv(out / "exact_duplicates.csv")) == EXPECTED["exact_duplicate_items"]
    leakage = pd.read_csv(out / "leakage.csv")
    assert sorted(leakage.loc[leakage["split"] == "valid", "item"]) == [
        "valid/square/v_copy.jpg",
        "valid/square/v_resized.png",
    ]
    assert pd.read_csv(out / "class_counts.csv").to_dict("list") == {
        "label": ["circle", "square"],
        "train": [12, 12],
        "valid": [4, 6],
    }
    for png in ("duplicates.png", "sizes.png", "class_counts.png"):
        assert (out / png).stat().st_size > 1000
    assert "2 validation image(s) duplicate training images (leakage; 1 exact, 1 near)" in output
    assert "see leakage.csv" in output and "Traceback" not in output


@pytest.mark.parametrize(
    ("fail_on", "code"),
    [("leakage", FAIL_EXIT_CODE), ("duplicates", FAIL_EXIT_CODE), ("unreadable,imbalance", 0), ("", 0)],
)
def test_fail_on_exit_codes(planted_spec: Path, tmp_path: Path, fail_on: str, code: int) -> None:
    exit_code, output = _invoke("audit", str(planted_spec), "--out", str(tmp_path / "a"), "--fail-on", fail_on)
    assert exit_code == code, output
    summary = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert summary["failed"] == ([fail_on] if code else [])
    assert (f"exit code {FAIL_EXIT_CODE}" in output) == bool(code)


def test_fail_on_imbalance(image_folder: Callable[..., Path], write_spec: Callable[..., Path], tmp_path: Path) -> None:
    root = image_folder({"a": 4, "b": 1})
    spec = write_spec({"data": {"path": str(root), "split": {"kind": "grandparent"}, "num_workers": 0}})
    out = str(tmp_path / "a")
    assert _invoke("audit", str(spec), "--out", out, "--fail-on", "imbalance")[0] == FAIL_EXIT_CODE
    code, output = _invoke("audit", str(spec), "--out", out, "--fail-on", "imbalance", "--max-imbalance", "4")
    assert code == 0 and "imbalance 4.00" in output


def test_unreadable_files_fail_and_are_listed(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    broken_folder(tmp_path / "odd")
    spec = write_spec(
        {"data": {"path": str(tmp_path / "odd"), "split": {"kind": "random", "valid_pct": 0.25, "seed": 1}}}
    )
    code, output = _invoke(
        "audit", str(spec), "--out", str(tmp_path / "a"), "--fail-on", "unreadable", "--workers", "0"
    )
    assert code == FAIL_EXIT_CODE
    unreadable = pd.read_csv(tmp_path / "a" / "unreadable.csv")
    assert sorted(unreadable["item"]) == [
        "circle/text.jpg",
        "circle/truncated.jpg",
        "square/empty.jpg",
        "square/random.jpg",
    ]
    assert "4 file(s) cannot be read" in output and "data.on_bad_image: skip" in output
    modes = pd.read_csv(tmp_path / "a" / "images.csv")["mode"].value_counts(dropna=True).to_dict()
    assert modes == {"RGB": 5, "CMYK": 1, "L": 1, "I;16": 1, "P": 1, "RGBA": 1}


def test_unknown_fail_on_name_lists_the_valid_ones(planted_spec: Path, tmp_path: Path) -> None:
    code, output = _invoke("audit", str(planted_spec), "--out", str(tmp_path / "a"), "--fail-on", "leakage,leaks")
    assert code == 2
    assert "unknown finding 'leaks'" in output and "did you mean 'leakage'" in output
    assert "leakage, unreadable, duplicates, imbalance" in output and "Traceback" not in output
    assert not (tmp_path / "a").exists()  # refused before any work


def test_parse_fail_on() -> None:
    assert parse_fail_on(" leakage, unreadable ,") == ("leakage", "unreadable")
    assert parse_fail_on(None) == ()
    with pytest.raises(ValueError, match="valid: leakage, unreadable, duplicates, imbalance"):
        parse_fail_on("duplicate")


def test_default_folder_and_stale_files(planted_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "runs" / "planted-audit" / "suspect_labels.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an older audit\n")
    code, output = _invoke("audit", str(planted_spec), "-q")
    assert code == 0 and "wrote runs/planted-audit/" in output
    assert (tmp_path / "runs" / "planted-audit" / "audit.json").is_file() and not stale.exists()
