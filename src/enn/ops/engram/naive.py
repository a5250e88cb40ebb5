"""Plain reference of the Engram step, written line by line from ENN_SPEC section 2.

Slow and obvious on purpose: one time step at a time, one formula per line. Every fast
path of the project is tested against it (outputs, final state, gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import EngramHyper, EngramState, EngramWeights, masked_topk


def _cos_rows(z: Tensor, E: Tensor) -> Tensor:
    """cos(z_b, E_b[i]) for every row i; z (B, h), E (B, N, h) -> (B, N)."""
    z_norm = z.norm(dim=-1).clamp_min(1e-6)  # (B,)
    E_norm = E.norm(dim=-1).clamp_min(1e-6)  # (B, N)
    dots = (E * z[:, None, :]).sum(-1)  # (B, N)
    return dots / (z_norm[:, None] * E_norm)


def naive_engram_step(
    x_t: Tensor,
    state: EngramState,
    w: EngramWeights,
    hyper: EngramHyper,
    noise: Tensor | None = None,
) -> tuple[Tensor, EngramState, Tensor, Tensor]:
    """One step for a batch. Returns (h_t, new_state, attention a_t, recall m_t)."""
    h_prev, H_prev = state
    B, n_hidden = h_prev.shape
    # 1. encode
    z = F.layer_norm(
        F.relu(F.linear(x_t, w.weight_z, w.bias_z)), (n_hidden,), w.ln_z_weight, w.ln_z_bias,
        hyper.ln_eps,
    )  # (B, h)
    # 2. effective memory, one per sample (the shared trace is the same for all)
    H_b = H_prev if H_prev.dim() == 3 else H_prev.expand(B, *H_prev.shape)
    E = w.memory + hyper.trace_scale * H_b  # (B, N, h)
    # 3-5. cosine similarity, sharpened softmax (optionally hard top-k)
    s = _cos_rows(z, E)  # (B, N)
    a = torch.softmax(masked_topk(s / hyper.effective_temperature, hyper.top_k), dim=-1)
    # 6. recall
    m = torch.einsum("bn,bnh->bh", a, E)  # (B, h)
    # 7-8. integrate and output
    c = F.relu(F.linear(torch.cat([z, m, h_prev], dim=-1), w.weight_c, w.bias_c))  # (B, 3h)
    h = F.layer_norm(
        F.relu(F.linear(c, w.weight_o, w.bias_o)), (n_hidden,), w.ln_h_weight, w.ln_h_bias,
        hyper.ln_eps,
    )  # (B, h)
    # 9. Hebbian write: outer(a, z) per sample, or its batch mean for the shared trace
    U = torch.einsum("bn,bh->bnh", a, z)  # (B, N, h)
    if H_prev.dim() == 2:
        U = U.mean(0)  # (N, h)
    if noise is not None:
        U = U + noise
    eta = hyper.hebbian_lr
    H = ((1 - eta) * H_prev + eta * U).clamp(-hyper.trace_clip, hyper.trace_clip)
    return h, EngramState(h, H), a, m


def naive_engram(
    x: Tensor,
    weights: EngramWeights,
    hyper: EngramHyper,
    initial_state: EngramState | None = None,
    output_final_state: bool = False,
    lengths: Tensor | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, EngramState | None]:
    """Run the reference over x (B, T, d). Returns (o (B, T, h), final state or None).

    With ``lengths``, sample b only takes its first lengths[b] steps: later steps leave its
    state alone and output zeros; the shared trace averages over the samples still running.
    ``noise`` (T, N, h): the trace noise of each step, one draw shared by the whole batch.
    """
    B, T, _ = x.shape
    n_hidden, N = weights.weight_z.shape[0], weights.memory.shape[0]
    if initial_state is None:
        trace_shape = (B, N, n_hidden) if hyper.trace_mode == "per_sample" else (N, n_hidden)
        initial_state = EngramState(x.new_zeros(B, n_hidden), x.new_zeros(trace_shape))
    h, H = initial_state
    outputs = []
    for t in range(T):
        active = torch.ones(B, dtype=torch.bool) if lengths is None else lengths > t
        step_noise = None if noise is None else noise[t]  # (N, h)
        if hyper.trace_mode == "shared" and not bool(active.all()):
            # the batch mean runs over the active samples only
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                outputs.append(x.new_zeros(B, n_hidden))
                continue
            h_a, new_state, _, _ = naive_engram_step(
                x[idx, t], EngramState(h[idx], H), weights, hyper, step_noise
            )
            h = h.index_put((idx,), h_a)
            H = new_state.trace
            out = x.new_zeros(B, n_hidden).index_put((idx,), h_a)
            outputs.append(out)
            continue
        h_new, new_state, _, _ = naive_engram_step(
            x[:, t], EngramState(h, H), weights, hyper, step_noise
        )
        keep = active[:, None]
        h = torch.where(keep, h_new, h)
        if hyper.trace_mode == "per_sample":
            H = torch.where(keep[:, :, None], new_state.trace, H)
        else:
            H = new_state.trace
        outputs.append(torch.where(keep, h_new, torch.zeros_like(h_new)))
    o = torch.stack(outputs, dim=1)  # (B, T, h)
    return o, (EngramState(h, H) if output_final_state else None)
