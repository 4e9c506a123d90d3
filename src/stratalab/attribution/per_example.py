"""Per-example gradients from one batched backward pass, and fast random projections, for TRAK.

**Gradients.** For a ``Linear`` layer ``out = a W^T + b`` the gradient of example ``i``'s own
output ``f_i`` is ``dW_i = sum_t g_it a_it^T`` and ``db_i = sum_t g_it``, where ``a_it`` is its input
and ``g_it = df_i / d out_it`` (``t`` runs over extra leading positions, if any); for ``Conv2d``
the same with ``a`` the unfolded input patches and ``t`` the output positions (Goodfellow 2015,
"Efficient per-example gradient computations"; the trick behind Opacus and LoGra). One forward
with hooks that keep each layer's input and output, then one ``autograd.grad`` of
``sum_i f_i`` with respect to the outputs, gives every ``g_it``: valid when example ``i``'s output
depends on no other example (true in eval mode: BatchNorm uses running statistics). This replaces
``vmap(grad(.))`` over single examples, which runs the model once per example.

**Kronecker projection** (:class:`KroneckerProjector`, as LoGra: Choe et al. 2024, "What is
your data worth to GPT?"): a layer's per-example gradient is ``sum_t g_t [a_t; 1]^T`` (the bias as
a constant input), so projecting it with ``P_g (x) P_a`` (Gaussian ``P_g``: out x k_g, ``P_a``:
(in + 1) x k_a, each scaled by 1/sqrt of its width) is ``sum_t (P_g^T g_t)(P_a^T [a_t; 1])^T``:
the full gradient is never formed. It is a random projection with ``E ||P^T grad||^2 =
||grad||^2`` like TRAK's dense Gaussian one, but structured (block-diagonal over layers, each
block a Kronecker product), so its LDS is measured against the dense one (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HooksUnsafe", "hooks_unsupported", "per_example_grads", "KroneckerProjector"]


class HooksUnsafe(RuntimeError):
    """The one-backward path cannot be trusted for this model (found during the forward pass)."""


def _owners(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[str, nn.Module, str]]:
    owner = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            owner[full] = (mname, mod, pname)
    return {n: owner[n] for n in names if n in owner}


def hooks_unsupported(model: nn.Module, names: Sequence[str]) -> str | None:
    """Why the one-backward path cannot give these parameters' per-example gradients (None: it can).
    Every attributed parameter must be the weight or bias of a ``Linear`` or an ungrouped
    ``Conv2d`` with zero padding."""
    owners = _owners(model, names)
    users: dict[int, int] = {}
    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            users[id(p)] = users.get(id(p), 0) + 1
    params = dict(model.named_parameters(remove_duplicate=False))
    for n in names:
        if n not in owners:
            return f"parameter {n!r} is not found as a module's own parameter"
        if users.get(id(params[n]), 0) > 1:
            return f"parameter {n!r} is shared by several modules"
        _, mod, pname = owners[n]
        if pname not in ("weight", "bias"):
            return f"parameter {n!r} is not a weight or bias"
        if isinstance(mod, nn.Conv2d):
            if mod.groups != 1 or mod.padding_mode != "zeros" or mod.padding == "same":
                return f"{n!r} belongs to a grouped, non-zero-padded or 'same'-padded Conv2d"
        elif not isinstance(mod, nn.Linear):
            return f"{n!r} belongs to a {type(mod).__name__}, not a Linear or Conv2d"
    return None


def _layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    owners = _owners(model, names)
    return {owners[n][0]: owners[n][1] for n in names}


def _capture(model: nn.Module, x: torch.Tensor, layers: dict[str, nn.Module],
             fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """One forward with hooks and one backward: per layer, (input rows ``a`` (B, T, in), output
    gradients ``g`` (B, T, out)) with Conv2d inputs unfolded into patches; and the model's output."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []

    versions: dict[str, tuple[int, int]] = {}

    def hook_for(mname: str):
        def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if mname in seen:
                raise HooksUnsafe(f"layer {mname!r} runs twice in one forward (shared weights); use grads='vmap'.")
            seen[mname] = (inputs[0].detach(), output)
            versions[mname] = (inputs[0]._version, output._version)
        return hook

    for mname, mod in layers.items():
        handles.append(mod.register_forward_hook(hook_for(mname)))
    frozen = [p for mod in layers.values() for p in mod.parameters(recurse=False) if not p.requires_grad]
    for p in frozen:  # the layer outputs need a graph even when the model is frozen
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            out = model(x.detach())
            missing = [m for m in layers if m not in seen]
            if missing:
                raise HooksUnsafe(f"layer {missing[0]!r} was not used in the forward pass.")
            changed = [m for m in seen if (seen[m][0]._version, seen[m][1]._version) != versions[m]]
            if changed:  # e.g. ReLU(inplace=True) right after the layer: its gradient would lose the mask
                raise HooksUnsafe(f"the input or output of layer {changed[0]!r} is modified in place later in the forward "
                                  "pass; use grads='vmap'.")
            order = list(seen)
            outs = [seen[m][1] for m in order]
            grads_out = torch.autograd.grad(fn(out).sum(), outs, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(False)
    rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    bsz = x.shape[0]
    for m, gout in zip(order, grads_out):
        a, o = seen[m]
        mod = layers[m]
        if gout is None:
            gout = torch.zeros_like(o)
        if isinstance(mod, nn.Conv2d):
            # padding='valid' is no padding; 'same' is refused by hooks_unsupported
            pad = (0, 0) if mod.padding == "valid" else mod.padding
            patches = F.unfold(a, mod.kernel_size, dilation=mod.dilation, padding=pad, stride=mod.stride)  # type: ignore[arg-type]
            rows[m] = (patches.transpose(1, 2), gout.reshape(bsz, gout.shape[1], -1).transpose(1, 2))
        else:
            rows[m] = (a.reshape(bsz, -1, a.shape[-1]), gout.reshape(bsz, -1, gout.shape[-1]))
    return rows, out.detach()


def per_example_grads(model: nn.Module, x: torch.Tensor, names: Sequence[str],
                      fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-example gradients of ``fn(model(x))`` (one value per example) with respect to ``names``:
    ``({name: (B, numel)}, model(x).detach())``, from one forward and one backward. Call
    :func:`hooks_unsupported` first; a layer called twice in one forward is refused."""
    owners = _owners(model, names)
    rows, out = _capture(model, x, _layers(model, names), fn)
    grads = {}
    for n in names:
        mname, _, pname = owners[n]
        a, g = rows[mname]
        grads[n] = (torch.einsum("bto,bti->boi", g, a) if pname == "weight" else g.sum(dim=1)).reshape(x.shape[0], -1)
    return grads, out


class KroneckerProjector:
    """Per-layer Kronecker-factored Gaussian projection of per-example gradients (see the module
    docstring), drawn from ``seed``. ``k`` is split over the layers (at least 1 each): equally
    (``split="equal"``, the default), or in proportion to their parameter counts ("params") or
    their square roots ("sqrt"). A layer of ``k_l`` gets ``k_g = min(out, ceil(sqrt(k_l)))`` and
    ``k_a = min(in + 1, ceil(k_l / k_g))``, so ``dim`` (the sum of ``k_g k_a``) is close to ``k``:
    more by rounding up, less where a layer is smaller than its share (that share is not passed on).
    Every attributed layer must have all its parameters (weight and bias) attributed. Inputs are
    batch-first (as every stratalab model).

    The default split was measured (LeNet-5 on 4,000 U-MNIST examples, M = 2, k = 512, LDS over
    20 retrained models, projection seeds 0 and 10): equal 0.094 / 0.101, by parameters 0.091 /
    0.081, by square root 0.082 / 0.085, the dense Gaussian 0.095 / 0.082."""

    def __init__(self, model: nn.Module, names: Sequence[str], k: int, seed: int = 0, split: str = "equal") -> None:
        import math

        if split not in ("params", "sqrt", "equal"):
            raise ValueError(f"split must be 'params', 'sqrt' or 'equal', got {split!r}.")
        layers = _layers(model, names)
        for mname, mod in layers.items():
            own = [f"{mname}.{p}" if mname else p for p, _ in mod.named_parameters(recurse=False)]
            if sorted(own) != sorted(n for n in names if n in own):
                raise ValueError(f"projector='kronecker' projects whole layers; attribute all of {', '.join(own)} or use "
                                 "projector='gaussian'.")
        self.layers = layers
        sizes = {m: sum(p.numel() for p in mod.parameters(recurse=False)) for m, mod in layers.items()}
        share = {m: (v ** 0.5 if split == "sqrt" else 1.0 if split == "equal" else float(v)) for m, v in sizes.items()}
        total = sum(share.values())
        gen = torch.Generator().manual_seed(int(seed))
        self.factors: dict[str, tuple[torch.Tensor, torch.Tensor, bool]] = {}
        for m, mod in layers.items():
            k_l = max(1, round(k * share[m] / total))
            w = mod.weight
            assert isinstance(w, torch.Tensor)  # every layer here is a Linear or Conv2d (TRAK checks hooks_unsupported first)
            n_out = w.shape[0]
            n_in = int(w[0].numel())
            has_bias = getattr(mod, "bias", None) is not None
            k_g = min(n_out, math.ceil(math.sqrt(k_l)))
            k_a = min(n_in + int(has_bias), math.ceil(k_l / k_g))
            p_g = torch.randn(n_out, k_g, generator=gen) / k_g ** 0.5
            p_a = torch.randn(n_in + int(has_bias), k_a, generator=gen) / k_a ** 0.5
            self.factors[m] = (p_g.to(w.device), p_a.to(w.device), has_bias)  # drawn on the CPU: same on every device
        self.dim = sum(f[0].shape[1] * f[1].shape[1] for f in self.factors.values())

    def project(self, model: nn.Module, x: torch.Tensor,
                fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected per-example gradients of ``fn(model(x))``: (B, dim), and the model's output."""
        rows, out = _capture(model, x, self.layers, fn)
        parts = []
        for m, (p_g, p_a, has_bias) in self.factors.items():
            a, g = rows[m]
            pa = a @ p_a[:-1] + p_a[-1] if has_bias else a @ p_a
            parts.append(torch.einsum("btg,bta->bga", g @ p_g, pa).reshape(x.shape[0], -1))
        return torch.cat(parts, dim=1), out

    def matrix(self, names: Sequence[str], model: nn.Module) -> torch.Tensor:
        """The equivalent dense (p x dim) matrix over ``names``' flattened gradients, in their order
        (for tests): block-diagonal over layers, each block ``P_g (x) P_a`` split into weight and bias rows."""
        owners = _owners(model, names)
        sizes = [dict(model.named_parameters())[n].numel() for n in names]
        out = torch.zeros(sum(sizes), self.dim)
        col = 0
        factors = {m: (p_g.cpu(), p_a.cpu(), b) for m, (p_g, p_a, b) in self.factors.items()}
        cols = {}
        for m, (p_g, p_a, _) in factors.items():
            cols[m] = col
            col += p_g.shape[1] * p_a.shape[1]
        row = 0
        for n, size in zip(names, sizes):
            mname, _, pname = owners[n]
            p_g, p_a, has_bias = factors[mname]
            width = p_g.shape[1] * p_a.shape[1]
            if pname == "weight":
                block = torch.kron(p_g, p_a[:-1] if has_bias else p_a)  # rows: (out, in) flattened
            else:
                block = torch.kron(p_g, p_a[-1:])
            out[row:row + size, cols[mname]:cols[mname] + width] = block
            row += size
        return out
