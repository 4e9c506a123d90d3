"""Data debiasing: D3M and AUTO-D3M (Jain et al. 2024) on TRAK attributions."""

from .d3m import alignment_by_cell, auto_d3m_groups, d3m_keep, group_alignment

__all__ = ["group_alignment", "d3m_keep", "auto_d3m_groups", "alignment_by_cell"]
