"""looptheory: exact theory of looped linear Transformers on in-context linear regression.

The public API; each name is defined in a small module named after its responsibility. The
modules that need SciPy's optimisers, integrators or linear algebra (optimum, flow, dominance,
claims, chen, experiments, plots) and the trainer are imported when one of their names is
first used, so that `import looptheory` stays light (numpy and the exact engine).
"""

import importlib as _importlib

from .task import Task
from .model import (
    attention_layer,
    looped_forward,
    make_prompt,
    multilayer_forward,
    preconditioned_gd,
    prediction,
    sparse_weights,
)
from .montecarlo import MonteCarloResult, conditional_loss, monte_carlo_loss, monte_carlo_multilayer_loss
from .loss import MAX_LOOPS, RTOL, Certified, population_loss, population_loss_grad
from .multilayer import MAX_LAYERS, multilayer_population_loss, multilayer_population_loss_grad
from .moments import trace_moments, wishart_trace_moments
from .spectral import spectral_loss, spectral_loss_grad
from .record import Record
from .diagnostics import finite_difference_gradient, taylor_test

#: Names imported on first use, by module.
_LAZY = {
    "optimum": ("OptimumResult", "optimal_preconditioner", "optimal_scale", "scale_loss"),
    "flow": ("FlowResult", "gradient_flow", "multilayer_gradient_flow"),
    "multilayer_optimum": ("MultilayerOptimum", "optimal_multilayer", "ScheduleResult", "optimal_schedule"),
    "dominance": ("WorstCase", "dominance_ratio", "worst_dominance", "worst_dominance_spectral"),
    "claims": ("ClaimResult", "check_claims"),
    "claim": ("Case", "Claim", "verify_claim"),
    "sweeps": ("Grid", "SweepError", "sweep"),
    "chen": ("chen_forward", "chen_prompt", "chen_readout", "chen_weights", "gd_bounds", "gd_error_after",
             "prompt_condition_number"),
    "experiments": ("ExperimentResult", "prompt_errors", "run_experiments"),
    "training": ("TrainResult", "batch_loss_grad", "fix_scale", "init_params", "layer_weights", "load_checkpoint",
                 "predict", "save_checkpoint", "train"),
    "plots": ("plot_flow", "plot_flow_eigenvalues", "plot_loss_vs_loops", "plot_optimal_scale",
              "plot_dominance", "plot_optimal_loss", "plot_test_time_loops", "plot_chen_error",
              "plot_chen_kappa", "plot_chen_divergence", "plot_sample_complexity", "plot_training",
              "plot_looped_vs_multilayer", "plot_looped_vs_untied", "plot_scalar_limit"),
    "limit": ("LimitResult", "scalar_family_limit", "scalar_family_convergence"),
}
_LAZY_NAME = {name: mod for mod, names in _LAZY.items() for name in names}


def __getattr__(name):
    mod = _LAZY_NAME.get(name)
    if mod is not None:
        value = getattr(_importlib.import_module(f"{__name__}.{mod}"), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:  # a submodule, e.g. looptheory.optimum without importing it first
            return _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAME))


__version__ = "0.1.0"

__all__ = [
    "Task",
    "attention_layer",
    "looped_forward",
    "make_prompt",
    "multilayer_forward",
    "preconditioned_gd",
    "prediction",
    "sparse_weights",
    "monte_carlo_loss",
    "monte_carlo_multilayer_loss",
    "MonteCarloResult",
    "conditional_loss",
    "MAX_LOOPS",
    "RTOL",
    "Certified",
    "population_loss",
    "population_loss_grad",
    "MAX_LAYERS",
    "multilayer_population_loss",
    "multilayer_population_loss_grad",
    "trace_moments",
    "wishart_trace_moments",
    "optimal_scale",
    "scale_loss",
    "OptimumResult",
    "optimal_preconditioner",
    "spectral_loss",
    "spectral_loss_grad",
    "FlowResult",
    "gradient_flow",
    "multilayer_gradient_flow",
    "MultilayerOptimum",
    "optimal_multilayer",
    "ScheduleResult",
    "optimal_schedule",
    "WorstCase",
    "dominance_ratio",
    "worst_dominance",
    "worst_dominance_spectral",
    "Record",
    "ClaimResult",
    "check_claims",
    "Claim",
    "Case",
    "Grid",
    "verify_claim",
    "sweep",
    "SweepError",
    "chen_prompt",
    "chen_weights",
    "chen_readout",
    "chen_forward",
    "prompt_condition_number",
    "gd_error_after",
    "gd_bounds",
    "taylor_test",
    "finite_difference_gradient",
    "TrainResult",
    "train",
    "batch_loss_grad",
    "init_params",
    "layer_weights",
    "predict",
    "save_checkpoint",
    "load_checkpoint",
    "fix_scale",
    "ExperimentResult",
    "prompt_errors",
    "run_experiments",
    "plot_flow",
    "plot_flow_eigenvalues",
    "plot_loss_vs_loops",
    "plot_optimal_scale",
    "plot_dominance",
    "plot_optimal_loss",
    "plot_test_time_loops",
    "plot_chen_error",
    "plot_chen_kappa",
    "plot_chen_divergence",
    "plot_sample_complexity",
    "plot_training",
    "plot_looped_vs_multilayer",
    "plot_looped_vs_untied",
    "plot_scalar_limit",
    "LimitResult",
    "scalar_family_limit",
    "scalar_family_convergence",
]
