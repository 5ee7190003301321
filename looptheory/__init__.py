"""looptheory: exact theory of looped linear Transformers on in-context linear regression.

The public API; each name is defined in a small module named after its responsibility.
"""

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
from .montecarlo import monte_carlo_loss
from .loss import MAX_LOOPS, RTOL, Certified, population_loss, population_loss_grad
from .moments import trace_moments, wishart_trace_moments
from .optimum import OptimumResult, optimal_preconditioner, optimal_scale, scale_loss
from .spectral import spectral_loss, spectral_loss_grad
from .flow import FlowResult, gradient_flow
from .dominance import WorstCase, dominance_ratio, worst_dominance, worst_dominance_spectral
from .record import Record
from .claims import ClaimResult, check_claims
from .chen import (
    chen_forward,
    chen_prompt,
    chen_readout,
    chen_weights,
    gd_bounds,
    gd_error_after,
    prompt_condition_number,
)
from .diagnostics import finite_difference_gradient, taylor_test
from .training import (
    TrainResult,
    batch_loss_grad,
    fix_scale,
    init_params,
    layer_weights,
    load_checkpoint,
    predict,
    save_checkpoint,
    train,
)
from .experiments import ExperimentResult, prompt_errors, run_experiments
from .plots import (
    plot_flow,
    plot_flow_eigenvalues,
    plot_loss_vs_loops,
    plot_optimal_scale,
    plot_dominance,
    plot_optimal_loss,
    plot_test_time_loops,
    plot_chen_error,
    plot_chen_kappa,
    plot_chen_divergence,
    plot_sample_complexity,
    plot_training,
    plot_looped_vs_multilayer,
)

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
    "MAX_LOOPS",
    "RTOL",
    "Certified",
    "population_loss",
    "population_loss_grad",
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
    "WorstCase",
    "dominance_ratio",
    "worst_dominance",
    "worst_dominance_spectral",
    "Record",
    "ClaimResult",
    "check_claims",
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
]
