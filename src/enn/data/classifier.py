"""The paper's classifier: backbone -> last state (or attention pooling) -> dropout -> linear;
with ``pooling="each"`` a prediction at every step instead (tasks with a target per step)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbones import last_step

POOLINGS = ("last", "attention", "each")


class TemporalAttentionPool(nn.Module):
    """The spec's optional pooling: weights = softmax over time of tanh(Dense(1)(h_t))."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, out: Tensor, lengths: Tensor | None = None) -> Tensor:
        scores = torch.tanh(self.score(out)).squeeze(-1)  # (B, T)
        if lengths is not None:
            steps = torch.arange(out.size(1), device=out.device)
            scores = scores.masked_fill(steps[None] >= lengths.to(out.device)[:, None], -torch.inf)
        weights = torch.softmax(scores, dim=1)  # (B, T)
        return torch.einsum("bt,bth->bh", weights, out)  # (B, H)


class SequenceClassifier(nn.Module):
    """A plain ``nn.Module``: ``forward(x, lengths=None) -> logits (B, num_classes)``, or
    (B, T, num_classes) with ``pooling="each"``.

    ``x`` is float (B, T, D), or int64 token ids (B, T) when ``vocab_size`` is given (an
    embedding of ``embed_dim`` comes first).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        dropout: float = 0.3,
        pooling: str = "last",
        vocab_size: int | None = None,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        self.embedding = nn.Embedding(vocab_size, embed_dim) if vocab_size else None
        self.backbone = backbone
        self.pool = TemporalAttentionPool(backbone.output_size) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.output_size, num_classes)

        self.each_step = pooling == "each"

    def features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooled representation before dropout and the head; (B, H), or (B, T, H)."""
        if self.embedding is not None:
            x = self.embedding(x)  # (B, T, E)
        out, _ = self.backbone(x, lengths=lengths)  # (B, T, H)
        if self.each_step:
            return out
        return last_step(out, lengths) if self.pool is None else self.pool(out, lengths)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.dropout(self.features(x, lengths)))  # (B, C)

    @property
    def aux_loss(self) -> Tensor | None:
        """The backbone's auxiliary loss of the last forward (ENN sparsity penalty), if any."""
        return self.backbone.aux_loss
