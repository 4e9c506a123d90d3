"""TRAK data attribution (Park et al., ICML 2023), as used by D3M (Jain et al. 2024, Sec. 4 step 1).

For a model ``theta*`` trained on ``S = {z_1..z_n}`` and the correct-class margin
``f(z) = log(p / (1 - p))`` (for logits: ``logit_y - logsumexp(other logits)``):

1. ``g(z) = P^T grad_theta f(z; theta*)``, a random Gaussian projection ``P`` (p x k) of the
   per-example margin gradient. The gradients come from one batched backward with layer hooks
   (:mod:`.per_example`, ``grads="hooks"``) when every attributed parameter is a Linear or Conv2d
   weight or bias, else from ``torch.func`` (``vmap`` over ``grad``); ``projector="kronecker"``
   replaces the dense ``P`` by a per-layer Kronecker-factored Gaussian one (LoGra) that never forms
   the full gradient;
2. ``tau(z)_i = g(z)^T (G^T G)^{-1} g(z_i) (1 - p_i)`` with ``G`` the stacked train features and
   ``p_i`` the model's probability of the correct class of train example ``i``;
3. averaged over an ensemble of models (:func:`ensemble_scores`: mean of the unweighted scores
   times the mean ``1 - p_i``, as the reference library).

A small object in the spirit of the reference library: ``featurize`` the train set, ``finalize``,
then ``score`` targets. The result ``tau`` has shape (n_train, n_targets) like the reference's, in
fp32 (the k x k inverse is taken in fp64), and is memory-mapped to a ``.npy`` file when asked or
when it is large; targets are scored in blocks, so memory stays bounded. The projection is drawn once per (seed, parameter) in chunks and kept, so it
is never regenerated per batch, unless it exceeds ``max_projection_bytes``: then its chunks are
redrawn from their own seeds as needed, identically, and memory stays bounded.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .._device import model_device, to_device
from .._validation import as_label_array, check_finite

DEFAULT_MAX_SCORE_BYTES = 2 << 30  # 2 GiB: larger TRAK matrices are memory-mapped to disk


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct-class margin ``log(p_y / (1 - p_y)) = logit_y - logsumexp_{c != y} logit_c``."""
    correct = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    is_y = torch.arange(logits.shape[-1], device=logits.device) == y.unsqueeze(-1)  # vmap-safe one-hot
    others = logits.masked_fill(is_y, float("-inf"))
    return correct - torch.logsumexp(others, dim=-1)


class TRAK:
    """TRAK scores for one trained classifier.

    Parameters
    ----------
    model : nn.Module
        A trained classifier returning logits.
    proj_dim : int
        k, the dimension of the random projection.
    params : sequence of str or callable, optional
        Which parameters to attribute through: names, or a predicate on the name (e.g. only the last
        layers: ``lambda n: n.startswith("head")``). Default: all trainable parameters.
    batch_size : int
        Examples per vectorised gradient batch.
    lam : float
        Ridge added to ``G^T G``, relative to its mean diagonal: ``(G^T G + lam * mean(diag) I)^{-1}``.
        The TRAK paper and its library use none (traker's ``lambda_reg=0``); a ridge of half the
        mean eigenvalue raised the Kronecker mode's LDS from 0.109 to 0.162 (M = 2) and from 0.174
        to 0.217 (M = 10) on projection seeds 0-4 (``benchmarks/trak_ridge.py``; the best values,
        1 and 0.3, are within 0.003 of it), so 0.5 is the default; ``lam=1e-6`` gives the paper's
        scores (a ridge for numerical stability only).
    seed : int
        Seed of the projection matrix.
    grads : {"auto", "hooks", "vmap"}
        How per-example gradients are computed: one batched backward with layer hooks (Linear and
        Conv2d parameters only), or ``vmap(grad)`` over single examples (any model); "auto" takes
        hooks where they apply. Both give the same gradients up to float rounding.
    projector : {"auto", "gaussian", "kronecker"}
        The dense Gaussian projection of the TRAK paper (the reference mode), or a per-layer
        Kronecker-factored Gaussian one (LoGra; needs hooks; its dimension :attr:`dim` is close to
        ``proj_dim``): much faster and with no p x k matrix in memory. "auto" (the default) takes
        the Kronecker projection where every attributed parameter is a whole Linear or Conv2d layer
        the hooks can read, else the Gaussian one (:attr:`projector` says which was taken).
        With "auto", :attr:`projector`, :attr:`grads` and :attr:`dim` are final only after the
        first batch: a model whose forward defeats the hooks there switches to the Gaussian
        projection with ``vmap`` (with a warning) before any feature is kept.

    Modes, measured (``benchmarks/trak_seeds.py``, BENCHMARKS.md "TRAK over projection seeds"):
    LeNet-5 on 4,000 U-MNIST examples, 500 targets, k = 512, LDS against 50 retrained models, mean
    over projection seeds 5-9 (``lam`` was chosen on seeds 0-4), one CPU thread; traker 0.3.2 took
    30 s (M = 2) and 144 s (M = 10) at LDS 0.111 and 0.176:

    ===============================================  ===========  ============  ==================
    mode                                             LDS, M = 2   LDS, M = 10   speed-up vs traker
    ===============================================  ===========  ============  ==================
    ``projector="kronecker", lam=0.5`` (the default)  0.164        0.221         9.4x / 10.2x
    ``projector="kronecker", lam=0.5, proj_dim=1024``  0.168        0.227         7.7x / 9.0x
    ``projector="gaussian", lam=0.5``                0.185        0.232         3.3x / 3.3x
    ``projector="kronecker", lam=1e-6``              0.108        0.174         7.7x / 10.4x
    ``projector="gaussian", lam=1e-6`` (the paper)   0.108        0.176         3.3x / 3.2x
    ===============================================  ===========  ============  ==================

    The dense Gaussian projection with the ridge has the highest LDS (0.02 above the default) but is
    3x slower than the default and keeps the p x k matrix (+250-300 MB here); without the ridge both
    projections equal traker's LDS (paired differences within one std).
    """

    CHUNK_ROWS = 65536  # rows of the projection drawn at a time
    TARGET_BLOCK = 4096  # targets scored at a time

    def __init__(self, model: nn.Module, *, proj_dim: int = 512, params: Sequence[str] | Callable[[str], bool] | None = None,
                 batch_size: int = 64, lam: float = 0.5, seed: int = 0, max_projection_bytes: int = 1 << 30,
                 grads: str = "auto", projector: str = "auto") -> None:
        if proj_dim < 1:
            raise ValueError(f"proj_dim must be >= 1, got {proj_dim}.")
        if grads not in ("auto", "hooks", "vmap"):
            raise ValueError(f"grads must be 'auto', 'hooks' or 'vmap', got {grads!r}.")
        if projector not in ("auto", "gaussian", "kronecker"):
            raise ValueError(f"projector must be 'auto', 'gaussian' or 'kronecker', got {projector!r}.")
        lam = check_finite(lam, "lam (the ridge on G^T G, relative to its mean diagonal)", low=0)
        if projector == "kronecker" and grads == "vmap":
            raise ValueError("projector='kronecker' works on the layer inputs and output gradients of grads='hooks'; "
                             "use grads='auto' or 'hooks' with it, or projector='gaussian' with vmap.")
        self.model = model
        self.device = model_device(model)  # gradients and projections live there; features come back to the CPU
        self.proj_dim = int(proj_dim)
        self.batch_size = int(batch_size)
        self.lam = lam
        self.seed = int(seed)
        named = dict(model.named_parameters())
        if params is None:
            chosen = [n for n, p in named.items() if p.requires_grad]
        elif callable(params):
            chosen = [n for n in named if params(n)]
        else:
            missing = [n for n in params if n not in named]
            if missing:
                raise ValueError(f"model has no parameter {missing[0]!r}; its parameters are {', '.join(named)}.")
            chosen = list(params)
        if not chosen:
            raise ValueError("no parameter selected for attribution.")
        self.param_names = chosen
        self.n_params = sum(named[n].numel() for n in chosen)
        self._sizes = [named[n].numel() for n in chosen]
        from .per_example import KroneckerProjector, hooks_unsupported

        why = hooks_unsupported(model, chosen)
        if why is not None and (grads == "hooks" or projector == "kronecker"):
            raise ValueError(f"grads='hooks' / projector='kronecker' need Linear or Conv2d parameters only: {why}. "
                             "Use grads='vmap' with projector='gaussian'.")
        self.grads = "hooks" if why is None and grads != "vmap" else "vmap"
        self._auto = grads == "auto"
        self._auto_projector = projector == "auto"
        if projector == "auto":
            projector = "kronecker" if self.grads == "hooks" and _whole_layers(model, chosen) else "gaussian"
        self.projector = projector
        self._kron = KroneckerProjector(model, chosen, self.proj_dim, seed) if projector == "kronecker" else None
        self._kron_batches = 0  # batches projected by the Kronecker projector (a fallback is allowed only before the first)
        self._set_projection(max_projection_bytes)

    def _set_projection(self, max_projection_bytes: int) -> None:
        self._max_projection_bytes = max_projection_bytes
        self.dim = self._kron.dim if self._kron is not None else self.proj_dim
        # The projection is kept in memory when it fits the budget (the usual case for CPU models);
        # otherwise its chunks are redrawn from their own seeds as they are needed, so memory stays bounded.
        self.cached = self._kron is None and self.n_params * self.proj_dim * 4 <= max_projection_bytes
        self._proj = self._projection() if self.cached else None
        self._features: np.ndarray | None = None
        self._q: np.ndarray | None = None
        self._xtx_inv: torch.Tensor | None = None
        self._kernel: torch.Tensor | None = None

    def _chunk(self, param_index: int, chunk_index: int, rows: int) -> torch.Tensor:
        """Gaussian rows of the projection for one chunk of one parameter, scaled by 1/sqrt(k);
        each chunk has its own seed, so any chunk can be redrawn identically on its own."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + param_index * 10_007 + chunk_index)
        # drawn on the CPU (the same projection on every device), then moved to the model's
        return (torch.randn(rows, self.proj_dim, generator=gen) / self.proj_dim**0.5).to(self.device)

    def _blocks(self, param_index: int) -> list[torch.Tensor]:
        size = self._sizes[param_index]
        return [self._chunk(param_index, c, min(self.CHUNK_ROWS, size - start))
                for c, start in enumerate(range(0, size, self.CHUNK_ROWS))]

    def _projection(self) -> list[list[torch.Tensor]]:
        """Every chunk of every parameter, drawn once."""
        return [self._blocks(i) for i in range(len(self.param_names))]

    def projection_matrix(self) -> torch.Tensor:
        """The whole p x k projection (for inspection and tests; avoid on large models)."""
        if self._kron is not None:
            return self._kron.matrix(self.param_names, self.model)
        blocks = self._proj if self._proj is not None else self._projection()
        return torch.cat([b.cpu() for per_param in blocks for b in per_param], dim=0)

    def _project(self, flat_grads: list[torch.Tensor]) -> torch.Tensor:
        out = None
        for i, gi in enumerate(flat_grads):
            blocks = self._proj[i] if self._proj is not None else self._blocks(i)
            for c, block in enumerate(blocks):
                part = gi[:, c * self.CHUNK_ROWS: c * self.CHUNK_ROWS + block.shape[0]] @ block
                out = part if out is None else out + part
        assert out is not None  # at least one parameter is chosen (checked in __init__), so one block was projected
        return out

    def _grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected per-example margin gradients (B, k) and correct-class probabilities (B,)."""
        if self.grads == "hooks":
            from .per_example import HooksUnsafe, per_example_grads

            try:
                if self._kron is not None:
                    proj, out = self._kron.project(self.model, x, lambda o: margin(o, y))
                    self._kron_batches += 1
                else:
                    g, out = per_example_grads(self.model, x, self.param_names, lambda o: margin(o, y))
                    proj = self._project([g[n] for n in self.param_names])
            except HooksUnsafe as e:
                if self._kron is not None and self._auto_projector and self._auto and self._kron_batches == 0:
                    # "auto" chose Kronecker, but this model's forward defeats the hooks: take the
                    # Gaussian projection with vmap instead, before any feature has been kept
                    warnings.warn(f"{e} TRAK takes projector='gaussian' with vmap(grad) for this model.", stacklevel=3)
                    self.projector, self._kron, self.grads = "gaussian", None, "vmap"
                    self._set_projection(self._max_projection_bytes)
                    return self._grads(x, y)
                if not self._auto or self._kron is not None:
                    if self._kron is None:  # grads='hooks' asked for by name, with the Gaussian projection
                        raise ValueError(f"{e} (grads='hooks' cannot run this model; pass grads='vmap' or 'auto').") from None
                    chose = "the Kronecker projection (projector='auto' chose it)" if self._auto_projector else "projector='kronecker'"
                    raise ValueError(f"{e} ({chose} needs the hooks path; pass projector='gaussian').") from None
                warnings.warn(f"{e} TRAK falls back to vmap(grad) for this model.", stacklevel=3)
                self.grads = "vmap"
                return self._grads(x, y)
            p = torch.softmax(out, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
            return proj.detach(), p
        named = dict(self.model.named_parameters())
        fixed = {n: p.detach() for n, p in named.items() if n not in self.param_names}
        fixed.update({n: b.detach() for n, b in self.model.named_buffers()})
        attr = {n: named[n].detach() for n in self.param_names}

        def f(theta: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            out = functional_call(self.model, {**fixed, **theta}, (xi.unsqueeze(0),))
            return margin(out, yi.unsqueeze(0)).squeeze(0)

        g = vmap(grad(f), in_dims=(None, 0, 0))(attr, x, y)
        proj = self._project([g[n].reshape(x.shape[0], -1) for n in self.param_names])
        with torch.no_grad():
            p = torch.softmax(self.model(x), dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        return proj, p

    def _featurize(self, x: Any, y: Any, loader: Callable[[Any], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        yy = as_label_array(y, "y")
        n = yy.shape[0]
        if len(x) != n:
            raise ValueError(f"x has {len(x)} examples but y has {n}.")
        was_training = self.model.training
        self.model.eval()
        feats, probs = [], []
        try:
            for s in range(0, n, self.batch_size):
                idx = np.arange(s, min(s + self.batch_size, n))
                xb = loader(x[idx]) if loader is not None else np.asarray(x)[idx]
                batch = to_device((torch.as_tensor(np.asarray(xb), dtype=torch.float32), torch.as_tensor(yy[idx])), self.device)
                g, p = self._grads(*batch)
                feats.append(g.cpu().numpy())
                probs.append(p.cpu().numpy())
        finally:
            self.model.train(was_training)
        return np.concatenate(feats).astype(np.float32), np.concatenate(probs).astype(np.float64)

    def featurize(self, x: Any, y: Any, loader: Callable[[Any], np.ndarray] | None = None) -> "TRAK":
        """Projected gradients ``G`` (n_train, k) and ``1 - p_i`` of the training set."""
        self._features, p = self._featurize(x, y, loader)
        self._q = 1.0 - p
        self._xtx_inv = None
        self._kernel = None
        return self

    def finalize(self) -> "TRAK":
        """Invert ``G^T G`` (k x k, in fp64 for stability) once and keep ``G (G^T G)^{-1}`` (n_train, k)
        in fp32, so scoring a target block is one fp32 matrix product."""
        if self._features is None:
            raise RuntimeError("call featurize(train_x, train_y) before finalize().")
        g = torch.as_tensor(self._features, dtype=torch.float64)
        xtx = g.T @ g
        ridge = self.lam * float(torch.diagonal(xtx).mean().clamp(min=1e-12))
        self._xtx_inv = torch.linalg.inv(xtx + ridge * torch.eye(xtx.shape[0], dtype=xtx.dtype))
        self._kernel = (g @ self._xtx_inv).to(torch.float32)
        return self

    def featurize_targets(self, x: Any, y: Any, loader: Callable[[Any], np.ndarray] | None = None) -> np.ndarray:
        """Projected margin gradients ``g(z)`` (n_targets, k) of target examples, with this model."""
        return self._featurize(x, y, loader)[0]

    def score_unweighted(self, x: Any, y: Any, loader: Callable[[Any], np.ndarray] | None = None, *,
                         out: str | Path | None = None, max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES) -> np.ndarray:
        """``G (G^T G)^{-1} g(z)`` for every target: shape (n_train, n_targets), before the ``1 - p_i``
        term, always with this model's own target gradients. See :meth:`score` for ``out``."""
        if self._kernel is None:
            self.finalize()
        assert self._kernel is not None  # finalize() sets it or raises
        n_t = _n_examples(x, y)
        res = allocate_scores((self._kernel.shape[0], n_t), out, max_score_bytes)
        for cols, block in self._score_blocks(x, y, loader, n_t):
            res[:, cols] = block
        return res

    def _score_blocks(self, x: Any, y: Any, loader: Callable[[Any], np.ndarray] | None, n_t: int):
        """Unweighted scores ``G (G^T G)^{-1} g(z)`` of ``TARGET_BLOCK`` targets at a time: yields
        (column slice, (n_train, block) array), so memory stays bounded for any n_targets; needs
        :meth:`finalize` first."""
        assert self._kernel is not None  # both callers call finalize() first
        yy = as_label_array(y, "y")
        for s in range(0, n_t, self.TARGET_BLOCK):
            idx = np.arange(s, min(s + self.TARGET_BLOCK, n_t))
            xb = loader(x[idx]) if loader is not None else np.asarray(x)[idx]
            gt = self._featurize(xb, yy[idx])[0]
            yield slice(s, s + idx.size), (self._kernel @ torch.as_tensor(gt).T).numpy()

    @property
    def q(self) -> np.ndarray:
        """The out-to-loss term ``1 - p_i`` of every training example."""
        if self._q is None:
            raise RuntimeError("call featurize(train_x, train_y) first.")
        return self._q

    def score(self, x: Any, y: Any, loader: Callable[[Any], np.ndarray] | None = None, *,
              out: str | Path | None = None, max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES) -> np.ndarray:
        """The TRAK attribution matrix ``tau`` of shape (n_train, n_targets), fp32: ``tau[i, t]``
        estimates how much train example ``i`` raises the margin of target ``t`` (the layout of the
        reference library's ``TRAKer.finalize_scores``).

        ``out``: a ``.npy`` path; the matrix is written there memory-mapped (read it back with
        ``np.load(path, mmap_mode="r")``). Without ``out``, a matrix larger than ``max_score_bytes``
        is memory-mapped to a temporary ``.npy`` file that is unlinked at once: nothing is left behind in
        the temporary folder, and its disk space is freed when the array is released.
        """
        res = self.score_unweighted(x, y, loader, out=out, max_score_bytes=max_score_bytes)
        scale_rows(res, self.q)
        return res



def _whole_layers(model: nn.Module, names: Sequence[str]) -> bool:
    """Whether ``names`` attributes every parameter of each layer it touches (what the Kronecker
    projection needs)."""
    chosen = {id(p) for n, p in model.named_parameters() if n in set(names)}
    for mod in model.modules():
        own = {id(p) for p in mod.parameters(recurse=False)}
        hit = own & chosen
        if hit and hit != own:
            return False
    return True


def _n_examples(x: Any, y: Any) -> int:
    n = as_label_array(y, "y").shape[0]
    if len(x) != n:
        raise ValueError(f"x has {len(x)} examples but y has {n}.")
    return n


def allocate_scores(shape: tuple[int, int], out: str | Path | None = None,
                    max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES) -> np.ndarray:
    """A zeroed fp32 score matrix: in memory, or a memory-mapped ``.npy`` file at ``out`` (or in the
    temporary folder when the matrix is larger than ``max_score_bytes``)."""
    nbytes = 4 * shape[0] * shape[1]
    if out is None and nbytes <= max_score_bytes:
        return np.zeros(shape, dtype=np.float32)
    if out is None:
        fd, name = tempfile.mkstemp(prefix="stratalab-trak-", suffix=".npy")
        os.close(fd)
        warnings.warn(f"the TRAK matrix {shape} needs {nbytes / 2**30:.1f} GiB (> max_score_bytes); it is "
                      f"memory-mapped to a temporary file in {Path(name).parent}, deleted when the array is released. "
                      "Pass out=PATH to keep it.", stacklevel=3)
        try:
            mm = np.lib.format.open_memmap(name, mode="w+", dtype=np.float32, shape=shape)
        finally:
            os.unlink(name)  # the mapping stays valid; the space is freed when the array is released
        return mm
    path = Path(out)
    if path.suffix != ".npy":
        raise ValueError(f"out must be a .npy path, got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)


def scale_rows(matrix: np.ndarray, factor: np.ndarray, block: int = 65536) -> None:
    """``matrix[i, :] *= factor[i]`` in place, in row blocks (cheap on memory-mapped matrices)."""
    f = np.asarray(factor, dtype=np.float32)
    for s in range(0, matrix.shape[0], block):
        matrix[s:s + block] *= f[s:s + block, None]
    if isinstance(matrix, np.memmap):
        matrix.flush()


def ensemble_scores(models: Sequence[nn.Module], train: tuple[Any, ...], targets: tuple[Any, ...], *,
                    out: str | Path | None = None, max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES,
                    **kwargs: Any) -> np.ndarray:
    """TRAK over an ensemble of models (step (e) of D3M's description: M models each trained on a
    random alpha-subset, or M checkpoints), averaged as the reference library does: the mean over
    models of the unweighted scores times the mean over models of ``1 - p_i``. Every model uses its
    own target gradients (the public D3M code silently reused the last model's). Model ``m`` gets
    projection seed ``seed + m``. ``train`` and ``targets`` are ``(x, y)`` or ``(x, y, loader)``;
    returns (n_train, n_targets), memory-mapped as in :meth:`TRAK.score`.
    """
    if not models:
        raise ValueError("ensemble_scores needs at least one model.")
    n_train, n_t = _n_examples(*train[:2]), _n_examples(*targets[:2])
    total = allocate_scores((n_train, n_t), out, max_score_bytes)
    q = np.zeros(n_train)
    for i, m in enumerate(models):
        trak = TRAK(m, **{**kwargs, "seed": kwargs.get("seed", 0) + i}).featurize(*train).finalize()
        for cols, block in trak._score_blocks(targets[0], targets[1], targets[2] if len(targets) > 2 else None, n_t):
            total[:, cols] += block
        q += trak.q
    scale_rows(total, q / len(models) ** 2)
    return total
