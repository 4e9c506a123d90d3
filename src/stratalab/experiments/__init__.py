"""End-to-end pipelines that combine data, training, discovery and metrics."""

from .d3m import D3MConfig, D3MResult, D3MTable, SeedResult, balancing_order, plot_sweep, run_d3m_seed, run_d3m_table
from .scaling import ScalingConfig, ScalingResult, plot_collapse, plot_scaling, run_scaling
from .backend import Backend, DataSpec
from .george import GeorgeConfig, GeorgeRun, check_features, george_task, plot_clusters, run_george, run_george_grid, summarise

__all__ = ["D3MConfig", "D3MResult", "D3MTable", "SeedResult", "balancing_order", "plot_sweep", "run_d3m_seed", "run_d3m_table",
           "Backend", "DataSpec", "GeorgeConfig", "GeorgeRun", "run_george", "run_george_grid", "george_task", "summarise", "plot_clusters", "check_features",
           "ScalingConfig", "ScalingResult", "run_scaling", "plot_scaling", "plot_collapse"]
