"""benchmarks/flow_closure.py (issue 21, item 2): the colour closure of a z swap, on known values and
on a flow whose decoder ignores z (closure 0) or copies the partner (closure 1)."""

from __future__ import annotations

import numpy as np
import torch

from tests.benchmarks._bench import bench_module


def test_closure_by_hand():
    fc = bench_module("flow_closure")
    m_a, m_b = np.array([[0.2, 0.2, 0.2], [0.0, 0.0, 0.0]]), np.array([[0.6, 0.2, 0.2], [0.0, 0.3, 0.4]])
    got = fc.closure(np.array([[0.5, 0.2, 0.2], [0.0, 0.0, 0.0]]), m_a, m_b)
    np.testing.assert_allclose(got, [0.75, 0.0])  # 0.1 of 0.4 left; nothing moved of 0.5


class _Toy(torch.nn.Module):
    """encode: z = mean colour, nu = the image; decode keeps nu's structure and takes a share
    ``t`` of the colour shift from z (t = 0: z ignored; t = 1: z carries all the colour)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def encode(self, x):
        return x.mean(dim=(2, 3)), x

    def decode(self, z, nu):
        own = nu.mean(dim=(2, 3))
        return nu + self.t * (z - own)[:, :, None, None]


def test_measure_sees_how_much_colour_z_carries():
    fc = bench_module("flow_closure")
    rng = np.random.default_rng(0)
    x = (rng.random((40, 3, 4, 4)) * 0.5 + rng.random((40, 3, 1, 1)) * 0.5).astype(np.float32)
    for t in (0.0, 0.6, 1.0):
        r = fc.measure(_Toy(t), x, seed=1, batch=16)
        assert r["pairs"] > 20 and abs(r["closure_mean"] - t) < 1e-5 and abs(r["closure_reconstruction"]) < 1e-5
