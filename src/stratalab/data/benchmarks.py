"""Loaders for the standard group-robustness benchmarks, reading the user's own files in their
canonical formats (nothing is downloaded): Waterbirds, CelebA, CivilComments (WILDS), MultiNLI.

Group conventions follow Sagawa et al.'s group_DRO code: ``g = y * n_attr + a``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import as_label_array
from .core import SPLITS, Dataset, Split, groups_from_pairs, pair_group_names, read_texts
from .files import ImageLoader, check_files_exist, normalise_split_column, read_csv_checked
from .registry import register, require_file


def _splits_from_mask(split: np.ndarray, where: Path, x: np.ndarray, y: np.ndarray, g: np.ndarray | None,
                      loader, **attrs: np.ndarray) -> dict[str, Split]:
    out = {}
    for s in SPLITS:
        m = split == s
        if not m.any():
            raise ValueError(f"{where} has no rows in split {s!r}; the file looks truncated or filtered.")
        out[s] = Split(x=x[m], y=y[m], g=None if g is None else g[m], attrs={k: v[m] for k, v in attrs.items()}, loader=loader)
    return out


WATERBIRDS_GROUPS = ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]


@register("waterbirds", "Waterbirds (Sagawa et al.): your metadata.csv + image folder; groups = (bird, place)", "metadata.csv + images")
def waterbirds(*, data_dir: Path | None = None, seed: int = 0, metadata: str = "metadata.csv",
               image_size: int | None = 224, crop: float = 0.875, cache_mb: float = 256.0,
               check_files: bool = True) -> Dataset:
    """Waterbirds from the standard ``metadata.csv`` (columns ``img_id,img_filename,y,split,place``;
    split 0/1/2 = train/val/test; ``y`` 1 = waterbird; ``place`` 1 = water) with images at
    ``data_dir / img_filename``. Groups ``g = 2 * y + place``. Looks for the CSV in ``data_dir``,
    then ``data_dir/waterbirds`` and ``data_dir/waterbird_complete95_forest2water2``.
    ``check_files`` verifies every image exists before returning. Images are read as Sagawa et
    al.'s code reads them: resized to ``image_size / crop`` (256) and centre-cropped to
    ``image_size`` (224); ``cache_mb`` MiB of decoded images are kept per process (:class:`ImageLoader`).
    """
    meta = require_file(data_dir, metadata, "waterbirds", f"waterbirds/{metadata}",
                        f"waterbird_complete95_forest2water2/{metadata}")
    df = read_csv_checked(meta, ["img_filename", "y", "split", "place"])
    root = meta.parent
    y = as_label_array(df["y"].to_numpy(), f"{meta.name} column 'y'")
    place = as_label_array(df["place"].to_numpy(), f"{meta.name} column 'place'")
    if y.max() > 1 or place.max() > 1:
        raise ValueError(f"{meta}: y and place must be 0/1.")
    split = normalise_split_column(df["split"], meta)
    files = np.array([str(root / f) for f in df["img_filename"].astype(str)], dtype=object)
    if check_files:
        check_files_exist(files, meta)
    loader = ImageLoader(image_size, crop=crop, cache_mb=cache_mb)
    splits = _splits_from_mask(split, meta, files, y, groups_from_pairs(y, place, 2), loader, place=place)
    return Dataset(name="waterbirds", splits=splits, class_names=["landbird", "waterbird"], group_names=WATERBIRDS_GROUPS,
                   description=f"Waterbirds from {meta}; g = 2*y + place", root=str(meta.parent))


def _read_celeba_table(path: Path, what: str) -> pd.DataFrame:
    """Read ``list_attr_celeba.txt`` (count line, header line, whitespace rows) or its CSV variant."""
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        first = df.columns[0]
        return df.set_index(first)
    with open(path) as fh:
        lines = fh.read().splitlines()
    if what == "attr":
        if len(lines) < 3 or not lines[0].strip().isdigit():
            raise ValueError(f"{path}: expected a count on line 1, attribute names on line 2, then one row per image.")
        names = lines[1].split()
        rows = [ln.split() for ln in lines[2:] if ln.strip()]
        bad = [r for r in rows if len(r) != len(names) + 1]
        if bad:
            raise ValueError(f"{path}: row for {bad[0][0]} has {len(bad[0]) - 1} values, expected {len(names)}.")
        return pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows], columns=names).astype(np.int64)
    rows = [ln.split() for ln in lines if ln.strip()]
    if any(len(r) != 2 for r in rows):
        raise ValueError(f"{path}: expected lines '<image> <partition>'.")
    return pd.DataFrame({"partition": [int(r[1]) for r in rows]}, index=[r[0] for r in rows])


@register("celeba", "CelebA: list_attr_celeba.txt + list_eval_partition.txt + images; target/spurious attributes by name", "CelebA files")
def celeba(*, data_dir: Path | None = None, seed: int = 0, target: str = "Blond_Hair", spurious: str = "Male",
           image_folder: str = "img_align_celeba", image_size: int | None = 128, cache_mb: float = 256.0,
           check_files: bool = True) -> Dataset:
    """CelebA with class ``y = [target == 1]`` and attribute ``a = [spurious == 1]`` (e.g.
    Blond_Hair / Male, Sagawa et al.; Young / Male). Groups ``g = 2 * y + a``. Reads the official
    text files (or their Kaggle CSV variants) from ``data_dir`` or ``data_dir/celeba``; partition
    0/1/2 = train/val/test; images in ``image_folder``.
    """
    try:
        attr_path = require_file(data_dir, "list_attr_celeba.txt", "celeba", "celeba/list_attr_celeba.txt",
                                 "list_attr_celeba.csv", "celeba/list_attr_celeba.csv")
    except FileNotFoundError:
        raise
    part_path = require_file(data_dir, "list_eval_partition.txt", "celeba", "celeba/list_eval_partition.txt",
                             "list_eval_partition.csv", "celeba/list_eval_partition.csv")
    attrs = _read_celeba_table(attr_path, "attr")
    part = _read_celeba_table(part_path, "partition")
    for name in (target, spurious):
        if name not in attrs.columns:
            raise ValueError(f"{attr_path} has no attribute {name!r}; available: {', '.join(attrs.columns)}.")
    common = attrs.index.intersection(part.index)
    if len(common) != len(attrs):
        raise ValueError(f"{part_path} lists {len(part)} images, {len(common)} of the {len(attrs)} in {attr_path}.")
    part = part.loc[attrs.index]
    y = (attrs[target].to_numpy() == 1).astype(np.int64)
    a = (attrs[spurious].to_numpy() == 1).astype(np.int64)
    split = normalise_split_column(part.iloc[:, 0], part_path)
    root = attr_path.parent / image_folder
    files = np.array([str(root / f) for f in attrs.index], dtype=object)
    if check_files:
        check_files_exist(files, attr_path)
    cnames = [f"not {target}", target]
    splits = _splits_from_mask(split, attr_path, files, y, groups_from_pairs(y, a, 2), ImageLoader(image_size, cache_mb=cache_mb),
                               spurious=a)
    return Dataset(name="celeba", splits=splits, class_names=cnames,
                   group_names=pair_group_names(cnames, [f"not {spurious}", spurious]),
                   description=f"CelebA target {target}, spurious {spurious}; g = 2*y + a", root=str(attr_path.parent))


CIVIL_IDENTITIES = ["male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white"]


@register("civilcomments", "CivilComments (WILDS all_data_with_identities.csv): toxicity x identity groups, coarse or fine", "all_data_with_identities.csv")
def civilcomments(*, data_dir: Path | None = None, seed: int = 0, grouping: str = "coarse", threshold: float = 0.5) -> Dataset:
    """CivilComments from WILDS' ``all_data_with_identities.csv`` (columns ``comment_text``,
    ``split`` = train/val/test, ``toxicity`` and the identity columns). ``y = toxicity >= 0.5``;
    identities are binarised at ``threshold``.

    ``grouping="coarse"``: ``a`` = any of the 8 WILDS identities present; groups ``2 * y + a``
    (4 groups). ``grouping="fine"``: ``a`` = 0 for no identity, else 1 + the index of the first
    identity present in the order male, female, LGBTQ, christian, muslim, other_religions, black,
    white (a comment with several identities goes to the first); groups ``9 * y + a`` (18 groups).
    Unlike SubpopBench's fine setting, which copies a comment once per identity it mentions (so its
    16 groups overlap), every comment here is in exactly one group.
    The binarised identity columns are kept as attributes, so overlapping WILDS-style groups can be
    evaluated too. Inputs are the comment texts.
    """
    if grouping not in ("coarse", "fine"):
        raise ValueError(f"grouping must be 'coarse' or 'fine', got {grouping!r}.")
    path = require_file(data_dir, "all_data_with_identities.csv", "civilcomments", "civilcomments/all_data_with_identities.csv",
                        "civilcomments_v1.0/all_data_with_identities.csv")
    df = read_csv_checked(path, ["comment_text", "split", "toxicity", *CIVIL_IDENTITIES], index_col=0)
    tox = df["toxicity"].to_numpy(dtype=np.float64)
    if np.isnan(tox).any():
        raise ValueError(f"{path}: column 'toxicity' has empty values.")
    y = (tox >= 0.5).astype(np.int64)
    ident = (df[CIVIL_IDENTITIES].fillna(0).to_numpy(dtype=np.float64) >= threshold)
    if grouping == "coarse":
        a = ident.any(axis=1).astype(np.int64)
        anames = ["no identity", "identity"]
    else:
        a = np.where(ident.any(axis=1), ident.argmax(axis=1) + 1, 0).astype(np.int64)
        anames = ["none", *CIVIL_IDENTITIES]
    split = normalise_split_column(df["split"], path)
    texts = df["comment_text"].fillna("").astype(str).to_numpy(dtype=object)
    extra = {name: ident[:, i].astype(np.int64) for i, name in enumerate(CIVIL_IDENTITIES)}
    cnames = ["non-toxic", "toxic"]
    splits = _splits_from_mask(split, path, texts, y, groups_from_pairs(y, a, len(anames)), read_texts, identity=a, **extra)
    return Dataset(name="civilcomments", splits=splits, class_names=cnames, group_names=pair_group_names(cnames, anames),
                   description=f"CivilComments (WILDS), {grouping} identity groups; y = toxicity >= 0.5", root=str(path.parent))


MNLI_LABELS = ["contradiction", "entailment", "neutral"]


@register("multinli", "MultiNLI (Sagawa et al.): metadata_random.csv + text; groups = (label, negation in hypothesis)", "metadata_random.csv")
def multinli(*, data_dir: Path | None = None, seed: int = 0, text_file: str | None = None) -> Dataset:
    """MultiNLI as in Sagawa et al.: ``metadata_random.csv`` with columns ``gold_label`` (0
    contradiction, 1 entailment, 2 neutral), ``sentence2_has_negation`` and ``split`` (0/1/2);
    groups ``g = 2 * y + negation`` (6 groups). ``sentence2_has_negation`` is 1 when the hypothesis
    contains nobody, no, never or nothing (the reference generate_multinli.py).

    Texts: if ``text_file`` (or ``multinli_text.csv`` in the data directory) exists, it must have
    one row per metadata row with columns ``sentence1,sentence2`` (premise, hypothesis), and the
    inputs are ``"premise [SEP] hypothesis"``. Without it, inputs are the row indices as strings
    and the data set is usable for audits and group counts only; pair it with your own features.
    """
    meta = require_file(data_dir, "metadata_random.csv", "multinli", "multinli/metadata_random.csv")
    # Sagawa et al.'s generate_multinli.py writes the original row index as an unnamed first column.
    df = read_csv_checked(meta, ["gold_label", "sentence2_has_negation", "split"], index_col=0)
    y = as_label_array(df["gold_label"].to_numpy(), f"{meta.name} column 'gold_label'")
    if y.max() > 2:
        raise ValueError(f"{meta}: gold_label must be 0/1/2 (contradiction/entailment/neutral), found {int(y.max())}.")
    neg = as_label_array(df["sentence2_has_negation"].to_numpy(), f"{meta.name} column 'sentence2_has_negation'")
    split = normalise_split_column(df["split"], meta)
    tpath = Path(text_file) if text_file else meta.parent / "multinli_text.csv"
    if tpath.is_file():
        t = read_csv_checked(tpath, ["sentence1", "sentence2"])
        if len(t) != len(df):
            raise ValueError(f"{tpath} has {len(t)} rows but {meta} has {len(df)}; they must align row by row.")
        x = (t["sentence1"].fillna("").astype(str) + " [SEP] " + t["sentence2"].fillna("").astype(str)).to_numpy(dtype=object)
    elif text_file:
        raise FileNotFoundError(f"text_file {tpath} does not exist.")
    else:
        x = np.array([str(i) for i in range(len(df))], dtype=object)
    splits = _splits_from_mask(split, meta, x, y, groups_from_pairs(y, neg, 2), read_texts, negation=neg)
    return Dataset(name="multinli", splits=splits, class_names=MNLI_LABELS,
                   group_names=pair_group_names(MNLI_LABELS, ["no negation", "negation"]),
                   description="MultiNLI; g = 2*y + sentence2_has_negation", root=str(meta.parent))
