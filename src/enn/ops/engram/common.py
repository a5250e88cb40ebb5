"""What every backend of the Engram ops shares: weights, settings, state and outputs.

Equation numbers refer to docs/model.md.
"""

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

    weight_z: Tensor  # (h, d)   encoder (1)
    bias_z: Tensor | None  # (h,)
    ln_z_weight: Tensor  # (h,)  LayerNorm of the encoding
    ln_z_bias: Tensor  # (h,)
    memory: Tensor  # (N, h)  the engram bank M
    weight_c: Tensor  # (3h, 3h)  integrator over [z ; m ; h_prev] (7)
    bias_c: Tensor | None  # (3h,)
    weight_o: Tensor  # (h, 3h)  output layer (8)
    bias_o: Tensor | None  # (h,)
    ln_h_weight: Tensor  # (h,)  LayerNorm of the output
    ln_h_bias: Tensor  # (h,)


@dataclass(frozen=True)
class MemoryConfig:
    """The scalar settings of the memory recurrence, eqs. (2)-(6) and (9)."""

    trace_scale: float  # alpha in E = M + alpha H (2)
    inv_temperature: float  # 1 / tau_eff (4)
    trace_clip: float  # |H| <= clip after every write (9)
    top_k: int | None = None  # hard top-k recall (5); None: dense
    shared: bool = False  # one trace for the batch (the write is a batch mean) or one per sample


@dataclass(frozen=True)
class EngramHyper:
    """Non-learnable settings of the paper's cell (ENN_SPEC section 2)."""

    hebbian_lr: float = 0.05  # eta: write strength, and 1 - eta the decay (9)
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

    @property
    def memory(self) -> MemoryConfig:
        return MemoryConfig(self.trace_scale, 1.0 / self.effective_temperature, self.trace_clip,
                            self.top_k, self.trace_mode == "shared")


class EngramState(NamedTuple):
    """Recurrent state: hidden vector and Hebbian trace.

    In a layer (``Engram``) both carry a leading ``num_layers`` dimension, like ``h_n`` of
    ``nn.LSTM``: ``h`` is (L, B, h); ``trace`` is (L, B, N, h) per sample, (L, N, h) shared.
    In a cell (``EngramCell``) and in the ops they have no layer dimension.
    """

    h: Tensor
    trace: Tensor


class MemoryOutput(NamedTuple):
    """What the memory did at every step: attention (B, T, N) and recall (B, T, h), both
    zero at padded steps; ``traces``, the trace after each step ((B, T, N, h) per sample,
    (T, N, h) shared), only where asked for (the reference path)."""

    attention: Tensor
    recall: Tensor
    traces: Tensor | None = None


@dataclass
class EngramIntermediates:
    """What one layer did at every step; filled only when asked for.

    attention (B, T, N), retrieved (B, T, h) and trace (B, T, N, h) per sample or (T, N, h)
    shared (the trace after each step).
    """

    attention: Tensor
    retrieved: Tensor
    trace: Tensor
    layers: tuple[EngramIntermediates, ...] = ()  # in a stacked layer: every layer's, bottom first


def l2_normalize(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


def masked_topk(scores: Tensor, k: int | None) -> Tensor:
    """Scores outside the k largest of the last dimension set to -inf (so softmax gives 0)."""
    if k is None or k >= scores.size(-1):
        return scores
    kth = scores.topk(k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def attention_entropy(attention: Tensor) -> Tensor:
    """Mean entropy (nats) of attention rows over every leading dimension; 0 = one slot."""
    return -(attention * attention.clamp_min(1e-12).log()).sum(-1).mean()
