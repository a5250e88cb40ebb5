"""The fast Engram recurrence: the layer's default path.

Two observations make it fast; both are exact rearrangements of ``naive.py``.

1. The attention never reads the hidden state. ``a_t`` depends on ``z_t`` and on the trace,
   and the trace is written from ``a`` and ``z`` only. So the *memory pass* (attention,
   recall, trace) runs first over all steps, and the *hidden pass* afterwards is a plain RNN
   ``c_t = ReLU(W_cz z_t + W_cm m_t + b_c + W_ch h_{t-1})``, ``h_t = LN(ReLU(W_o c_t + b_o))``
   whose input share ``W_cz z + W_cm m`` is one big matmul over all steps.

2. Per-sample trace (B, N, h): without clipping it splits as ``H_t = K_t + X_t``. The noise
   share ``X_t = d X_{t-1} + eta xi_t`` (d = 1 - eta) is one (N, h) matrix for the whole
   batch, since the noise draw is shared; the rest ``K_t = d K_{t-1} + eta a_t z_t^T`` is a
   decayed sum of outer products, materialised only at chunk boundaries t0 (every ``chunk``
   steps): ``K_{t0+j} = d^j K_{t0} + sum_{s<j} eta d^{j-1-s} a_s z_s^T``. With
   ``M'_t = M + alpha X_{t-1}`` the effective memory is ``E_t = M'_t + alpha K_{t-1}``, and
   inside a chunk everything a step needs is a (B, N) quantity:

   - ``y_t[i] = K_{t-1}[i] . z_t`` from ``K_{t0} z_t`` (one bmm per chunk) and the Gram
     matrix ``z_s . z_t``;
   - the cosine numerator ``M'_t[i] . z_t + alpha y_t[i]``;
   - the squared row norm ``|M'_t[i]|^2 + 2 alpha (P[i] + alpha P_X[i]) + alpha^2 Q[i]`` with
     ``P = M_i . K[i]`` and ``Q = |K[i]|^2`` carried by the recursions
     ``P <- d P + eta a[i] M_i.z_t`` and ``Q <- d^2 Q + 2 d eta a[i] y_t[i] + eta^2 a[i]^2
     |z_t|^2``, and ``P_X = X_t[i] . K[i]`` from ``X_t . K_{t0}`` and the products
     ``X_t[i] . z_s`` inside the chunk;
   - the recall ``m_t = a_t M'_t + alpha a_t K_{t-1}``, in batched products.

   That (B, N) recurrence is ``chunk_scan`` (hand-written backward). Clipping breaks the
   algebra only where it acts (if no entry ever exceeds the clip, the clipped and unclipped
   recursions coincide). A cheap bound on ``max |H_t|`` decides per sample; where it fails
   the sample's unclipped trace is computed exactly (no autograd), and the samples on which
   the clip really acts rerun the exact step loop.

The shared trace (N, h) is small, so its memory pass keeps it explicitly, clip included
(``shared_scan``, hand-written backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_scan
from .chunk_scan import chunk_scan
from .common import NORM_EPS, EngramHyper, EngramState, EngramWeights
from .recurrent import encode, engram_recurrence
from .shared_scan import shared_scan

DEFAULT_CHUNK = 16  # measured: 12-24 are best at T = 28 and 112 (docs/results/speed.md)


def _hidden_pass(
    z: Tensor, m: Tensor, h0: Tensor, w: EngramWeights, hyper: EngramHyper,
    mask: Tensor | None, native: bool = False,
) -> tuple[Tensor, Tensor]:
    """The hidden chain given encodings z and recalls m (B, T, h); returns (o, h_T).
    ``native``: the native CPU kernel runs the pass where it can (float32/64 on the CPU,
    outside autocast)."""
    B, T, n_hidden = z.shape
    if native and cpu_scan.usable(z) and not torch.is_autocast_enabled(z.device.type):
        return cpu_scan.native_hidden_pass(z, m, h0, w.weight_c, w.bias_c, w.weight_o, w.bias_o,
                                           w.ln_h_weight, w.ln_h_bias, hyper.ln_eps, mask)
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
    mask: Tensor | None, native: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Shared trace (N, h): attention (B, T, N), recall (B, T, h), final trace (N, h).
    ``native``: the native CPU kernel runs the recurrence and the recall, instead of
    ``shared_scan`` and a batched product."""
    B, T, _ = z.shape
    if mask is None:
        steps, n_active = T, [B] * T
    else:
        counts = mask.sum(0)  # (T,)
        steps = int((counts > 0).sum())  # lengths are a prefix: later steps write nothing
        n_active = counts[:steps].tolist()
    step_mask = None if mask is None else mask[:, :steps]  # (B, steps)
    if native:
        # A (B, steps, N), m (B, steps, h), H (N, h)
        A, m, H = cpu_scan.native_shared_scan(z[:, :steps], M, H0, noise, step_mask, n_active,
                                              hyper)
    else:
        zn = z / z.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)  # (B, T, h)
        A, Es, H = shared_scan(z[:, :steps], zn[:, :steps], M, H0, noise, step_mask, n_active,
                               hyper.trace_scale, hyper.hebbian_lr, hyper.trace_clip,
                               1.0 / hyper.effective_temperature, hyper.top_k)  # Es (steps, N, h)
        m = torch.bmm(A.transpose(0, 1), Es).transpose(0, 1)  # (B, steps, h)
    if steps < T:
        A = F.pad(A, (0, 0, 0, T - steps))  # (B, T, N)
        m = F.pad(m, (0, 0, 0, T - steps))  # (B, T, h)
    return A, m, H


def _decay_matrix(c: int, eta: float, like: Tensor, inclusive: bool = False) -> Tensor:
    """D[j, s] = eta d^(j-1-s) for s < j, else 0; (c, c). ``inclusive``: eta d^(j-s), s <= j."""
    idx = torch.arange(c, device=like.device)
    lag = idx[:, None] - idx[None, :]  # (c, c) j - s
    if not inclusive:
        lag = lag - 1
    return torch.where(lag >= 0, eta * (1 - eta) ** lag.clamp_min(0).to(like.dtype), 0.0)


def _leaky_sum(u: Tensor, carry: Tensor | None, eta: float, chunk: int) -> Tensor:
    """y_t = d y_{t-1} + eta u_t along dim -2 of u (..., T, F), from y_{-1} = carry (..., F)
    or zeros; chunk by chunk, so that the cost stays linear in T."""
    chunk = min(chunk, u.shape[-2])
    L = _decay_matrix(chunk, eta, u, inclusive=True)  # (chunk, chunk); a shorter chunk: its corner
    powers = (1.0 - eta) ** torch.arange(1, chunk + 1, device=u.device, dtype=u.dtype)
    out = []
    for t0 in range(0, u.shape[-2], chunk):
        uc = u[..., t0 : t0 + chunk, :]  # (..., c, F)
        c = uc.shape[-2]
        y = L[:c, :c] @ uc  # (..., c, F)
        if carry is not None:
            y = y + powers[:c, None] * carry[..., None, :]
        out.append(y)
        carry = y[..., -1, :]
    return torch.cat(out, dim=-2)


def _noise_part(noise: Tensor, eta: float, chunk: int) -> Tensor:
    """X (T + 1, N, h): the noise's share of the trace before each step, X_0 = 0 and
    X_t = d X_{t-1} + eta xi_t. Shared by the batch; the per-sample rest is noise-free."""
    T = noise.shape[0]
    after = _leaky_sum(noise.flatten(1), None, eta, chunk)  # (T, N*h)
    return torch.cat([noise.new_zeros(1, noise[0].numel()), after]).view(T + 1, *noise.shape[1:])


def _clip_active(
    H0: Tensor | None, A: Tensor, z: Tensor, noise: Tensor | None, mask: Tensor | None,
    hyper: EngramHyper,
) -> Tensor:
    """Which samples the clip acts on, (B,) bool: the unclipped trace, step by step (no
    autograd), compared with the clip. H0 None: zeros."""
    eta, clip = hyper.hebbian_lr, hyper.trace_clip
    with torch.no_grad():
        H = z.new_zeros(*A.shape[::2], z.shape[-1]) if H0 is None else H0.clone()  # (B, N, h)
        hit = torch.zeros(H.size(0), dtype=torch.bool, device=H.device)  # (B,)
        for t in range(A.size(1)):
            H_new = torch.baddbmm(H, A[:, t, :, None], z[:, t, None, :], beta=1 - eta,
                                  alpha=eta)  # (B, N, h)
            if noise is not None:
                H_new += eta * noise[t]
            H = H_new if mask is None else torch.where(mask[:, t, None, None], H_new, H)
            hit |= (H.abs() > clip).flatten(1).any(1)
    return hit


def _clip_bound(H0: Tensor | None, A: Tensor, z: Tensor, X: Tensor | None, eta: float,
                chunk: int) -> Tensor:
    """Upper bound of max_j |H_t[i, j]| after every step, (B, T, N), from
    |K_t[i, j]| <= d^t max|H_0[i]| + sum_s eta d^(t-s) a_s[i] max|z_s| and max|X_t[i]|."""
    with torch.no_grad():
        written = A * z.abs().amax(-1)[..., None]  # (B, T, N)
        bound = _leaky_sum(written, None if H0 is None else H0.abs().amax(-1), eta, chunk)
        if X is not None:
            bound = bound + X[1:].abs().amax(-1)  # (T, N)
    return bound


def _memory_per_sample(
    z: Tensor, M: Tensor, H0: Tensor | None, noise: Tensor | None, hyper: EngramHyper,
    mask: Tensor | None, chunk: int, stats: dict,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample trace (B, N, h) by chunked algebra: attention (B, T, N), recall (B, T, h),
    final trace (B, N, h) and which samples the clip acts on, (B,) bool (their results are
    those of the unclipped algebra, to be replaced by the step loop's).

    The trace is split as H_t = K_t + X_t: X is the noise's share (shared by the batch,
    ``_noise_part``), K the per-sample rest, K_t = d K_{t-1} + eta a_t z_t^T. So E_t = M'_t +
    alpha K_{t-1} with M'_t = M + alpha X_{t-1}, and K is materialised once per chunk.
    H0 None stands for zeros and skips every term of the initial trace.
    """
    B, T, _ = z.shape
    eta, alpha = hyper.hebbian_lr, hyper.trace_scale
    d = 1.0 - eta
    inv_tau = 1.0 / hyper.effective_temperature
    inv_zn = 1.0 / z.norm(dim=-1).clamp_min(NORM_EPS)  # (B, T)
    z_sq = (z * z).sum(-1)  # (B, T)
    Mz = z @ M.t()  # (B, T, N)  M_i . z_t
    M_sq = (M * M).sum(-1)[None, :].expand(T, -1)  # (T, N)  |M'_t[i]|^2
    Mz_eff = Mz  # (B, T, N)  M'_t[i] . z_t
    X = None
    if noise is not None:
        X = _noise_part(noise, eta, chunk)  # (T + 1, N, h)
        Xt = X[:T]  # (T, N, h)  before each step
        Mz_eff = Mz + alpha * torch.bmm(z.transpose(0, 1), Xt.transpose(1, 2)).transpose(0, 1)
        M_sq = M_sq + 2 * alpha * (M * Xt).sum(-1) + alpha * alpha * (Xt * Xt).sum(-1)
    K = H0  # (B, N, h) or None while it is zero
    if H0 is None:
        P = Q = z.new_zeros(B, M.shape[0])
    else:
        P = (H0 * M).sum(-1)  # (B, N)  M_i . K[i], carried by its recursion
        Q = (H0 * H0).sum(-1)  # (B, N)  |K[i]|^2, likewise
    attn, recalled = [], []
    chunk = min(chunk, T)
    D_full = _decay_matrix(chunk, eta, z)  # (chunk, chunk); a shorter chunk uses its corner
    powers_full = d ** torch.arange(chunk, device=z.device, dtype=z.dtype)  # (chunk,) d^j
    for t0 in range(0, T, chunk):
        c = min(chunk, T - t0)
        zc = z[:, t0 : t0 + c]  # (B, c, h)
        mc = None if mask is None else mask[:, t0 : t0 + c]  # (B, c)
        Dm, powers = D_full[:c, :c], powers_full[:c]  # (c, c), (c,)
        # K before step j of the chunk: d^j K_{t0} + sum_{s<j} D[j, s] a_s z_s^T
        zero = None if K is not None else z.new_zeros(B, c, M.shape[0])  # K_{t0} terms, K = 0
        Kz = zero if K is None else powers[:, None] * torch.bmm(zc, K.transpose(1, 2))
        WG = torch.bmm(zc, zc.transpose(1, 2)).transpose(1, 2) * Dm  # (B, c, c) D[j,s] z_s.z_j
        if X is not None:  # P_X = X_t[i] . K[i], directly: D[j, s] a_s[i] X_j[i].z_s
            Xc = Xt[t0 : t0 + c]  # (c, N, h)
            XK = zero if K is None else powers[:, None] * torch.bmm(
                K.transpose(0, 1), Xc.permute(1, 2, 0)).permute(1, 2, 0)  # (B, c, N)
            Xz = (zc.reshape(B * c, -1) @ Xc.flatten(0, 1).t()).view(B, c, c, -1)  # [b,s,j,i]
            WX = Xz.transpose(1, 2) * Dm[:, :, None]  # (B, c, c, N)  [j, s]
        sl = slice(t0, t0 + c)
        Ac, P, Q = chunk_scan(Kz, WG, None if X is None else XK, None if X is None else WX, P, Q,
                              M_sq[sl], Mz_eff[:, sl], inv_zn[:, sl], Mz[:, sl], z_sq[:, sl],
                              alpha, eta, inv_tau, hyper.top_k)  # (B, c, N)
        attn.append(Ac)
        Am = Ac if mc is None else Ac * mc[..., None]  # (B, c, N) padded steps write nothing
        AA = torch.bmm(Ac, Am.transpose(1, 2)) * Dm  # (B, c, c) [j, s] D[j, s] a_j.a_s
        rec = torch.bmm(AA, zc)  # (B, c, h)
        recalled.append(rec if K is None else rec + powers[:, None] * torch.bmm(Ac, K))
        # K at the chunk's end; a sample's padded steps neither decay nor write
        if mc is None:
            w_end = eta * powers.flip(0)  # (c,) eta d^(c-1-j)
            written = torch.bmm((Am * w_end[:, None]).transpose(1, 2), zc)  # (B, N, h)
            K = written if K is None else written.add_(K, alpha=d**c)
        else:
            n = mc.sum(1)  # (B,)
            last = (n - 1)[:, None] - torch.arange(c, device=z.device)  # (B, c)
            w_end = torch.where(last >= 0, eta * d ** last.clamp_min(0).to(z.dtype), 0.0)
            written = torch.bmm((Am * w_end[..., None]).transpose(1, 2), zc)  # (B, N, h)
            K = written if K is None else written.add_((d ** n.to(z.dtype))[:, None, None] * K)
    A = torch.cat(attn, dim=1)  # (B, T, N)
    m = A @ M + alpha * torch.cat(recalled, dim=1)  # (B, T, h)
    H = K
    if X is not None:
        m = m + alpha * torch.bmm(A.transpose(0, 1), Xt).transpose(0, 1)  # (B, T, h)
        # the noise share at each sample's last step
        H = K + (X[T] if mask is None else X[mask.sum(1)])  # (B, N, h)
    # clipping: a cheap bound first, the exact unclipped trace only where it fails
    Am = A if mask is None else A * mask[..., None]  # (B, T, N)
    bound = _clip_bound(H0, Am, z, X, eta, chunk)  # (B, T, N)
    if mask is not None:
        bound = bound * mask[..., None]
    clipped = torch.zeros(B, dtype=torch.bool, device=z.device)  # (B,)
    fails = (bound > hyper.trace_clip).flatten(1).any(1)  # (B,)
    if bool(fails.any()):
        stats["checked"] = stats.get("checked", 0) + 1
        rows = fails.nonzero().squeeze(1)
        clipped[rows] = _clip_active(None if H0 is None else H0[rows].detach(),
                                     Am[rows].detach(), z[rows].detach(),
                                     noise, None if mask is None else mask[rows], hyper)
    return A, m, H, clipped


def trace_noise(shape: tuple[int, ...], std: float, device: torch.device, dtype: torch.dtype
                ) -> Tensor:
    """The training noise of the trace, std * N(0, 1) values: from the native generator where
    the kernels run (several times faster than torch's CPU generator, and seeded from it),
    else from torch's generator."""
    if cpu_scan.supports(device, dtype):
        return cpu_scan.native_normal(shape, std, dtype)
    return std * torch.randn(shape, device=device, dtype=dtype)


def fast_engram(
    x: Tensor,
    weights: EngramWeights,
    hyper: EngramHyper,
    initial_state: EngramState | None = None,
    lengths: Tensor | None = None,
    noise: Tensor | None = None,
    return_entropy: bool = False,
    chunk: int = DEFAULT_CHUNK,
    stats: dict | None = None,
    native: bool | None = None,
) -> tuple[Tensor, EngramState, Tensor | None]:
    """Run one Engram layer over x (B, T, d) on the fast path.

    Same contract as ``engram_recurrence`` (without intermediates), with ``noise`` the trace
    noise (T, N, h) or None, and ``initial_state`` None for zeros (which skips the initial
    trace's terms). Per-sample samples whose trace the clip would touch run the exact
    step loop instead (samples are independent there). ``stats`` (a dict) receives
    ``checked`` (1 when the clip bound failed for some sample, so that the exact check ran)
    and ``step_samples`` (samples handed to the step loop), or ``native`` (True) when the
    native CPU kernels ran (``cpu_scan``: the memory pass, exact with the clip in both modes,
    and the hidden pass where its precision allows). ``native``: None uses those kernels
    wherever they can run, False never, True always (an error where they cannot).
    """
    stats = {} if stats is None else stats
    B, T, _ = x.shape
    dtype = weights.memory.dtype
    z = encode(x, weights, hyper.ln_eps).to(dtype)  # (B, T, h)
    mask = None if lengths is None else torch.arange(T, device=x.device) < lengths[:, None]
    n_slots, n_hidden = weights.memory.shape
    if initial_state is None:
        h0 = z.new_zeros(B, n_hidden)
        H0 = z.new_zeros(n_slots, n_hidden) if hyper.trace_mode == "shared" else None
    else:
        h0, H0 = initial_state.h.to(dtype), initial_state.trace.to(dtype)
    noise = None if noise is None else noise.to(dtype)
    use_native = native or (native is None and cpu_scan.usable(z))
    if use_native:
        stats["native"] = True
    # the memory pass (cosines, norms, the trace) keeps the parameters' precision under autocast
    with torch.autocast(x.device.type, enabled=False):
        if hyper.trace_mode == "shared":
            A, m, H = _memory_shared(z, weights.memory, H0, noise, hyper, mask, use_native)
            clipped = None
        elif use_native:
            A, m, H = cpu_scan.native_memory_scan(z, weights.memory, H0, noise, lengths, hyper)
            clipped = None
        else:
            A, m, H, clipped = _memory_per_sample(
                z, weights.memory, H0, noise, hyper, mask, chunk, stats
            )
    if clipped is None or not bool(clipped.any()):
        o, h = _hidden_pass(z, m, h0, weights, hyper, mask, use_native)
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
    x: Tensor, z: Tensor, m: Tensor, A: Tensor, H: Tensor, h0: Tensor, H0: Tensor | None,
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
        x[slow], weights, hyper,
        EngramState(h0[slow], H[slow].new_zeros(H[slow].shape) if H0 is None else H0[slow]),
        lengths=None if lengths is None else lengths[slow], noise=noise,
        return_intermediates=True,
    )
    o, h = o.index_put((slow,), o_s.to(o.dtype)), h.index_put((slow,), h_s.to(h.dtype))
    H = H.index_put((slow,), H_s)  # (B, N, h)
    A = A.index_put((slow,), record.attention.to(A.dtype))  # (B, T, N)
    return o, h, H, A


__all__ = ["DEFAULT_CHUNK", "fast_engram"]
