"""End-to-end pipelines that combine data, training, discovery and metrics."""

from .d3m import D3MConfig, D3MResult, D3MTable, SeedResult, balancing_order, plot_sweep, run_d3m_seed, run_d3m_table
from .scaling import ScalingConfig, ScalingResult, plot_collapse, plot_scaling, run_scaling
from .george import GeorgeConfig, GeorgeRun, check_features, plot_clusters, run_george, summarise

__all__ = ["D3MConfig", "D3MResult", "D3MTable", "SeedResult", "balancing_order", "plot_sweep", "run_d3m_seed", "run_d3m_table",
           "GeorgeConfig", "GeorgeRun", "run_george", "summarise", "plot_clusters", "check_features",
           "ScalingConfig", "ScalingResult", "run_scaling", "plot_scaling", "plot_collapse"]
