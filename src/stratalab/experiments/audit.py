"""The ``audit`` experiment: a model's predictions per subgroup (Chiu et al.'s WeightedStd and
MacroStd beside worst-group accuracy), from a predictions file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..report.results import GroupTable, Row, report_rows, report_table
from .registry import Experiment, Invocation, Outcome, register

__all__ = ["AuditExperiment", "AUDIT_DEFAULTS"]

# the settings of an audit: the columns that hold each quantity and the bootstrap
AUDIT_DEFAULTS: dict[str, Any] = {"y": None, "pred": None, "group": None, "classes": None, "score": None, "bootstrap": 0}


class AuditExperiment(Experiment):
    """``stratalab audit``. Invocation: ``predictions`` (the file), ``config`` (:data:`AUDIT_DEFAULTS`
    keys: the column names and the bootstrap resamples) and ``seeds`` (one: the bootstrap's)."""

    command = "audit"
    result_keys = ("average_accuracy", "balanced_accuracy", "worst_group_accuracy", "worst_class_accuracy", "weighted_std",
                   "macro_std", "train_weighted_accuracy", "groups", "classes", "intervals")
    required = ("predictions",)
    input_keys = ("predictions",)
    recognise = frozenset({"groups", "worst_group_accuracy", "average_accuracy"})

    def run(self, inv: Invocation, *, backend: Any = None, progress: Any = None,
            outputs: dict[str, Path] | None = None) -> Outcome:
        from ..data.predictions import read_predictions
        from ..metrics import group_report

        unknown = sorted(set(inv.config) - set(AUDIT_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown audit setting {unknown[0]!r}; known: {', '.join(AUDIT_DEFAULTS)}.")
        cfg = {**AUDIT_DEFAULTS, **inv.config}
        missing = [k for k in ("y", "pred", "group") if not cfg[k]]
        if missing:
            raise ValueError(f"an audit needs the column of {', '.join(missing)}; name it in the config.")
        if int(cfg["bootstrap"]) < 0:
            raise ValueError(f"bootstrap must be >= 0 (0 = no intervals), got {cfg['bootstrap']}.")
        source = inv.inputs.get("predictions")
        if not source:
            raise ValueError("an audit needs a predictions file (.csv or .parquet).")
        p = read_predictions(source, y=cfg["y"], pred=cfg["pred"], group=cfg["group"], classes=cfg["classes"],
                             score=cfg["score"])
        report = group_report(p.y, p.pred, p.group, classes=p.classes, y_score=p.score,
                              n_bootstrap=int(cfg["bootstrap"]), random_state=inv.seeds[0])
        recorded = replace(inv, configs={"config": cfg})
        return Outcome({"invocation": recorded.to_dict(), "source": str(source), **report.to_dict()}, report)

    def records(self, raw: dict[str, Any]) -> list[Row]:
        return report_rows(raw, "", "predictions", "", -1, "the audit")

    def group_tables(self, raw: dict[str, Any]) -> list[GroupTable]:
        conf = raw.get("confidence")
        extra = f", {100 * float(conf):.0f}% bootstrap intervals" if conf else ""
        return [report_table(raw, f"Accuracy per subgroup of {raw.get('source', 'the predictions')}{extra}")]

    def method_names(self, raw: dict[str, Any]) -> dict[str, str]:
        return {"predictions": "audited predictions"}

    def dataset_name(self, raw: dict[str, Any], inv: dict[str, Any]) -> str:
        return str(raw.get("source", "unknown"))


register(AuditExperiment())
