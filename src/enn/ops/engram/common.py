"""What the naive and fast Engram ops share: the weights, the hyper-parameters, the state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from torch import Tensor

TraceMode = Literal["per_sample", "shared"]
TRACE_MODES: tuple[str, ...] = ("per_sample", "shared")

# The reference normalises with TF's l2_normalize: v / sqrt(max(|v|^2, 1e-12)).
NORM_EPS = 1e-6


class EngramWeights(NamedTuple):
    """The learnable tensors of one Engram layer (biases are None when bias=False)."""

    weight_z: Tensor  # (h, d)   encoder
    bias_z: Tensor | None  # (h,)
    ln_z_weight: Tensor  # (h,)  LayerNorm of the encoding
    ln_z_bias: Tensor  # (h,)
    memory: Tensor  # (N, h)  the engram bank M
    weight_c: Tensor  # (3h, 3h)  integrator over [z ; m ; h_prev]
    bias_c: Tensor | None  # (3h,)
    weight_o: Tensor  # (h, 3h)  output layer
    bias_o: Tensor | None  # (h,)
    ln_h_weight: Tensor  # (h,)  LayerNorm of the output
    ln_h_bias: Tensor  # (h,)


@dataclass(frozen=True)
class EngramHyper:
    """Non-learnable settings of the step equations (ENN_SPEC section 2)."""

    hebbian_lr: float = 0.05  # eta
    trace_scale: float = 0.5  # alpha
    temperature: float = 1.5  # tau
    sparsity: float = 0.1  # lambda: tau_eff = tau / (1 + 10 * lambda)
    trace_clip: float = 0.1
    trace_mode: TraceMode = "per_sample"
    top_k: int | None = None
    ln_eps: float = 1e-6

    @property
    def effective_temperature(self) -> float:
        return self.temperature / (1.0 + 10.0 * self.sparsity)


class EngramState(NamedTuple):
    """Recurrent state: hidden vector and Hebbian trace.

    In a layer (``Engram``) both carry a leading ``num_layers`` dimension, like ``h_n`` of
    ``nn.LSTM``: ``h`` is (L, B, h); ``trace`` is (L, B, N, h) per sample, (L, N, h) shared.
    In a cell (``EngramCell``) and in the ops they have no layer dimension.
    """

    h: Tensor
    trace: Tensor


def l2_normalize(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


def masked_topk(scores: Tensor, k: int | None) -> Tensor:
    """Scores outside the k largest of the last dimension set to -inf (so softmax gives 0)."""
    if k is None or k >= scores.size(-1):
        return scores
    kth = scores.topk(k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))
