"""The Engram ops: the reference (``naive.py``), the native CPU backend (``native.py``), the
memory addressed by its bank alone (``bank.py``: chunked, or the clipped scan) and the layer
that picks one per pass (``layer.py``)."""

from .bank import chunk_memory, scan_memory
from .common import (
    HIDDEN_UPDATES,
    SHARPNESS,
    TRACE_MODES,
    WRITE_KEYS,
    EngramHyper,
    EngramIntermediates,
    EngramState,
    EngramWeights,
    MemoryConfig,
    MemoryOutput,
    OptionWeights,
    TraceMode,
    attention_entropy,
    row_entropy,
)
from .layer import BACKENDS, choose_backend, engram_layer, layer_backend, layer_backends
from .naive import encode, naive_hidden, naive_memory

__all__ = [
    "BACKENDS",
    "HIDDEN_UPDATES",
    "SHARPNESS",
    "TRACE_MODES",
    "WRITE_KEYS",
    "EngramHyper",
    "EngramIntermediates",
    "EngramState",
    "EngramWeights",
    "MemoryConfig",
    "MemoryOutput",
    "OptionWeights",
    "TraceMode",
    "attention_entropy",
    "row_entropy",
    "choose_backend",
    "chunk_memory",
    "encode",
    "engram_layer",
    "layer_backend",
    "layer_backends",
    "naive_hidden",
    "naive_memory",
    "scan_memory",
]
