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
]
