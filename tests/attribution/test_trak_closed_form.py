"""TRAK pinned by a closed form: logistic regression on d = 3 inputs, n = 6 training examples.

The model's logits are ``[0, w . x]``, so the correct-class margin is ``f(z) = (2y - 1) w . x``, its
gradient ``phi(z) = (2y - 1) x`` and ``p = sigmoid(f)``. With ``proj_dim`` equal to the number of
parameters (3) the Gaussian projection ``P`` is square and invertible, so it cancels:
``g(z) (G^T G)^{-1} g(z_i) = phi(z)^T (Phi^T Phi)^{-1} phi(z_i)`` for any projection seed, and

    tau[i, t] = phi_t^T (Phi^T Phi)^{-1} phi_i * (1 - p_i).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stratalab.attribution import TRAK, ensemble_scores


class LogReg(nn.Module):
    def __init__(self, w) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x @ self.w
        return torch.stack([torch.zeros_like(s), s], dim=-1)


X = np.array([[1.0, 0.5, -0.2], [-0.3, 1.2, 0.8], [0.7, -1.1, 0.4],
              [-1.5, 0.2, 1.0], [0.9, 0.9, -1.3], [0.1, -0.6, -0.9]], dtype=np.float32)
Y = np.array([1, 0, 1, 0, 1, 1])
XT = np.array([[0.4, -0.2, 0.6], [-1.0, 0.3, 0.2]], dtype=np.float32)
YT = np.array([1, 0])
W = [1.5, -1.0, 0.5]


def _closed_form(w, x=X, y=Y, xt=XT, yt=YT):
    """(unweighted scores (n, n_t), 1 - p_i) computed by hand in float64."""
    w = np.asarray(w, dtype=np.float64)
    phi = (2 * y - 1)[:, None] * x.astype(np.float64)
    phi_t = (2 * yt - 1)[:, None] * xt.astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-(phi @ w)))  # margin = phi . w for this model
    unweighted = phi @ np.linalg.inv(phi.T @ phi) @ phi_t.T
    return unweighted, 1.0 - p


def test_trak_score_matches_the_closed_form_with_the_one_minus_p_factor():
    """Kills: TRAK dropping the (1 - p_i) factor or using p_i instead (trak.py ``featurize``:
    ``self._q = 1.0 - p`` -> ``np.ones_like(p)`` or ``p``). Here p_i ranges over 0.45..0.91, so
    either mutation changes the scores far beyond the tolerance."""
    unweighted, q = _closed_form(W)
    expected = unweighted * q[:, None]
    assert q.min() < 0.1 and q.max() > 0.5  # 1 - p differs from 1 and from p: the factor is visible
    assert np.abs(unweighted * (1 - q)[:, None] - expected).max() > 0.1

    for seed in (0, 7):  # the square projection cancels: any seed gives the same scores
        trak = TRAK(LogReg(W), proj_dim=3, lam=0.0, seed=seed, batch_size=4).featurize(X, Y).finalize()
        np.testing.assert_allclose(trak.q, q, rtol=1e-5, err_msg="TRAK's q must be 1 - p_i")
        np.testing.assert_allclose(trak.score_unweighted(XT, YT), unweighted, rtol=1e-3, atol=1e-4)
        tau = trak.score(XT, YT)
        assert tau.shape == (6, 2)
        np.testing.assert_allclose(tau, expected, rtol=1e-3, atol=1e-4,
                                   err_msg="tau != phi_t^T (Phi^T Phi)^-1 phi_i (1 - p_i)")


def test_ensemble_scores_average_unweighted_scores_times_mean_one_minus_p():
    """Kills: the same (1 - p_i) mutations, through :func:`ensemble_scores` (which reads each
    model's ``TRAK.q``): for two logistic models the ensemble score is
    mean_m(unweighted_m) * mean_m(1 - p_{m,i}), computed by hand."""
    w2 = [-0.5, 2.0, 1.0]
    (u1, q1), (u2, q2) = _closed_form(W), _closed_form(w2)
    expected = (u1 + u2) / 2 * ((q1 + q2) / 2)[:, None]
    got = ensemble_scores([LogReg(W), LogReg(w2)], (X, Y), (XT, YT), proj_dim=3, lam=0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4, err_msg="ensemble TRAK scores")
