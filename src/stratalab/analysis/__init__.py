"""Explain group disparities: spectral imbalance of group covariances (LaBonte et al. 2024)."""

from .spectral import SpectralReport, cell_counts, group_spectra, plot_group_spectra, spectral_imbalance

__all__ = ["SpectralReport", "cell_counts", "group_spectra", "spectral_imbalance", "plot_group_spectra"]
