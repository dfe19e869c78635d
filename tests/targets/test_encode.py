"""Target blocks: encoding, the vocab, and points scaled to [-1, 1] and back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from imgcls.errors import DataError
from imgcls.targets import TARGETS, EncodedTargets, target_from_record
from imgcls.targets.point import scale_points, unscale_points

TRAIN, VALID = np.array([0, 1, 2]), np.array([3])


def encode_targets(kind: str, labels: list[Any]) -> EncodedTargets:
    return TARGETS.get(kind).encode(labels, TRAIN, VALID)


def test_category_vocab_is_sorted_training_labels() -> None:
    encoded = encode_targets("category", ["dog", "cat", "dog", "cat"])
    assert encoded.target.vocab == ("cat", "dog") and encoded.values.tolist() == [1, 0, 1, 0]


def test_unknown_validation_label_is_named() -> None:
    with pytest.raises(DataError, match="'bird' \\(1\\)"):
        encode_targets("category", ["dog", "cat", "dog", "bird"])
    with pytest.raises(DataError, match="multi_category"):
        encode_targets("category", [["a"], ["b"], ["a"], ["b"]])


def test_multi_category_one_hot() -> None:
    encoded = encode_targets("multi_category", [["cat", "dog"], [], ["dog"], ["cat"]])
    assert encoded.target.vocab == ("cat", "dog") and encoded.target.n_out == 2
    assert encoded.values.tolist() == [[1, 1], [0, 0], [0, 1], [1, 0]]
    with pytest.raises(DataError, match="delimiter"):
        encode_targets("multi_category", ["cat dog", "dog", "cat", "dog"])


def test_regression_floats() -> None:
    encoded = encode_targets("regression", [1.5, 2, 3, 4])
    assert encoded.target.n_out == 1 and encoded.values[:, 0].tolist() == [1.5, 2, 3, 4]
    with pytest.raises(DataError, match="different lengths"):
        encode_targets("regression", [[1, 2], [1], [3, 4], [5, 6]])
    with pytest.raises(DataError, match="NaN"):
        encode_targets("regression", [1, float("nan"), 3, 4])


def test_points_shape_and_count() -> None:
    encoded = encode_targets("point", [[10, 20, 30, 40]] * 4)
    assert encoded.target.n_points == 2 and encoded.target.n_out == 4 and encoded.values.shape == (4, 2, 2)
    with pytest.raises(DataError, match="x y pairs"):
        encode_targets("point", [[1, 2, 3]] * 4)


def test_point_scaling_known_values_and_round_trip() -> None:
    size = (640, 480)  # width, height
    pixels = np.array([[0.0, 0.0], [640.0, 480.0], [320.0, 240.0], [160.0, 360.0]], dtype=np.float32)
    scaled = scale_points(pixels, size)
    assert np.allclose(scaled, [[-1, -1], [1, 1], [0, 0], [-0.5, 0.5]], atol=1e-6)
    assert np.allclose(unscale_points(scaled, size), pixels)


@pytest.mark.parametrize(
    ("kind", "labels"),
    [
        ("category", ["dog", "cat", "dog", "cat"]),
        ("multi_category", [["cat", "dog"], [], ["dog"], ["cat"]]),
        ("point", [[10, 20, 30, 40]] * 4),
        ("regression", [[1.0, 2.0]] * 4),
    ],
)
def test_a_block_round_trips_through_its_record(kind: str, labels: list[Any]) -> None:
    target = encode_targets(kind, labels).target
    again = target_from_record(target.to_record())
    assert again == target and type(again) is type(target) and again.n_out == target.n_out


def test_soft_targets_and_activations_by_kind() -> None:
    import torch

    category = encode_targets("category", ["a", "b", "c", "a"]).target
    assert category.soft_targets(torch.tensor([2, 0])).tolist() == [[0, 0, 1], [1, 0, 0]]
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    probs = category.activation(logits)
    assert torch.allclose(category.activation(category.inverse_activation(probs)), probs, atol=1e-6)
    multi = encode_targets("multi_category", [["a"], ["b"], ["a", "b"], []]).target
    assert torch.allclose(multi.activation(torch.zeros(1, 2)), torch.full((1, 2), 0.5))
    values = torch.tensor([[0.2, 0.9]])
    assert torch.allclose(multi.activation(multi.inverse_activation(values)), values, atol=1e-6)
    regression = encode_targets("regression", [[1.0]] * 4).target
    assert torch.equal(regression.activation(values), values) and torch.equal(
        regression.inverse_activation(values), values
    )


def test_class_weights_follow_the_inverse_frequency_formula() -> None:
    labels = ["a"] * 6 + ["b"] * 3 + ["c"]
    encoded = TARGETS.get("category").encode(labels, np.arange(10), np.array([], dtype=np.int64))
    weights = encoded.target.loss_weights(encoded.values)
    # N / (C * n_c) with N = 10, C = 3, n = (6, 3, 1): they average 1 over the training items
    assert weights == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert float((weights[encoded.values]).mean()) == pytest.approx(1.0)
    balancing = encoded.target.balancing_weights(encoded.values)
    assert balancing.tolist() == pytest.approx([1 / 6] * 6 + [1 / 3] * 3 + [1.0])  # each class sums to 1


def test_pos_weight_is_negatives_over_positives() -> None:
    labels = [["x", "y", "z"], ["y", "z"], ["y", "z"], ["z"]]
    encoded = TARGETS.get("multi_category").encode(labels, np.arange(4), np.array([], dtype=np.int64))
    # positives (1, 3, 4) of 4 items: (3/1, 1/3, and z, on every item, 1/4 rather than 0)
    assert encoded.target.loss_weights(encoded.values) == pytest.approx([3.0, 1 / 3, 1 / 4])
