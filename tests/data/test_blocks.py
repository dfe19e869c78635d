"""Target blocks: encoding, the vocab, and points scaled to [-1, 1] and back."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.data.blocks import encode_targets, scale_points, unscale_points
from imgcls.data.splits import SplitIndices
from imgcls.errors import DataError

SPLIT = SplitIndices(np.array([0, 1, 2]), np.array([3]))


def test_category_vocab_is_sorted_training_labels() -> None:
    encoded = encode_targets("category", ["dog", "cat", "dog", "cat"], SPLIT)
    assert encoded.info.vocab == ["cat", "dog"] and encoded.values.tolist() == [1, 0, 1, 0]


def test_unknown_validation_label_is_named() -> None:
    with pytest.raises(DataError, match="'bird' \\(1\\)"):
        encode_targets("category", ["dog", "cat", "dog", "bird"], SPLIT)
    with pytest.raises(DataError, match="multi_category"):
        encode_targets("category", [["a"], ["b"], ["a"], ["b"]], SPLIT)


def test_multi_category_one_hot() -> None:
    encoded = encode_targets("multi_category", [["cat", "dog"], [], ["dog"], ["cat"]], SPLIT)
    assert encoded.info.vocab == ["cat", "dog"] and encoded.info.n_out == 2
    assert encoded.values.tolist() == [[1, 1], [0, 0], [0, 1], [1, 0]]
    with pytest.raises(DataError, match="delimiter"):
        encode_targets("multi_category", ["cat dog", "dog", "cat", "dog"], SPLIT)


def test_regression_floats() -> None:
    encoded = encode_targets("regression", [1.5, 2, 3, 4], SPLIT)
    assert encoded.info.n_out == 1 and encoded.values[:, 0].tolist() == [1.5, 2, 3, 4]
    with pytest.raises(DataError, match="different lengths"):
        encode_targets("regression", [[1, 2], [1], [3, 4], [5, 6]], SPLIT)
    with pytest.raises(DataError, match="NaN"):
        encode_targets("regression", [1, float("nan"), 3, 4], SPLIT)


def test_points_shape_and_count() -> None:
    encoded = encode_targets("point", [[10, 20, 30, 40]] * 4, SPLIT)
    assert encoded.info.n_points == 2 and encoded.info.n_out == 4 and encoded.values.shape == (4, 2, 2)
    with pytest.raises(DataError, match="x y pairs"):
        encode_targets("point", [[1, 2, 3]] * 4, SPLIT)


def test_point_scaling_known_values_and_round_trip() -> None:
    size = (640, 480)  # width, height
    pixels = np.array([[0.0, 0.0], [640.0, 480.0], [320.0, 240.0], [160.0, 360.0]], dtype=np.float32)
    scaled = scale_points(pixels, size)
    assert np.allclose(scaled, [[-1, -1], [1, 1], [0, 0], [-0.5, 0.5]], atol=1e-6)
    assert np.allclose(unscale_points(scaled, size), pixels)
