"""Training with PyTorch Lightning (the models never import it), comparisons and statistics."""

from .compare import compare, summarize
from .run import RunError, evaluate, train

__all__ = ["RunError", "compare", "evaluate", "summarize", "train"]
