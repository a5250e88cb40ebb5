"""The Engram hidden chain with a hand-written backward.

Given the input share of the integrator for every step, ``pre_t = W_cz z_t + W_cm m_t + b_c``,
the chain is a plain RNN:

    c_t = ReLU(pre_t + W_ch h_{t-1})          (B, 3h)
    q_t = ReLU(W_o c_t + b_o)                 (B, h)
    h_t = LayerNorm(q_t)                      (B, h)

Autograd would record five nodes per step and compute the weight gradients step by step (two
small matmuls per step). Here the backward runs the reverse loop with only what is sequential
(two matmuls and the LayerNorm and ReLU backward per step) and gets the gradients of W_ch,
W_o, b_o and the LayerNorm affine from all steps at once, as single large matmuls and sums.

With a ``mask`` (B, T) a sample's padded steps keep its state and output zeros, as in
``naive.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _relu_backward(grad: Tensor, relu_out: Tensor, into: Tensor) -> Tensor:
    return torch.ops.aten.threshold_backward.grad_input(grad, relu_out, 0, grad_input=into)


class _HiddenChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, h0, w_ch, w_o, b_o, ln_w, ln_b, eps, mask):
        T, B, _ = pre.shape  # time-major: every step's slice is contiguous
        n_hidden = h0.shape[-1]
        c_all = pre.new_empty(T, B, 3 * n_hidden)  # (T, B, 3h) after the ReLU
        q_all = pre.new_empty(T, B, n_hidden)  # (T, B, h) LayerNorm inputs
        mean_all = pre.new_empty(T, B, 1)
        rstd_all = pre.new_empty(T, B, 1)
        h_prev = pre.new_empty(T, B, n_hidden)  # (T, B, h) state entering each step
        out = pre.new_empty(T, B, n_hidden)  # (T, B, h)
        w_ch_t, w_o_t = w_ch.t(), w_o.t()
        h = h0
        for t in range(T):
            h_prev[t] = h
            c = torch.relu_(torch.addmm(pre[t], h, w_ch_t, out=c_all[t]))  # (B, 3h)
            q = torch.addmm(b_o, c, w_o_t) if b_o is not None else c @ w_o_t  # (B, h)
            torch.relu_(q)
            q_all[t] = q
            h_new, mean, rstd = torch.native_layer_norm(q, (n_hidden,), ln_w, ln_b, eps)
            mean_all[t], rstd_all[t] = mean, rstd
            if mask is None:
                h = h_new
                out[t] = h_new
            else:
                keep = mask[t, :, None]  # (B, 1)
                h = torch.where(keep, h_new, h)
                torch.mul(h_new, keep, out=out[t])
        ctx.save_for_backward(c_all, q_all, mean_all, rstd_all, h_prev, w_ch, w_o, b_o, ln_w,
                              ln_b, mask)
        ctx.eps = eps
        return out, h

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_h):
        c_all, q_all, mean_all, rstd_all, h_prev, w_ch, w_o, b_o, ln_w, ln_b, mask = (
            ctx.saved_tensors)
        T, B, n_hidden = q_all.shape
        dh = torch.zeros_like(h_prev[0]) if d_h is None else d_h  # (B, h)
        d_q_all = torch.empty_like(q_all)  # (T, B, h) gradient of q_t
        d_c_all = torch.empty_like(c_all)  # (T, B, 3h) gradient of c_t = of pre_t
        g_all = torch.empty_like(q_all)  # (T, B, h) gradient of the LayerNorm's output
        no_affine = [True, False, False]
        for t in reversed(range(T)):
            g = dh if d_out is None else dh + d_out[t]  # (B, h)
            if mask is not None:
                keep = mask[t, :, None]  # (B, 1)
                carried = dh * ~keep  # a padded step passes its state through unchanged
                g = g * keep
            g_all[t] = g
            d_q = torch.ops.aten.native_layer_norm_backward(
                g, q_all[t], (n_hidden,), mean_all[t], rstd_all[t], ln_w, ln_b, no_affine
            )[0]
            d_q = _relu_backward(d_q, q_all[t], into=d_q_all[t])  # (B, h)
            d_c = _relu_backward(d_q @ w_o, c_all[t], into=d_c_all[t])  # (B, 3h)
            dh = d_c @ w_ch  # (B, h)
            if mask is not None:
                dh = dh + carried
        # every step's weight gradients at once: (T*B, k) x (T*B, k') matmuls and sums
        d_w_ch = d_c_all.flatten(0, 1).t() @ h_prev.flatten(0, 1)  # (3h, h)
        d_w_o = d_q_all.flatten(0, 1).t() @ c_all.flatten(0, 1)  # (h, 3h)
        d_b_o = None if b_o is None else d_q_all.sum((0, 1))  # (h,)
        x_hat = (q_all - mean_all) * rstd_all  # (T, B, h)
        d_ln_w = (g_all * x_hat).sum((0, 1))  # (h,)
        d_ln_b = g_all.sum((0, 1))  # (h,)
        return d_c_all, dh, d_w_ch, d_w_o, d_b_o, d_ln_w, d_ln_b, None, None


def hidden_chain(
    pre: Tensor, h0: Tensor, w_ch: Tensor, w_o: Tensor, b_o: Tensor | None, ln_w: Tensor,
    ln_b: Tensor, eps: float, mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the chain over time-major ``pre`` (T, B, 3h) from ``h0`` (B, h).

    ``mask`` (T, B) bool marks real steps. Returns outputs (T, B, h) and the final state (B, h),
    in ``pre``'s dtype (autocast does not reach inside: the state keeps its precision).
    """
    with torch.autocast(pre.device.type, enabled=False):
        return _HiddenChain.apply(pre, h0.to(pre.dtype), w_ch.to(pre.dtype), w_o.to(pre.dtype),
                                  None if b_o is None else b_o.to(pre.dtype), ln_w.to(pre.dtype),
                                  ln_b.to(pre.dtype), eps, mask)


__all__ = ["hidden_chain"]
