"""The fast Engram recurrence: the layer's default path.

Two observations make it fast; both are exact rearrangements of ``naive.py``.

1. The attention never reads the hidden state. ``a_t`` depends on ``z_t`` and on the trace,
   and the trace is written from ``a`` and ``z`` only. So the *memory pass* (attention,
   recall, trace) runs first over all steps, and the *hidden pass* afterwards is a plain RNN
   ``c_t = ReLU(W_cz z_t + W_cm m_t + b_c + W_ch h_{t-1})``, ``h_t = LN(ReLU(W_o c_t + b_o))``
   whose input share ``W_cz z + W_cm m`` is one big matmul over all steps.

2. Per-sample trace (B, N, h): without clipping the trace is a decayed sum of outer products,
   ``H_{t0+j} = d^j H_{t0} + eta sum_{s<j} d^{j-1-s} (a_s z_s^T + xi_s)`` with d = 1 - eta
   and xi the trace noise. It is materialised only at chunk boundaries t0 (every ``chunk``
   steps). Inside a chunk everything a step needs is a (B, N) quantity:

   - ``y_t[i] = H_{t-1}[i] . z_t`` from ``H_{t0} z_t`` (one bmm per chunk), the Gram matrix
     ``z_s . z_t`` and the noise products ``xi_s[i] . z_t``;
   - the cosine numerator ``M_i . z_t + alpha y_t[i]``;
   - the squared row norm ``|M_i + alpha H[i]|^2 = |M_i|^2 + 2 alpha P[i] + alpha^2 Q[i]``
     with ``P = M_i . H[i]`` and ``Q = |H[i]|^2`` following the recursions
     ``P <- d P + eta (a[i] M_i.z_t + M_i.xi_t[i])`` and
     ``Q <- d^2 Q + 2 d eta (a[i] y_t[i] + k_t[i]) + eta^2 |a[i] z_t + xi_t[i]|^2``, where
     ``k_t[i] = H_{t-1}[i] . xi_t[i]`` needs the products ``z_s . xi_t[i]`` inside the chunk;
   - the recall ``m_t = a_t M + alpha a_t H_{t-1}`` after the chunk, in batched products.

   Clipping breaks the algebra only where it acts (if no entry ever exceeds the clip, the
   clipped and unclipped recursions coincide). A cheap bound on ``max |H_t|`` decides per
   chunk and sample; where it fails the chunk's traces are computed exactly (no autograd),
   and the samples on which the clip really acts rerun the exact step loop.

The shared trace (N, h) is small, so its memory pass keeps it explicitly (clip included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import NORM_EPS, EngramHyper, EngramState, EngramWeights, masked_topk
from .recurrent import encode, engram_recurrence

DEFAULT_CHUNK = 8


def _hidden_pass(
    z: Tensor, m: Tensor, h0: Tensor, w: EngramWeights, hyper: EngramHyper,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The hidden chain given encodings z and recalls m (B, T, h); returns (o, h_T)."""
    B, T, n_hidden = z.shape
    w_zm, w_ch = w.weight_c[:, : 2 * n_hidden], w.weight_c[:, 2 * n_hidden :]  # (3h, 2h), (3h, h)
    pre = F.linear(torch.cat([z, m], dim=-1), w_zm, w.bias_c)  # (B, T, 3h)
    w_ch_t = w_ch.t()  # (h, 3h)
    h = h0
    outputs = []
    # unbind once: indexing a step inside the loop would zero-fill the whole tensor in backward
    for t, pre_t in enumerate(pre.unbind(1)):
        c = F.relu(torch.addmm(pre_t, h, w_ch_t))  # (B, 3h)
        h_new = F.layer_norm(
            F.relu(F.linear(c, w.weight_o, w.bias_o)), (n_hidden,), w.ln_h_weight, w.ln_h_bias,
            hyper.ln_eps,
        ).to(z.dtype)  # (B, h)  the state's precision, also under autocast
        if mask is None:
            h = h_new
            outputs.append(h_new)
        else:
            keep = mask[:, t, None]  # (B, 1)
            h = torch.where(keep, h_new, h)
            outputs.append(h_new * keep)
    return torch.stack(outputs, dim=1), h  # (B, T, h), (B, h)


def _memory_shared(
    z: Tensor, M: Tensor, H0: Tensor, noise: Tensor | None, hyper: EngramHyper,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Shared trace (N, h): attention (B, T, N), recall (B, T, h), final trace (N, h)."""
    B, T, _ = z.shape
    eta, alpha, clip = hyper.hebbian_lr, hyper.trace_scale, hyper.trace_clip
    inv_tau = 1.0 / hyper.effective_temperature
    zn = z / z.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)  # (B, T, h)
    if mask is None:
        steps, n_active = T, [B] * T
    else:
        counts = mask.sum(0)  # (T,)
        steps = int((counts > 0).sum())  # lengths are a prefix: later steps write nothing
        n_active = counts.tolist()
    H = H0
    attn, mems = [], []
    z_steps, zn_steps = z.unbind(1), zn.unbind(1)  # T x (B, h)
    for t in range(steps):
        E = M + alpha * H  # (N, h)
        En = E / E.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)  # (N, h)
        s = zn_steps[t] @ En.t()  # (B, N)
        a = torch.softmax(masked_topk(s * inv_tau, hyper.top_k), dim=-1)  # (B, N)
        mems.append(E)
        attn.append(a)
        wa = a if mask is None else a * mask[:, t, None]  # (B, N)
        U = wa.t() @ z_steps[t] / n_active[t]  # (N, h) batch mean over the active samples
        if noise is not None:
            U = U + noise[t]
        H = ((1 - eta) * H + eta * U).clamp(-clip, clip)  # (N, h)
    A = torch.stack(attn, dim=1)  # (B, steps, N)
    m = torch.bmm(A.transpose(0, 1), torch.stack(mems)).transpose(0, 1)  # (B, steps, h)
    if steps < T:
        A = F.pad(A, (0, 0, 0, T - steps))  # (B, T, N)
        m = F.pad(m, (0, 0, 0, T - steps))  # (B, T, h)
    return A, m, H


def _decay_matrix(c: int, eta: float, like: Tensor) -> Tensor:
    """D[j, s] = eta d^(j-1-s) for s < j, else 0; (c, c)."""
    idx = torch.arange(c, device=like.device)
    expo = (idx[:, None] - 1 - idx[None, :]).clamp_min(0).to(like.dtype)  # (c, c)
    return torch.where(idx[None, :] < idx[:, None], eta * (1 - eta) ** expo, 0.0)


def _chunk_clip_active(
    H0: Tensor, A: Tensor, z: Tensor, xi: Tensor | None, mask: Tensor | None,
    hyper: EngramHyper,
) -> Tensor:
    """Which samples the clip acts on within the chunk, (B,) bool (exact; no autograd)."""
    eta, clip = hyper.hebbian_lr, hyper.trace_clip
    with torch.no_grad():
        H = H0.clone()  # (B, N, h)
        hit = torch.zeros(H.size(0), dtype=torch.bool, device=H.device)  # (B,)
        for j in range(A.size(1)):
            U = A[:, j, :, None] * z[:, j, None, :]  # (B, N, h)
            if xi is not None:
                U = U + xi[j]
            H_new = (1 - eta) * H + eta * U  # (B, N, h)
            H = H_new if mask is None else torch.where(mask[:, j, None, None], H_new, H)
            hit |= (H.abs() > clip).flatten(1).any(1)
    return hit


def _memory_per_sample(
    z: Tensor, M: Tensor, H0: Tensor, noise: Tensor | None, hyper: EngramHyper,
    mask: Tensor | None, chunk: int, stats: dict,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample trace (B, N, h) by chunked algebra: attention (B, T, N), recall (B, T, h),
    final trace (B, N, h) and which samples the clip acts on, (B,) bool (their results are
    those of the unclipped algebra, to be replaced by the step loop's)."""
    B, T, _ = z.shape
    eta, alpha, clip = hyper.hebbian_lr, hyper.trace_scale, hyper.trace_clip
    d = 1.0 - eta
    inv_tau = 1.0 / hyper.effective_temperature
    z_norm = z.norm(dim=-1).clamp_min(NORM_EPS)  # (B, T)
    z_sq = (z * z).sum(-1)  # (B, T)
    Mz = z @ M.t()  # (B, T, N)
    M_sq = (M * M).sum(-1)  # (N,)
    z_max = z.detach().abs().amax(-1)  # (B, T)
    H = H0
    P = (H0 * M).sum(-1)  # (B, N)  M_i . H[i], then carried by its recursion
    Q = (H0 * H0).sum(-1)  # (B, N)  |H[i]|^2, likewise
    attn, mems = [], []
    clipped = torch.zeros(B, dtype=torch.bool, device=z.device)  # (B,)
    for t0 in range(0, T, chunk):
        c = min(chunk, T - t0)
        zc = z[:, t0 : t0 + c]  # (B, c, h)
        mc = None if mask is None else mask[:, t0 : t0 + c]  # (B, c)
        Dm = _decay_matrix(c, eta, z)  # (c, c)
        powers = d ** torch.arange(c, device=z.device, dtype=z.dtype)  # (c,) d^j
        Hz = torch.bmm(zc, H.transpose(1, 2))  # (B, c, N)  H_{t0}[i] . z_t
        G = torch.bmm(zc, zc.transpose(1, 2))  # (B, c, c)  z_s . z_t
        WG = G.transpose(1, 2) * Dm  # (B, c, c)  [j, s] = D[j, s] z_s . z_j
        y_known = powers[:, None] * Hz  # (B, c, N)
        if noise is not None:
            xi = noise[t0 : t0 + c]  # (c, N, h)
            Zx = torch.einsum("bsh,rnh->bsrn", zc, xi)  # (B, c, c, N)  z_s . xi_r[i]
            xz = torch.diagonal(Zx, dim1=1, dim2=2).transpose(1, 2)  # (B, c, N)  z_j . xi_j[i]
            y_known = y_known + torch.einsum("jr,bjrn->bjn", Dm, Zx)  # (B, c, N)
            WC = Zx * Dm.t()[None, :, :, None]  # (B, c, c, N)  [s, j] = D[j, s] z_s . xi_j
            XX = torch.einsum("snh,jnh->sjn", xi, xi)  # (c, c, N)
            k_known = (powers[:, None] * torch.einsum("bnh,jnh->bjn", H, xi)  # (B, c, N)
                       + torch.einsum("js,sjn->jn", Dm, XX))
            M_xi = (M * xi).sum(-1)  # (c, N)
            xi_sq = torch.diagonal(XX).t()  # (c, N)
        # per-step views, unbound once (indexing inside the loop zero-fills in backward)
        y_steps = y_known.unbind(1)  # c x (B, N)
        mz_steps = Mz[:, t0 : t0 + c].unbind(1)  # c x (B, N)
        inv_zn = (1.0 / z_norm[:, t0 : t0 + c]).unbind(1)  # c x (B,)
        zsq_steps = z_sq[:, t0 : t0 + c].unbind(1)  # c x (B,)
        wg_steps = WG.unbind(1)  # c x (B, c)
        if noise is not None:
            k_steps, xz_steps, wc_steps = k_known.unbind(1), xz.unbind(1), WC.unbind(2)
        a_list: list[Tensor] = []
        for j in range(c):
            y = y_steps[j]  # (B, N)
            if j > 0:
                A_prev = torch.stack(a_list, dim=1)  # (B, j, N)
                y = y + torch.bmm(wg_steps[j][:, None, :j], A_prev).squeeze(1)  # (B, N)
            E_norm = (M_sq + 2 * alpha * P + alpha * alpha * Q).clamp_min(NORM_EPS**2).sqrt()
            s = (mz_steps[j] + alpha * y) * inv_zn[j][:, None] / E_norm  # (B, N)
            a = torch.softmax(masked_topk(s * inv_tau, hyper.top_k), dim=-1)  # (B, N)
            a_list.append(a)
            # a padded step writes garbage here, but only later padded steps of that sample read it
            P = d * P + eta * a * mz_steps[j]  # (B, N)
            cross = a * y  # (B, N)  H[i] . (a[i] z_t)
            own = a * a * zsq_steps[j][:, None]  # (B, N)  |a[i] z_t|^2
            if noise is not None:
                k = k_steps[j]  # (B, N)  H[i] . xi_t[i]
                if j > 0:
                    k = k + (A_prev * wc_steps[j][:, :j]).sum(1)
                P = P + eta * M_xi[j]
                cross = cross + k
                own = own + 2 * a * xz_steps[j] + xi_sq[j]
            Q = d * d * Q + 2 * d * eta * cross + eta * eta * own  # (B, N)
        Ac = torch.stack(a_list, dim=1)  # (B, c, N)
        attn.append(Ac)
        # trace at the chunk's steps, for the recall: H_{t-1} = d^j H_{t0} + sum_{s<j} ...
        Am = Ac if mc is None else Ac * mc[..., None]  # (B, c, N) padded steps write nothing
        AA = torch.bmm(Am, Ac.transpose(1, 2)).transpose(1, 2) * Dm  # (B, c, c) [j, s]
        rec = powers[:, None] * torch.bmm(Ac, H) + torch.bmm(AA, zc)  # (B, c, h)
        if noise is not None:
            rec = rec + torch.einsum("js,bjn,snh->bjh", Dm, Ac, xi)  # (B, c, h)
        mems.append(Ac @ M + alpha * rec)  # (B, c, h)
        # clip decision: a cheap bound first, the exact traces only when it fails
        bound = _chunk_bound(H, Am, z_max[:, t0 : t0 + c], None if noise is None else xi,
                             eta)  # (B, c, N)
        if mc is not None:
            bound = bound * mc[..., None]
        fails = (bound > clip).flatten(1).any(1) & ~clipped  # (B,)
        if bool(fails.any()):
            stats["checked"] = stats.get("checked", 0) + 1
            rows = fails.nonzero().squeeze(1)
            clipped[rows] = _chunk_clip_active(
                H[rows].detach(), Am[rows].detach(), zc[rows].detach(),
                None if noise is None else xi, None if mc is None else mc[rows], hyper,
            )
        # trace at the chunk's end; a sample's padded steps neither decay nor write
        n = torch.full((B,), c, device=z.device) if mc is None else mc.sum(1)  # (B,)
        last = (n - 1)[:, None] - torch.arange(c, device=z.device)  # (B, c)
        w_end = torch.where(last >= 0, eta * d ** last.clamp_min(0).to(z.dtype), 0.0)  # (B, c)
        H = (d ** n.to(z.dtype))[:, None, None] * H + torch.bmm(
            (Am * w_end[..., None]).transpose(1, 2), zc)  # (B, N, h)
        if noise is not None:
            H = H + (w_end @ xi.flatten(1)).view_as(H)
    return torch.cat(attn, dim=1), torch.cat(mems, dim=1), H, clipped


def _chunk_bound(H: Tensor, A: Tensor, z_max: Tensor, xi: Tensor | None, eta: float) -> Tensor:
    """Upper bound of max_j |H_t[i, j]| after each step of the chunk; (B, c, N)."""
    c = A.size(1)
    d = 1.0 - eta
    idx = torch.arange(c, device=A.device)
    expo = (idx[:, None] - idx[None, :]).clamp_min(0).to(A.dtype)  # (c, c)
    L = torch.where(idx[None, :] <= idx[:, None], eta * d**expo, 0.0)  # (c, c) j >= s
    with torch.no_grad():
        powers = d ** (idx + 1).to(A.dtype)  # (c,)
        bound = powers[:, None] * H.abs().amax(-1)[:, None, :]  # (B, c, N)
        bound = bound + torch.einsum("js,bsn->bjn", L, A * z_max[..., None])
        if xi is not None:
            bound = bound + torch.einsum("js,snh->jnh", L, xi.abs()).amax(-1)
    return bound


def fast_engram(
    x: Tensor,
    weights: EngramWeights,
    hyper: EngramHyper,
    initial_state: EngramState,
    lengths: Tensor | None = None,
    noise: Tensor | None = None,
    return_entropy: bool = False,
    chunk: int = DEFAULT_CHUNK,
    stats: dict | None = None,
) -> tuple[Tensor, EngramState, Tensor | None]:
    """Run one Engram layer over x (B, T, d) on the fast path.

    Same contract as ``engram_recurrence`` (without intermediates), with ``noise`` the trace
    noise (T, N, h) or None. Per-sample samples whose trace the clip would touch run the exact
    step loop instead (samples are independent there). ``stats`` (a dict) receives
    ``checked`` (chunks whose bound failed, so that the exact check ran) and ``step_samples``
    (samples handed to the step loop).
    """
    stats = {} if stats is None else stats
    B, T, _ = x.shape
    dtype = weights.memory.dtype
    z = encode(x, weights, hyper.ln_eps).to(dtype)  # (B, T, h)
    mask = None if lengths is None else torch.arange(T, device=x.device) < lengths[:, None]
    h0, H0 = initial_state.h.to(dtype), initial_state.trace.to(dtype)
    noise = None if noise is None else noise.to(dtype)
    if hyper.trace_mode == "shared":
        A, m, H = _memory_shared(z, weights.memory, H0, noise, hyper, mask)
        clipped = None
    else:
        A, m, H, clipped = _memory_per_sample(
            z, weights.memory, H0, noise, hyper, mask, chunk, stats
        )
    if clipped is None or not bool(clipped.any()):
        o, h = _hidden_pass(z, m, h0, weights, hyper, mask)
    else:
        stats["step_samples"] = int(clipped.sum())
        o, h, H, A = _merge_step_loop(x, z, m, A, H, h0, H0, weights, hyper, lengths, mask,
                                      noise, clipped)
    entropy = None
    if return_entropy:
        ent = -(A * A.clamp_min(1e-12).log()).sum(-1)  # (B, T)
        if mask is None:
            entropy = ent.mean()
        else:
            per_step = (ent * mask).sum(0) / mask.sum(0).clamp_min(1)  # (T,)
            entropy = per_step[mask.any(0)].mean()
    return o, EngramState(h, H), entropy


def _merge_step_loop(
    x: Tensor, z: Tensor, m: Tensor, A: Tensor, H: Tensor, h0: Tensor, H0: Tensor,
    weights: EngramWeights, hyper: EngramHyper, lengths: Tensor | None, mask: Tensor | None,
    noise: Tensor | None, clipped: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fast results for the unclipped samples, the step loop's for the clipped ones."""
    slow = clipped.nonzero().squeeze(1)  # (B_s,)
    fast = (~clipped).nonzero().squeeze(1)  # (B_f,)
    o = z.new_zeros(z.shape)  # (B, T, h)
    h = h0.new_zeros(h0.shape)  # (B, h)
    if fast.numel() > 0:
        o_f, h_f = _hidden_pass(z[fast], m[fast], h0[fast], weights, hyper,
                                None if mask is None else mask[fast])
        o, h = o.index_put((fast,), o_f), h.index_put((fast,), h_f)
    o_s, (h_s, H_s), _, record = engram_recurrence(
        x[slow], weights, hyper, EngramState(h0[slow], H0[slow]),
        lengths=None if lengths is None else lengths[slow], noise=noise,
        return_intermediates=True,
    )
    o, h = o.index_put((slow,), o_s.to(o.dtype)), h.index_put((slow,), h_s.to(h.dtype))
    H = H.index_put((slow,), H_s)  # (B, N, h)
    A = A.index_put((slow,), record.attention.to(A.dtype))  # (B, T, N)
    return o, h, H, A


__all__ = ["DEFAULT_CHUNK", "fast_engram"]
