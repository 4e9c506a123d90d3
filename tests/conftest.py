"""Shared test fixtures. The real data directory is defined here and only here."""

from __future__ import annotations

# ../shared/data beside the project root (as in CI); override with $STRATALAB_TEST_DATA.
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("STRATALAB_TEST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    """Path of a file in the shared data directory, or skip the test with the reason."""
    p = SHARED_DATA / name
    if not p.is_file():
        pytest.skip(f"real data file {p} is absent (needs ../shared/data beside the project, or $STRATALAB_TEST_DATA)")
    return p


@pytest.fixture
def shared_data() -> Path:
    shared_file("README.md")
    return SHARED_DATA


def write_npz_without_groups(path: Path, n_features: int, seed: int = 0) -> Path:
    """A user data set (.npz) with random features, two classes and no group labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for s, n in (("train", 40), ("val", 20), ("test", 20)):
        arrays[f"x_{s}"] = rng.standard_normal((n, n_features)).astype(np.float32)
        arrays[f"y_{s}"] = np.arange(n) % 2
    np.savez(path, **arrays)
    return path
