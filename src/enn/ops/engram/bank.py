"""The memory addressed by its bank alone: the fast paths where no address reads the trace.

When the read and the write are addressed by the bank M alone (``address_trace=False``) and
each write is a plain outer product (no delta rule), every step's addresses are known up
front, so the per-sample trace only has to walk the writes. With the clip (9) that walk is
``scan_memory``: on the CPU the native operator ``enn::clipped_memory``, which also turns
the cosines (one batched product before it) into every step's addresses; on CUDA the
addresses in PyTorch, then Triton's ``enn::triton_clipped_trace``. Without the clip the
trace is a decayed sum of outer products,

    H_t = d_t H_{t-1} + s_t outer(w_t, v_t),
    a_t H_{t-1} = sum_{j<t} (d_{j+1} ... d_{t-1}) s_j (a_t . w_j) v_j,

the form of linear attention with a scalar gate. Within a chunk of C steps the recall is one
masked (C, C) product; only the chunk-start states are walked in order. Every equation is the
reference's (``naive.py``); the tests hold this path against it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native
from .common import (
    MemoryConfig,
    MemoryOutput,
    inverse_norm,
    l2_normalize,
    needs_grad,
    triton_available,
)
from .naive import Scalar, address, nonzero_keys, write_address

CHUNK_SIZE = 64


def _bank_addressed(cfg: MemoryConfig) -> bool:
    return not cfg.shared and not cfg.address_trace and not cfg.delta_rule


def chunk_applies(cfg: MemoryConfig, decay: float | None, noisy: bool) -> bool:
    """Whether the chunked form computes this memory exactly; ``decay`` is the fixed decay,
    None where the encoding modulates the rates (its sigmoid is never 0)."""
    return (_bank_addressed(cfg) and cfg.trace_clip is None and not (noisy and decay is None)
            and (decay is None or decay > 0))


def scan_applies(cfg: MemoryConfig, noisy: bool, like: Tensor,
                 memory_size: int | None = None) -> bool:
    """Whether ``scan_memory`` computes this memory on tensors like ``like``: a clipped,
    noiseless trace on the native kernels' dtypes and device, or on CUDA with Triton where
    its tile holds the (memory_size, h) trace (None: not checked)."""
    if not (_bank_addressed(cfg) and cfg.trace_clip is not None and not noisy):
        return False
    if native.supports(like):
        return True
    if not (like.is_cuda and triton_available()):
        return False
    from .triton_memory import tile_fits

    return memory_size is None or tile_fits(memory_size, like.shape[-1])


def _cosines(query: Tensor, memory: Tensor, cfg: MemoryConfig) -> Tensor:
    """naive.cosines for a bank (N, h): the products with the normalised bank, then each
    query's inverse norm on its (..., N) products, which is cheaper than normalising the
    (..., h) queries, forward and backward."""
    products = query @ l2_normalize(memory, cfg.cosine_eps).t()  # (..., N)
    return products * inverse_norm(query, cfg.cosine_eps)


def _nonzero_keys(q: Tensor, k: Tensor, shifted_key: bool) -> Tensor:
    """Whether each step's write key is nonzero (B, T); with ``shifted_key`` k_t = q_{t-1}."""
    if not shifted_key:
        return nonzero_keys(k)
    return torch.cat([nonzero_keys(k[:, :1]), nonzero_keys(q[:, :-1])], dim=1)


def _addresses(q: Tensor, k: Tensor | None, memory: Tensor, cfg: MemoryConfig,
               key_mix: Tensor | None, lengths: Tensor | None, shifted_key: bool):
    """The read and write addresses of every step (3)-(5), (10), both (B, T, N), and the
    active steps (B, T) or None; padded steps read nothing. With ``shifted_key`` (k_t =
    q_{t-1} for t >= 1) the key's address at step t is the read address of step t - 1."""
    a = address(q, memory, cfg)
    if k is None or not shifted_key:
        w = write_address(a, k, memory, cfg, key_mix)
    else:
        w = torch.cat([address(k[:, :1], memory, cfg), a[:, :-1]], dim=1)
        w = w * _nonzero_keys(q, k, shifted_key)[..., None]
        w = w if key_mix is None else key_mix * w + (1 - key_mix) * a
    active = None
    if lengths is not None:
        active = torch.arange(q.shape[1], device=q.device) < lengths[:, None]
        a = a * active[..., None]
    return a, w, active


def _recall(a: Tensor, read: Tensor, memory: Tensor, cfg: MemoryConfig,
            active: Tensor | None) -> Tensor:
    """m = a M + alpha a H_{t-1} (6), given the reads a_t H_{t-1}; zero at padded steps."""
    B, T, N = a.shape
    m = torch.addmm(read.reshape(B * T, -1), a.reshape(B * T, N), memory,
                    beta=cfg.trace_scale).view(B, T, -1)  # (B, T, h), one product
    return m if active is None else m * active[..., None]


def scan_memory(
    q: Tensor, k: Tensor | None, v: Tensor, memory: Tensor, decay: Scalar, strength: Scalar,
    cfg: MemoryConfig, noise: Tensor | None = None, initial_state: Tensor | None = None,
    output_final_state: bool = False, lengths: Tensor | None = None,
    key_mix: Tensor | None = None, shifted_key: bool = False,
) -> tuple[MemoryOutput, Tensor | None]:
    """``naive_memory``'s signature and results, for a memory where ``scan_applies`` holds;
    ``shifted_key``: the caller's word that k[:, t] is q[:, t - 1] for t >= 1 (the write key of
    (10) is the previous encoding), so that the write addresses reuse the read addresses; k
    may then hold the first step's key alone, (B, 1, h)."""
    if noise is not None:
        raise ValueError("enn: the clipped scan runs without trace noise")
    if q.is_cuda:
        return _triton_scan(q, k, v, memory, decay, strength, cfg, initial_state,
                            output_final_state, lengths, key_mix, shifted_key)
    # on the CPU one operator forms the addresses from the cosines (a batched product here)
    # and walks the trace
    fixed_decay, fixed_strength = (isinstance(x, float | int) for x in (decay, strength))
    N = memory.shape[0]
    beta = torch.as_tensor(cfg.inv_temperature, dtype=q.dtype).expand(N)  # (N,)
    key_scores = valid = None
    mode = "none" if k is None else "shifted" if shifted_key else "own"
    if k is not None:
        key_scores = _cosines(k[:, :1] if shifted_key else k, memory, cfg)
        valid = _nonzero_keys(q, k, shifted_key)  # (B, T)
    A, read, H, _, _ = torch.ops.enn.clipped_memory(
        _cosines(q, memory, cfg), beta, key_scores, native.KEY_MODES.index(mode), valid,
        key_mix, v, None if fixed_decay else decay, None if fixed_strength else strength,
        initial_state, lengths, cfg.top_k or 0, float(decay) if fixed_decay else 0.0,
        float(strength) if fixed_strength else 0.0, float(cfg.trace_clip),
        needs_grad(q, k, v, memory, beta, key_mix, initial_state,
                   *(x for x in (decay, strength) if isinstance(x, Tensor))))
    return MemoryOutput(A, _recall(A, read, memory, cfg, None)), (H if output_final_state
                                                                  else None)


def _triton_scan(q, k, v, memory, decay, strength, cfg, initial_state, output_final_state,
                 lengths, key_mix, shifted_key):
    """scan_memory on CUDA: the addresses in PyTorch, then Triton's clipped trace."""
    from .triton_memory import clipped_trace

    a, w, active = _addresses(q, k, memory, cfg, key_mix, lengths, shifted_key)
    fixed = isinstance(decay, float | int)
    sw = w * _per_step(strength, q)[..., None]  # (B, T, N) the scaled write address
    inputs = (a, sw, v, None if fixed else decay, initial_state)
    read, H, _ = clipped_trace(*inputs, lengths, float(decay) if fixed else 0.0,
                               float(cfg.trace_clip), needs_grad(*inputs))
    return MemoryOutput(a, _recall(a, read, memory, cfg, active)), (H if output_final_state
                                                                     else None)


def chunk_memory(
    q: Tensor, k: Tensor | None, v: Tensor, memory: Tensor, decay: Scalar, strength: Scalar,
    cfg: MemoryConfig, noise: Tensor | None = None, initial_state: Tensor | None = None,
    output_final_state: bool = False, lengths: Tensor | None = None,
    key_mix: Tensor | None = None, shifted_key: bool = False, chunk_size: int = CHUNK_SIZE,
) -> tuple[MemoryOutput, Tensor | None]:
    """``naive_memory``'s signature and results, for a memory where ``chunk_applies`` holds;
    ``shifted_key`` as in ``scan_memory``."""
    B, T, n_hidden = q.shape
    a, w, active = _addresses(q, k, memory, cfg, key_mix, lengths, shifted_key)  # (B, T, N)
    log_d = _per_step(math.log(decay) if isinstance(decay, float | int) else decay.log(), q)
    s = _per_step(strength, q)  # (B, T)
    if active is not None:  # padded steps: decay 1, no write
        log_d, s = log_d * active, s * active
    sw = w * s[..., None]  # (B, T, N) the scaled write address

    C = min(chunk_size, T)
    n_chunks = -(-T // C)
    pad = n_chunks * C - T

    def chunks(t: Tensor) -> Tensor:  # (B, T, ...) -> (B, n_chunks, C, ...)
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(B, n_chunks, C, *t.shape[2:])

    a_c, sw_c, v_c = chunks(a), chunks(sw), chunks(v)  # (B, n, C, N), (B, n, C, N), (B, n, C, h)
    g = chunks(log_d).cumsum(2)  # (B, n, C) log of the decay since the chunk's start
    g_before = g - chunks(log_d)  # the same, before the step's own decay
    # (B, n, C, C): step t reads the writes j < t of its chunk, decayed from j to t - 1
    strictly_lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    gap = (g_before[..., :, None] - g[..., None, :]).masked_fill(~strictly_lower, -math.inf)
    within = (a_c @ sw_c.transpose(-1, -2)) * gap.exp() @ v_c  # (B, n, C, h)
    # what each chunk adds to the trace, decayed to the chunk's end
    to_end = (g[..., -1:] - g).exp()[..., None]  # (B, n, C, 1)
    added = (sw_c * to_end).transpose(-1, -2) @ v_c  # (B, n, N, h)

    H = initial_state if initial_state is not None else q.new_zeros(B, memory.shape[0], n_hidden)
    earlier = []
    for c in range(n_chunks):
        earlier.append(a_c[:, c] @ H)  # (B, C, h) the reads of the chunk-start trace
        H = g[:, c, -1, None, None].exp() * H + added[:, c]
    from_start = torch.stack(earlier, 1) * g_before.exp()[..., None]  # (B, n, C, h)
    read = (within + from_start).reshape(B, n_chunks * C, n_hidden)[:, :T]  # a_t H_{t-1}
    if noise is not None:
        noise_trace = _noise_trace(noise, float(decay), float(strength))  # (T, N, h)
        before = F.pad(noise_trace[:-1], (0, 0, 0, 0, 1, 0))  # H^noise_{t-1}
        read = read + torch.einsum("btn,tnh->bth", a, before)
        last = (torch.full((B,), T - 1, device=q.device) if lengths is None
                else lengths.to(q.device) - 1)  # (B,) each sample's last real step
        H = H + noise_trace[last]
    return MemoryOutput(a, _recall(a, read, memory, cfg, active)), (H if output_final_state
                                                                     else None)


def _per_step(value: Scalar, like: Tensor) -> Tensor:
    """A rate as a (B, T) tensor."""
    if isinstance(value, float | int):
        return like.new_full(like.shape[:2], float(value))
    return value


def _noise_trace(noise: Tensor, decay: float, strength: float) -> Tensor:
    """The noise's share of the trace after each step, (T, N, h): the same for every sample."""
    out, total = [], torch.zeros_like(noise[0])
    for step in noise:
        total = decay * total + strength * step
        out.append(total)
    return torch.stack(out)
