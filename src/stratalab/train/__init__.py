"""Training: one explicit loop (:func:`fit`) serving ERM, Group DRO, class balancing
(subsetting, upsampling, upweighting, mixture), group balancing (SUBG, RWG) and JTT; DFR on top of
the one feature-extraction path; :func:`run` trains any method on a data set. Every method is one
:class:`MethodSpec` in :data:`METHODS` (:mod:`.registry`).

Names are imported lazily, so that the registry and the samplers load without torch (the CLI's
help and the data constructors use them).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "loop", "TrainResult": "loop", "fit": "loop", "predict": "loop", "evaluate": "loop",
    "set_seed": "loop", "split_report": "loop",
    "run": "methods", "RunResult": "methods", "embed_dataset": "methods", "initial_model": "methods",
    "bias_proxy_predictions": "methods", "fit_dfr": "methods", "DFRHead": "methods", "jtt_repeats": "methods",
    "GroupDRO": "objectives", "class_weights": "objectives",
    "SamplingPlan": "sampling", "make_plan": "sampling", "first_per_label": "sampling", "balance_groups": "sampling",
    "examples_left_out": "sampling",
    "METHODS": "registry", "MethodSpec": "registry", "get_method": "registry",
    "CRITERIA": "selection", "selection_scores": "selection", "best_epoch": "selection",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
