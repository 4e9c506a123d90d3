"""Small result dicts of every kind, in the shapes the CLI writes (see cli/main.py and the
experiments' ``to_dict``), for the report tests. Group reports come from the real
``group_report(...).to_dict()`` on a few made-up predictions, so their shape is exactly the CLI's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stratalab.metrics import group_report


def report(seed: int = 0, bootstrap: int = 0, bad_group: int = 3) -> dict[str, Any]:
    """A GroupReport dict: 2 classes x 2 groups each (groups 0-1 in class 0, 2-3 in class 1);
    ``bad_group`` is wrong about half of the time, the others now and then."""
    rng = np.random.default_rng(seed)
    n = 160
    y = np.repeat([0, 1], n // 2)
    g = 2 * y + (np.arange(n) % 2)
    wrong = rng.random(n) < np.where(g == bad_group, 0.5, 0.1)
    pred = np.where(wrong, 1 - y, y)
    rep = group_report(y, pred, g, class_names=["cat", "dog"], group_names=["indoor", "outdoor", "indoor", "outdoor"],
                       n_bootstrap=bootstrap, random_state=seed)
    return json.loads(json.dumps(rep.to_dict()))


def audit(source: str = "preds.csv") -> dict[str, Any]:
    return {"source": source, **report(0, bootstrap=50)}


def train(method: str = "gdro", seed: int = 0, dataset: str = "u-digits") -> dict[str, Any]:
    cfg = {"method": method, "model": "mlp", "width": 1.0, "epochs": 3, "seed": seed, "select": "val_wca"}
    return {"invocation": {"command": "train", "dataset": dataset, "dataset_options": {}, "data_dir": None, "config": cfg},
            "config": cfg, "dataset": {"name": dataset, "seed": seed}, "selected_epoch": 3,
            "labels_used": {"train_groups": "true train groups", "val_groups": "no", "selection": "val_wca"},
            "metrics": {"val": report(seed + 10), "test": report(seed)}, "history": []}


GEORGE_ROWS = {  # seed -> row -> (robust, overall)
    0: {"ERM": (0.5, 0.9), "GEORGE": (0.75, 0.91), "GDRO (true subclasses)": (0.8, 0.9)},
    1: {"ERM": (0.6, 0.88), "GEORGE": (0.7, 0.92), "GDRO (true subclasses)": (0.78, 0.89)},
}


def george(dataset: str = "u-digits") -> dict[str, Any]:
    runs = []
    for seed, rows in GEORGE_ROWS.items():
        runs.append({"seed": seed, "rows": {k: {"robust_accuracy": r, "overall_accuracy": o} for k, (r, o) in rows.items()},
                     "k_per_class": {"0": 2, "1": 2}, "clusters_per_class": {"0": 2, "1": 2},
                     "recovery": [{"subclass": 0, "subclass_name": "zero", "n": 100, "best_cluster": 0, "precision": 1.0, "recall": 0.95},
                                  {"subclass": 1, "subclass_name": "eight", "n": 20, "best_cluster": 3, "precision": 0.9, "recall": 0.6},
                                  {"subclass": 2, "subclass_name": "nine", "n": 90, "best_cluster": 2, "precision": 0.85, "recall": 0.8}],
                     "recovery_overall": {"ari": 0.9 + seed / 100, "nmi": 0.92}, "seconds": {"total": 1.0},
                     "selected_epochs": {}})
    table = []
    for name in ("ERM", "GEORGE", "GDRO (true subclasses)"):
        rob = np.array([GEORGE_ROWS[s][name][0] for s in GEORGE_ROWS])
        ova = np.array([GEORGE_ROWS[s][name][1] for s in GEORGE_ROWS])
        table.append({"method": name, "robust_mean": float(rob.mean()), "robust_std": float(rob.std()),
                      "overall_mean": float(ova.mean()), "overall_std": float(ova.std()), "seeds": 2})
    return {"invocation": {"command": "run george", "dataset": dataset, "dataset_options": {}, "data_dir": None,
                           "seeds": [0, 1], "config": {"model": "mlp"}, "features": None},
            "dataset": dataset, "config": {"model": "mlp"}, "seeds": [0, 1], "table": table, "runs": runs,
            "labels_used": {"GEORGE": "class labels only (clusters replace subclasses)",
                            "GDRO (true subclasses)": "true train and val subclass labels"}}


D3M_METHODS = {"erm": ("ERM", "no / no"), "dfr": ("DFR*", "no / yes (fits the last layer on val)"), "d3m": ("D3M", "no / yes")}


def d3m(dataset: str = "u-digits") -> dict[str, Any]:
    rows, seeds = [], []
    for seed in (0, 1):
        metrics = {}
        for i, (m, (name, info)) in enumerate(D3M_METHODS.items()):
            test, val = report(seed * 7 + i, bad_group=i % 4), report(seed * 7 + i + 100, bad_group=i % 4)
            metrics[m] = {"val": val, "test": test}
            rows.append({"seed": seed, "method": m, "name": name, "group_info": info,
                         "test_wga": test["worst_group_accuracy"], "test_balanced": test["balanced_accuracy"],
                         "test_average": test["average_accuracy"], "val_wga": val["worst_group_accuracy"],
                         "n_removed": 40 + seed if m == "d3m" else 0})
        seeds.append({"seed": seed, "seconds": {}, "d3m": {}, "metrics": metrics})
    table = []
    for m, (name, info) in D3M_METHODS.items():
        mine = [r for r in rows if r["method"] == m]
        w = np.array([r["test_wga"] for r in mine])
        b = np.array([r["test_balanced"] for r in mine])
        table.append({"method": m, "name": name, "group_info": info, "seeds": 2, "wga_mean": float(w.mean()),
                      "wga_std": float(w.std()), "balanced_mean": float(b.mean()), "balanced_std": float(b.std()),
                      "removed_mean": float(np.mean([r["n_removed"] for r in mine]))})
    sweep = [{"seed": s, "curve": c, "k": k, "val_wga": 0.3 + k / 200 + s / 50, "test_wga": 0.3, "heuristic": c == "d3m" and k == 40}
             for s in (0, 1) for c in ("d3m", "random", "balance") for k in (0, 40, 80)]
    sweep_mean = [{"curve": c, "k": k, "val_wga_mean": 0.31 + k / 200, "val_wga_std": 0.01, "seeds": 2}
                  for c in ("d3m", "random", "balance") for k in (0, 40, 80)]
    return {"invocation": {"command": "run d3m", "dataset": dataset, "dataset_options": {}, "data_dir": None,
                           "seeds": [0, 1], "config": {"model": "mlp"}, "d3m_config": {"sweep_points": 3}},
            "dataset": dataset, "config": {"model": "mlp"}, "d3m_config": {"sweep_points": 3}, "table": table,
            "rows": rows, "sweep": sweep, "sweep_mean": sweep_mean, "seeds": seeds}


SCALING_WGA = {("erm", 0.5): (0.1, 0.2), ("erm", 1.0): (0.15, 0.25), ("subsetting", 0.5): (0.4, 0.5),
               ("subsetting", 1.0): (0.45, 0.65)}  # (method, width) -> test_wga of seeds 0, 1


def scaling(dataset: str = "u-digits") -> dict[str, Any]:
    params = {0.5: 2146, 1.0: 4290}
    runs = [{"width": w, "params": params[w], "method": m, "seed": s, "selected_epoch": 1, "test_wga": v[s],
             "test_avg": 0.7 + v[s] / 10, "test_wga_last": v[s] / 2, "test_avg_last": 0.6, "seconds": 0.1, "curve": [v[s]]}
            for (m, w), v in SCALING_WGA.items() for s in (0, 1)]
    table = []
    for (m, w), v in SCALING_WGA.items():
        a = np.array(v)
        table.append({"method": m, "width": w, "params": params[w], "seeds": 2, "wga_mean": float(a.mean()),
                      "wga_std": float(a.std()), "avg_mean": float(np.mean(0.7 + a / 10)),
                      "avg_std": float(np.std(0.7 + a / 10)), "wga_last_mean": float(np.mean(a / 2)),
                      "wga_last_std": float(np.std(a / 2))})
    cfg = {"dataset": dataset, "model": "mlp", "widths": [0.5, 1.0], "methods": ["erm", "subsetting"], "seeds": [0, 1],
           "select": "val_wga"}
    return {"invocation": {"command": "run scaling", "config": cfg, "data_dir": None}, "config": cfg, "seconds": 1.0,
            "pretraining": [], "table": table, "runs": runs}


CIFAR_B_MACRO = {("flip_crop", 0): 0.021, ("flip_crop", 1): 0.025, ("cutmix", 0): 0.018, ("cutmix", 1): 0.020}


def cifar_b(dataset: str = "cifar10-b") -> dict[str, Any]:
    """A ``run cifar-b`` result: 2 augmentations x 2 seeds, one corruption at 2 severities."""
    runs = []
    for (aug, seed), macro in CIFAR_B_MACRO.items():
        clean = {"accuracy": 0.85 + macro, "weighted_std": macro / 2, "macro_std": macro, "worst_group_accuracy": 0.6 + macro,
                 "worst_group": [2, 6]}
        cor = [{"corruption": "fog", "severity": s, "accuracy": 0.7 - s / 100, "weighted_std": macro, "macro_std": 2 * macro + s / 1000,
                "worst_group_accuracy": 0.4, "worst_group": [2, 6]} for s in (1, 5)]
        classes = [{"class_name": n, "accuracy": 0.9 - i / 10, "worst_group": 6, "worst_group_accuracy": 0.8 - i / 5 - macro}
                   for i, n in enumerate(["airplane", "bird", "cat"])]
        runs.append({"augment": aug, "seed": seed, "selected_epoch": 3, "clean": clean, "classes": classes, "corrupted": cor})
    cfg = {"dataset": dataset, "augmentations": ["flip_crop", "cutmix"], "seeds": [0, 1], "model": "cifarnet"}
    return {"invocation": {"command": "run cifar-b", "config": cfg, "data_dir": None}, "config": cfg, "seconds": 1.0,
            "class_names": ["airplane", "bird", "cat"], "group_names": [], "table": [], "severity_curves": [],
            "correlation": {"pearson": None, "spearman": None, "runs": 4}, "runs": runs}


def spectral() -> dict[str, Any]:
    return {"source": "u-digits test features of erm (mlp x1, 3 epochs, seed 4)", "top_k": 2,
            "spectra": [{"class": 0, "group": 0, "n": 10, "eig_1": 0.5, "eig_2": 0.1}],
            "ratios": [{"class": 0, "class_name": "< 5", "minority_group": 0, "majority_group": 1, "lambda1_minority": 0.2,
                        "lambda1_majority": 0.4, "rho": 0.5, "accuracy_minority": 0.9, "accuracy_majority": 1.0,
                        "accuracy_gap": 0.1},
                       {"class": 1, "class_name": ">= 5", "minority_group": 8, "majority_group": 5, "lambda1_minority": 0.3,
                        "lambda1_majority": 0.2, "rho": 1.5, "accuracy_minority": 0.4, "accuracy_majority": 0.95,
                        "accuracy_gap": 0.55}]}


def write(tmp: Path, name: str, d: Any) -> Path:
    p = tmp / name
    p.write_text(json.dumps(d, indent=2))
    return p
