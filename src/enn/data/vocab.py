"""The associative-recall vocabulary (``assoc``) and its ``encode``/``decode``, without
Lightning: the analysis layer labels recall inputs with it.

Ids 0-25 are the letters a-z (the keys), 26-35 the digits 0-9 (the values), 36 is ``?``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYMBOLS = LETTERS + "0123456789" + "?"
VOCAB_SIZE = len(SYMBOLS)  # 37
DIGIT0 = len(LETTERS)  # id of "0"
QUERY = VOCAB_SIZE - 1  # id of "?"


def encode(text: str) -> np.ndarray:
    """A string such as ``"c9k8j3f1??c"`` as token ids (T,) int64."""
    unknown = sorted(set(text) - set(SYMBOLS))
    if unknown:
        raise ValueError(f"symbols {unknown} are not in the associative-recall vocabulary")
    return np.array([SYMBOLS.index(c) for c in text], dtype=np.int64)


def decode(sequence: torch.Tensor | np.ndarray | Sequence[int]) -> str:
    """A sequence as a string: token ids (T,) or one-hot / scores (T, 37) -> ``"c9k8j3f1??c"``."""
    array = np.asarray(sequence.detach().cpu() if isinstance(sequence, torch.Tensor) else sequence)
    if array.ndim == 2:
        array = array.argmax(axis=1)
    if array.ndim != 1:
        raise ValueError(
            f"decode takes one sequence, (T,) ids or (T, 37) one-hot; got {array.shape}"
        )
    return "".join(SYMBOLS[int(i)] for i in array)
