"""enn: the Engram Neural Network (Hebbian memory-augmented RNN) for PyTorch."""

from .nn import Engram, EngramCell
from .ops.engram import EngramIntermediates, EngramState, attention_entropy

__version__ = "0.1.0"
__all__ = ["Engram", "EngramCell", "EngramIntermediates", "EngramState", "attention_entropy"]
