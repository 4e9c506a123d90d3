"""Data sets with subgroups, all in one small data model (:class:`Dataset` of :class:`Split`).

``load(name, data_dir=None, seed=0, **options)`` returns a :class:`Dataset`; ``available()`` lists
the registered names. A user's own ``.npz`` or ``.csv`` is loaded by giving its path as the name.
"""

from . import images, synthetic  # noqa: F401,I001  (register the data sets, in listing order)
from . import benchmarks  # noqa: F401,E402
from .core import SPLITS, Dataset, Split, groups_from_pairs, pair_group_names
from .predictions import Predictions, read_predictions
from .registry import DATA_DIR_ENV, available, info, load, resolve_data_dir
from .user import load_user

__all__ = [
    "SPLITS", "Dataset", "Split", "load", "load_user", "available", "info", "resolve_data_dir",
    "DATA_DIR_ENV", "groups_from_pairs", "pair_group_names", "Predictions", "read_predictions",
]
