"""D3M and AUTO-D3M: debiasing by removing the training examples that drive worst-group error
(Jain, Hamidieh, Georgiev et al., "Data Debiasing with Datamodels", Sec. 4).

Inputs are a TRAK matrix ``tau`` of shape (n_train, n_val) (:meth:`stratalab.attribution.TRAK.score`,
the reference library's layout): ``tau[i, j]`` is how much train example ``i`` raises the margin of
val example ``j``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_label_array

WEIGHTINGS = ("softmax", "loss")
THRESHOLDS = ("fraction", "zero")


def _check_matrix(tau: Any, n_val: int) -> np.ndarray:
    t = np.asarray(tau)
    if t.ndim != 2 or t.shape[1] != n_val:
        raise ValueError(f"the TRAK matrix must have shape (n_train, n_val) with n_val = {n_val}, got {t.shape}.")
    if not np.isfinite(t).all():
        raise ValueError("the TRAK matrix contains NaN or infinite values.")
    return t


def group_alignment(tau: Any, val_groups: Any, val_losses: Any, *, beta: float = 1.0,
                    weighting: str = "softmax") -> np.ndarray:
    """Group alignment score of every training example, eq. (3) of D3M.

    ``tau(G)`` is the mean of ``tau``'s columns over the val examples of group ``G`` and ``l_G`` the
    base model's mean val loss on that group.

    - ``weighting="softmax"`` (the paper, eq. 3): ``A_i = sum_G softmax(beta * l)_G * tau(G)_i``.
    - ``weighting="loss"`` (the public D3M code): ``A_i = (1/|G|) sum_G l_G * tau(G)_i``.

    A negative ``A_i`` means example ``i`` hurts the (soft) worst groups. Returns (n_train,).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}.")
    g = as_label_array(val_groups, "val_groups")
    t = _check_matrix(tau, g.shape[0])
    loss = np.asarray(val_losses, dtype=np.float64).reshape(-1)
    if loss.shape[0] != g.shape[0] or not np.isfinite(loss).all():
        raise ValueError("val_losses must be finite, one per val example.")
    groups, inv = np.unique(g, return_inverse=True)
    counts = np.bincount(inv)
    avg = np.zeros((g.shape[0], groups.size))
    avg[np.arange(g.shape[0]), inv] = 1.0 / counts[inv]
    loss_g = loss @ avg
    if weighting == "softmax":
        w = np.exp(beta * (loss_g - loss_g.max()))
        w /= w.sum()
    else:
        w = loss_g / groups.size
    # tau (n_train, n_val) @ avg (n_val, G) @ w (G,) without forming tau(G) for every group twice
    return np.asarray(t @ (avg @ w), dtype=np.float64)


def d3m_keep(alignment: Any, n_remove: int | None = None) -> np.ndarray:
    """Boolean keep-mask over the training set: drop every example with a negative alignment score
    (the paper's default heuristic), or, with ``n_remove``, the ``n_remove`` lowest scores."""
    a = np.asarray(alignment, dtype=np.float64).reshape(-1)
    if n_remove is None:
        keep = a >= 0
    else:
        if not 0 <= n_remove < a.size:
            raise ValueError(f"n_remove must be in [0, {a.size - 1}], got {n_remove}.")
        keep = np.ones(a.size, dtype=bool)
        keep[np.argsort(a, kind="stable")[:n_remove]] = False
    if not keep.any():
        raise ValueError("D3M would remove every training example; the alignment scores are all negative.")
    return keep


def auto_d3m_groups(tau: Any, val_y: Any, val_correct: Any, *, fraction: float = 0.35,
                    threshold: str = "fraction", normalize: bool = True) -> np.ndarray:
    """AUTO-D3M pseudo-groups without any group label (D3M Sec. 4, steps 1-3, per class).

    For each class: the attribution vectors ``tau[:, j]`` of its val examples (L2-normalised when
    ``normalize``, as the public code does), their top principal component ``v``, and the projection
    of each vector on ``v``. Then:

    - ``threshold="fraction"`` (the paper's footnote 1): the threshold ``lambda`` puts ``fraction``
      (35%) of the class's val examples on one side; both ends are tried and the end where the base
      model is less accurate becomes pseudo-group 1;
    - ``threshold="zero"`` (the public code): pseudo-group 1 is a positive projection on ``v``
      (uncentred, as there).

    Returns ``g = 2 * y + pseudo``.
    """
    from sklearn.decomposition import PCA

    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}; got {threshold!r}.")
    y = as_label_array(val_y, "val_y")
    t = _check_matrix(tau, y.shape[0])
    correct = np.asarray(val_correct, dtype=np.float64).reshape(-1)
    if correct.shape[0] != y.shape[0]:
        raise ValueError("val_correct must have one entry per val example.")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    pseudo = np.zeros(y.shape[0], dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if idx.size < 4:
            continue
        rows = np.asarray(t[:, idx], dtype=np.float64).T  # (n_c, n_train): one attribution vector per val example
        if normalize:
            rows = rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-5)
        pca = PCA(n_components=1, random_state=0).fit(rows)
        if threshold == "zero":
            pseudo[idx] = (rows @ pca.components_[0] > 0).astype(np.int64)
            continue
        proj = pca.transform(rows)[:, 0]
        m = max(1, int(round(fraction * idx.size)))
        order = np.argsort(proj, kind="stable")
        low, high = order[:m], order[-m:]
        side = low if correct[idx[low]].mean() <= correct[idx[high]].mean() else high
        pseudo[idx[side]] = 1
    return 2 * y + pseudo


def alignment_by_cell(alignment: Any, y: Any, attribute: Any, *, class_names: list[str] | None = None,
                      attribute_names: list[str] | None = None) -> Any:
    """The (class, attribute) cells of the training set ranked by their mean alignment score, most
    negative first (D3M Fig. 4: which known subpopulations the removed data come from).

    Columns: class, attribute, n (train examples in the cell), mean_alignment, removed (examples with
    a negative score), removed_share.
    """
    import pandas as pd

    a = np.asarray(alignment, dtype=np.float64).reshape(-1)
    yy = as_label_array(y, "y")
    at = as_label_array(attribute, "attribute")
    if not (a.shape[0] == yy.shape[0] == at.shape[0]):
        raise ValueError(f"alignment, y and attribute need one entry per train example; got {a.shape[0]}, "
                         f"{yy.shape[0]}, {at.shape[0]}.")
    df = pd.DataFrame({"class": yy, "attribute": at, "alignment": a, "removed": a < 0})
    out = (df.groupby(["class", "attribute"], sort=True)
             .agg(n=("alignment", "size"), mean_alignment=("alignment", "mean"), removed=("removed", "sum"))
             .reset_index())
    out["removed"] = out["removed"].astype(np.int64)
    out["removed_share"] = out["removed"] / out["n"]
    if class_names is not None:
        out["class"] = [class_names[c] for c in out["class"]]
    if attribute_names is not None:
        out["attribute"] = [attribute_names[v] for v in out["attribute"]]
    return out.sort_values("mean_alignment", kind="stable").reset_index(drop=True)
