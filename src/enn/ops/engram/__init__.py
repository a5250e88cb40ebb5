"""Pure Engram ops: the naive reference and the recurrence the layer runs."""

from .common import TRACE_MODES, EngramHyper, EngramState, EngramWeights, TraceMode
from .fast import fast_engram, trace_noise
from .naive import naive_engram, naive_engram_step
from .recurrent import EngramIntermediates, attention_entropy, encode, engram_recurrence

__all__ = [
    "TRACE_MODES",
    "EngramHyper",
    "EngramIntermediates",
    "EngramState",
    "EngramWeights",
    "TraceMode",
    "attention_entropy",
    "encode",
    "engram_recurrence",
    "fast_engram",
    "naive_engram",
    "naive_engram_step",
    "trace_noise",
]
