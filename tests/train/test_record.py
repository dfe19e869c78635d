"""The run and export records: old records stay readable, new fields say what they hold."""

from __future__ import annotations

import pytest
from conftest import tiny_spec
from pydantic import ValidationError

from imgcls.spec.load import spec_from_dict
from imgcls.train.record import ExportRecord, RunRecord, TargetRecord


def _export(n_in: int) -> ExportRecord:
    raw = tiny_spec("demo:folder@0.02")
    raw["model"]["n_in"] = n_in
    spec = spec_from_dict(raw)
    target = TargetRecord(kind="multi_category", n_out=2, vocab=["a", "b"])
    record = RunRecord(kind="best", spec=spec.model_dump(mode="json"), target=target, size=(32, 32))
    return ExportRecord.from_run(record, spec, (0.3, 0.6), "sigmoid", "runs/x")


def test_a_grey_export_says_how_rgb_becomes_one_channel() -> None:
    grey, colour = _export(1), _export(3)
    assert grey.input["shape"] == ["batch", 1, 32, 32]
    assert "ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B as one channel" in grey.input["pixels"]
    assert "luma" not in colour.input["pixels"] and colour.input["shape"][1] == 3


def test_per_label_thresholds_round_trip_and_old_exports_read() -> None:
    record = _export(3)
    again = ExportRecord.model_validate_json(record.to_json())
    assert again.threshold == [0.3, 0.6] and again.decision() == (0.3, 0.6)
    old = record.model_dump(mode="json")
    old["threshold"] = 0.5
    del old["tta_augment"]
    previous = ExportRecord.model_validate(old)  # written before per-label thresholds and predict --tta
    assert previous.decision() == 0.5 and previous.tta_spec() is None
    assert again.tta_spec() == spec_from_dict(tiny_spec("demo:folder@0.02")).augment
    with pytest.raises(ValidationError, match="threshold"):
        ExportRecord.model_validate({**old, "threshold": "high"})
