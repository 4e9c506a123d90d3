"""End-to-end pipelines that combine data, training, discovery and metrics, one registered
:class:`Experiment` per kind (:data:`EXPERIMENTS`)."""

# each kind registers when its module is imported; order does not matter (files without an invocation
# are recognised by the most specific set of keys they hold)
from .audit import AuditExperiment
from .backend import Backend, DataSpec
from .cifar_b import CifarBConfig, CifarBResult, run_cifar_b
from .d3m import D3MConfig, D3MResult, D3MTable, SeedResult, balancing_order, plot_sweep, run_d3m_seed, run_d3m_table
from .george import GeorgeConfig, GeorgeRun, check_features, george_task, plot_clusters, run_george, run_george_grid, summarise
from .registry import EXPERIMENTS, Experiment, Invocation, Outcome, experiment, load_result, result_from_dict
from .scaling import ScalingConfig, ScalingResult, plot_collapse, plot_scaling, run_scaling
from .spectral import SpectralExperiment
from .training import TrainExperiment

KINDS = tuple(EXPERIMENTS)

__all__ = ["EXPERIMENTS", "KINDS", "Experiment", "Invocation", "Outcome", "experiment", "load_result", "result_from_dict",
           "AuditExperiment", "TrainExperiment", "SpectralExperiment",
           "D3MConfig", "D3MResult", "D3MTable", "SeedResult", "balancing_order", "plot_sweep", "run_d3m_seed", "run_d3m_table",
           "Backend", "DataSpec", "GeorgeConfig", "GeorgeRun", "run_george", "run_george_grid", "george_task", "summarise",
           "plot_clusters", "check_features", "ScalingConfig", "ScalingResult", "run_scaling", "plot_scaling", "plot_collapse",
           "CifarBConfig", "CifarBResult", "run_cifar_b"]
