"""The Engram ops: the reference (``naive.py``), the native CPU backend (``native.py``) and
the layer that picks one per pass (``layer.py``)."""

from .common import (
    TRACE_MODES,
    EngramHyper,
    EngramIntermediates,
    EngramState,
    EngramWeights,
    MemoryConfig,
    MemoryOutput,
    TraceMode,
    attention_entropy,
)
from .layer import BACKENDS, choose_backends, engram_layer
from .naive import encode, naive_hidden, naive_memory

__all__ = [
    "BACKENDS",
    "TRACE_MODES",
    "EngramHyper",
    "EngramIntermediates",
    "EngramState",
    "EngramWeights",
    "MemoryConfig",
    "MemoryOutput",
    "TraceMode",
    "attention_entropy",
    "choose_backends",
    "encode",
    "engram_layer",
    "naive_hidden",
    "naive_memory",
]
