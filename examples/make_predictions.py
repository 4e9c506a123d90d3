"""Write examples/predictions.csv: a real model's test predictions to try `stratalab audit` on.

A small MLP trained with plain ERM on u-digits (scikit-learn's bundled 8x8 digits as a binary task,
digit < 5 vs >= 5, with the 8s rare in train), 10 epochs, seed 0, one torch thread. One row per
test image: its class (`label`), the model's class (`prediction`), the hidden subclass it belongs
to (`digit`: the group nobody labelled) and the predicted probability of class 1 (`p1`).

Run: python examples/make_predictions.py   (a few seconds; the CSV is committed beside it)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from stratalab.data import load
from stratalab.train import TrainConfig, predict, run


def main() -> None:
    torch.set_num_threads(1)
    ds = load("u-digits", seed=0)
    res = run(ds, TrainConfig(method="erm", model="mlp", epochs=10, seed=0, select="val_wca"))
    proba = predict(res.model, ds.test)
    out = pd.DataFrame({"label": ds.test.y, "prediction": proba.argmax(1), "digit": ds.test.g, "p1": proba[:, 1].round(6)})
    path = Path(__file__).resolve().parent / "predictions.csv"
    out.to_csv(path, index=False)
    print(f"wrote {path} ({len(out)} rows)")


if __name__ == "__main__":
    main()
