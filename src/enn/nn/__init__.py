"""``nn.Module`` layers."""

from .engram import Engram, EngramCell

__all__ = ["Engram", "EngramCell"]
