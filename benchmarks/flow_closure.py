"""How much of an image's global look a decoupled flow's z carries (issue 21, item 2): the colour
closure of a z swap, and the flow's test bits/dim, on the same CIFAR-10 test images.

For test images a and b (b a seeded derangement of a), with m(x) the per-image mean RGB (a 3-vector)
and |.| the Euclidean norm,

    closure(a, b) = 1 - |m(decode(z_b, nu_a)) - m(b)| / |m(a) - m(b)|

over the pairs with |m(a) - m(b)| > 0.05: 1 when b's z alone gives the decoded image b's mean colour,
0 when it keeps a's. Ma et al.'s decoupled flow puts the global colour and background in z; FlowAug
edits z, so a flow whose closure is near 0 makes FlowAug little more than noise. Reported: mean and
median closure, the reconstruction's own closure (decode(z_a, nu_a), near 0 by construction), and
bits/dim (the ELBO bound) on the same images.

Run: python benchmarks/flow_closure.py [--flow benchmarks/results/flow_cifar10.pt] [--n 512] [--seed 0]
     [--name flow_closure]
Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import RESULTS, data_dir, sha256, write  # noqa: E402

from stratalab.data import load  # noqa: E402
from stratalab.models.flow import bits_per_dim, load_flow  # noqa: E402

MIN_GAP = 0.05  # pairs whose mean colours differ by less are left out (the ratio is noise there)


def closure(m_new: np.ndarray, m_a: np.ndarray, m_b: np.ndarray) -> np.ndarray:
    """``1 - |m_new - m_b| / |m_a - m_b|`` per pair (rows of mean-RGB vectors)."""
    return 1.0 - np.linalg.norm(m_new - m_b, axis=1) / np.linalg.norm(m_a - m_b, axis=1)


@torch.no_grad()
def measure(flow: torch.nn.Module, x: np.ndarray, seed: int, batch: int = 128) -> dict:
    n = len(x)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = order[(np.arange(n) + 1) % n]  # one random cycle: every image gets another one
    xt = torch.as_tensor(x)
    zs, nus = [], []
    for s in range(0, n, batch):
        z, nu = flow.encode(xt[s:s + batch])
        zs.append(z)
        nus.append(nu)
    z, nu = torch.cat(zs), torch.cat(nus)
    swapped, recon = [], []
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        swapped.append(flow.decode(z[partner[sl]], nu[sl]))
        recon.append(flow.decode(z[sl], nu[sl]))
    mean_rgb = lambda t: t.mean(dim=(2, 3)).numpy().astype(np.float64)  # noqa: E731
    m_a, m_b = mean_rgb(xt), mean_rgb(xt[partner])
    m_swap, m_rec = mean_rgb(torch.cat(swapped)), mean_rgb(torch.cat(recon))
    keep = np.linalg.norm(m_a - m_b, axis=1) > MIN_GAP
    c, c0 = closure(m_swap, m_a, m_b)[keep], closure(m_rec, m_a, m_b)[keep]
    return {"pairs": int(keep.sum()), "closure_mean": float(c.mean()), "closure_median": float(np.median(c)),
            "closure_reconstruction": float(c0.mean()), "mean_abs_pixel_change": float((torch.cat(swapped) - torch.cat(recon)).abs().mean()),
            "z_std_over_images": float(z.std(0).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flow", default=str(RESULTS / "flow_cifar10.pt"))
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="flow_closure")
    args = ap.parse_args()
    if args.n < 2:
        raise SystemExit("--n must be at least 2 (pairs of images).")
    t0 = time.perf_counter()
    flow, record = load_flow(args.flow)
    flow.eval()
    dataset = str((record.get("extra") or record).get("dataset", "cifar10-b"))
    ds = load(dataset, data_dir=data_dir(), seed=0)
    pick = np.sort(np.random.default_rng(args.seed).permutation(len(ds.test))[: args.n])
    x = np.asarray(ds.test.load_x(pick), dtype=np.float32)
    res = measure(flow, x, args.seed)
    res["test_bpd"] = bits_per_dim(flow, x, seed=args.seed)
    res.update(n_images=len(x), dataset=dataset, flow=str(args.flow), flow_sha256=sha256(Path(args.flow)),
               seconds=time.perf_counter() - t0)
    md = (f"| flow | images | pairs (colour gap > {MIN_GAP}) | closure mean | closure median | reconstruction's closure | "
          f"test bits/dim |\n|---|---|---|---|---|---|---|\n| `{Path(args.flow).name}` | {res['n_images']} | {res['pairs']} | "
          f"{res['closure_mean']:.3f} | {res['closure_median']:.3f} | {res['closure_reconstruction']:.3f} | {res['test_bpd']:.3f} |\n\n"
          f"Mean |pixel change| of the swap against the reconstruction: {res['mean_abs_pixel_change']:.4f}; "
          f"std of z over images (mean over dimensions): {res['z_std_over_images']:.3f}; {res['seconds']:.0f} s.")
    print(md)
    write(args.name, {"args": vars(args), **res}, md)


if __name__ == "__main__":
    main()
