"""Word-level language model: embedding -> backbone -> dropout -> softmax over the vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LanguageModel(nn.Module):
    """A plain ``nn.Module`` for next-token prediction with state carried across windows.

    ``forward(tokens (B, T), state=None) -> (hidden (B, T, H), state)``;
    ``nll(hidden, targets) -> (B, T)`` negative log-likelihood per token (full softmax, or an
    adaptive softmax for large vocabularies); ``logits(hidden)`` for the full softmax.
    """

    def __init__(
        self,
        backbone: nn.Module,
        vocab_size: int,
        embed_dim: int,
        dropout: float = 0.3,
        tie_weights: bool = False,
        adaptive_cutoffs: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        hidden = backbone.output_size
        if adaptive_cutoffs:
            if tie_weights:
                raise ValueError("tie_weights needs the full softmax, not adaptive_cutoffs")
            if adaptive_cutoffs[-1] >= vocab_size:
                raise ValueError(f"adaptive_cutoffs must lie below the vocabulary size "
                                 f"{vocab_size}, got {list(adaptive_cutoffs)}")
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                hidden, vocab_size, list(adaptive_cutoffs), div_value=4.0
            )
            self.decoder = None
        else:
            self.adaptive = None
            self.decoder = nn.Linear(hidden, vocab_size)
            if tie_weights:
                if hidden != embed_dim:
                    raise ValueError(
                        f"tie_weights needs embed_dim == hidden size, got {embed_dim} and {hidden}"
                    )
                self.decoder.weight = self.embedding.weight

    def forward(self, tokens: Tensor, state=None):
        out, state = self.backbone(self.embedding(tokens), state)  # (B, T, H)
        return self.dropout(out), state

    def logits(self, hidden: Tensor) -> Tensor:
        if self.decoder is None:
            return self._adaptive(self.adaptive.log_prob, hidden).view(*hidden.shape[:-1], -1)
        return self.decoder(hidden)  # (B, T, V)

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Each token's NLL (B, T) in float32 at least (float64 stays), since an epoch sums
        them; the adaptive softmax computes in its parameters' dtype, the full one in float32
        at least."""
        if self.decoder is None:
            nll = -self._adaptive(self.adaptive, hidden, targets.reshape(-1)).output
            return nll.to(torch.promote_types(nll.dtype, torch.float32)).view(targets.shape)
        logits = self.decoder(hidden)  # (B, T, V)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # not float64
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)

    def _adaptive(self, fn, hidden: Tensor, *args):
        """``fn`` (the adaptive softmax or its log_prob) on hidden (B, T, H) as (B*T, H), in
        the softmax's own dtype: under autocast torch's adaptive softmax mixes dtypes."""
        flat = hidden.reshape(-1, hidden.size(-1))
        with torch.autocast(flat.device.type, enabled=False):
            return fn(flat.to(self.adaptive.head.weight.dtype), *args)

    @property
    def aux_loss(self):
        return self.backbone.aux_loss
