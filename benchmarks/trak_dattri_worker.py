"""TRAK with the library `dattri` (TRAKAttributor), a third tool next to stratalab and traker.

Runs in its own environment (`.venv-dattri`: stratalab + dattri 0.3.0, torch 2.13.0 CPU) and reads
the same work folder as `trak_vs_traker.py`'s workers: x_train.npy, y_train.npy, x_target.npy,
y_target.npy and ckpt0.pt .. ckpt{M-1}.pt (state dicts of stratalab's LeNet-5). It writes
scores_dattri.npy, shape (n_train, n_targets) in traker's orientation (tau[i, t] = influence of
train i on target t), and timing_dattri.json {"seconds", "peak_rss_mb", "added_mb", "shape"}, timed
like the other workers: featurize + score end to end (building the AttributionTask/TRAKAttributor,
train and target gradients, projection, inverses, scores), reading the checkpoints from disk
excluded; peak RSS from resource.getrusage; added_mb = peak minus the RSS after imports and data.

Settings, chosen to match traker's worker (TRAKer on the CPU, use_half_precision=False):

* model output f(z) = logit_y - logsumexp(other logits), the correct-class margin, for both the train
  features (dattri's ``loss_func``) and the targets (``target_func``), as traker's
  ``image_classification`` task; dattri has no built-in TRAK output function, it is passed in.
* out-to-loss weight 1 - p_y(z) via ``correct_probability_func`` (p = softmax prob of the label).
* projection: dattri's CPU ``BasicProjector`` with ``proj_type="normal"`` (dense Gaussian), fp32
  (dattri takes the gradients' dtype), ``proj_dim = K``, ``proj_seed = 0``. dattri's BasicProjector
  is a port of traker's: blocks of 100 columns, block i of checkpoint m seeded
  ``seed + 1000 i + 100000 m`` and drawn with ``normal_`` from a CPU generator, the same schedule
  traker 0.3.2 uses on the CPU (also ``normal``), so for the same seed the sketches coincide; dattri
  also divides by sqrt(K) and the gradients by sqrt(#params), both of which cancel in TRAK.
* all trainable parameters; no ridge (``regularization=0.0``, as traker's lambda_reg=0); dattri
  solves (G^T G) X = G^T with torch.linalg.solve in fp32 where traker inverts G^T G in fp32.
* ensemble over the M checkpoints (a list of state dicts in the AttributionTask): mean over
  checkpoints of the unweighted scores times the mean over checkpoints of 1 - p, as traker's
  finalize_scores; each checkpoint uses its own target gradients and projection seed.
* per-example gradients by torch.func (vmap over grad), batches of 64 (DataLoader, no shuffle),
  2 threads.

Checked on a small folder (1000 train, 50 targets, K = 128): with one checkpoint dattri's matrix
equals traker's up to a global factor (mean per-target Spearman 1.0000: same sketch, same margin,
same 1 - p). Differences that cannot be removed through dattri's API: with M > 1 traker divides each
checkpoint's (G^T G)^{-1} by its mean absolute entry before summing over checkpoints (a rescaling
"for float16" in its BasicScoreComputer), so its checkpoints are weighted unequally, while dattri
averages them as they are (Spearman dattri vs traker 0.92 at M = 2); dattri builds a new
BasicProjector (and so redraws the K x #params Gaussian sketch, in 100-column blocks) for every
batch, traker keeps one projector and redraws its blocks per batch; dattri keeps
(G^T G)^{-1} G^T (K x n_train) per checkpoint in memory
(``cache``) where traker memory-maps its stores to disk; no fp16 anywhere.

Run: .venv-dattri/bin/python benchmarks/trak_dattri_worker.py --work DIR --models M --proj-dim K
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trak_vs_traker import BATCH, _load_ckpts, _model, _rss_mb  # noqa: E402  (its worker helpers: one copy)


def _dattri_trak(ckpts: list, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, proj_dim: int,
                 batch: int = BATCH) -> np.ndarray:
    """The TRAK matrix (n_train, n_targets) from dattri, given loaded state dicts."""
    import torch
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask
    from torch.func import functional_call
    from torch.utils.data import DataLoader, TensorDataset

    model = _model().eval()

    def margin(params, data):  # per example (vmapped by dattri): logit_y - logsumexp(other logits)
        image, label = data
        logits = functional_call(model, params, image.unsqueeze(0)).squeeze(0)
        is_y = torch.arange(logits.shape[-1]) == label  # vmap-safe one-hot
        correct = logits.gather(0, label.reshape(1)).squeeze(0)
        return correct - torch.logsumexp(logits.masked_fill(is_y, float("-inf")), dim=-1)

    def correct_probability(params, data):  # p_y, so dattri's out-to-loss weight is 1 - p_y
        image, label = data
        logits = functional_call(model, params, image.unsqueeze(0)).squeeze(0)
        return torch.softmax(logits, dim=-1).gather(0, label.reshape(1)).squeeze(0)

    task = AttributionTask(loss_func=margin, target_func=margin, model=model, checkpoints=list(ckpts))
    attributor = TRAKAttributor(
        task=task,
        correct_probability_func=correct_probability,
        projector_kwargs={"proj_dim": int(proj_dim), "proj_type": "normal", "proj_seed": 0, "device": "cpu",
                          "proj_max_batch_size": 32},
        device="cpu",
        regularization=0.0,
    )
    train = DataLoader(TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=batch, shuffle=False)
    targets = DataLoader(TensorDataset(torch.as_tensor(xt), torch.as_tensor(yt)), batch_size=batch, shuffle=False)
    attributor.cache(train)
    scores = attributor.attribute(targets)  # (n_train, n_targets)
    return np.asarray(scores.detach().cpu().numpy(), dtype=np.float32)


def dattri_scores(work: Path, n_models: int, proj_dim: int, batch: int = BATCH) -> np.ndarray:
    """TRAK matrix (n_train, n_targets) over ckpt0..ckpt{n_models-1} in ``work``, computed by dattri."""
    work = Path(work)
    x, y = np.load(work / "x_train.npy"), np.load(work / "y_train.npy")
    xt, yt = np.load(work / "x_target.npy"), np.load(work / "y_target.npy")
    return _dattri_trak(_load_ckpts(work, n_models), x, y, xt, yt, proj_dim, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=BATCH)
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # dattri's per-batch progress bars
    import dattri.algorithm.trak  # noqa: F401  (imports before the baseline RSS, as the other workers)
    import dattri.task  # noqa: F401
    import torch

    torch.set_num_threads(int(os.environ.get("TRAK_BENCH_THREADS", "2")))
    work = args.work
    x, y = np.load(work / "x_train.npy"), np.load(work / "y_train.npy")
    xt, yt = np.load(work / "x_target.npy"), np.load(work / "y_target.npy")
    ckpts = _load_ckpts(work, args.models)
    base_mb = _rss_mb()  # after imports and data: what the tool itself adds is peak - base
    t0 = time.perf_counter()
    scores = _dattri_trak(ckpts, x, y, xt, yt, args.proj_dim, args.batch)
    seconds = time.perf_counter() - t0
    np.save(work / "scores_dattri.npy", scores)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    (work / "timing_dattri.json").write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb,
                                                         "added_mb": peak_mb - base_mb, "shape": list(scores.shape)}))


if __name__ == "__main__":
    main()
