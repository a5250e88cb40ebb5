"""The Engram recurrence as the layer runs it.

Same equations as ``naive.py``, rearranged so that everything that does not depend on the
recurrent state leaves the time loop: the encoder and its LayerNorm run on all steps at
once, and so does the input's share of the integrator (W_c [z; m; h] = W_cz z + W_cm m +
W_ch h). Only similarity, recall, the rest of the integrator, the output layer and the
Hebbian write remain per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import EngramHyper, EngramState, EngramWeights, l2_normalize, masked_topk


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


def encode(x: Tensor, w: EngramWeights, eps: float) -> Tensor:
    """z = LayerNorm(ReLU(W_z x + b_z)) for every step at once; x (..., d) -> (..., h)."""
    n_hidden = w.weight_z.shape[0]
    return F.layer_norm(
        F.relu(F.linear(x, w.weight_z, w.bias_z)), (n_hidden,), w.ln_z_weight, w.ln_z_bias, eps
    )


def attention_entropy(attention: Tensor) -> Tensor:
    """Mean entropy (nats) of attention rows over every leading dimension; 0 = one slot."""
    return -(attention * attention.clamp_min(1e-12).log()).sum(-1).mean()


def engram_recurrence(
    x: Tensor,
    weights: EngramWeights,
    hyper: EngramHyper,
    initial_state: EngramState,
    lengths: Tensor | None = None,
    noise: Tensor | None = None,
    return_entropy: bool = False,
    return_intermediates: bool = False,
) -> tuple[Tensor, EngramState, Tensor | None, EngramIntermediates | None]:
    """Run one Engram layer over x (B, T, d) from ``initial_state``.

    Returns (o (B, T, h), final state, mean attention entropy if asked for, intermediates if
    asked for).
    Padded steps (t >= lengths[b]) leave sample b's state alone and output zeros. ``noise``
    (T, N, h): the trace noise added to each step's Hebbian write (shared by the batch).
    """
    B, T, _ = x.shape
    n_hidden = weights.weight_z.shape[0]
    shared = hyper.trace_mode == "shared"
    eta, alpha, clip = hyper.hebbian_lr, hyper.trace_scale, hyper.trace_clip
    inv_tau = 1.0 / hyper.effective_temperature

    # State and similarities stay in the parameters' precision, also under autocast.
    dtype = weights.memory.dtype
    z_all = encode(x, weights, hyper.ln_eps).to(dtype)  # (B, T, h)
    w_cz, w_cm, w_ch = weights.weight_c.split(n_hidden, dim=1)  # each (3h, h)
    c_in = F.linear(z_all, w_cz, weights.bias_c)  # (B, T, 3h)
    zn_all = l2_normalize(z_all)  # (B, T, h)

    h, H = initial_state.h.to(dtype), initial_state.trace.to(dtype)
    M = weights.memory
    mask = None if lengths is None else (torch.arange(T, device=x.device)[:, None] < lengths)
    outputs, entropies = [], []
    record: list[tuple[Tensor, Tensor, Tensor]] = []
    for t in range(T):
        z = z_all[:, t]  # (B, h)
        E = M + alpha * H  # (B, N, h) or (N, h)
        En = l2_normalize(E)
        if shared:
            s = zn_all[:, t] @ En.t()  # (B, N)
        else:
            s = torch.bmm(En, zn_all[:, t, :, None]).squeeze(-1)  # (B, N)
        a = torch.softmax(masked_topk(s * inv_tau, hyper.top_k), dim=-1)  # (B, N)
        m = a @ E if shared else torch.bmm(a[:, None, :], E).squeeze(1)  # (B, h)
        c = F.relu(c_in[:, t] + F.linear(m, w_cm) + F.linear(h, w_ch))  # (B, 3h)
        h_new = F.layer_norm(
            F.relu(F.linear(c, weights.weight_o, weights.bias_o)),
            (n_hidden,), weights.ln_h_weight, weights.ln_h_bias, hyper.ln_eps,
        ).to(dtype)  # (B, h)

        active = None if mask is None else mask[t]  # (B,)
        if shared:
            if active is None:
                U = a.t() @ z / B  # (N, h) batch mean of outer(a_b, z_b)
            else:
                n_active = active.sum()
                U = (a * active[:, None]).t() @ z / n_active.clamp_min(1)
        else:
            U = a[:, :, None] * z[:, None, :]  # (B, N, h)
        if noise is not None:
            U = U + noise[t].to(dtype)
        H_new = ((1 - eta) * H + eta * U).clamp(-clip, clip)

        if active is None:
            h, H = h_new, H_new
            outputs.append(h_new)
        else:
            keep = active[:, None]
            h = torch.where(keep, h_new, h)
            if shared:
                H = torch.where(n_active > 0, H_new, H)
            else:
                H = torch.where(keep[:, :, None], H_new, H)
            outputs.append(h_new * keep)
        if return_entropy:
            entropies.append(attention_entropy(a if active is None else a[active]))
        if return_intermediates:
            record.append((a, m, H))

    o = torch.stack(outputs, dim=1)  # (B, T, h)
    entropy = torch.stack(entropies).mean() if return_entropy else None
    intermediates = None
    if return_intermediates:
        a_seq, m_seq, H_seq = zip(*record, strict=True)
        intermediates = EngramIntermediates(
            attention=torch.stack(a_seq, dim=1),  # (B, T, N)
            retrieved=torch.stack(m_seq, dim=1),  # (B, T, h)
            trace=torch.stack(H_seq, dim=0 if shared else 1),  # (T, N, h) or (B, T, N, h)
        )
    return o, EngramState(h, H), entropy, intermediates
