"""Data attribution: TRAK (Park et al. 2023) over any PyTorch classifier, and its evaluation by the
linear datamodeling score (LDS)."""

from .lds import lds, linear_datamodeling_score, random_subsets
from .trak import TRAK, allocate_scores, ensemble_scores, margin

__all__ = ["TRAK", "allocate_scores", "ensemble_scores", "margin", "linear_datamodeling_score", "lds", "random_subsets"]
