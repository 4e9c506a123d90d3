"""GEORGE's subclass discovery: per-class dimensionality reduction, then clustering with a
silhouette-chosen number of clusters and loss-aware overclustering (Sohoni et al., NeurIPS 2020,
Sec. 4 and App. B; reference code HazyResearch/hidden-stratification).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._validation import as_feature_matrix, as_label_array

REDUCERS = ("umap", "pca", "hardness", "none")
CLUSTER_METHODS = ("gmm", "kmeans")


def _check_features(x: Any, name: str) -> np.ndarray:
    return as_feature_matrix(x, name)


def mean_cluster_silhouette(x: np.ndarray, labels: np.ndarray, *, sample_size: int | None = None,
                            rng: np.random.Generator | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """GEORGE's clustering score: the mean over clusters of the mean silhouette of their points.

    Returns (score, per-point silhouettes of the points used, their indices). With ``sample_size``,
    silhouettes are computed on a seeded subsample (silhouettes cost O(n^2)).
    """
    from sklearn.metrics import silhouette_samples

    idx = np.arange(x.shape[0])
    if sample_size is not None and x.shape[0] > sample_size:
        idx = np.sort((rng or np.random.default_rng(0)).choice(x.shape[0], sample_size, replace=False))
    lab = labels[idx]
    n_lab = np.unique(lab).size
    if n_lab < 2 or n_lab >= lab.size:  # silhouettes need 2 <= clusters <= points - 1
        return -1.0, np.zeros(idx.size), idx
    sil = silhouette_samples(x[idx], lab)
    uniq, inv = np.unique(lab, return_inverse=True)
    per_cluster = np.bincount(inv, weights=sil) / np.bincount(inv)
    return float(per_cluster.mean()), sil, idx


@dataclass
class _ClassModel:
    reducer: Any
    clusterer: Any
    sub: dict[int, tuple[Any, dict[int, int]]]  # parent -> (sub-clusterer, kept sub-label -> new id)
    remap: np.ndarray  # raw id -> contiguous local id (a parent whose parts all split off disappears)
    n_clusters: int
    k: int
    scores: dict[int, float]


class George:
    """Discover hidden subclasses by clustering features within each class (GEORGE, step 2).

    Parameters
    ----------
    reducer : {"umap", "pca", "hardness", "none"}
        Per-class reduction fitted on the training features of that class. ``umap``: each vector
        divided by ``max(norm, 1e-6)``, then UMAP with ``n_components=2, n_neighbors=10,
        min_dist=0``. ``pca``: PCA to ``n_components``. ``hardness``: the projection on the
        difference of the two head weight vectors (needs ``head_weights``, binary tasks).
    cluster_method : {"gmm", "kmeans"}
    k_min, k_max : int
        Range of cluster counts tried per class (2..10 by default). The chosen k maximises the mean
        over clusters of the mean silhouette of their points; ties go to the larger k.
    overcluster : bool, overcluster_factor : int
        Split every cluster into ``overcluster_factor`` sub-clusters and keep a sub-cluster only if
        (a) its points' mean silhouette under the split beats ``max(old, 0)``, their mean under the
        unsplit clustering; (b) its mean ERM loss is at least its parent's (needs ``losses``); and
        (c) it has at least ``max(min_cluster_frac * n_class, min_cluster_size)`` train points and
        ``min_val_size`` val points (when val features are given). Rejected sub-clusters merge back.
    silhouette_sample_size : int or None
        Subsample size for silhouettes (they cost O(n^2)); None = all points.
    random_state : int

    Attributes
    ----------
    n_clusters_ : int — total clusters; ids are global (class offsets ``offsets_``).
    k_per_class_, n_clusters_per_class_ : dict — chosen k and final cluster count per class.
    cluster_class_ : ndarray — the class of every global cluster id.
    silhouette_scores_ : dict — per class, k -> score.
    """

    def __init__(
        self,
        reducer: str = "umap",
        cluster_method: str = "gmm",
        k_min: int = 2,
        k_max: int = 10,
        overcluster: bool = True,
        overcluster_factor: int = 5,
        min_cluster_frac: float = 0.005,
        min_cluster_size: int = 25,
        min_val_size: int = 25,
        n_components: int = 2,
        umap_n_neighbors: int = 10,
        umap_min_dist: float = 0.0,
        head_weights: np.ndarray | None = None,
        silhouette_sample_size: int | None = 5000,
        random_state: int = 0,
    ) -> None:
        self.reducer = reducer
        self.cluster_method = cluster_method
        self.k_min = k_min
        self.k_max = k_max
        self.overcluster = overcluster
        self.overcluster_factor = overcluster_factor
        self.min_cluster_frac = min_cluster_frac
        self.min_cluster_size = min_cluster_size
        self.min_val_size = min_val_size
        self.n_components = n_components
        self.umap_n_neighbors = umap_n_neighbors
        self.umap_min_dist = umap_min_dist
        self.head_weights = head_weights
        self.silhouette_sample_size = silhouette_sample_size
        self.random_state = random_state

    # ------------------------------------------------------------------ parts
    def _check_params(self) -> None:
        if self.reducer not in REDUCERS:
            raise ValueError(f"reducer must be one of {', '.join(REDUCERS)}; got {self.reducer!r}.")
        if self.cluster_method not in CLUSTER_METHODS:
            raise ValueError(f"cluster_method must be one of {', '.join(CLUSTER_METHODS)}; got {self.cluster_method!r}.")
        def is_int(v: Any) -> bool:
            return not isinstance(v, bool) and isinstance(v, (int, np.integer))

        for name in ("k_min", "k_max", "overcluster_factor", "min_cluster_size", "min_val_size", "n_components",
                     "umap_n_neighbors", "random_state"):
            v = getattr(self, name)
            low = 0 if name in ("random_state", "min_cluster_size", "min_val_size") else 1
            if not is_int(v) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got {self.k_min}, {self.k_max}.")
        if self.silhouette_sample_size is not None and (not is_int(self.silhouette_sample_size)
                                                        or self.silhouette_sample_size < 2 * self.k_max + 1):
            raise ValueError(f"silhouette_sample_size must be None (all points) or an integer > 2 * k_max "
                             f"({2 * self.k_max}), got {self.silhouette_sample_size!r}.")
        if not (np.isfinite(self.min_cluster_frac) and 0 <= self.min_cluster_frac < 1):
            raise ValueError(f"min_cluster_frac must be in [0, 1), got {self.min_cluster_frac!r}.")
        if self.reducer == "hardness":
            w = None if self.head_weights is None else np.asarray(self.head_weights)
            if w is None or w.ndim != 2 or w.shape[0] != 2:
                raise ValueError("reducer 'hardness' needs head_weights of shape (2, d): the linear head of a binary model.")

    def _make_reducer(self) -> Any:
        if self.reducer == "umap":
            return _UMAPReducer(self.n_components, self.umap_n_neighbors, self.umap_min_dist, self.random_state)
        if self.reducer == "pca":
            return _PCAReducer(self.n_components, self.random_state)
        if self.reducer == "hardness":
            return _HardnessReducer(np.asarray(self.head_weights, dtype=np.float64),
                                    _UMAPReducer(max(1, self.n_components - 1), self.umap_n_neighbors,
                                                 self.umap_min_dist, self.random_state))
        return _Identity()

    def _make_clusterer(self, k: int, seed: int) -> Any:
        if self.cluster_method == "gmm":
            from sklearn.mixture import GaussianMixture

            return GaussianMixture(n_components=k, covariance_type="full", n_init=3, random_state=seed)
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, n_init=3, random_state=seed)

    # ------------------------------------------------------------------ fit
    def fit(self, features: Any, y: Any, losses: Any = None, *, val_features: Any = None, val_y: Any = None) -> "George":
        """Fit reducers and clusterings per class on training ``features`` (n, d) with classes ``y``.

        ``losses`` (per-example ERM loss) enables the loss condition of overclustering;
        ``val_features`` / ``val_y`` the val-size condition.
        """
        self._check_params()
        x = _check_features(features, "features")
        yy = as_label_array(y, "y", n=x.shape[0])
        loss = None if losses is None else np.asarray(losses, dtype=np.float64).reshape(-1)
        if loss is not None and loss.shape[0] != x.shape[0]:
            raise ValueError(f"losses has {loss.shape[0]} entries but features has {x.shape[0]} rows.")
        if loss is not None and not np.isfinite(loss).all():
            raise ValueError("losses contain NaN or infinite values; pass the ERM model's finite per-example losses "
                             "(or None to skip the loss condition of overclustering).")
        vx = vy = None
        if val_features is not None:
            vx = _check_features(val_features, "val_features")
            vy = as_label_array(val_y, "val_y", n=vx.shape[0])
        self.classes_ = np.unique(yy)
        for c in self.classes_:  # every class checked before any is fitted
            if (yy == c).sum() < 2 * self.k_min:
                raise ValueError(f"class {int(c)} has only {int((yy == c).sum())} training examples; too few to cluster.")
        self.models_: dict[int, _ClassModel] = {}
        self.offsets_: dict[int, int] = {}
        offset = 0
        for c in self.classes_:
            m = yy == c
            if m.sum() < 2 * self.k_min:
                raise ValueError(f"class {int(c)} has only {int(m.sum())} training examples; too few to cluster.")
            cm = self._fit_class(int(c), x[m], None if loss is None else loss[m],
                                 None if vx is None else vx[vy == c])
            self.models_[int(c)] = cm
            self.offsets_[int(c)] = offset
            offset += cm.n_clusters
        self.n_clusters_ = offset
        self.k_per_class_ = {c: m.k for c, m in self.models_.items()}
        self.n_clusters_per_class_ = {c: m.n_clusters for c, m in self.models_.items()}
        self.silhouette_scores_ = {c: m.scores for c, m in self.models_.items()}
        self.cluster_class_ = np.concatenate([np.full(m.n_clusters, c) for c, m in self.models_.items()])
        return self

    def _fit_class(self, c: int, xc: np.ndarray, lc: np.ndarray | None, vxc: np.ndarray | None) -> _ClassModel:
        rng = np.random.default_rng(self.random_state + 1000 * c)
        reducer = self._make_reducer().fit(xc)
        z = reducer.transform(xc)
        zv = reducer.transform(vxc) if vxc is not None and len(vxc) else None
        k_hi = min(self.k_max, max(self.k_min, z.shape[0] // 2))
        scores: dict[int, float] = {}
        fitted: dict[int, tuple[Any, np.ndarray]] = {}
        for k in range(self.k_min, k_hi + 1):
            cl = self._make_clusterer(k, self.random_state).fit(z)
            lab = cl.predict(z)
            score = mean_cluster_silhouette(z, lab, sample_size=self.silhouette_sample_size,
                                            rng=np.random.default_rng(self.random_state))[0] if k > 1 else 0.0
            scores[k] = score
            fitted[k] = (cl, lab)
        best_k = max(scores, key=lambda k: (round(scores[k], 12), k))  # ties to the larger k
        clusterer, labels = fitted[best_k]
        sub: dict[int, tuple[Any, dict[int, int]]] = {}
        n_raw = best_k
        if self.overcluster and self.overcluster_factor > 1:
            n_raw, sub = self._overcluster(z, labels, lc, zv, clusterer, best_k, rng)
        raw = _raw_labels(clusterer, sub, z)
        used = np.unique(raw)
        remap = np.full(n_raw, -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        # A base component that no train point falls in can still receive val/test points: send
        # them to the used base component with the nearest centre (an emptied parent, whose parts
        # were all kept, is never predicted, since its points always land in a kept part).
        centres = _centres(clusterer)
        for j in np.flatnonzero(remap < 0):
            cand = [int(u) for u in used if u < best_k]
            if j < best_k and cand and centres is not None:
                nearest = cand[int(np.argmin(np.linalg.norm(centres[cand] - centres[j], axis=1)))]
                remap[j] = remap[nearest]
            else:
                remap[j] = remap[used[0]]
        return _ClassModel(reducer, clusterer, sub, remap, int(used.size), best_k, scores)

    def _overcluster(self, z: np.ndarray, labels: np.ndarray, lc: np.ndarray | None, zv: np.ndarray | None,
                     clusterer: Any, k: int, rng: np.random.Generator) -> tuple[int, dict[int, tuple[Any, dict[int, int]]]]:
        """Split every cluster into ``overcluster_factor`` parts at once (reference: OverclusterModel)
        and keep the parts that pass the silhouette, loss and size tests; the rest merge back."""
        from sklearn.metrics import silhouette_samples

        n = z.shape[0]
        f = self.overcluster_factor
        min_train = max(self.min_cluster_frac * n, self.min_cluster_size)
        subs: dict[int, Any] = {}
        over = labels.astype(np.int64) * f
        for j in range(k):
            mj = labels == j
            if mj.sum() < 2 * f:
                continue  # too small to split; stays whole (sub-label 0)
            subs[j] = self._make_clusterer(f, self.random_state).fit(z[mj])
            over[mj] += subs[j].predict(z[mj])
        idx = np.arange(n)
        if self.silhouette_sample_size is not None and n > self.silhouette_sample_size:
            idx = np.sort(rng.choice(n, self.silhouette_sample_size, replace=False))
        old_sil = np.full(n, np.nan)
        new_sil = np.full(n, np.nan)
        if np.unique(labels[idx]).size > 1:
            old_sil[idx] = silhouette_samples(z[idx], labels[idx])
        if np.unique(over[idx]).size > 1:
            new_sil[idx] = silhouette_samples(z[idx], over[idx])
        val_over = None
        if zv is not None and len(zv):
            vp = clusterer.predict(zv)
            val_over = vp.astype(np.int64) * f
            for j, sc in subs.items():
                if (vp == j).any():
                    val_over[vp == j] += sc.predict(zv[vp == j])
        next_id = k
        kept: dict[int, tuple[Any, dict[int, int]]] = {}
        for j, sc in subs.items():
            mj = labels == j
            parent_loss = float(lc[mj].mean()) if lc is not None else None
            mapping: dict[int, int] = {}
            for part in range(f):
                pts = np.flatnonzero(over == j * f + part)
                if pts.size < min_train:
                    continue
                ns, os_ = new_sil[pts], old_sil[pts]
                ok = ~np.isnan(ns)
                old = os_[ok].mean() if ok.any() else np.nan
                base = 0.0 if np.isnan(old) else max(old, 0.0)
                if not ok.any() or ns[ok].mean() <= base:
                    continue
                if parent_loss is not None and lc is not None and lc[pts].mean() < parent_loss:
                    continue
                if val_over is not None and int((val_over == j * f + part).sum()) < self.min_val_size:
                    continue
                mapping[part] = next_id
                next_id += 1
            if mapping:
                kept[j] = (sc, mapping)
        return next_id, kept

    # ------------------------------------------------------------------ predict
    def predict(self, features: Any, y: Any) -> np.ndarray:
        """Global cluster id of every example, using the reducer and clustering of its class."""
        if not hasattr(self, "models_"):
            raise RuntimeError("George is not fitted yet; call fit(features, y) first.")
        x = _check_features(features, "features")
        yy = as_label_array(y, "y", n=x.shape[0])
        out = np.empty(x.shape[0], dtype=np.int64)
        unknown = set(np.unique(yy).tolist()) - set(self.models_)
        if unknown:
            raise ValueError(f"class {sorted(unknown)[0]} was not seen in fit; George clusters within the training classes.")
        for c, cm in self.models_.items():
            m = yy == c
            if not m.any():
                continue
            z = cm.reducer.transform(x[m])
            out[m] = self.offsets_[c] + cm.remap[_raw_labels(cm.clusterer, cm.sub, z)]
        return out

    def fit_predict(self, features: Any, y: Any, losses: Any = None, **kwargs: Any) -> np.ndarray:
        return self.fit(features, y, losses, **kwargs).predict(features, y)


def _centres(clusterer: Any) -> np.ndarray | None:
    for attr in ("means_", "cluster_centers_"):
        if hasattr(clusterer, attr):
            return np.asarray(getattr(clusterer, attr))
    return None


def _raw_labels(clusterer: Any, sub: dict[int, tuple[Any, dict[int, int]]], z: np.ndarray) -> np.ndarray:
    """Parent cluster, replaced by the kept sub-cluster's id where the point falls in one."""
    parent = clusterer.predict(z)
    out = parent.astype(np.int64).copy()
    for j, (sc, mapping) in sub.items():
        pj = parent == j
        if pj.any():
            lut = np.array([mapping.get(s, j) for s in range(int(sc.n_components if hasattr(sc, "n_components") else sc.n_clusters))])
            out[pj] = lut[sc.predict(z[pj])]
    return out


class _Identity:
    def fit(self, x: np.ndarray) -> "_Identity":
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x


class _PCAReducer:
    def __init__(self, n_components: int, seed: int) -> None:
        self.n_components, self.seed = n_components, seed

    def fit(self, x: np.ndarray) -> "_PCAReducer":
        from sklearn.decomposition import PCA

        self.pca = PCA(n_components=min(self.n_components, x.shape[1], x.shape[0]), random_state=self.seed).fit(x)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(x)


class _HardnessReducer:
    """GEORGE's "hardness" reduction: the score ``s = x . d`` on the unit vector ``d`` along
    ``w_1 - w_0`` (the binary head's margin direction, no bias), beside a UMAP (one component
    fewer) of what is left, ``x - s d``: the output is ``[s, UMAP(x - s d)]``."""

    def __init__(self, weights: np.ndarray, rest: "_UMAPReducer") -> None:
        d = weights[1] - weights[0]
        self.direction = d / max(float(np.linalg.norm(d)), 1e-12)
        self.rest = rest

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if x.shape[1] != self.direction.shape[0]:
            raise ValueError(f"head_weights have {self.direction.shape[0]} inputs but features have {x.shape[1]} columns.")
        score = x @ self.direction
        return score, x - np.outer(score, self.direction)

    def fit(self, x: np.ndarray) -> "_HardnessReducer":
        self.rest.fit(self._split(x)[1])
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        score, rest = self._split(x)
        return np.concatenate([score[:, None], self.rest.transform(rest)], axis=1)


@contextlib.contextmanager
def _torch_threads_kept() -> Any:
    """Keep torch's thread count across a UMAP call. UMAP runs numba, whose OpenMP threading layer
    shares the OpenMP runtime with torch: ``umap.UMAP.fit`` restores numba's own thread count on
    exit (every core), which silently raised torch's from the 1 thread a run asked for to 2, so
    GEORGE's Group DRO steps trained with more threads than recorded, and their numbers depended on
    what had run before in the process (issue 24: U-MNIST seed 2 gave 94.8 alone, 96.2 after seeds
    0 and 1)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if torch is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


class _UMAPReducer:
    def __init__(self, n_components: int, n_neighbors: int, min_dist: float, seed: int) -> None:
        self.kw = dict(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed)

    @staticmethod
    def _normalise(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)

    def fit(self, x: np.ndarray) -> "_UMAPReducer":
        try:
            import umap
        except ImportError as e:  # pragma: no cover
            raise ImportError("reducer 'umap' needs umap-learn: pip install umap-learn") from e
        import warnings

        with warnings.catch_warnings(), _torch_threads_kept():
            warnings.simplefilter("ignore")
            self.umap = umap.UMAP(n_neighbors=min(self.kw["n_neighbors"], x.shape[0] - 1),
                                  n_components=self.kw["n_components"], min_dist=self.kw["min_dist"],
                                  random_state=self.kw["random_state"], n_jobs=1).fit(self._normalise(x))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        import warnings

        with warnings.catch_warnings(), _torch_threads_kept():
            warnings.simplefilter("ignore")
            return self.umap.transform(self._normalise(x))


def cluster_quality(clusters: Any, subclasses: Any, subclass_names: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """How well clusters recover true subclasses.

    Returns a table with, for every true subclass, the best-matching cluster (most overlap) and its
    precision (share of the cluster that is this subclass) and recall (share of the subclass in that
    cluster), and the overall adjusted Rand index and normalised mutual information.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    cl = as_label_array(clusters, "clusters")
    sc = as_label_array(subclasses, "subclasses", n=cl.shape[0])
    nc, ns = int(cl.max()) + 1, int(sc.max()) + 1
    table = np.zeros((ns, nc), dtype=np.int64)
    np.add.at(table, (sc, cl), 1)
    rows = []
    for s in range(ns):
        if table[s].sum() == 0:
            continue
        best = int(table[s].argmax())
        overlap = table[s, best]
        rows.append({
            "subclass": s,
            "subclass_name": subclass_names[s] if subclass_names else str(s),
            "n": int(table[s].sum()),
            "best_cluster": best,
            "precision": overlap / table[:, best].sum(),
            "recall": overlap / table[s].sum(),
        })
    overall = {"ari": float(adjusted_rand_score(sc, cl)), "nmi": float(normalized_mutual_info_score(sc, cl))}
    return pd.DataFrame(rows), overall
