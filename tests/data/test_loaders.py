"""Datasets, batches and samplers: shuffling, dropping, collate errors, bad files, reproducibility."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image

from imgcls.data.datablock import build_data
from imgcls.data.loaders import BalancedBatchSampler, Collate, EpochBatchSampler, check_batch, make_loader
from imgcls.errors import DataError
from imgcls.spec import load_spec


def test_train_sampler_shuffles_per_epoch_and_drops_the_last_partial_batch() -> None:
    sampler = EpochBatchSampler(10, 3, train=True, seed=1)
    epoch0 = list(sampler)
    assert len(epoch0) == 3 and all(len(b) == 3 for b in epoch0)
    sampler.set_epoch(1)
    epoch1 = [p for b in sampler for p, _ in b]
    assert epoch1 != [p for b in epoch0 for p, _ in b]
    assert all(epoch == 1 for b in sampler for _, epoch in b)


def test_valid_sampler_keeps_every_item_in_order() -> None:
    sampler = EpochBatchSampler(10, 3, train=False, seed=1)
    positions = [p for b in sampler for p, _ in b]
    assert positions == list(range(10)) and len(sampler) == 4


def test_sharded_valid_sampler_covers_each_item_exactly_once() -> None:
    shards = [
        [p for b in EpochBatchSampler(11, 4, train=False, seed=0, rank=r, world=3) for p, _ in b] for r in range(3)
    ]
    assert sorted(sum(shards, [])) == list(range(11))
    train = [{p for b in EpochBatchSampler(11, 2, train=True, seed=0, rank=r, world=3) for p, _ in b} for r in range(3)]
    assert not (train[0] & train[1]) and not (train[1] & train[2])


def test_resume_mid_epoch_continues_the_same_order() -> None:
    full = list(EpochBatchSampler(20, 4, train=True, seed=5))
    sampler = EpochBatchSampler(20, 4, train=True, seed=5)
    sampler.set_epoch(0, start_batch=2)
    assert list(sampler) == full[2:] and len(sampler) == 3


# An imbalanced training set: four classes of 200 items and one of 20 (10% of the others), in class order.
IMBALANCED = np.repeat(np.arange(5), [200, 200, 200, 200, 20])


def _balanced(seed: int = 3, rank: int = 0, world: int = 1, bs: int = 10) -> BalancedBatchSampler:
    weights = 1.0 / np.bincount(IMBALANCED)[IMBALANCED]  # what Category.balancing_weights gives
    return BalancedBatchSampler(weights, bs, seed, rank, world)


def _drawn(sampler: BalancedBatchSampler) -> list[int]:
    return [p for batch in sampler for p, _ in batch]


def test_balanced_sampler_draws_every_class_equally_often() -> None:
    sampler = _balanced()
    counts = []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        drawn = _drawn(sampler)
        assert len(drawn) == 820  # an epoch draws as many items as the set has (82 batches of 10)
        counts.append(np.bincount(IMBALANCED[drawn], minlength=5))
    # One epoch: 820 draws at p = 1/5 per class, sd sqrt(820 * 0.2 * 0.8) = 11.5 around 164; within 4 sd.
    assert (np.abs(counts[0] - 164) < 4 * 11.5).all(), counts[0]
    # Ten epochs pooled: Pearson's chi-square against equal frequencies, under 18.47 (4 dof, p = 0.001).
    total = np.sum(counts, axis=0)
    chi2 = float((((total - total.mean()) ** 2) / total.mean()).sum())
    assert chi2 < 18.47, (total, chi2)
    # The permutation of the same set draws the small class 20 times in 820.
    assert np.bincount(IMBALANCED[_drawn_plain()], minlength=5)[4] == 20


def _drawn_plain() -> list[int]:
    return [p for batch in EpochBatchSampler(820, 10, train=True, seed=3) for p, _ in batch]


def test_balanced_sampler_is_deterministic_per_epoch_and_resumable() -> None:
    first, again = _balanced(), _balanced()
    assert _drawn(first) == _drawn(again)
    again.set_epoch(1)
    assert _drawn(again) != _drawn(first)
    resumed = _balanced()
    resumed.set_epoch(0, start_batch=30)
    assert list(resumed) == list(_balanced())[30:] and len(resumed) == 52


def test_balanced_sampler_deals_one_draw_to_disjoint_rank_shards() -> None:
    whole = _drawn(_balanced(bs=5))
    shards = [_drawn(_balanced(rank=r, world=2, bs=5)) for r in range(2)]
    # Each rank gets every other position of the same 820 draws: disjoint slices that together are the draw.
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]
    assert len(shards[0]) == len(shards[1]) == 410


def test_balanced_sampler_rejects_weights_that_cannot_be_drawn() -> None:
    with pytest.raises(DataError, match="non-negative item weights"):
        BalancedBatchSampler(np.zeros(4), 2, seed=0)


def test_collate_names_two_different_sizes(tmp_path: Path) -> None:
    samples = [(np.zeros((10, 20, 3), np.uint8), np.array(0), 0), (np.zeros((12, 20, 3), np.uint8), np.array(1), 1)]
    batch = Collate(["a.jpg", "b.jpg"])(samples)  # type: ignore[arg-type]
    assert batch.error is not None
    for part in ("20x10 px (a.jpg)", "20x12 px (b.jpg)", "item_tfm"):
        assert part in batch.error
    with pytest.raises(DataError, match="different sizes"):
        check_batch(batch, "error", [])


def test_book_example_without_resize_gives_a_helpful_message(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    for index, size in enumerate([(50, 40), (60, 40), (50, 40)]):
        write_image(tmp_path / "train" / "a" / f"{index}.jpg", size)
        write_image(tmp_path / "valid" / "a" / f"{index}.jpg", size)
    write_image(tmp_path / "train" / "b" / "x.jpg", (50, 40))
    spec = load_spec(write_spec({"data": {"path": str(tmp_path), "split": {"kind": "grandparent"}, "num_workers": 0}}))
    data = build_data(spec.data)
    dataset = data.dataset(train=False, seed=0)
    loader = make_loader(dataset, EpochBatchSampler(len(dataset), 3, False, 0), 0, False)
    batch = next(iter(loader))
    with pytest.raises(DataError, match="add an item transform"):
        check_batch(batch, "error", [])


def test_bad_image_policy(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    for index in range(3):
        write_image(tmp_path / "train" / "a" / f"{index}.jpg", (20, 20))
        write_image(tmp_path / "train" / "b" / f"{index}.jpg", (20, 20))
        write_image(tmp_path / "valid" / "a" / f"{index}.jpg", (20, 20))
    (tmp_path / "train" / "a" / "0.jpg").write_bytes(b"")
    spec = load_spec(write_spec({"data": {"path": str(tmp_path), "split": {"kind": "grandparent"}}}))
    dataset = build_data(spec.data).dataset(train=True, seed=0)
    loader = make_loader(dataset, EpochBatchSampler(len(dataset), 6, False, 0), 2, False)  # two worker processes
    batch = next(iter(loader))
    assert len(batch) == 5 and len(batch.bad) == 1
    with pytest.raises(DataError) as caught:
        check_batch(batch, "error", [])
    assert "train/a/0.jpg" in str(caught.value) and "empty" in str(caught.value)
    skipped: list = []
    check_batch(batch, "skip", skipped)
    assert [item.path for item in skipped] == [str(tmp_path / "train" / "a" / "0.jpg")]


def test_batches_are_uint8_and_reproducible(
    tmp_path: Path, write_spec: Callable[..., Path], image_folder: Callable[..., Path]
) -> None:
    root = image_folder({"a": 4, "b": 4}, size=(60, 40))
    spec = load_spec(
        write_spec(
            {"data": {"path": str(root), "split": {"kind": "grandparent"}, "item_tfm": {"kind": "resize", "size": 32}}}
        )
    )
    data = build_data(spec.data)
    first = [data.dataset(train=True, seed=1)[(i, 0)] for i in range(4)]
    again = [data.dataset(train=True, seed=1)[(i, 0)] for i in range(4)]
    other_epoch = [data.dataset(train=True, seed=1)[(i, 1)] for i in range(4)]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other_epoch, strict=True))
    batch = Collate(data.dataset(True, 1).paths)(first)  # type: ignore[arg-type]
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (4, 3, 32, 32)
