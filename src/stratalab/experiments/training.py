"""The ``train`` experiment: one model with ERM or a group-robust method (the method registry
:data:`stratalab.train.METHODS`), its val and test subgroup reports, and the labels it used."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..report.results import BadResult, GroupTable, Row, field_of, report_rows, report_table, seed_of
from .registry import Experiment, Invocation, Outcome, register

__all__ = ["TrainExperiment"]


def _cfg(raw: dict[str, Any]) -> dict[str, Any]:
    cfg = raw.get("config") or (raw.get("invocation") or {}).get("config")
    if not isinstance(cfg, dict):
        raise BadResult("no config")
    return cfg


class TrainExperiment(Experiment):
    """``stratalab train``. Invocation: ``dataset`` (+ options, folder), ``seeds`` (one: the seed of
    data construction, initialisation and data order) and ``config`` (:class:`~stratalab.train.TrainConfig`
    fields). Outputs it reads: ``checkpoint_dir`` (save each epoch there, resume from it). It
    trains with the torch threads of ``backend`` (else the recorded ones, else torch's default) and
    records the count."""

    command = "train"
    result_keys = ("metrics", "selected_epoch", "history")
    recognise = frozenset({"metrics", "history", "labels_used"})

    def upgrade(self, d: dict[str, Any]) -> Invocation:
        inv = super().upgrade(d)
        if "seeds" not in d:  # files before the one seed convention kept it in the config
            inv.seeds = [int(inv.config.get("seed", 0))]
        if len(inv.seeds) != 1:
            raise ValueError(f"`stratalab train` takes one seed, got {inv.seeds}; run it once per seed.")
        return inv

    def run(self, inv: Invocation, *, backend: Any = None, progress: Any = None,
            outputs: dict[str, Path] | None = None) -> Outcome:
        """Train (``progress(stage, epoch, total, history_row)`` after each epoch)."""
        from ..data import load
        from ..models import read_pretrained
        from ..train import TrainConfig, bias_proxy_predictions, run
        from ..train.loop import load_checkpoint
        from .backend import local_record, torch_threads

        cfg = TrainConfig.from_dict({**inv.config, "seed": inv.seeds[0]})
        ckpt = (outputs or {}).get("checkpoint_dir")
        if ckpt is not None and ckpt.exists() and not ckpt.is_dir():
            raise ValueError(f"checkpoint_dir {ckpt} is a file; give a folder (created if missing).")
        if cfg.init is not None:
            read_pretrained(cfg.init)  # a missing or foreign weights file fails before any work
        if cfg.select == "val_worst_estimated":
            raise ValueError("select='val_worst_estimated' needs estimated val groups, which a plain training run cannot "
                             "make; GEORGE (`run george`) selects on its clusters, or call stratalab.train.run(..., "
                             "val_estimated_groups=...).")
        ds = load(str(inv.dataset), data_dir=inv.data_dir, seed=cfg.seed, **inv.dataset_options)
        if cfg.select == "val_wga" and ds.val.g is None:
            raise ValueError(f"select='val_wga' needs val group labels and {ds.name!r} has none; use val_wca, "
                             "val_avg or bias_unsupervised.")
        if ckpt is not None and (ckpt / "last.pt").is_file():
            load_checkpoint(ckpt / "last.pt")  # refuse a bad checkpoint before any training
        bias = None
        with torch_threads(self.threads_of(inv, backend)) as threads:
            if cfg.select == "bias_unsupervised":
                if progress is not None:
                    progress("bias proxy (ERM)", 0, cfg.epochs, {})
                bias = bias_proxy_predictions(ds, cfg)
            result = run(ds, cfg, val_bias_pred=bias, checkpoint_dir=str(ckpt) if ckpt else None, progress=progress)
        recorded = replace(inv, configs={"config": cfg.to_dict()}, backend=local_record(threads))
        payload = {"invocation": recorded.to_dict(), **result.to_dict()}
        if bias is not None:
            payload["labels_used"]["selection"] = "bias_unsupervised (an ERM bias proxy's val predictions; no group label)"
        return Outcome(payload, result, {"data": ds, "config": cfg})

    # ------------------------------------------------------------------ result views
    def records(self, raw: dict[str, Any]) -> list[Row]:
        cfg = _cfg(raw)
        method, seed = str(cfg.get("method", "unknown")), seed_of(cfg)
        out: list[Row] = []
        for split, rep in field_of(raw, "metrics").items():
            out += report_rows(rep, f"{split}_", method, "", seed, f"metrics.{split}")
        return out

    def group_tables(self, raw: dict[str, Any]) -> list[GroupTable]:
        cfg = _cfg(raw)
        name = next(iter(self.method_names(raw).values()))
        metrics = field_of(raw, "metrics")
        order = [s for s in ("test", "val") if s in metrics] + [s for s in metrics if s not in ("test", "val")]
        return [report_table(metrics[s], f"{name}, seed {cfg.get('seed', '?')}: {s} accuracy per group") for s in order]

    def labels_used(self, raw: dict[str, Any]) -> dict[str, str]:
        lu = raw.get("labels_used")
        text = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in lu.items()) if isinstance(lu, dict) and lu else "unknown"
        return {str(_cfg(raw).get("method", "unknown")): text}

    def method_names(self, raw: dict[str, Any]) -> dict[str, str]:
        from ..train.registry import METHODS

        m = str(_cfg(raw).get("method", "unknown"))
        return {m: METHODS[m].title if m in METHODS else m}


register(TrainExperiment())
