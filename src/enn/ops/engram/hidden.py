"""The Engram hidden pass with a hand-written backward.

Given the encodings and recalls of every step, ``zm_t = [z_t ; m_t]``, the rest of the step
is a plain RNN over the integrator and the output layer:

    c_t = ReLU(W_c [zm_t ; h_{t-1}] + b_c)    (B, 3h)   W_c = [W_czm | W_ch]
    q_t = ReLU(W_o c_t + b_o)                 (B, h)
    h_t = LayerNorm(q_t)                      (B, h)

The input share ``W_czm zm_t`` of every step is one large matmul, written straight into the
buffer that then holds c. Autograd would record five nodes per step and take the weight
gradients step by step; the backward here runs the reverse loop with only what is sequential
(two matmuls and the LayerNorm and ReLU backward per step) and gets every weight gradient from
all steps at once, as large matmuls and sums.

With a ``mask`` (T, B) a sample's padded steps keep its state and output zeros, as in
``naive.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _relu_backward(grad: Tensor, relu_out: Tensor, into: Tensor) -> Tensor:
    return torch.ops.aten.threshold_backward.grad_input(grad, relu_out, 0, grad_input=into)


class _HiddenPass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, zm, h0, w_c, b_c, w_o, b_o, ln_w, ln_b, eps, mask):
        T, B, n_in = zm.shape  # time-major: every step's slice is contiguous
        n_hidden = h0.shape[-1]
        w_czm, w_ch_t, w_o_t = w_c[:, :n_in], w_c[:, n_in:].t(), w_o.t()
        c_all = (zm.reshape(T * B, n_in) @ w_czm.t()).view(T, B, -1)  # (T, B, 3h) input share
        q_all = zm.new_empty(T, B, n_hidden)  # (T, B, h) LayerNorm inputs
        mean_all, rstd_all = zm.new_empty(T, B, 1), zm.new_empty(T, B, 1)
        h_prev = zm.new_empty(T, B, n_hidden)  # (T, B, h) state entering each step
        out = zm.new_empty(T, B, n_hidden)  # (T, B, h)
        h = h0
        for t in range(T):
            h_prev[t] = h
            c = c_all[t].addmm_(h, w_ch_t)  # (B, 3h), in place: c_all now holds c_t
            if b_c is not None:
                c.add_(b_c)
            c.relu_()
            q = torch.addmm(b_o, c, w_o_t, out=q_all[t]) if b_o is not None else torch.mm(
                c, w_o_t, out=q_all[t])  # (B, h)
            q.relu_()
            h_new, mean, rstd = torch.native_layer_norm(q, (n_hidden,), ln_w, ln_b, eps)
            mean_all[t], rstd_all[t] = mean, rstd
            if mask is None:
                h = h_new
                out[t] = h_new
            else:
                keep = mask[t, :, None]  # (B, 1)
                h = torch.where(keep, h_new, h)
                torch.mul(h_new, keep, out=out[t])
        ctx.save_for_backward(zm, c_all, q_all, mean_all, rstd_all, h_prev, w_c, b_c, w_o, b_o,
                              ln_w, ln_b, mask)
        return out, h

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_h):
        zm, c_all, q_all, mean_all, rstd_all, h_prev, w_c, b_c, w_o, b_o, ln_w, ln_b, mask = (
            ctx.saved_tensors)
        T, B, n_hidden = q_all.shape
        n_in = zm.shape[-1]
        w_ch = w_c[:, n_in:]  # (3h, h)
        dh = torch.zeros_like(h_prev[0]) if d_h is None else d_h  # (B, h)
        d_q_all = torch.empty_like(q_all)  # (T, B, h) gradient of q_t
        d_c_all = torch.empty_like(c_all)  # (T, B, 3h) gradient of c_t before its ReLU
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
        d_c_flat = d_c_all.view(T * B, -1)  # (T*B, 3h)
        d_w_c = torch.cat([d_c_flat.t() @ zm.reshape(T * B, n_in),
                           d_c_flat.t() @ h_prev.view(T * B, n_hidden)], dim=1)  # (3h, 3h)
        d_zm = (d_c_flat @ w_c[:, :n_in]).view(T, B, n_in)  # (T, B, 2h)
        d_b_c = None if b_c is None else d_c_flat.sum(0)  # (3h,)
        d_w_o = d_q_all.view(T * B, n_hidden).t() @ c_all.view(T * B, -1)  # (h, 3h)
        d_b_o = None if b_o is None else d_q_all.sum((0, 1))  # (h,)
        x_hat = (q_all - mean_all) * rstd_all  # (T, B, h)
        d_ln_w = (g_all * x_hat).sum((0, 1))  # (h,)
        d_ln_b = g_all.sum((0, 1))  # (h,)
        return d_zm, dh, d_w_c, d_b_c, d_w_o, d_b_o, d_ln_w, d_ln_b, None, None


def hidden_pass(
    zm: Tensor, h0: Tensor, w_c: Tensor, b_c: Tensor | None, w_o: Tensor, b_o: Tensor | None,
    ln_w: Tensor, ln_b: Tensor, eps: float, mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the hidden pass over time-major ``zm`` (T, B, 2h) = [z ; m] from ``h0`` (B, h).

    ``mask`` (T, B) bool marks real steps. Returns outputs (T, B, h) and the final state (B, h)
    in ``zm``'s dtype. Under autocast the pass computes in the autocast dtype.
    """
    device = zm.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else zm.dtype
    cast = [None if t is None else t.to(dtype) for t in (zm, h0, w_c, b_c, w_o, b_o, ln_w, ln_b)]
    with torch.autocast(device, enabled=False):
        out, h = _HiddenPass.apply(*cast, eps, mask)
    return out.to(zm.dtype), h.to(zm.dtype)


__all__ = ["hidden_pass"]
