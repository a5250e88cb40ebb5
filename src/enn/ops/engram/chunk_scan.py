"""The sequential core of the per-sample fast path, with a hand-written backward.

Inside one chunk of ``fast._memory_per_sample`` every batched quantity is already known;
what remains sequential is a recurrence over (B, N) tensors. For step j of the chunk:

    y_j   = Kz_j + sum_{s<j} WG[j, s] a_s             K[i] . z_j         (trace times input)
    px_j  = XK_j + sum_{s<j} WX[j, s] * a_s           X_j[i] . K[i]      (noise only)
    n2_j  = Msq_j + 2 alpha (P_j + alpha px_j) + alpha^2 Q_j             |E_j[i]|^2
    s_j   = (Mz'_j + alpha y_j) * izn_j / sqrt(max(n2_j, eps^2))         cosine
    a_j   = softmax(top_k(s_j / tau_eff))
    P_j+1 = d P_j + eta a_j Mz_j                      M[i] . K[i]
    Q_j+1 = d^2 Q_j + 2 d eta a_j y_j + eta^2 a_j^2 zsq_j                |K[i]|^2

Autograd would record about twenty nodes per step. The backward below runs the reverse loop
directly: every gradient of a_s that later steps produce (through y, px, P and Q) is
accumulated before step s is reached.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .common import NORM_EPS, masked_topk


class _ChunkScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Kz, WG, XK, WX, P, Q, Msq, Mz_eff, izn, Mz, zsq, alpha, eta, inv_tau,
                top_k):
        B, c, N = Kz.shape
        d = 1.0 - eta
        A = Kz.new_empty(B, c, N)  # (B, c, N) attention
        Y = torch.empty_like(A)  # y_j
        NUM = torch.empty_like(A)  # cosine numerators
        N2 = torch.empty_like(A)  # squared row norms
        for j in range(c):
            y = Kz[:, j]  # (B, N)
            px = None if XK is None else XK[:, j]
            if j > 0:
                y = y + (WG[:, j, :j, None] * A[:, :j]).sum(1)
                if px is not None:
                    px = px + (WX[:, j, :j] * A[:, :j]).sum(1)
            n2 = Msq[j] + 2 * alpha * (P if px is None else P + alpha * px) + alpha**2 * Q
            num = Mz_eff[:, j] + alpha * y  # (B, N)
            s = num * izn[:, j, None] / n2.clamp_min(NORM_EPS**2).sqrt()  # (B, N)
            a = torch.softmax(masked_topk(s * inv_tau, top_k), dim=-1)  # (B, N)
            A[:, j], Y[:, j], NUM[:, j], N2[:, j] = a, y, num, n2
            P = d * P + eta * a * Mz[:, j]
            Q = d * d * Q + 2 * d * eta * a * y + eta * eta * a * a * zsq[:, j, None]
        ctx.save_for_backward(WG, WX, izn, Mz, zsq, A, Y, NUM, N2)
        ctx.consts = (alpha, eta, inv_tau)
        ctx.has_noise = XK is not None
        return A, P, Q

    @staticmethod
    @once_differentiable
    def backward(ctx, dA, dP, dQ):
        WG, WX, izn, Mz, zsq, A, Y, NUM, N2 = ctx.saved_tensors
        alpha, eta, inv_tau = ctx.consts
        d = 1.0 - eta
        B, c, N = A.shape
        dP = A.new_zeros(B, N) if dP is None else dP  # gradient of P after the current step
        dQ = A.new_zeros(B, N) if dQ is None else dQ
        d_a = A.new_zeros(B, c, N) if dA is None else dA.clone()  # grows as later steps run
        dKz, dMz_eff, dMz = (torch.empty_like(A) for _ in range(3))  # (B, c, N)
        dMsq = A.new_empty(c, N)
        d_izn, d_zsq = A.new_empty(B, c), A.new_empty(B, c)
        dWG = A.new_zeros(B, c, c)
        dXK = torch.empty_like(A) if ctx.has_noise else None
        dWX = torch.zeros_like(WX) if ctx.has_noise else None
        for j in reversed(range(c)):
            a, y, num, n2 = A[:, j], Y[:, j], NUM[:, j], N2[:, j]  # (B, N)
            # the P and Q updates of step j
            da = d_a[:, j] + dQ * (2 * d * eta * y + 2 * eta * eta * a * zsq[:, j, None]) \
                + dP * (eta * Mz[:, j])
            dy = dQ * (2 * d * eta * a)
            d_zsq[:, j] = (dQ * (eta * eta) * a * a).sum(-1)
            dMz[:, j] = dP * (eta * a)
            dP, dQ = d * dP, d * d * dQ
            # softmax (entries that top_k removed have a = 0 and get no gradient)
            g = a * da
            ds = inv_tau * (g - a * g.sum(-1, keepdim=True))  # (B, N)
            # s = num * izn / en, en = sqrt(max(n2, eps^2))
            en = n2.clamp_min(NORM_EPS**2).sqrt()
            s = num * izn[:, j, None] / en
            dnum = ds * izn[:, j, None] / en
            d_izn[:, j] = (ds * num / en).sum(-1)
            dn2 = torch.where(n2 > NORM_EPS**2, -ds * s / (2 * en * en), 0.0)  # (B, N)
            dMsq[j] = dn2.sum(0)
            dP = dP + 2 * alpha * dn2
            dQ = dQ + alpha * alpha * dn2
            dMz_eff[:, j] = dnum
            dy = dy + alpha * dnum
            dKz[:, j] = dy
            if j > 0:
                dWG[:, j, :j] = (dy[:, None, :] * A[:, :j]).sum(-1)
                d_a[:, :j] += WG[:, j, :j, None] * dy[:, None, :]
            if ctx.has_noise:
                dpx = 2 * alpha * alpha * dn2
                dXK[:, j] = dpx
                if j > 0:
                    dWX[:, j, :j] = dpx[:, None] * A[:, :j]
                    d_a[:, :j] += WX[:, j, :j] * dpx[:, None]
        return (dKz, dWG, dXK, dWX, dP, dQ, dMsq, dMz_eff, d_izn, dMz, d_zsq,
                None, None, None, None)


def chunk_scan(
    Kz: Tensor, WG: Tensor, XK: Tensor | None, WX: Tensor | None, P: Tensor, Q: Tensor,
    Msq: Tensor, Mz_eff: Tensor, izn: Tensor, Mz: Tensor, zsq: Tensor, alpha: float,
    eta: float, inv_tau: float, top_k: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the recurrence over one chunk; returns attention (B, c, N) and P, Q after it.

    Kz, XK, Mz_eff, Mz (B, c, N); WG (B, c, c) and WX (B, c, c, N) indexed [j, s]; P, Q
    (B, N); Msq (c, N); izn, zsq (B, c). XK and WX are None without trace noise.
    """
    return _ChunkScan.apply(Kz, WG, XK, WX, P, Q, Msq, Mz_eff, izn, Mz, zsq, alpha, eta,
                            inv_tau, top_k)


__all__ = ["chunk_scan"]
