"""The shared input checks of _validation: one feature-matrix check and one integer check for
every caller (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

from stratalab._validation import as_feature_matrix, check_int


def test_a_feature_matrix_is_checked_once_for_every_caller():
    x = np.arange(6).reshape(3, 2)
    out = as_feature_matrix(x, "z")
    assert out.dtype == np.float64 and out.shape == (3, 2)
    assert as_feature_matrix(np.zeros((4, 2, 3)), "f", dtype=np.float32, flatten=True).shape == (4, 6)
    cases = [
        (np.array(["a", "b"]), {}, "z must hold real numbers"),
        (np.zeros(3), {}, r"2-D array \(n_examples, n_features\), got shape \(3,\)"),
        (np.zeros((0, 2)), {}, "is empty"),
        (np.array([[1.0, np.nan]]), {}, "NaN or infinite"),
        (np.array([[1.0, np.inf]]), {}, "NaN or infinite"),
        (np.zeros((3, 2)), {"n": 4, "n_name": "the val split"}, "has 3 rows but the val split has 4"),
    ]
    for x, kw, message in cases:
        with pytest.raises(ValueError, match=message):
            as_feature_matrix(x, "z", **kw)


def test_an_integer_setting_accepts_whole_numbers_only():
    assert check_int(3.0, "k") == 3 and type(check_int(np.int64(2), "k")) is int
    for bad in (True, 2.5, float("nan"), "3"):
        with pytest.raises(ValueError, match="k must be an integer"):
            check_int(bad, "k")
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        check_int(0, "k", low=1)
