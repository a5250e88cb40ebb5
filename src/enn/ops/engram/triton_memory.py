"""The memory recurrence (eqs. 2-6, 9 of docs/model.md) as Triton kernels, forward and backward.

Same semantics as ``naive_memory`` with q = k = v = z (the paper's cell), for both trace modes,
in the style of flash-linear-attention's ``fused_recurrent`` kernels: the recurrent state
stays on chip while a program walks the time steps.

Per step t, for sequence b (trace H (N, h): one per sample, or one for the batch):

    E   = M + alpha H                                   (2)
    a   = softmax(inv_tau * topk_mask(cos(z_t, E_i)))   (3)-(5)  norms clamped, or smooth
    m   = a E                                           (6)  the recall
    H'  = clip(decay H + strength (a z_t^T + noise_t))  (9)

Padded steps (t >= lengths[b]) give zero attention and recall and leave the sample's trace
alone; with the shared trace the write is the mean of a_b z_b^T over the step's active
samples (plus noise_t once) and a step without one leaves the trace alone.

Kernels
-------
Per-sample trace (one program per sequence):

* ``_ps_fwd_kernel`` holds the sequence's trace H and the bank M as (BN, BH) register tiles
  (BN, BH: N and h rounded up to powers of two, masked) and walks the steps; it writes the
  attention, the recall, the final trace and, for the backward, a checkpoint of H every C
  steps (C = ceil(sqrt(T)) by default): B * ceil(T / C) * N * h floats instead of B T N h.
* ``_ps_bwd_kernel`` walks the chunks last to first: it recomputes the chunk's traces from
  its checkpoint into a scratch buffer (B, C, N, h), then walks the chunk in reverse with
  the trace's gradient in registers, writing dz and accumulating dM (one partial per
  sequence, summed afterwards: deterministic) and, at the end, dH0.

Shared trace (one launch per step and kernel; the trace of every step, T + 1 of (N, h), is
small enough to keep, so there is no recomputation):

* ``_sh_read_kernel``: attention and recall of the step for blocks of samples (program p
  takes samples p, p + P, ...); E and its row norms are computed once per program.
* ``_sh_write_kernel``: the batch mean of a_b z_b^T as a ``tl.dot`` over blocks of 16
  samples, per (64 x 64) tile of the trace, then the decay, noise, clip and the clip mask
  (int8, read by the backward).
* ``_sh_bwd_read_kernel``: per block of samples, the step's backward through recall,
  softmax, cosines and the write (dz), and the block's sum of dE.
* ``_sh_bwd_write_kernel``: sums the blocks' dE, accumulates dM and carries dH to the step
  before (elementwise over the trace).

Clipped trace (bank.py's scan, the memory of the ``default`` preset on CUDA; one program
per sequence): given every step's read and scaled write addresses a_t, w_t (computed before,
as batched products) and values v_t, ``_clip_fwd_kernel`` walks read_t = a_t H_{t-1},
H_t = clip(d_t H_{t-1} + outer(w_t, v_t)) with the trace in registers and the same
checkpoints; ``_clip_bwd_kernel`` recomputes each chunk into the scratch buffer and walks it
back, writing the gradients of a, w, v, the per-step decays and the initial trace.

Shapes: any B and T with B T max(N, h) and (T + 1) N h < 2**31 (int32 offsets); N and h up to
next_pow2(N) * next_pow2(h) <= 65536 elements per tile (e.g. N 128, h 256 or N 64,
h 512). A (128, 256) float32 tile is 128 KB: the per-sample kernels then run with 16
warps (64 values per thread and tile) and the backward, which holds five such tiles (H,
M, E, dH, dM), spills to local memory at that size; at the paper's N 64, h 128 it fits in
registers with 8 warps.

Precision: the trace, the softmax and every sum are computed in float32 (float64 when z is
float64); z may be float16/bfloat16 (the bank then in z's dtype or float32). Attention,
recall and dz come out in z's dtype, dM in the bank's, the final trace in the initial
state's dtype (float32, or float64 for float64 z, when none is given).

Autograd: the forward and the backward are ``torch.library`` custom ops with registered
fake kernels, so ``torch.compile(fullgraph=True)`` traces them; gradients flow to z, the
bank and the initial state (not to the noise); double backward raises.

Set ``TRITON_INTERPRET=1`` before importing this module to run the kernels on CPU tensors
(Triton's interpreter); otherwise every tensor must be on a CUDA device.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from functools import cache, lru_cache

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import NORM_EPS, MemoryConfig, MemoryOutput, needs_grad

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_TILE = 65536  # next_pow2(N) * next_pow2(h): the (N, h) register tile of one trace
SAMPLE_BLOCK = 16  # samples per tl.dot in the shared write
WRITE_TILE = 64  # rows and columns of one shared-write program's trace tile
ELEMENTWISE_BLOCK = 1024

_EPS = tl.constexpr(NORM_EPS)  # the norms' clamp, as in common.l2_normalize
_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------
# Step math shared by the kernels (one sequence; tiles (BN, BH), vectors (BN,) or (BH,))
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_params(prm_ptr):
    """The scalars ``_params`` packs: decay, strength, alpha, inv_tau, clip, cosine eps."""
    return (tl.load(prm_ptr + 0), tl.load(prm_ptr + 1), tl.load(prm_ptr + 2),
            tl.load(prm_ptr + 3), tl.load(prm_ptr + 4), tl.load(prm_ptr + 5))


@triton.jit
def _tile(N, D, BN: tl.constexpr, BH: tl.constexpr):
    """Offsets and masks of an (N, h) trace held as a (BN, BH) tile, row-major."""
    offs_n = tl.arange(0, BN)
    offs_h = tl.arange(0, BH)
    mask_n = offs_n < N
    mask_h = offs_h < D
    return (offs_n, offs_h, mask_n, mask_h, mask_n[:, None] & mask_h[None, :],
            offs_n[:, None] * D + offs_h[None, :])


@triton.jit
def _steps(len_ptr, b, T, HAS_LEN: tl.constexpr):
    """Sequence b's length: its steps from there on are padding."""
    if HAS_LEN:
        return tl.maximum(tl.minimum(tl.load(len_ptr + b), T), 0)
    return T


@triton.jit
def _chunk_back(ci, n_chunks, C: tl.constexpr, L):
    """The ci-th chunk from the end: its index and its steps [t0, t1)."""
    c = n_chunks - 1 - ci
    return c, c * C, tl.minimum(c * C + C, L)


@triton.jit
def _state(ptr, tile, mask, BN: tl.constexpr, BH: tl.constexpr, ACC: tl.constexpr,
           GIVEN: tl.constexpr):
    """A sequence's (N, h) state at ptr as an ACC tile, or zeros where none is given."""
    if GIVEN:
        return tl.load(ptr + tile, mask=mask, other=0.0).to(ACC)
    return tl.zeros((BN, BH), dtype=ACC)


@triton.jit
def _clamp(x, clip):
    """x clipped to [-clip, clip], NaN kept (as torch.clamp: a bad input is not hidden)."""
    return tl.clamp(x, -clip, clip, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _inverse_norm(sq, ceps, SMOOTH: tl.constexpr):
    """From squared norms: 1 / max(|v|, eps) (the paper's clamp) or 1 / sqrt(|v|^2 + ceps)
    (the smooth cosine), and whether the norm passes a gradient back (the clamped one is
    constant below eps)."""
    if SMOOTH:
        return 1.0 / tl.sqrt(sq + ceps), sq >= 0.0
    n = tl.sqrt(sq)
    return 1.0 / tl.maximum(n, _EPS), n >= _EPS


@triton.jit
def _rows(H, Mt, alpha, ceps, SMOOTH: tl.constexpr):
    """E = M + alpha H (2), 1 / |E_i| (clamped or smooth), where it flows, the unit rows."""
    E = Mt + alpha * H
    er, ef = _inverse_norm(tl.sum(E * E, axis=1), ceps, SMOOTH)
    return E, ef, er, E * er[:, None]


@triton.jit
def _attend(nE, zt, inv_tau, topk, mask_n, ceps, HAS_TOPK: tl.constexpr,
            SMOOTH: tl.constexpr):
    """Attention (3)-(5) of z_t over the unit rows nE; also where |z| flows, 1 / |z| and
    z / |z|."""
    zr, zf = _inverse_norm(tl.sum(zt * zt, axis=0), ceps, SMOOTH)
    nz = zt * zr
    s = tl.sum(nE * nz[None, :], axis=1) * inv_tau
    s = tl.where(mask_n, s, float("-inf"))
    if HAS_TOPK:
        # s_i is among the k largest (ties with the k-th kept) iff fewer than k exceed it
        above = tl.sum((s[None, :] > s[:, None]).to(tl.int32), axis=1)
        s = tl.where(above < topk, s, float("-inf"))
    p = tl.exp(s - tl.max(s, axis=0))
    return zf, zr, nz, p / tl.sum(p, axis=0)


@triton.jit
def _attend_backward(da, a, E, ef, er, nE, zf, zr, nz, inv_tau):
    """Given dL/da, the gradients of z and E through softmax, cosines and the norms."""
    ds = a * (da - tl.sum(a * da, axis=0))
    dc = ds * inv_tau
    dnz = tl.sum(dc[:, None] * nE, axis=0)
    dnE = dc[:, None] * nz[None, :]
    # n = v r with r = 1 / max(|v|, eps): dv = r (dn - n (n . dn)) where |v| >= eps, r dn
    # below; with r = 1 / sqrt(|v|^2 + ceps) the first form holds everywhere
    dz = tl.where(zf, zr * (dnz - nz * tl.sum(nz * dnz, axis=0)), zr * dnz)
    proj = tl.sum(nE * dnE, axis=1)
    dE = tl.where(ef[:, None], er[:, None] * (dnE - nE * proj[:, None]), er[:, None] * dnE)
    return dz, dE


# --------------------------------------------------------------------------------------------
# Per-sample trace
# --------------------------------------------------------------------------------------------


@triton.jit
def _ps_write(H, a, zt, noise_ptr, t, N, D, tile, mask, decay, strength,
              HAS_NOISE: tl.constexpr, ACC: tl.constexpr):
    """A sample's trace before the clip (9): decay H + strength (a z^T + the step's noise)."""
    W = a[:, None] * zt[None, :]
    if HAS_NOISE:
        W += tl.load(noise_ptr + t * N * D + tile, mask=mask, other=0.0).to(ACC)
    return decay * H + strength * W


@triton.jit
def _ps_fwd_kernel(
    z_ptr, m_ptr, h0_ptr, noise_ptr, len_ptr, prm_ptr,
    att_ptr, rec_ptr, ht_ptr, ck_ptr,
    T, N, D, topk, NC,
    HAS_H0: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_LEN: tl.constexpr,
    HAS_TOPK: tl.constexpr, SMOOTH: tl.constexpr, SAVE: tl.constexpr, C: tl.constexpr,
    BN: tl.constexpr, BH: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_n, offs_h, mask_n, mask_h, mask, tile = _tile(N, D, BN, BH)
    decay, strength, alpha, inv_tau, clip, ceps = _load_params(prm_ptr)

    Mt = tl.load(m_ptr + tile, mask=mask, other=0.0).to(ACC)
    H = _state(h0_ptr + b * N * D, tile, mask, BN, BH, ACC, HAS_H0)
    L = _steps(len_ptr, b, T, HAS_LEN)
    for t in range(0, L):  # steps from L on are padding: outputs stay zero, H stays
        if SAVE:
            if t % C == 0:
                tl.store(ck_ptr + (b * NC + t // C) * N * D + tile, H, mask=mask)
        zt = tl.load(z_ptr + (b * T + t) * D + offs_h, mask=mask_h, other=0.0).to(ACC)
        E, ef, er, nE = _rows(H, Mt, alpha, ceps, SMOOTH)
        zf, zr, nz, a = _attend(nE, zt, inv_tau, topk, mask_n, ceps, HAS_TOPK, SMOOTH)
        m = tl.sum(a[:, None] * E, axis=0)
        tl.store(att_ptr + (b * T + t) * N + offs_n, a.to(att_ptr.dtype.element_ty), mask=mask_n)
        tl.store(rec_ptr + (b * T + t) * D + offs_h, m.to(rec_ptr.dtype.element_ty), mask=mask_h)
        P = _ps_write(H, a, zt, noise_ptr, t, N, D, tile, mask, decay, strength, HAS_NOISE, ACC)
        H = _clamp(P, clip)
    tl.store(ht_ptr + b * N * D + tile, H.to(ht_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ps_bwd_kernel(
    z_ptr, m_ptr, noise_ptr, len_ptr, prm_ptr, ck_ptr, scr_ptr,
    da_ptr, dr_ptr, dht_ptr, dz_ptr, dm_ptr, dh0_ptr,
    T, N, D, topk, NC,
    HAS_NOISE: tl.constexpr, HAS_LEN: tl.constexpr, HAS_TOPK: tl.constexpr,
    SMOOTH: tl.constexpr, HAS_DHT: tl.constexpr, WANT_DH0: tl.constexpr, C: tl.constexpr,
    BN: tl.constexpr, BH: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_n, offs_h, mask_n, mask_h, mask, tile = _tile(N, D, BN, BH)
    decay, strength, alpha, inv_tau, clip, ceps = _load_params(prm_ptr)

    Mt = tl.load(m_ptr + tile, mask=mask, other=0.0).to(ACC)
    G = _state(dht_ptr + b * N * D, tile, mask, BN, BH, ACC, HAS_DHT)  # dL/dH_t
    dM = tl.zeros((BN, BH), dtype=ACC)
    L = _steps(len_ptr, b, T, HAS_LEN)
    scratch = scr_ptr + b * C * N * D
    n_chunks = tl.cdiv(L, C)
    for ci in range(0, n_chunks):
        # recompute the traces before each step of the chunk from its checkpoint
        c, t0, t1 = _chunk_back(ci, n_chunks, C, L)
        H = tl.load(ck_ptr + (b * NC + c) * N * D + tile, mask=mask, other=0.0)
        for t in range(t0, t1 - 1):
            tl.store(scratch + (t - t0) * N * D + tile, H, mask=mask)
            zt = tl.load(z_ptr + (b * T + t) * D + offs_h, mask=mask_h, other=0.0).to(ACC)
            E, ef, er, nE = _rows(H, Mt, alpha, ceps, SMOOTH)
            zf, zr, nz, a = _attend(nE, zt, inv_tau, topk, mask_n, ceps, HAS_TOPK, SMOOTH)
            P = _ps_write(H, a, zt, noise_ptr, t, N, D, tile, mask, decay, strength,
                          HAS_NOISE, ACC)
            H = _clamp(P, clip)
        tl.store(scratch + (t1 - 1 - t0) * N * D + tile, H, mask=mask)
        tl.debug_barrier()
        # walk the chunk back
        for i in range(0, t1 - t0):
            t = t1 - 1 - i
            H = tl.load(scratch + (t - t0) * N * D + tile, mask=mask, other=0.0)
            zt = tl.load(z_ptr + (b * T + t) * D + offs_h, mask=mask_h, other=0.0).to(ACC)
            E, ef, er, nE = _rows(H, Mt, alpha, ceps, SMOOTH)
            zf, zr, nz, a = _attend(nE, zt, inv_tau, topk, mask_n, ceps, HAS_TOPK, SMOOTH)
            P = _ps_write(H, a, zt, noise_ptr, t, N, D, tile, mask, decay, strength,
                          HAS_NOISE, ACC)
            dP = tl.where((P >= -clip) & (P <= clip), G, 0.0)  # a clipped entry passes nothing
            dat = tl.load(da_ptr + (b * T + t) * N + offs_n, mask=mask_n, other=0.0).to(ACC)
            dmt = tl.load(dr_ptr + (b * T + t) * D + offs_h, mask=mask_h, other=0.0).to(ACC)
            da = dat + tl.sum(E * dmt[None, :], axis=1)
            da += strength * tl.sum(dP * zt[None, :], axis=1)
            dzt, dE = _attend_backward(da, a, E, ef, er, nE, zf, zr, nz, inv_tau)
            dzt += strength * tl.sum(dP * a[:, None], axis=0)
            dE += a[:, None] * dmt[None, :]
            G = decay * dP + alpha * dE
            dM += dE
            tl.store(dz_ptr + (b * T + t) * D + offs_h, dzt.to(dz_ptr.dtype.element_ty),
                     mask=mask_h)
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(dm_ptr + b * N * D + tile, dM, mask=mask)
    if WANT_DH0:
        tl.store(dh0_ptr + b * N * D + tile, G.to(dh0_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# Shared trace: one launch per step and kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _sh_read_kernel(
    z_ptr, m_ptr, hs_ptr, len_ptr, prm_ptr, att_ptr, rec_ptr, a32_ptr,
    t, B, T, N, D, topk, NPROG,
    HAS_LEN: tl.constexpr, HAS_TOPK: tl.constexpr, SMOOTH: tl.constexpr,
    BN: tl.constexpr, BH: tl.constexpr, ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_n, offs_h, mask_n, mask_h, mask, tile = _tile(N, D, BN, BH)
    _, _, alpha, inv_tau, _, ceps = _load_params(prm_ptr)
    Mt = tl.load(m_ptr + tile, mask=mask, other=0.0).to(ACC)
    H = tl.load(hs_ptr + t * N * D + tile, mask=mask, other=0.0)
    E, ef, er, nE = _rows(H, Mt, alpha, ceps, SMOOTH)
    for b in range(pid, B, NPROG):
        active = b < B
        if HAS_LEN:
            active = t < tl.load(len_ptr + b)
        row = b * T + t  # B T max(N, h) < 2**31 (checked on the host)
        zt = tl.load(z_ptr + row * D + offs_h, mask=mask_h, other=0.0).to(ACC)
        zf, zr, nz, a = _attend(nE, zt, inv_tau, topk, mask_n, ceps, HAS_TOPK, SMOOTH)
        a = tl.where(active, a, 0.0)
        m = tl.sum(a[:, None] * E, axis=0)
        tl.store(att_ptr + row * N + offs_n, a.to(att_ptr.dtype.element_ty), mask=mask_n)
        tl.store(rec_ptr + row * D + offs_h, m.to(rec_ptr.dtype.element_ty), mask=mask_h)
        tl.store(a32_ptr + b * N + offs_n, a, mask=mask_n)


@triton.jit
def _sh_write_kernel(
    z_ptr, a32_ptr, hs_ptr, noise_ptr, nact_ptr, prm_ptr, pass_ptr,
    t, B, T, N, D,
    HAS_NOISE: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, BH: tl.constexpr,
    ACC: tl.constexpr,
):
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    offs_h = tl.program_id(1) * BH + tl.arange(0, BH)
    mask_n = offs_n < N
    mask_h = offs_h < D
    mask = mask_n[:, None] & mask_h[None, :]
    tile = offs_n[:, None] * D + offs_h[None, :]
    decay, strength, _, _, clip, _ = _load_params(prm_ptr)
    U = tl.zeros((BN, BH), dtype=ACC)
    for b0 in range(0, B, BB):  # sum_b a_b z_b^T (inactive samples have a_b = 0)
        offs_b = b0 + tl.arange(0, BB)
        mask_b = offs_b < B
        A = tl.load(a32_ptr + offs_b[:, None] * N + offs_n[None, :],
                    mask=mask_b[:, None] & mask_n[None, :], other=0.0)
        Z = tl.load(z_ptr + (offs_b.to(tl.int64)[:, None] * T + t) * D + offs_h[None, :],
                    mask=mask_b[:, None] & mask_h[None, :], other=0.0).to(ACC)
        U += tl.dot(tl.trans(A), Z, input_precision="ieee", out_dtype=ACC)
    n = tl.load(nact_ptr + t)
    W = U / tl.maximum(n, 1).to(ACC)
    if HAS_NOISE:
        W += tl.load(noise_ptr + t * N * D + tile, mask=mask, other=0.0).to(ACC)
    H = tl.load(hs_ptr + t * N * D + tile, mask=mask, other=0.0)
    P = decay * H + strength * W
    H_new = tl.where(n > 0, _clamp(P, clip), H)
    tl.store(hs_ptr + (t + 1) * N * D + tile, H_new, mask=mask)
    tl.store(pass_ptr + t * N * D + tile, ((P >= -clip) & (P <= clip)).to(tl.int8), mask=mask)


@triton.jit
def _sh_bwd_read_kernel(
    z_ptr, m_ptr, hs_ptr, len_ptr, nact_ptr, prm_ptr, pass_ptr, g_ptr,
    da_ptr, dr_ptr, dz_ptr, dep_ptr,
    t, B, T, N, D, topk, NPROG,
    HAS_LEN: tl.constexpr, HAS_TOPK: tl.constexpr, SMOOTH: tl.constexpr,
    BN: tl.constexpr, BH: tl.constexpr, ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_n, offs_h, mask_n, mask_h, mask, tile = _tile(N, D, BN, BH)
    _, strength, alpha, inv_tau, _, ceps = _load_params(prm_ptr)
    Mt = tl.load(m_ptr + tile, mask=mask, other=0.0).to(ACC)
    H = tl.load(hs_ptr + t * N * D + tile, mask=mask, other=0.0)
    E, ef, er, nE = _rows(H, Mt, alpha, ceps, SMOOTH)
    G = tl.load(g_ptr + tile, mask=mask, other=0.0)
    passed = tl.load(pass_ptr + t * N * D + tile, mask=mask, other=0) != 0
    dP = tl.where(passed, G, 0.0)
    ws = strength / tl.maximum(tl.load(nact_ptr + t), 1).to(ACC)  # d(write)/d(a_b z_b^T)
    dE_sum = tl.zeros((BN, BH), dtype=ACC)
    for b in range(pid, B, NPROG):
        active = b < B
        if HAS_LEN:
            active = t < tl.load(len_ptr + b)
        row = b * T + t  # B T max(N, h) < 2**31 (checked on the host)
        zt = tl.load(z_ptr + row * D + offs_h, mask=mask_h, other=0.0).to(ACC)
        zf, zr, nz, a = _attend(nE, zt, inv_tau, topk, mask_n, ceps, HAS_TOPK, SMOOTH)
        dat = tl.load(da_ptr + row * N + offs_n, mask=mask_n, other=0.0).to(ACC)
        dmt = tl.load(dr_ptr + row * D + offs_h, mask=mask_h, other=0.0).to(ACC)
        da = dat + tl.sum(E * dmt[None, :], axis=1) + ws * tl.sum(dP * zt[None, :], axis=1)
        dzt, dE = _attend_backward(da, a, E, ef, er, nE, zf, zr, nz, inv_tau)
        dzt += ws * tl.sum(dP * a[:, None], axis=0)
        dE += a[:, None] * dmt[None, :]
        dE_sum += tl.where(active, dE, 0.0)
        dzt = tl.where(active, dzt, 0.0)
        tl.store(dz_ptr + row * D + offs_h, dzt.to(dz_ptr.dtype.element_ty), mask=mask_h)
    tl.store(dep_ptr + pid * N * D + tile, dE_sum, mask=mask)


@triton.jit
def _sh_bwd_write_kernel(
    g_ptr, dm_ptr, dep_ptr, pass_ptr, nact_ptr, prm_ptr, t, ND, NPROG,
    BLOCK: tl.constexpr, ACC: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < ND
    decay, _, alpha, _, _, _ = _load_params(prm_ptr)
    dE = tl.zeros((BLOCK,), dtype=ACC)
    for p in range(0, NPROG):
        dE += tl.load(dep_ptr + p * ND + offs, mask=mask, other=0.0)
    G = tl.load(g_ptr + offs, mask=mask, other=0.0)
    passed = tl.load(pass_ptr + t * ND + offs, mask=mask, other=0) != 0
    n = tl.load(nact_ptr + t)
    # a step without an active sample left the trace alone (and has dE = 0)
    G = tl.where(n > 0, decay * tl.where(passed, G, 0.0) + alpha * dE, G)
    tl.store(g_ptr + offs, G, mask=mask)
    tl.store(dm_ptr + offs, tl.load(dm_ptr + offs, mask=mask, other=0.0) + dE, mask=mask)


# --------------------------------------------------------------------------------------------
# Clipped trace of a memory addressed by its bank alone (bank.py's scan)
# --------------------------------------------------------------------------------------------


@triton.jit
def _clip_fwd_kernel(
    a_ptr, w_ptr, v_ptr, d_ptr, h0_ptr, len_ptr, prm_ptr, read_ptr, ht_ptr, ck_ptr,
    T, N, D, NC,
    HAS_D: tl.constexpr, HAS_H0: tl.constexpr, HAS_LEN: tl.constexpr, SAVE: tl.constexpr,
    C: tl.constexpr, BN: tl.constexpr, BH: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_n, offs_h, mask_n, mask_h, mask, tile = _tile(N, D, BN, BH)
    decay = tl.load(prm_ptr + 0)
    clip = tl.load(prm_ptr + 1)
    H = _state(h0_ptr + b * N * D, tile, mask, BN, BH, ACC, HAS_H0)
    L = _steps(len_ptr, b, T, HAS_LEN)
    for t in range(0, L):  # steps from L on are padding: no read, H stays
        if SAVE:
            if t % C == 0:
                tl.store(ck_ptr + (b * NC + t // C) * N * D + tile, H, mask=mask)
        row = b * T + t
        at = tl.load(a_ptr + row * N + offs_n, mask=mask_n, other=0.0).to(ACC)
        wt = tl.load(w_ptr + row * N + offs_n, mask=mask_n, other=0.0).to(ACC)
        vt = tl.load(v_ptr + row * D + offs_h, mask=mask_h, other=0.0).to(ACC)
        r = tl.sum(at[:, None] * H, axis=0)
        tl.store(read_ptr + row * D + offs_h, r.to(read_ptr.dtype.element_ty), mask=mask_h)
        d = decay
        if HAS_D:
            d = tl.load(d_ptr + row).to(ACC)
        P = d * H + wt[:, None] * vt[None, :]
        H = _clamp(P, clip)
    tl.store(ht_ptr + b * N * D + tile, H.to(ht_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _clip_bwd_kernel(
    a_ptr, w_ptr, v_ptr, d_ptr, len_ptr, prm_ptr, ck_ptr, scr_ptr, dr_ptr, dht_ptr,
    da_ptr, dw_ptr, dv_ptr, dd_ptr, dh0_ptr,
    T, N, D, NC,
    HAS_D: tl.constexpr, HAS_LEN: tl.constexpr, HAS_DHT: tl.constexpr,
    WANT_DH0: tl.constexpr, C: tl.constexpr, BN: tl.constexpr, BH: tl.constexpr,
    ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_n, offs_h, mask_n, mask_h, mask, tile = _tile(N, D, BN, BH)
    decay = tl.load(prm_ptr + 0)
    clip = tl.load(prm_ptr + 1)
    G = _state(dht_ptr + b * N * D, tile, mask, BN, BH, ACC, HAS_DHT)  # dL/dH_t
    L = _steps(len_ptr, b, T, HAS_LEN)
    scratch = scr_ptr + b * C * N * D
    n_chunks = tl.cdiv(L, C)
    for ci in range(0, n_chunks):
        # recompute the traces before each step of the chunk from its checkpoint
        c, t0, t1 = _chunk_back(ci, n_chunks, C, L)
        H = tl.load(ck_ptr + (b * NC + c) * N * D + tile, mask=mask, other=0.0)
        for t in range(t0, t1 - 1):
            tl.store(scratch + (t - t0) * N * D + tile, H, mask=mask)
            row = b * T + t
            wt = tl.load(w_ptr + row * N + offs_n, mask=mask_n, other=0.0).to(ACC)
            vt = tl.load(v_ptr + row * D + offs_h, mask=mask_h, other=0.0).to(ACC)
            d = decay
            if HAS_D:
                d = tl.load(d_ptr + row).to(ACC)
            H = _clamp(d * H + wt[:, None] * vt[None, :], clip)
        tl.store(scratch + (t1 - 1 - t0) * N * D + tile, H, mask=mask)
        tl.debug_barrier()
        # walk the chunk back
        for i in range(0, t1 - t0):
            t = t1 - 1 - i
            row = b * T + t
            H = tl.load(scratch + (t - t0) * N * D + tile, mask=mask, other=0.0)
            at = tl.load(a_ptr + row * N + offs_n, mask=mask_n, other=0.0).to(ACC)
            wt = tl.load(w_ptr + row * N + offs_n, mask=mask_n, other=0.0).to(ACC)
            vt = tl.load(v_ptr + row * D + offs_h, mask=mask_h, other=0.0).to(ACC)
            gr = tl.load(dr_ptr + row * D + offs_h, mask=mask_h, other=0.0).to(ACC)
            d = decay
            if HAS_D:
                d = tl.load(d_ptr + row).to(ACC)
            P = d * H + wt[:, None] * vt[None, :]
            dP = tl.where((P >= -clip) & (P <= clip), G, 0.0)  # a clipped entry passes nothing
            tl.store(da_ptr + row * N + offs_n, tl.sum(H * gr[None, :], axis=1)
                     .to(da_ptr.dtype.element_ty), mask=mask_n)
            tl.store(dw_ptr + row * N + offs_n, tl.sum(dP * vt[None, :], axis=1)
                     .to(dw_ptr.dtype.element_ty), mask=mask_n)
            tl.store(dv_ptr + row * D + offs_h, tl.sum(dP * wt[:, None], axis=0)
                     .to(dv_ptr.dtype.element_ty), mask=mask_h)
            if HAS_D:
                tl.store(dd_ptr + row, tl.sum(tl.sum(dP * H, axis=1), axis=0)
                         .to(dd_ptr.dtype.element_ty))
            G = d * dP + at[:, None] * gr[None, :]  # the write's decay, and the read
        tl.debug_barrier()  # the next chunk overwrites the scratch
    if WANT_DH0:
        tl.store(dh0_ptr + b * N * D + tile, G.to(dh0_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _num_warps(tile: int) -> int:
    return 4 if tile <= 4096 else 8 if tile <= 16384 else 16


def _tiles(N: int, D: int) -> tuple[int, int]:
    return triton.next_power_of_2(N), triton.next_power_of_2(D)


def tile_fits(N: int, D: int, explicit: bool = False) -> bool:
    """Whether the kernels take a trace of N slots by D units (one register tile). Where they
    do not, an explicit request for them (``backend="triton"``) is an error; otherwise a
    warning, once per shape, says that the PyTorch path runs instead."""
    BN, BH = _tiles(N, D)
    if BN * BH <= MAX_TILE:
        return True
    why = f"the triton kernels need next_pow2(N) * next_pow2(h) <= {MAX_TILE}, got N {N}, h {D}"
    if explicit:
        raise ValueError(f"enn: {why}")
    _warn_once(f"enn: {why}, so the slower PyTorch path runs instead")
    return False


@cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


@lru_cache(maxsize=256)
def _params(*values: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The kernels' scalar parameters as one tensor in the accumulation dtype (a float64
    kernel needs them in float64, which Triton's scalar arguments are not). Cached: a new
    one is a copy to the GPU that waits for the stream, at every call of every layer."""
    return torch.tensor(values, dtype=dtype, device=device)


def _on_device(device: torch.device):
    """Triton launches on the current CUDA device, not on the one of the tensors."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _programs(B: int, device: torch.device) -> int:
    """Programs of the shared kernels' sample loop: about one per SM."""
    if device.type == "cuda":
        return min(B, torch.cuda.get_device_properties(device).multi_processor_count)
    return min(B, 4)


def _n_active(lengths: Tensor | None, B: int, T: int, device) -> Tensor:
    if lengths is None:
        return torch.full((T,), B, dtype=torch.int32, device=device)
    steps = torch.arange(T, device=device)
    return (lengths[None, :] > steps[:, None]).sum(1).to(torch.int32)


def _trace_dtype(z: Tensor, initial_state: Tensor | None) -> torch.dtype:
    return _acc_dtype(z.dtype) if initial_state is None else initial_state.dtype


def _chunk(T: int, chunk_size: int) -> int:
    return max(1, math.isqrt(max(T - 1, 0)) + 1) if chunk_size <= 0 else chunk_size


def _forward(z, memory, noise, initial_state, lengths, decay, strength, alpha, inv_tau, ceps,
             clip, top_k, shared, chunk_size, save):
    B, T, D = z.shape
    N = memory.shape[0]
    acc = _acc_dtype(z.dtype)
    dev = z.device
    z, memory = z.contiguous(), memory.contiguous()
    noise = None if noise is None else noise.contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    lens = None if lengths is None else lengths.to(device=dev, dtype=torch.int32).contiguous()
    prm = _params(decay, strength, alpha, inv_tau, clip, ceps, dtype=acc, device=dev)
    BN, BH = _tiles(N, D)
    ACC = _tl_dtype(acc)
    att = z.new_zeros(B, T, N)
    rec = z.new_zeros(B, T, D)
    dummy = prm  # any pointer for absent inputs (never read: the HAS_ flag is off)
    if not shared:
        C = _chunk(T, chunk_size)
        NC = triton.cdiv(T, C)
        final = torch.empty(B, N, D, dtype=_trace_dtype(z, initial_state), device=dev)
        ck = torch.empty((B, NC, N, D) if save else (0,), dtype=acc, device=dev)
        if B > 0:
            _ps_fwd_kernel[(B,)](
                z, memory, dummy if h0 is None else h0, dummy if noise is None else noise,
                dummy if lens is None else lens, prm, att, rec, final, ck,
                T, N, D, top_k, NC,
                HAS_H0=h0 is not None, HAS_NOISE=noise is not None, HAS_LEN=lens is not None,
                HAS_TOPK=0 < top_k < N, SMOOTH=ceps > 0, SAVE=save, C=C, BN=BN, BH=BH, ACC=ACC,
                num_warps=_num_warps(BN * BH),
            )
        return att, rec, final, ck, torch.empty(0, dtype=torch.int8, device=dev)
    hs = torch.empty(T + 1, N, D, dtype=acc, device=dev)
    hs[0] = 0.0 if h0 is None else h0
    passed = torch.empty(T, N, D, dtype=torch.int8, device=dev)
    nact = _n_active(lens, B, T, dev)
    a32 = torch.zeros(B, N, dtype=acc, device=dev)
    P = _programs(B, dev)
    BNW, BHW = min(WRITE_TILE, max(16, BN)), min(WRITE_TILE, max(16, BH))
    for t in range(T):
        if B > 0:
            _sh_read_kernel[(P,)](
                z, memory, hs, dummy if lens is None else lens, prm, att, rec, a32,
                t, B, T, N, D, top_k, P,
                HAS_LEN=lens is not None, HAS_TOPK=0 < top_k < N, SMOOTH=ceps > 0, BN=BN,
                BH=BH, ACC=ACC,
                num_warps=_num_warps(BN * BH),
            )
        _sh_write_kernel[(triton.cdiv(N, BNW), triton.cdiv(D, BHW))](
            z, a32, hs, dummy if noise is None else noise, nact, prm, passed,
            t, B, T, N, D,
            HAS_NOISE=noise is not None, BB=SAMPLE_BLOCK, BN=BNW, BH=BHW, ACC=ACC,
            num_warps=4,
        )
    final = hs[T].to(_trace_dtype(z, initial_state), copy=True)
    return att, rec, final, hs, passed


def _backward(dA, dR, dHT, z, memory, noise, initial_state, lengths, saved, passed,
              decay, strength, alpha, inv_tau, ceps, clip, top_k, shared, chunk_size,
              want_dh0):
    B, T, D = z.shape
    N = memory.shape[0]
    acc = _acc_dtype(z.dtype)
    dev = z.device
    z, memory = z.contiguous(), memory.contiguous()
    noise = None if noise is None else noise.contiguous()
    lens = None if lengths is None else lengths.to(device=dev, dtype=torch.int32).contiguous()
    dA, dR = dA.contiguous(), dR.contiguous()
    prm = _params(decay, strength, alpha, inv_tau, clip, ceps, dtype=acc, device=dev)
    BN, BH = _tiles(N, D)
    ACC = _tl_dtype(acc)
    dummy = prm
    dz = torch.zeros_like(z)
    h0_dtype = z.dtype if initial_state is None else initial_state.dtype
    if not shared:
        C = _chunk(T, chunk_size)
        NC = triton.cdiv(T, C)
        dM_parts = torch.empty(B, N, D, dtype=acc, device=dev)
        dH0 = torch.empty((B, N, D) if want_dh0 else (0,), dtype=h0_dtype, device=dev)
        scratch = torch.empty(B, C, N, D, dtype=acc, device=dev)
        if B > 0:
            _ps_bwd_kernel[(B,)](
                z, memory, dummy if noise is None else noise, dummy if lens is None else lens,
                prm, saved, scratch, dA, dR, dummy if dHT is None else dHT.contiguous(),
                dz, dM_parts, dH0 if want_dh0 else dummy,
                T, N, D, top_k, NC,
                HAS_NOISE=noise is not None, HAS_LEN=lens is not None, HAS_TOPK=0 < top_k < N,
                SMOOTH=ceps > 0, HAS_DHT=dHT is not None, WANT_DH0=want_dh0, C=C, BN=BN, BH=BH,
                ACC=ACC,
                num_warps=_num_warps(BN * BH),
            )
        dM = dM_parts.sum(0).to(memory.dtype)
        return dz, dM, dH0
    G = torch.zeros(N, D, dtype=acc, device=dev) if dHT is None else dHT.to(acc, copy=True)
    G = G.contiguous()
    dM = torch.zeros(N, D, dtype=acc, device=dev)
    nact = _n_active(lens, B, T, dev)
    P = _programs(B, dev)
    dE_parts = torch.zeros(max(P, 1), N, D, dtype=acc, device=dev)
    for t in range(T - 1, -1, -1):
        if B > 0:
            _sh_bwd_read_kernel[(P,)](
                z, memory, saved, dummy if lens is None else lens, nact, prm, passed, G,
                dA, dR, dz, dE_parts,
                t, B, T, N, D, top_k, P,
                HAS_LEN=lens is not None, HAS_TOPK=0 < top_k < N, SMOOTH=ceps > 0, BN=BN,
                BH=BH, ACC=ACC,
                num_warps=_num_warps(BN * BH),
            )
        _sh_bwd_write_kernel[(triton.cdiv(N * D, ELEMENTWISE_BLOCK),)](
            G, dM, dE_parts, passed, nact, prm, t, N * D, P,
            BLOCK=ELEMENTWISE_BLOCK, ACC=ACC, num_warps=4,
        )
    dH0 = G.to(h0_dtype) if want_dh0 else torch.empty(0, dtype=h0_dtype, device=dev)
    return dz, dM.to(memory.dtype), dH0


# --------------------------------------------------------------------------------------------
# Custom ops and autograd
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("enn::triton_memory_fwd", mutates_args=())
def _fwd_op(
    z: Tensor, memory: Tensor, noise: Tensor | None, initial_state: Tensor | None,
    lengths: Tensor | None, decay: float, strength: float, trace_scale: float,
    inv_temperature: float, cosine_eps: float, trace_clip: float, top_k: int, shared: bool,
    chunk_size: int, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(attention, recall, final trace, saved states, clip mask (shared))."""
    with _on_device(z.device):
        return _forward(z, memory, noise, initial_state, lengths, decay, strength, trace_scale,
                        inv_temperature, cosine_eps, trace_clip, top_k, shared, chunk_size,
                        save)


@_fwd_op.register_fake
def _(z, memory, noise, initial_state, lengths, decay, strength, trace_scale, inv_temperature,
      cosine_eps, trace_clip, top_k, shared, chunk_size, save):
    B, T, D = z.shape
    N = memory.shape[0]
    acc = _acc_dtype(z.dtype)
    tdt = _trace_dtype(z, initial_state)
    att, rec = z.new_empty(B, T, N), z.new_empty(B, T, D)
    if not shared:
        NC = triton.cdiv(T, _chunk(T, chunk_size))
        return (att, rec, z.new_empty(B, N, D, dtype=tdt),
                z.new_empty((B, NC, N, D) if save else (0,), dtype=acc),
                z.new_empty(0, dtype=torch.int8))
    return (att, rec, z.new_empty(N, D, dtype=tdt), z.new_empty(T + 1, N, D, dtype=acc),
            z.new_empty(T, N, D, dtype=torch.int8))


@torch.library.custom_op("enn::triton_memory_bwd", mutates_args=())
def _bwd_op(
    dA: Tensor, dR: Tensor, dHT: Tensor | None, z: Tensor, memory: Tensor,
    noise: Tensor | None, initial_state: Tensor | None, lengths: Tensor | None,
    saved: Tensor, passed: Tensor, decay: float, strength: float, trace_scale: float,
    inv_temperature: float, cosine_eps: float, trace_clip: float, top_k: int, shared: bool,
    chunk_size: int, want_dh0: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dz, dM, dH0 (empty unless want_dh0))."""
    with _on_device(z.device):
        return _backward(dA, dR, dHT, z, memory, noise, initial_state, lengths, saved, passed,
                         decay, strength, trace_scale, inv_temperature, cosine_eps,
                         trace_clip, top_k, shared, chunk_size, want_dh0)


@_bwd_op.register_fake
def _(dA, dR, dHT, z, memory, noise, initial_state, lengths, saved, passed, decay, strength,
      trace_scale, inv_temperature, cosine_eps, trace_clip, top_k, shared, chunk_size,
      want_dh0):
    h0_dtype = z.dtype if initial_state is None else initial_state.dtype
    dH0 = (initial_state.new_empty(initial_state.shape) if want_dh0
           else z.new_empty(0, dtype=h0_dtype))
    return z.new_empty(z.shape), memory.new_empty(memory.shape), dH0


_SCALARS = ("decay", "strength", "trace_scale", "inv_temperature", "cosine_eps", "trace_clip",
            "top_k", "shared", "chunk_size")


def _fwd_setup_context(ctx, inputs, output):
    z, memory, noise, initial_state, lengths, *scalars = inputs
    _, _, _, saved, passed = output
    ctx.save_for_backward(z, memory, noise, initial_state, lengths, saved, passed)
    ctx.scalars = dict(zip(_SCALARS, scalars[:9], strict=True))
    ctx.saved_states = scalars[9]
    ctx.has_h0 = initial_state is not None
    ctx.mark_non_differentiable(saved, passed)


def _fwd_backward(ctx, dA, dR, dHT, _saved, _passed):
    if not ctx.saved_states:
        raise RuntimeError("fused_recurrent_memory: the forward ran without saving for backward")
    z, memory, noise, initial_state, lengths, saved, passed = ctx.saved_tensors
    want_dh0 = ctx.has_h0 and ctx.needs_input_grad[3]
    if dA is None:
        dA = torch.zeros(*z.shape[:2], memory.shape[0], dtype=z.dtype, device=z.device)
    if dR is None:
        dR = torch.zeros_like(z)
    dz, dM, dH0 = torch.ops.enn.triton_memory_bwd(
        dA, dR, dHT, z, memory, noise, initial_state, lengths, saved, passed,
        **ctx.scalars, want_dh0=want_dh0,
    )
    return (dz, dM, None, dH0 if want_dh0 else None, None) + (None,) * 10


torch.library.register_autograd("enn::triton_memory_fwd", _fwd_backward,
                                setup_context=_fwd_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("fused_recurrent_memory: double backward is not supported; use "
                       "naive_memory for higher-order gradients")


torch.library.register_autograd("enn::triton_memory_bwd", _no_double_backward,
                                setup_context=lambda ctx, inputs, output: None)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _check(z, memory, decay, strength, cfg, noise, initial_state, lengths, chunk_size):
    for name, x in (("decay", decay), ("strength", strength)):
        if isinstance(x, bool) or not isinstance(x, float | int):
            raise TypeError(f"expected {name} a Python number, got {type(x).__name__}")
    if not isinstance(cfg, MemoryConfig):
        raise TypeError(f"expected cfg a MemoryConfig, got {type(cfg).__name__}")
    if not isinstance(z, Tensor) or not isinstance(memory, Tensor):
        raise TypeError("expected z and memory tensors, got "
                        f"{type(z).__name__} and {type(memory).__name__}")
    want = "cpu" if INTERPRET else "cuda"
    where = "CPU tensors (TRITON_INTERPRET=1)" if INTERPRET else "CUDA tensors"
    for name, x in (("z", z), ("memory", memory), ("noise", noise),
                    ("initial_state", initial_state), ("lengths", lengths)):
        if x is not None and x.device.type != want:
            raise ValueError(f"expected {where}, got {name} on {x.device}")
        if x is not None and x.device != z.device:
            raise ValueError(f"expected every tensor on {z.device}, got {name} on {x.device}")
    if z.dim() != 3:
        raise ValueError(f"expected z of shape (B, T, h), got {tuple(z.shape)}")
    B, T, D = z.shape
    if z.dtype not in _FLOAT:
        raise TypeError(f"expected z float16, bfloat16, float32 or float64, got {z.dtype}")
    if memory.dim() != 2 or memory.shape[1] != D or memory.shape[0] < 1:
        raise ValueError(f"expected memory of shape (N, {D}), got {tuple(memory.shape)}")
    N = memory.shape[0]
    if max(B * T * max(N, D), (T + 1) * N * D) >= 2**31:  # the noise's and shared traces'
        raise ValueError(f"expected B * T * max(N, h) and (T + 1) * N * h < 2**31 (int32 "
                         f"offsets), got B {B}, T {T}, N {N}, h {D}")
    allowed = (z.dtype,) if z.dtype in (torch.float32, torch.float64) else (z.dtype, torch.float32)
    if memory.dtype not in allowed:
        raise TypeError(f"expected memory in {' or '.join(map(str, allowed))} for z in {z.dtype}, "
                        f"got {memory.dtype}")
    BN, BH = _tiles(N, D)
    if BN * BH > MAX_TILE:
        raise ValueError(f"expected next_pow2(N) * next_pow2(h) <= {MAX_TILE}, got N {N}, h {D}")
    if noise is not None:
        if tuple(noise.shape) != (T, N, D):
            raise ValueError(f"expected noise of shape {(T, N, D)}, got {tuple(noise.shape)}")
        if noise.dtype not in _FLOAT:
            raise TypeError(f"expected noise a float tensor, got {noise.dtype}")
        if noise.requires_grad:
            raise ValueError("expected noise without requires_grad: it gets no gradient")
    if initial_state is not None:
        shape = (N, D) if cfg.shared else (B, N, D)
        if tuple(initial_state.shape) != shape:
            raise ValueError(f"expected initial_state of shape {shape}, got "
                             f"{tuple(initial_state.shape)}")
        if initial_state.dtype not in _FLOAT:
            raise TypeError(f"expected initial_state a float tensor, got {initial_state.dtype}")
    if lengths is not None:
        if tuple(lengths.shape) != (B,):
            raise ValueError(f"expected lengths of shape ({B},), got {tuple(lengths.shape)}")
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or \
                lengths.dtype == torch.bool:
            raise TypeError(f"expected integer lengths, got {lengths.dtype}")
    if cfg.top_k is not None and (isinstance(cfg.top_k, bool) or not isinstance(cfg.top_k, int)
                                  or cfg.top_k < 1):
        raise ValueError(f"expected top_k None or a positive int, got {cfg.top_k!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"expected chunk_size None or a positive int, got {chunk_size!r}")
    if not cfg.trace_clip >= 0:
        raise ValueError(f"expected trace_clip >= 0, got {cfg.trace_clip}")
    if not cfg.cosine_eps >= 0:
        raise ValueError(f"expected cosine_eps >= 0, got {cfg.cosine_eps}")


def fused_recurrent_memory(
    z: Tensor, memory: Tensor, decay: float, strength: float, cfg: MemoryConfig,
    noise: Tensor | None = None, initial_state: Tensor | None = None,
    output_final_state: bool = False, lengths: Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[MemoryOutput, Tensor | None]:
    """The memory over a sequence with Triton kernels; same semantics as
    ``naive_memory(z, None, z, memory, decay, strength, cfg, noise, initial_state,
    output_final_state, lengths)``.

    z (B, T, h); memory (N, h); decay and strength Python numbers; noise (T, N, h) (one draw
    per step, shared by the batch; no gradient) or None; initial_state (B, N, h) per sample
    or (N, h) shared (cfg.shared), or None (zeros); lengths (B,) integers or None.
    chunk_size: steps between the per-sample backward's checkpoints (default ceil(sqrt(T))).
    Returns (MemoryOutput(attention (B, T, N), recall (B, T, h), traces=None), final trace
    or None). Differentiable in z, memory and initial_state (once).
    """
    _check(z, memory, decay, strength, cfg, noise, initial_state, lengths, chunk_size)
    save = needs_grad(z, memory, initial_state)
    att, rec, final, _, _ = torch.ops.enn.triton_memory_fwd(
        z, memory, noise, initial_state, lengths, float(decay), float(strength),
        float(cfg.trace_scale), float(cfg.inv_temperature), float(cfg.cosine_eps),
        float(cfg.trace_clip),
        0 if cfg.top_k is None else int(cfg.top_k), bool(cfg.shared),
        0 if chunk_size is None else int(chunk_size), save,
    )
    return MemoryOutput(att, rec, None), (final if output_final_state else None)


# --------------------------------------------------------------------------------------------
# The clipped trace (bank.py's scan on CUDA)
# --------------------------------------------------------------------------------------------


def _clip_setup(a, v, decays, H0, lengths):
    B, T, N = a.shape
    D = v.shape[2]
    acc = _acc_dtype(v.dtype)
    lens = None if lengths is None else lengths.to(device=v.device, dtype=torch.int32).contiguous()
    C = _chunk(T, 0)
    BN, BH = _tiles(N, D)
    launch = dict(C=C, BN=BN, BH=BH, ACC=_tl_dtype(acc), num_warps=_num_warps(BN * BH))
    return B, T, N, D, acc, lens, C, triton.cdiv(T, C), launch


def _clip_forward(a, w, v, decays, H0, lengths, decay, clip, save):
    B, T, N, D, acc, lens, C, NC, launch = _clip_setup(a, v, decays, H0, lengths)
    prm = _params(decay, clip, dtype=acc, device=v.device)
    read = v.new_zeros(B, T, D)
    final = torch.empty(B, N, D, dtype=_trace_dtype(v, H0), device=v.device)
    ck = torch.empty((B, NC, N, D) if save else (0,), dtype=acc, device=v.device)
    if B > 0:
        _clip_fwd_kernel[(B,)](
            a.contiguous(), w.contiguous(), v.contiguous(),
            prm if decays is None else decays.contiguous(),
            prm if H0 is None else H0.contiguous(), prm if lens is None else lens, prm,
            read, final, ck, T, N, D, NC,
            HAS_D=decays is not None, HAS_H0=H0 is not None, HAS_LEN=lens is not None,
            SAVE=save, **launch,
        )
    return read, final, ck


def _clip_backward(a, w, v, decays, H0, lengths, ckpt, g_read, g_HT, decay, clip):
    B, T, N, D, acc, lens, C, NC, launch = _clip_setup(a, v, decays, H0, lengths)
    prm = _params(decay, clip, dtype=acc, device=v.device)
    g_a, g_w, g_v = a.new_zeros(a.shape), w.new_zeros(w.shape), v.new_zeros(v.shape)
    g_d = decays.new_zeros(decays.shape) if decays is not None else v.new_empty(0)
    g_H0 = torch.empty(B, N, D, dtype=v.dtype if H0 is None else H0.dtype, device=v.device)
    g_read = v.new_zeros(B, T, D) if g_read is None else g_read.contiguous()
    if B > 0:
        _clip_bwd_kernel[(B,)](
            a.contiguous(), w.contiguous(), v.contiguous(),
            prm if decays is None else decays.contiguous(), prm if lens is None else lens, prm,
            ckpt, torch.empty(B, C, N, D, dtype=acc, device=v.device), g_read,
            prm if g_HT is None else g_HT.contiguous(), g_a, g_w, g_v,
            g_d if decays is not None else prm, g_H0, T, N, D, NC,
            HAS_D=decays is not None, HAS_LEN=lens is not None, HAS_DHT=g_HT is not None,
            WANT_DH0=True, **launch,
        )
    return g_a, g_w, g_v, g_d, g_H0


@torch.library.custom_op("enn::triton_clipped_trace", mutates_args=())
def _clip_fwd_op(
    a: Tensor, w: Tensor, v: Tensor, decays: Tensor | None, H0: Tensor | None,
    lengths: Tensor | None, decay: float, trace_clip: float, save: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(reads a_t H_{t-1}, final trace, checkpoints for the backward)."""
    with _on_device(v.device):
        return _clip_forward(a, w, v, decays, H0, lengths, decay, trace_clip, save)


@_clip_fwd_op.register_fake
def _(a, w, v, decays, H0, lengths, decay, trace_clip, save):
    B, T, N = a.shape
    D = v.shape[2]
    NC = triton.cdiv(T, _chunk(T, 0))
    return (v.new_empty(B, T, D), v.new_empty(B, N, D, dtype=_trace_dtype(v, H0)),
            v.new_empty((B, NC, N, D) if save else (0,), dtype=_acc_dtype(v.dtype)))


@torch.library.custom_op("enn::triton_clipped_trace_backward", mutates_args=())
def _clip_bwd_op(
    a: Tensor, w: Tensor, v: Tensor, decays: Tensor | None, H0: Tensor | None,
    lengths: Tensor | None, ckpt: Tensor, g_read: Tensor | None, g_HT: Tensor | None,
    decay: float, trace_clip: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(g_a, g_w, g_v, g_decays (empty without per-step decays), g_H0)."""
    with _on_device(v.device):
        return _clip_backward(a, w, v, decays, H0, lengths, ckpt, g_read, g_HT, decay,
                              trace_clip)


@_clip_bwd_op.register_fake
def _(a, w, v, decays, H0, lengths, ckpt, g_read, g_HT, decay, trace_clip):
    B, _, N = a.shape
    return (a.new_empty(a.shape), w.new_empty(w.shape), v.new_empty(v.shape),
            decays.new_empty(decays.shape) if decays is not None else v.new_empty(0),
            v.new_empty(B, N, v.shape[2], dtype=v.dtype if H0 is None else H0.dtype))


def _clip_fwd_setup_context(ctx, inputs, output):
    a, w, v, decays, H0, lengths, decay, trace_clip, save = inputs
    ctx.save_for_backward(a, w, v, decays, H0, lengths, output[2])
    ctx.consts = decay, trace_clip
    ctx.saved_states = save
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[2])


def _clip_fwd_backward(ctx, g_read, g_HT, _ckpt):
    if not ctx.saved_states:
        raise RuntimeError("enn: this clipped trace ran without saving for the backward "
                           "(save=False)")
    a, w, v, decays, H0, lengths, ckpt = ctx.saved_tensors
    g_a, g_w, g_v, g_d, g_H0 = torch.ops.enn.triton_clipped_trace_backward(
        a, w, v, decays, H0, lengths, ckpt, g_read, g_HT, *ctx.consts)
    return (g_a, g_w, g_v, g_d if decays is not None else None,
            g_H0 if H0 is not None else None, None, None, None, None)


torch.library.register_autograd("enn::triton_clipped_trace", _clip_fwd_backward,
                                setup_context=_clip_fwd_setup_context)
torch.library.register_autograd("enn::triton_clipped_trace_backward", _no_double_backward,
                                setup_context=lambda ctx, inputs, output: None)


def clipped_trace(
    a: Tensor, w: Tensor, v: Tensor, decays: Tensor | None, H0: Tensor | None,
    lengths: Tensor | None, decay: float, trace_clip: float, save: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``torch.ops.enn.clipped_trace`` (native.py) on the GPU: the reads a_t H_{t-1} (B, T, h)
    and the final trace (B, N, h) of H_t = clip(d_t H_{t-1} + outer(w_t, v_t)), given read and
    scaled write addresses a, w (B, T, N), values v (B, T, h), per-step decays (B, T) or None
    (``decay`` for every step), the initial trace (B, N, h) or None and lengths (B,) or None;
    then the checkpoints its backward reads. One program per sequence keeps the trace on
    chip, as the per-sample memory kernels do."""
    want = "cpu" if INTERPRET else "cuda"
    where = "CPU tensors (TRITON_INTERPRET=1)" if INTERPRET else "CUDA tensors"
    if v.dim() != 3 or a.dim() != 3 or a.shape[:2] != v.shape[:2] or w.shape != a.shape:
        raise ValueError(f"expected a, w (B, T, N) and v (B, T, h), got {tuple(a.shape)}, "
                         f"{tuple(w.shape)} and {tuple(v.shape)}")
    B, T, N = a.shape
    D = v.shape[2]
    shapes = {"decays": (B, T), "initial trace": (B, N, D), "lengths": (B,)}
    for name, x in (("a", a), ("w", w), ("v", v), ("decays", decays), ("initial trace", H0),
                    ("lengths", lengths)):
        if x is None:
            continue
        if x.device.type != want or x.device != v.device:
            raise ValueError(f"expected {where} on one device, got {name} on {x.device}")
        if name in shapes and tuple(x.shape) != shapes[name]:
            raise ValueError(f"expected {name} of shape {shapes[name]}, got {tuple(x.shape)}")
    BN, BH = _tiles(N, D)
    if BN * BH > MAX_TILE:
        raise ValueError(f"expected next_pow2(N) * next_pow2(h) <= {MAX_TILE}, got N {N}, h {D}")
    if B * T * max(N, D) >= 2**31:
        raise ValueError(f"expected B * T * max(N, h) < 2**31 (int32 offsets), got B {B}, T {T}, "
                         f"N {N}, h {D}")
    return torch.ops.enn.triton_clipped_trace(a, w, v, decays, H0, lengths, float(decay),
                                              float(trace_clip), save)
