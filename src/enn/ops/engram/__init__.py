"""The Engram ops: the reference (``naive.py``), the native CPU backend (``native.py``), the
chunked linear memory (``chunk.py``) and the layer that picks one per pass (``layer.py``)."""

from .chunk import chunk_memory
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
)
from .layer import BACKENDS, choose_backends, engram_layer, layer_backends
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
    "choose_backends",
    "chunk_memory",
    "encode",
    "engram_layer",
    "layer_backends",
    "naive_hidden",
    "naive_memory",
]
