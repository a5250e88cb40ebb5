"""The Engram recurrence in plain PyTorch, one step at a time, one equation per line.

It is the reference every faster backend is tested against (outputs, final state, every
gradient), and the path that runs where none of them applies (any device and dtype,
intermediates, double backward). Equation numbers refer to docs/model.md.

The memory (eqs. 2-6, 9) never reads the hidden state, so a layer runs in two passes: the
memory over every step first, then the hidden chain (eqs. 7-8) given the recalls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import (
    EngramWeights,
    MemoryConfig,
    MemoryOutput,
    l2_normalize,
    masked_topk,
)

Scalar = float | Tensor  # a Python number, or one value per sample and step (B, T)


def encode(x: Tensor, w: EngramWeights, eps: float) -> Tensor:
    """z = LayerNorm(ReLU(W_z x + b_z)) (1), for every step at once; x (..., d) -> (..., h)."""
    n_hidden = w.weight_z.shape[0]
    return F.layer_norm(
        F.relu(F.linear(x, w.weight_z, w.bias_z)), (n_hidden,), w.ln_z_weight, w.ln_z_bias, eps
    )


def cosines(query: Tensor, E: Tensor, cfg: MemoryConfig) -> Tensor:
    """The cosines (3) of queries (..., h) with the rows of E, (B, N, h) per query row or
    (N, h) shared; (..., N)."""
    qn, En = l2_normalize(query, cfg.cosine_eps), l2_normalize(E, cfg.cosine_eps)
    return qn @ En.t() if E.dim() == 2 else torch.bmm(En, qn[:, :, None]).squeeze(-1)


def address(query: Tensor, E: Tensor, cfg: MemoryConfig) -> Tensor:
    """Attention of queries (..., h) over the rows of E, (B, N, h) per query row or (N, h)
    shared: the sharpened softmax of the cosines (3-5); (..., N)."""
    s = cosines(query, E, cfg)
    return torch.softmax(masked_topk(s * cfg.inv_temperature, cfg.top_k), dim=-1)


def nonzero_keys(k: Tensor) -> Tensor:
    """Whether each key (..., h) has a nonzero entry, (...): a zero key addresses nothing."""
    return k.detach().abs().amax(-1) != 0  # (k != 0).any(-1), in one fast reduction


def write_address(a: Tensor, k: Tensor | None, E: Tensor, cfg: MemoryConfig,
                  key_mix: Tensor | None) -> Tensor:
    """Where the write goes (10): the read's attention a (k None), the address of the key k,
    or the mix key_mix * that + (1 - key_mix) * a. A key that is exactly zero (no previous
    step) addresses nothing."""
    if k is None:
        return a
    w = address(k, E, cfg) * nonzero_keys(k)[..., None]
    return w if key_mix is None else key_mix * w + (1 - key_mix) * a


def memory_step(
    q: Tensor, k: Tensor | None, v: Tensor, H: Tensor, M: Tensor, decay: Scalar,
    strength: Scalar, noise: Tensor | None, cfg: MemoryConfig, active: Tensor | None = None,
    key_mix: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the memory. q, k, v (B, h): read query, write key and value (k None: the
    write goes where the read attends; key_mix: see ``write_address``); H (B, N, h), or (N, h)
    shared; decay and strength numbers or (B,) tensors (numbers for the shared trace); noise
    (N, h) or None; active (B,) bool or None (all). Returns attention a (B, N), recall m
    (B, h) and the new trace."""
    E = M + cfg.trace_scale * H  # (2) (B, N, h) or (N, h)
    keys = E if cfg.address_trace else M  # (3) what the addresses compare with
    a = address(q, keys, cfg)  # (3)-(5) (B, N)
    m = a @ E if cfg.shared else torch.bmm(a[:, None, :], E).squeeze(1)  # (6) (B, h)
    w = write_address(a, k, keys, cfg, key_mix)  # (10) (B, N)
    if active is not None:
        w = w * active[:, None]
    if cfg.delta_rule:  # (9) store what the address does not hold yet
        v = v - (w @ H if cfg.shared else torch.bmm(w[:, None, :], H).squeeze(1))
    if cfg.shared:
        n_active = w.shape[0] if active is None else active.sum().clamp_min(1)
        U = w.t() @ v / n_active  # (9) (N, h) the batch mean of outer(w_b, v_b)
    else:
        U = w[:, :, None] * v[:, None, :]  # (9) (B, N, h)
        decay = decay if isinstance(decay, float | int) else decay[:, None, None]
        strength = strength if isinstance(strength, float | int) else strength[:, None, None]
    if noise is not None:
        U = U + noise
    H_new = decay * H + strength * U  # (9)
    if cfg.trace_clip is not None:
        H_new = H_new.clamp(-cfg.trace_clip, cfg.trace_clip)
    if active is not None:  # padded steps leave the trace alone
        keep = active.any() if cfg.shared else active[:, None, None]
        H_new = torch.where(keep, H_new, H)
    return a, m, H_new


def naive_memory(
    q: Tensor, k: Tensor | None, v: Tensor, memory: Tensor, decay: Scalar, strength: Scalar,
    cfg: MemoryConfig, noise: Tensor | None = None, initial_state: Tensor | None = None,
    output_final_state: bool = False, lengths: Tensor | None = None,
    record_traces: bool = False, key_mix: Tensor | None = None,
) -> tuple[MemoryOutput, Tensor | None]:
    """The memory over a sequence: q, k, v (B, T, h) (k None: write where the read attends),
    the bank (N, h), decay and strength numbers or (B, T) tensors, the trace noise (T, N, h)
    of each step or None, the initial trace ((B, N, h), (N, h) shared; None: zeros), lengths
    (B,) or None and the write's key_mix (a () tensor or None). Returns (MemoryOutput,
    final trace or None)."""
    B, T, n_hidden = q.shape
    H = initial_state
    if H is None:
        shape = (memory.shape[0], n_hidden) if cfg.shared else (B, memory.shape[0], n_hidden)
        H = q.new_zeros(shape)
    per_step = [not isinstance(s, float | int) for s in (decay, strength)]
    attention, recall, traces = [], [], []
    for t in range(T):
        active = None if lengths is None else lengths > t  # (B,)
        a, m, H = memory_step(
            q[:, t], None if k is None else k[:, t], v[:, t], H, memory,
            decay[:, t] if per_step[0] else decay, strength[:, t] if per_step[1] else strength,
            None if noise is None else noise[t], cfg, active, key_mix,
        )
        if active is not None:
            a, m = a * active[:, None], m * active[:, None]
        attention.append(a)
        recall.append(m)
        if record_traces:
            traces.append(H)
    out = MemoryOutput(
        torch.stack(attention, 1), torch.stack(recall, 1),  # (B, T, N), (B, T, h)
        torch.stack(traces, 0 if cfg.shared else 1) if record_traces else None,
    )
    return out, (H if output_final_state else None)


def naive_hidden(
    z: Tensor, m: Tensor, h0: Tensor, w: EngramWeights, eps: float, lengths: Tensor | None = None,
    update: str = "paper", gate: tuple[Tensor, Tensor | None] | None = None,
) -> tuple[Tensor, Tensor]:
    """The hidden chain given encodings z and recalls m (B, T, h) from h0 (B, h): outputs
    (B, T, h), zero at padded steps, and the last state (B, h). ``update`` is the paper's (8)
    or its residual or gated form (12), the latter with ``gate`` = (weight_g, bias_g)."""
    n_hidden = h0.shape[-1]
    # (7) W_c [z; m; h] + b_c = (W_c[:, :2h] [z; m] + b_c) + W_c[:, 2h:] h: the first share
    # does not depend on the state, so it is one product over every step
    pre = F.linear(torch.cat([z, m], dim=-1), w.weight_c[:, : 2 * n_hidden], w.bias_c)
    w_ch_t = w.weight_c[:, 2 * n_hidden :].t()  # (h, 3h)
    h, outputs = h0, []
    # unbind once: indexing a step inside the loop would zero-fill the whole tensor in backward
    for t, pre_t in enumerate(pre.unbind(1)):
        c = F.relu(torch.addmm(pre_t, h, w_ch_t))  # (7) (B, 3h)
        u = F.relu(F.linear(c, w.weight_o, w.bias_o))  # (8) (B, h)
        if update == "residual":
            u = h + u  # (12)
        elif update == "gated":
            # lerp does not promote: under autocast u and the gate come out of bf16 products
            u = torch.lerp(h, u.to(h.dtype), torch.sigmoid(F.linear(c, *gate)).to(h.dtype))  # (12)
        h_new = F.layer_norm(u, (n_hidden,), w.ln_h_weight, w.ln_h_bias, eps).to(h0.dtype)
        if lengths is None:
            h = h_new
            outputs.append(h_new)
        else:
            keep = (lengths > t)[:, None]  # (B, 1)
            h = torch.where(keep, h_new, h)
            outputs.append(h_new * keep)
    return torch.stack(outputs, dim=1), h

