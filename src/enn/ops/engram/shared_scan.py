"""The shared-trace memory recurrence, with a hand-written backward.

One trace H (N, h) for the whole batch. For every step t:

    E_t = M + alpha H_{t-1}                            effective memory (N, h)
    a_t = softmax(top_k(zn_t En_t^T / tau_eff))        En_t: rows of E_t normalised
    U_t = (a_t * mask_t)^T z_t / n_t + xi_t            batch mean over the n_t active samples
    H_t = clip(d H_{t-1} + eta U_t)

Autograd would record about fifteen nodes per step; the backward below runs the reverse loop
with (N, h) and (B, N) tensors only, and the recall m_t = a_t E_t stays outside (one batched
product over all steps).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .common import NORM_EPS, masked_topk


class _SharedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, zn, M, H0, noise, mask, n_active, alpha, eta, clip, inv_tau, top_k):
        B, steps, n_hidden = z.shape
        N = M.shape[0]
        A = z.new_empty(B, steps, N)  # (B, steps, N)
        Es = z.new_empty(steps, N, n_hidden)  # (steps, N, h) effective memory per step
        norms = z.new_empty(steps, N, 1)  # row norms, clamped
        inside = torch.empty(steps, N, n_hidden, dtype=torch.bool, device=z.device)  # unclipped
        H = H0
        for t in range(steps):
            E = torch.add(M, H, alpha=alpha, out=Es[t])  # (N, h)
            r = torch.clamp_min(E.norm(dim=-1, keepdim=True), NORM_EPS, out=norms[t])  # (N, 1)
            s = zn[:, t] @ (E / r).t()  # (B, N)
            a = torch.softmax(masked_topk(s * inv_tau, top_k), dim=-1)  # (B, N)
            A[:, t] = a
            wa = a if mask is None else a * mask[:, t, None]  # (B, N)
            H_pre = torch.addmm(H, wa.t(), z[:, t], beta=1 - eta, alpha=eta / n_active[t])
            if noise is not None:
                H_pre += eta * noise[t]
            torch.logical_and(H_pre >= -clip, H_pre <= clip, out=inside[t])
            H = H_pre.clamp_(-clip, clip)  # (N, h)
        ctx.save_for_backward(z, zn, A, Es, norms, inside.to(z.dtype), mask)
        ctx.consts = (n_active, alpha, eta, inv_tau)
        return A, Es, H

    @staticmethod
    @once_differentiable
    def backward(ctx, dA, dEs, dH):
        z, zn, A, Es, norms, inside, mask = ctx.saved_tensors
        n_active, alpha, eta, inv_tau = ctx.consts
        steps = A.shape[1]
        dz, dzn = torch.empty_like(z), torch.empty_like(zn)  # (B, steps, h) every step written
        dM = torch.zeros_like(Es[0])  # (N, h)
        dH = torch.zeros_like(Es[0]) if dH is None else dH  # gradient of H after step t
        for t in reversed(range(steps)):
            a = A[:, t]  # (B, N)
            wa = a if mask is None else a * mask[:, t, None]
            g = dH * inside[t]  # (N, h) through the clip
            dH = (1 - eta) * g
            dU = g * (eta / n_active[t])  # (N, h) gradient of wa^T z_t
            torch.mm(wa, dU, out=dz[:, t])  # (B, h)
            da = z[:, t] @ dU.t()  # (B, N)
            if mask is not None:
                da = da * mask[:, t, None]
            if dA is not None:
                da = da + dA[:, t]
            ga = a * da
            ds = inv_tau * (ga - a * ga.sum(-1, keepdim=True))  # (B, N) softmax backward
            En = Es[t] / norms[t]  # (N, h)
            torch.mm(ds, En, out=dzn[:, t])  # (B, h)
            dEn = ds.t() @ zn[:, t]  # (N, h)
            radial = (dEn * En).sum(-1, keepdim=True)  # (N, 1)
            radial = torch.where(norms[t] > NORM_EPS, radial, 0.0)  # a clamped norm is constant
            dE = (dEn - En * radial) / norms[t]  # (N, h)
            if dEs is not None:
                dE = dE + dEs[t]
            dM += dE
            dH = dH + alpha * dE
        return dz, dzn, dM, dH, None, None, None, None, None, None, None, None


def shared_scan(
    z: Tensor, zn: Tensor, M: Tensor, H0: Tensor, noise: Tensor | None, mask: Tensor | None,
    n_active: list[int], alpha: float, eta: float, clip: float, inv_tau: float,
    top_k: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the shared trace over the steps of z and zn (B, steps, h), zn = z / |z|.

    Returns attention (B, steps, N), the effective memory of every step (steps, N, h) and
    the final trace (N, h). ``mask`` (B, steps) marks real steps, ``n_active`` counts them.
    """
    return _SharedScan.apply(z, zn, M, H0, noise, mask, n_active, alpha, eta, clip, inv_tau,
                             top_k)


__all__ = ["shared_scan"]
