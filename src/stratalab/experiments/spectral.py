"""The ``spectral`` experiment: spectral imbalance of group feature covariances (LaBonte et al.
2024), on the user's features or on the penultimate features of a model trained here."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.spectral import cell_counts
from ..report.results import GroupTable, Row, field_of, num
from .registry import Experiment, Invocation, Outcome, register

__all__ = ["SpectralExperiment", "SPECTRAL_DEFAULTS"]

# the settings of a spectral analysis; all but top_k set up the model trained on a data set. The split,
# the features and the minority rule follow LaBonte et al.'s reference code (stratalab.analysis.spectral):
# the train split without augmentation, the unpooled last hidden state where the model has one ("auto";
# "pooled" for the penultimate features), minority and majority within each class by its train counts.
SPECTRAL_DEFAULTS: dict[str, Any] = {"method": "erm", "model": "mlp", "width": 1.0, "epochs": 10, "split": "train",
                                     "features": "auto", "init": None, "finetune": "full", "top_k": 10, "device": "cpu",
                                     "precision": "fp32"}
FEATURE_KINDS = ("auto", "unpooled", "pooled")
_MODEL_KEYS = ("method", "model", "width", "epochs", "split", "init", "finetune", "device", "precision")
# what a result file written before a setting existed ran with (split and features were test / pooled then)
_BEFORE = {"features": "pooled"}
# a features-file result recorded without "split" was read at the test split (the default before
# 2026-12-05); new ones record the split used, None meaning "the default" for a fresh call
_OLD_DEFAULT = "<test: recorded before the train default>"
_OLD_SOURCE = re.compile(r"features of (?P<method>[\w-]+) \(.*seed (?P<seed>\d+)")  # files before method/seed fields


def _settings(inv: Invocation) -> dict[str, Any]:
    unknown = sorted(set(inv.config) - set(SPECTRAL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown spectral setting {unknown[0]!r}; known: {', '.join(SPECTRAL_DEFAULTS)}.")
    recorded_before = "model" in inv.config and not set(_BEFORE) & set(inv.config)
    cfg = {**SPECTRAL_DEFAULTS, **(_BEFORE if recorded_before else {}), **inv.config}
    if (inv.inputs.get("features") is None) == (inv.dataset is None):
        raise ValueError("give exactly one of features (an .npz file) or a data set.")
    features_default = inv.inputs.get("features") is not None and cfg["split"] in (None, _OLD_DEFAULT)
    if not features_default and cfg["split"] not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {cfg['split']!r}.")
    if cfg["features"] not in FEATURE_KINDS:
        raise ValueError(f"the feature layer (--layer; setting 'features') must be one of {', '.join(FEATURE_KINDS)}, "
                         f"got {cfg['features']!r}.")
    if int(cfg["top_k"]) < 1:
        raise ValueError(f"top_k must be >= 1, got {cfg['top_k']}.")
    return cfg


class SpectralExperiment(Experiment):
    """``stratalab spectral``. Invocation: either ``features`` (an .npz with features, y, g and
    optionally pred) or a data set (an ERM-or-other model is trained and the features of ``split``
    analysed: by default the train split and the unpooled last hidden state, as the reference code),
    ``config`` (:data:`SPECTRAL_DEFAULTS` keys) and ``seeds`` (one: data and training)."""

    command = "spectral"
    result_keys = ("spectra", "ratios")
    required = ()
    input_keys = ("features",)
    recognise = frozenset({"spectra", "ratios"})

    def run(self, inv: Invocation, *, backend: Any = None, progress: Any = None,
            outputs: dict[str, Path] | None = None) -> Outcome:
        from ..analysis import spectral_imbalance
        from .backend import local_record, torch_threads

        cfg = _settings(inv)
        if inv.inputs.get("features") is not None:
            split = inv.config["split"] if "split" in inv.config else _OLD_DEFAULT
            z, y, g, pred, counts, names, who = self._user_features(str(inv.inputs["features"]), split)
            recorded = replace(inv, configs={"config": {"top_k": cfg["top_k"], "split": who.pop("split")}})
        else:
            with torch_threads(self.threads_of(inv, backend)) as threads:
                z, y, g, pred, counts, names, who = self._model_features(inv, cfg)
            recorded = replace(inv, configs={"config": cfg}, backend=local_record(threads))
        rep = spectral_imbalance(z, y, g, top_k=int(cfg["top_k"]), pred=pred, group_counts=counts, **names)
        payload = {"invocation": recorded.to_dict(), **who, **rep.to_dict()}
        return Outcome(payload, rep, {"names": names, "by_train_counts": counts is not None})

    @staticmethod
    def _user_features(path: str, split: str | None) -> tuple[Any, ...]:
        """An .npz of arrays ``features, y, g`` (and ``pred``), or the file of ``stratalab embed``
        (``<split>``, ``y_<split>``, ``g_<split>`` per split; ``split`` picks one, train by default as
        the reference code), whose train labels then decide minority and majority within each class."""
        from .._io import check_input_file
        from ..data.files import read_npz

        p = check_input_file(path, "features", (".npz",))
        with np.load(p, allow_pickle=False) as f:
            keys = set(f.files)
        who = {"source": path, "method": "features", "seed": None, "split": None}
        if "features" in keys or not {"train", "y_train"} <= keys:
            if split not in (None, _OLD_DEFAULT):
                raise ValueError(f"{path} holds one set of features (arrays features, y, g), not splits; --split reads "
                                 "files written by `stratalab embed`.")
            arr = read_npz(p, ("features", "y", "g"), what=" (features: arrays features, y, g and optionally pred)")
            return arr["features"], arr["y"], arr["g"], arr.get("pred"), None, {}, who
        split = "train" if split is None else "test" if split == _OLD_DEFAULT else split
        arr = read_npz(p, (split, f"y_{split}", f"g_{split}"), what=f" (a `stratalab embed` file with the {split} split's groups)")
        counts = None
        if {"y_train", "g_train"} <= keys:  # minority / majority by the train counts of each (class, group) cell
            tr = read_npz(p, ("y_train", "g_train"))
            counts = cell_counts(tr["y_train"], tr["g_train"])
        feats = np.asarray(arr[split])
        return feats.reshape(len(feats), -1), arr[f"y_{split}"], arr[f"g_{split}"], None, counts, {}, \
            {**who, "source": f"{path} ({split})", "split": split}

    @staticmethod
    def _model_features(inv: Invocation, cfg: dict[str, Any]) -> tuple[Any, ...]:
        from ..data import load
        from ..models import embed, read_pretrained
        from ..train import TrainConfig, run

        seed = inv.seeds[0]
        tcfg = TrainConfig(method=cfg["method"], model=cfg["model"], width=cfg["width"], epochs=cfg["epochs"], seed=seed,
                           init=cfg["init"], finetune=cfg["finetune"], device=cfg["device"],
                           precision=cfg["precision"])
        if tcfg.init is not None:
            read_pretrained(tcfg.init)
        from ..models.build import MODELS, UNPOOLED_MODELS

        if cfg["features"] == "unpooled" and cfg["model"] in MODELS and cfg["model"] not in UNPOOLED_MODELS:
            raise ValueError(f"{cfg['model']!r} has no unpooled last hidden state (only {', '.join(UNPOOLED_MODELS)} and the "
                             "Hugging Face backbones have one); use the pooled or auto layer.")
        ds = load(str(inv.dataset), data_dir=inv.data_dir, seed=seed, **inv.dataset_options)
        sp = ds.splits[cfg["split"]]
        if sp.g is None:
            raise ValueError(f"the {cfg['split']} split of {ds.name!r} has no group labels; choose a split that has them.")
        model = run(ds, tcfg, progress=None).model
        unpooled = cfg["features"] == "unpooled" or (cfg["features"] == "auto" and hasattr(model, "feature_map"))
        emb = embed(model, sp, precision=tcfg.precision, unpooled=unpooled)  # eval mode: no augmentation
        counts = cell_counts(ds.train.y, ds.train.g) if ds.train.g is not None else None  # within each class
        init = f", finetuned from {Path(cfg['init']).name}" if cfg["init"] else ""
        source = (f"{ds.name} {cfg['split']} {'unpooled' if unpooled else 'pooled'} features of {cfg['method']} "
                  f"({cfg['model']} x{cfg['width']:g}, "
                  f"{cfg['epochs']} epochs, seed {seed}{init})")
        who = {"source": source, "method": cfg["method"], "seed": seed}
        names = {"class_names": ds.class_names, "group_names": ds.group_names}
        return emb.features, sp.y, sp.g, emb.pred, counts, names, who

    # ------------------------------------------------------------------ result views
    @staticmethod
    def _who(raw: dict[str, Any]) -> tuple[str, int]:
        if "method" in raw:
            seed = raw.get("seed")
            return str(raw["method"]), -1 if seed is None else int(seed)
        m = _OLD_SOURCE.search(str(raw.get("source", "")))
        return (m["method"], int(m["seed"])) if m else ("features", -1)

    def records(self, raw: dict[str, Any]) -> list[Row]:
        method, seed = self._who(raw)
        out: list[Row] = []
        for r in field_of(raw, "ratios", list):
            cls = str(r.get("class_name", r["class"]))
            for key in ("rho", "accuracy_gap"):
                v = num(r.get(key), f"ratios[].{key}")
                if v is not None:
                    out.append((method, "", seed, f"{key}:{cls}", v, None))
        return out

    def group_tables(self, raw: dict[str, Any]) -> list[GroupTable]:
        rows = []
        for r in field_of(raw, "ratios", list):
            row = {"class": str(r.get("class_name", r["class"])), "minority group": str(r["minority_group"]),
                   "majority group": str(r["majority_group"]),
                   "lambda_1 minority": num(r["lambda1_minority"], "ratios[].lambda1_minority"),
                   "lambda_1 majority": num(r["lambda1_majority"], "ratios[].lambda1_majority"),
                   "rho": num(r["rho"], "ratios[].rho")}
            for k, name in (("accuracy_minority", "accuracy minority"), ("accuracy_majority", "accuracy majority"),
                            ("accuracy_gap", "accuracy gap")):
                if k in r:
                    row[name] = num(r[k], f"ratios[].{k}")
            rows.append(row)
        return [GroupTable("Spectral imbalance per class: rho = lambda_1(minority) / lambda_1(majority)",
                           pd.DataFrame(rows), None, None)]

    def method_names(self, raw: dict[str, Any]) -> dict[str, str]:
        m, _ = self._who(raw)
        return {m: m}

    def dataset_name(self, raw: dict[str, Any], inv: dict[str, Any]) -> str:
        return str(raw.get("source", "unknown"))


register(SpectralExperiment())
