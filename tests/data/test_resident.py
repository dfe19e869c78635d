"""The resident tensor kept in the presize cache: a second load reads it instead of decoding, equal to the
first; a changed file, target or transform is a new key."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_spec, write_image

import imgcls.data.resident as resident_module
from imgcls.data.datablock import build_data
from imgcls.data.resident import load_resident, resident_key
from imgcls.spec.load import spec_from_dict
from imgcls.targets import EncodedTargets


def _dataset(root: Path, size: int = 40) -> object:
    raw = tiny_spec(str(root))
    raw["data"]["item_tfm"] = {"kind": "resize", "size": size, "method": "squish"}
    return build_data(spec_from_dict(raw).data).dataset(train=True, seed=0, randomized=False)


def test_a_second_load_reads_the_stored_tensor(
    image_folder: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = image_folder({"a": 4, "b": 4})  # type: ignore[operator]
    dataset = _dataset(root)
    first = load_resident(dataset, torch.device("cpu"), 0, "error", store=tmp_path / "store")  # type: ignore[arg-type]
    assert len(list((tmp_path / "store").glob("resident-*.safetensors"))) == 1

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(resident_module, "_decode", no_decoding)
    second = load_resident(dataset, torch.device("cpu"), 0, "error", store=tmp_path / "store")  # type: ignore[arg-type]
    assert torch.equal(first.images, second.images) and torch.equal(first.targets, second.targets)
    assert torch.equal(first.indices, second.indices) and second.images.is_contiguous(memory_format=torch.channels_last)


def test_what_the_tensor_depends_on_is_in_its_key(image_folder: object) -> None:
    root = image_folder({"a": 4, "b": 4})  # type: ignore[operator]
    before = resident_key(_dataset(root))  # type: ignore[arg-type]
    assert resident_key(_dataset(root, size=32)) != before  # another item transform  # type: ignore[arg-type]
    path = next((root / "train" / "a").glob("*.jpg"))
    time.sleep(0.01)
    write_image(path, (48, 40), (1, 2, 3))
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    assert resident_key(_dataset(root)) != before  # a changed file  # type: ignore[arg-type]
    dataset = _dataset(root)
    after = resident_key(dataset)  # type: ignore[arg-type]
    encoded = dataset.targets  # type: ignore[attr-defined]
    dataset.targets = EncodedTargets(encoded.target, 1 - encoded.values)  # type: ignore[attr-defined]
    assert resident_key(dataset) != after  # the same files, other labels  # type: ignore[arg-type]
