"""The commands end to end: exit codes, messages a person can act on, files written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from imgcls.cli import app

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_misspelt_key_exits_2_with_key_line_and_suggestion(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("data:\n  path: demo:folder\n  bss: 32\ntrain:\n  stages: [{schedule: fit}]\n")
    code, output = _invoke("train", str(spec))
    assert code == 2
    assert "bad.yaml:3" in output and "data.bss" in output and "did you mean 'bs'" in output
    assert "Traceback" not in output


def test_tune_with_a_misspelt_search_path_exits_2_with_its_line(tmp_path: Path) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text(
        "data: {path: demo:folder}\ntrain: {stages: [{schedule: fit_one_cycle}]}\n"
        "tune:\n  space:\n    train.stages.0.lr_maxx: {log_uniform: [1.0e-4, 1.0e-2]}\n"
    )
    code, output = _invoke("tune", str(spec), "--out", str(tmp_path / "study"))
    assert code == 2
    assert "t.yaml:5: train.stages.0.lr_maxx: unknown key 'lr_maxx' (did you mean 'lr_max'?)" in output
    assert "Traceback" not in output and not (tmp_path / "study").exists()


def test_spec_prints_every_default(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {path: demo:folder}\ntrain: {stages: [{schedule: fit_one_cycle}]}\n")
    code, output = _invoke("spec", str(spec), "--set", "data.bs=16")
    assert code == 0 and "bs: 16" in output and "max_warp: 0.2" in output and "pct_start: 0.25" in output


@pytest.mark.parametrize(
    ("layout", "data"),
    [
        ("folder", {"split": {"kind": "grandparent"}}),
        ("names", {"labels": {"kind": "regex", "pattern": r"^(.+)_\d+\.jpg$"}}),
        (
            "csv",
            {
                "items": {"kind": "csv", "csv": "labels.csv", "prefix": "images/"},
                "labels": {"kind": "column", "column": "label"},
                "split": {"kind": "column"},
            },
        ),
    ],
)
def test_summary_and_show_batch_on_each_layout(
    layout: str, data: dict[str, object], write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = write_spec(
        {
            "data": {"path": f"demo:{layout}@0.05", "item_tfm": {"kind": "resize", "size": 48}, **data},
            "augment": {"size": 32},
        }
    )
    code, output = _invoke("summary", str(spec))
    assert code == 0, output
    for part in ("vocab             5: circle, cross, ring, square, triangle", "item transform", "batch augment"):
        assert part in output
    out = tmp_path / "batch.png"
    code, output = _invoke("show-batch", str(spec), "--out", str(out), "--n", "4")
    assert code == 0, output
    assert Image.open(out).size[0] > 200


def test_real_world_files_are_reported_by_name(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(
        {
            "data": {"path": "demo:odd", "item_tfm": {"kind": "resize", "size": 48}, "num_workers": 0},
            "augment": {"size": 32},
        }
    )
    code, output = _invoke("summary", str(spec), "--check", "--bs", "16")
    assert code == 3
    assert "truncated.jpg" in output and "empty.jpg" in output and "2 unreadable" in output
    assert "Traceback" not in output
    code, output = _invoke("show-batch", str(spec), "--out", str(tmp_path / "odd.png"), "--n", "16")
    assert code == 0, output
    assert "cannot read" in output and "truncated.jpg" in output


def test_mixed_sizes_without_resize_explain_the_fix(write_spec: Callable[..., Path]) -> None:
    spec = write_spec({"data": {"path": "demo:names@0.05", "labels": {"kind": "regex", "pattern": r"^(.+)_\d+\.jpg$"}}})
    code, output = _invoke("summary", str(spec))
    assert code == 3
    assert "different sizes" in output and "data.item_tfm: {kind: resize, size: 460}" in output


def test_train_and_resume_from_the_command_line(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    from conftest import tiny_spec

    spec = write_spec(tiny_spec("demo:folder@0.05"))
    run = tmp_path / "run"
    code, output = _invoke("train", str(spec), "--out", str(run), "--quiet")
    assert code == 0, output
    assert "best checkpoint" in output and (run / "metrics.csv").is_file()
    code, output = _invoke("train", str(spec), "--out", str(run))
    assert code == 4 and "--resume" in output  # refuses to write over a run
    code, output = _invoke("train", "--resume", str(run), "--quiet")
    assert code == 0, output  # a finished run resumes to the end at once
    assert len((run / "metrics.csv").read_text().splitlines()) == 3


def test_run_folders_are_numbered(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgcls.spec import load_spec
    from imgcls.train.folders import start_run
    from imgcls.train.runtime import Runtime

    monkeypatch.chdir(tmp_path)
    spec = load_spec(write_spec({"name": "exp", "data": {"path": "x"}}))
    runtime = Runtime(device=__import__("torch").device("cpu"), precision="fp32", channels_last=False, compile=False)
    first, second = start_run(spec, None, runtime), start_run(spec, None, runtime)
    assert (first, second) == (Path("runs/exp"), Path("runs/exp-2"))
