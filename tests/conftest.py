"""Shared test fixtures. The real data directory is defined here and only here."""

from __future__ import annotations

# ../shared/data beside the project root (as in CI); override with $STRATALAB_TEST_DATA.
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("STRATALAB_TEST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    """Path of a file in the shared data directory, or skip the test with the reason."""
    p = SHARED_DATA / name
    if not p.is_file():
        pytest.skip(f"real data file {p} is absent (needs ../shared/data beside the project, or $STRATALAB_TEST_DATA)")
    return p


@pytest.fixture
def shared_data() -> Path:
    shared_file("README.md")
    return SHARED_DATA


def write_npz_without_groups(path: Path, n_features: int, seed: int = 0) -> Path:
    """A user data set (.npz) with random features, two classes and no group labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for s, n in (("train", 40), ("val", 20), ("test", 20)):
        arrays[f"x_{s}"] = rng.standard_normal((n, n_features)).astype(np.float32)
        arrays[f"y_{s}"] = np.arange(n) % 2
    np.savez(path, **arrays)
    return path


def write_waterbirds_folder(root: Path, n: int = 64, size: int = 48, seed: int = 0) -> Path:
    """A synthetic Waterbirds-format folder (the library's own writer)."""
    from stratalab.data.folders import write_waterbirds_folder as write

    return write(root, n=n, size=size, seed=seed)


def write_civilcomments_csv(root: Path, n: int = 48) -> Path:
    """all_data_with_identities.csv in WILDS' format: toxic comments use the toxic words, identity
    mentions set the identity columns; splits train/val/test 2:1:1."""
    import pandas as pd

    toxic = ["you are an awful idiot", "people like you are bad", "i hate you idiot"]
    fine = ["you are kind", "nice people are good", "i love the good people"]
    rows = []
    for i in range(n):
        t = (i // 4) % 2
        text = (toxic if t else fine)[i % 3] + (" muslim" if i % 5 == 0 else "")
        row = {"comment_text": text, "split": ("train", "train", "val", "test")[i % 4], "toxicity": 0.9 if t else 0.1}
        row.update({c: 0.0 for c in ["male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white"]})
        row["muslim"] = 1.0 if i % 5 == 0 else 0.0
        rows.append(row)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "all_data_with_identities.csv")
    return root


TINY_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"the a an bad good awful nice you are is people hate love idiot kind i like muslim".split()]


def write_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer BERT with random weights and its WordPiece tokenizer, in Hugging Face's layout."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    T.BertTokenizerFast(vocab={w: i for i, w in enumerate(TINY_WORDS)}).save_pretrained(folder)
    cfg = T.BertConfig(vocab_size=len(TINY_WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=64)
    T.BertModel(cfg).save_pretrained(folder)
    return folder
