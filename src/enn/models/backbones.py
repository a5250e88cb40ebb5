"""Recurrent backbones behind one interface: ``forward(x, state, lengths) -> (out, state)``.

``x`` is (B, T, input_size), ``out`` (B, T, output_size). The ENN is one ``Engram`` (all
layers the same width); the paper's baselines are stacks of single-layer ``nn.RNN`` / ``nn.GRU``
/ ``nn.LSTM`` whose widths may differ (128 -> 64), so they cannot be one torch module.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..nn import Engram

BACKBONES = ("engram", "rnn", "gru", "lstm")
_TORCH_RNNS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class EngramBackbone(nn.Module):
    def __init__(
        self,
        input_size: int,
        hidden_sizes: tuple[int, ...],
        dropout: float = 0.0,
        **engram_kwargs: Any,
    ) -> None:
        super().__init__()
        if len(set(hidden_sizes)) != 1:
            raise ValueError(
                f"stacked Engram layers share one width, got hidden_sizes={hidden_sizes}"
            )
        self.rnn = Engram(
            input_size,
            hidden_sizes[0],
            len(hidden_sizes),
            batch_first=True,
            dropout=dropout,
            **engram_kwargs,
        )
        self.output_size = hidden_sizes[0]

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None):
        return self.rnn(x, state, lengths=lengths)

    @property
    def aux_loss(self) -> Tensor | None:
        return self.rnn.aux_loss


class StackedRNN(nn.Module):
    """Single-layer torch RNNs of possibly different widths, dropout between them."""

    def __init__(
        self, kind: str, input_size: int, hidden_sizes: tuple[int, ...], dropout: float = 0.0
    ) -> None:
        super().__init__()
        sizes = (input_size, *hidden_sizes)
        self.layers = nn.ModuleList(
            _TORCH_RNNS[kind](sizes[k], sizes[k + 1], batch_first=True)
            for k in range(len(hidden_sizes))
        )
        self.dropout = nn.Dropout(dropout)
        self.output_size = hidden_sizes[-1]

    @property
    def aux_loss(self) -> None:
        """No auxiliary loss: the torch RNNs have no sparsity penalty."""
        return None

    def forward(self, x: Tensor, state: list | None = None, lengths: Tensor | None = None):
        state = state or [None] * len(self.layers)
        new_state = []
        out = x  # (B, T, D)
        for k, layer in enumerate(self.layers):
            if k > 0:
                out = self.dropout(out)
            if lengths is None:
                out, s = layer(out, state[k])
            else:
                packed = pack_padded_sequence(
                    out, lengths.cpu(), batch_first=True, enforce_sorted=False
                )
                out, s = layer(packed, state[k])
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
            new_state.append(s)
        return out, new_state  # (B, T, H)


def make_backbone(
    kind: str,
    input_size: int,
    hidden_sizes: tuple[int, ...],
    dropout: float = 0.0,
    **engram_kwargs: Any,
) -> nn.Module:
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone {kind!r}; expected one of {', '.join(BACKBONES)}")
    if kind == "engram":
        return EngramBackbone(input_size, hidden_sizes, dropout, **engram_kwargs)
    return StackedRNN(kind, input_size, hidden_sizes, dropout)


def detach_state(state):
    """Cut the graph between truncated-BPTT windows (tensors, tuples and lists of them)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, list):
        return [detach_state(s) for s in state]
    parts = [detach_state(s) for s in state]
    return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def last_step(out: Tensor, lengths: Tensor | None) -> Tensor:
    """The output at each sequence's last real step; out (B, T, H) -> (B, H)."""
    if lengths is None:
        return out[:, -1]
    idx = (lengths.to(out.device) - 1).view(-1, 1, 1).expand(-1, 1, out.size(-1))
    return out.gather(1, idx).squeeze(1)
