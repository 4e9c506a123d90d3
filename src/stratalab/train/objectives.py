"""Training objectives: mean cross-entropy (ERM, optionally class-weighted) and online Group DRO."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Loss-upweighting weights ``w_c = N / (C * n_c)`` (LaBonte et al.; "balanced" in scikit-learn)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        empty = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"class {empty} has no training example; upweighting needs every class present.")
    return torch.as_tensor(y.shape[0] / (n_classes * counts), dtype=torch.float32)


class GroupDRO:
    """Online Group DRO of Sagawa et al. (ICLR 2020), Algorithm 1, in log space.

    For each batch: per-group mean losses ``l_g`` with one ``scatter_add`` (no loop over groups);
    log-weights ``s_g += eta * (l_g + C / sqrt(n_g))`` (a group absent from the batch has ``l_g = 0``,
    as in the reference code); ``q = softmax(s)``; the robust loss is ``q . l``. Working with
    ``s = log q`` avoids the overflow of repeated ``q * exp(.)``.

    Parameters
    ----------
    group_counts : array (G,)
        Training examples per group (for the generalisation adjustment ``C / sqrt(n_g)``).
    eta : float
        Step size of the group weights (Sagawa et al. use 0.01).
    adjustment : float
        ``C`` of the group adjustment (0 = none).
    """

    def __init__(self, group_counts: np.ndarray, eta: float = 0.01, adjustment: float = 0.0) -> None:
        counts = np.asarray(group_counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0:
            raise ValueError("group_counts must be a non-empty 1-D array.")
        if eta <= 0:
            raise ValueError(f"Group DRO step size eta must be positive, got {eta}.")
        self.n_groups = counts.size
        self.eta = float(eta)
        self.adjust = torch.as_tensor(adjustment / np.sqrt(np.maximum(counts, 1.0)), dtype=torch.float32)
        # Groups with no training example can never be sampled; start them at -inf weight.
        self.log_q = torch.where(torch.as_tensor(counts > 0), 0.0, float("-inf")).to(torch.float32)
        self.log_q = torch.log_softmax(self.log_q, 0)

    @property
    def q(self) -> torch.Tensor:
        return torch.softmax(self.log_q, 0)

    def group_means(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        groups = groups.to(losses.device)
        sums = torch.zeros(self.n_groups, dtype=losses.dtype, device=losses.device).scatter_add_(0, groups, losses)
        counts = torch.bincount(groups, minlength=self.n_groups).to(losses.dtype)
        return sums / counts.clamp(min=1.0)

    def loss(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Robust loss for a batch of per-example losses; updates the group weights."""
        means = self.group_means(losses, groups)
        if self.log_q.device != means.device:  # the weights follow the losses' device (one move per run)
            self.log_q, self.adjust = self.log_q.to(means.device), self.adjust.to(means.device)
        with torch.no_grad():
            self.log_q = torch.log_softmax(self.log_q + self.eta * (means.detach() + self.adjust), 0)
        return (self.q * means).sum()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"log_q": self.log_q.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.log_q = state["log_q"].clone().to(self.log_q.device)


def per_example_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")

