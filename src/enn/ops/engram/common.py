"""What every backend of the Engram ops shares: weights, settings, state and outputs.

Equation numbers refer to docs/model.md.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

TraceMode = Literal["per_sample", "shared"]
TRACE_MODES: tuple[str, ...] = ("per_sample", "shared")
WRITE_KEYS: tuple[str, ...] = ("current", "previous", "mix")
HIDDEN_UPDATES: tuple[str, ...] = ("paper", "residual", "gated")
SHARPNESS: tuple[str, ...] = ("fixed", "layer", "slot")

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


class OptionWeights(NamedTuple):
    """The learnable tensors of the options beyond the paper's cell (None where unused)."""

    log_sharpness: Tensor | None = None  # () or (N,): log of the learned 1 / tau (4)
    write_mix: Tensor | None = None  # (): logit of the previous key's share of the write (10)
    weight_mod: Tensor | None = None  # (2, h): write strength and decay from the encoding (11)
    bias_mod: Tensor | None = None  # (2,)
    weight_g: Tensor | None = None  # (h, 3h): the gate of the gated hidden update (12)
    bias_g: Tensor | None = None  # (h,)


@dataclass(frozen=True)
class MemoryConfig:
    """The settings of the memory recurrence, eqs. (2)-(6) and (9)-(11)."""

    trace_scale: float  # alpha in E = M + alpha H (2)
    inv_temperature: float | Tensor  # 1 / tau_eff (4); a tensor () or (N,) when learned
    trace_clip: float | None  # |H| <= clip after every write (9); None: no clip
    top_k: int | None = None  # hard top-k recall (5); None: dense
    shared: bool = False  # one trace for the batch (the write is a batch mean) or one per sample
    address_trace: bool = True  # address E = M + alpha H (paper) or the bank M alone (3)
    delta_rule: bool = False  # write v - w H (what the address already holds) instead of v (9)
    cosine_eps: float = 0.0  # 0: the paper's norm clamp; > 0: v / sqrt(|v|^2 + eps) (3)


@dataclass(frozen=True)
class EngramHyper:
    """Non-learnable settings of the paper's cell (docs/model.md)."""

    hebbian_lr: float = 0.05  # eta: write strength, and 1 - eta the decay (9)
    trace_scale: float = 0.5  # alpha
    temperature: float = 1.5  # tau
    sparsity: float = 0.1  # lambda: tau_eff = tau / (1 + 10 * lambda)
    trace_clip: float | None = 0.1
    trace_mode: TraceMode = "per_sample"
    top_k: int | None = None
    ln_eps: float = 1e-6
    # the options beyond the paper's cell (docs/model.md, eqs. 10-12); these defaults are its
    trace_decay: float | None = None  # d in (9); None: 1 - hebbian_lr
    write_key: str = "current"  # the write's address: the read's, the previous encoding's, a mix
    address_trace: bool = True
    delta_rule: bool = False
    sharpness: str = "fixed"  # 1 / tau_eff fixed, or learned per layer or per slot
    neuromodulation: bool = False  # write strength and decay gated by the encoding (11)
    cosine_eps: float = 0.0
    hidden_update: str = "paper"  # (8), or its residual or gated form (12)

    @property
    def effective_temperature(self) -> float:
        return self.temperature / (1.0 + 10.0 * self.sparsity)

    @property
    def decay(self) -> float:
        return 1.0 - self.hebbian_lr if self.trace_decay is None else self.trace_decay

    @property
    def memory(self) -> MemoryConfig:
        return MemoryConfig(self.trace_scale, 1.0 / self.effective_temperature, self.trace_clip,
                            self.top_k, self.trace_mode == "shared", self.address_trace,
                            self.delta_rule, self.cosine_eps)

    @property
    def paper_memory(self) -> bool:
        """Whether the memory is the paper's (up to a smooth cosine), which the per-sample and
        shared kernels run."""
        return (self.write_key == "current" and self.address_trace and not self.delta_rule
                and self.sharpness == "fixed" and not self.neuromodulation
                and self.trace_clip is not None)


class EngramState(NamedTuple):
    """Recurrent state: hidden vector, Hebbian trace and the last encoding.

    In a layer (``Engram``) all carry a leading ``num_layers`` dimension, like ``h_n`` of
    ``nn.LSTM``: ``h`` is (L, B, h); ``trace`` is (L, B, N, h) per sample, (L, N, h) shared;
    ``key`` (L, B, h) is the last step's encoding, the first write key of the next call when
    the write is addressed by the previous encoding (None or zeros: no such write). Layers
    always return all three. In a cell (``EngramCell``) and in the ops they have no layer
    dimension.
    """

    h: Tensor
    trace: Tensor
    key: Tensor | None = None


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

    attention (B, T, N), recall (B, T, h) and trace (B, T, N, h) per sample or (T, N, h)
    shared (the trace after each step).
    """

    attention: Tensor
    recall: Tensor
    trace: Tensor
    layers: tuple[EngramIntermediates, ...] = ()  # in a stacked layer: every layer's, bottom first


def l2_normalize(v: Tensor, eps: float = 0.0) -> Tensor:
    """v / max(|v|, 1e-6) (the paper's; its gradient near v = 0 is 1e6), or with eps > 0 the
    smooth v / sqrt(|v|^2 + eps), whose gradient stays below 1 / sqrt(eps)."""
    if eps > 0:
        return v * inverse_norm(v, eps)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


def inverse_norm(v: Tensor, eps: float = 0.0) -> Tensor:
    """What l2_normalize multiplies v (..., h) by, (..., 1): 1 / max(|v|, 1e-6), or with eps >
    0 1 / sqrt(|v|^2 + eps)."""
    if eps > 0:
        return torch.rsqrt((v * v).sum(-1, keepdim=True) + eps)
    return 1 / v.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


@torch.compiler.assume_constant_result
def triton_available() -> bool:
    """Whether the triton package is installed (the GPU kernels' backend)."""
    return importlib.util.find_spec("triton") is not None


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether a backward can reach any of ``tensors`` (so that a kernel saves for it)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def masked_topk(scores: Tensor, k: int | None) -> Tensor:
    """Scores outside the k largest of the last dimension set to -inf (so softmax gives 0)."""
    if k is None or k >= scores.size(-1):
        return scores
    kth = scores.topk(k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def row_entropy(attention: Tensor) -> Tensor:
    """Entropy (nats) of each attention row (..., N) -> (...); 0 = one slot."""
    return -(attention * attention.clamp_min(1e-12).log()).sum(-1)


def attention_entropy(attention: Tensor) -> Tensor:
    """Mean entropy (nats) of attention rows over every leading dimension; 0 = one slot."""
    return row_entropy(attention).mean()
