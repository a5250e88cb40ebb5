"""The fast Engram path (ops/engram/fast.py) against the naive reference, both clip branches."""

import pytest
import torch

from enn import Engram, EngramState
from enn.ops.engram import fast_engram, naive_engram, trace_noise
from enn.ops.engram.fast import DEFAULT_CHUNK


def make_layer(d, h, N, trace, top_k=None, **kw):
    kw.setdefault("trace_noise", 0.0)
    return Engram(d, h, batch_first=True, memory_size=N, trace=trace, top_k=top_k, **kw).double()


def compare(layer, B, T, with_lengths, with_noise, expect_step=None, chunk=DEFAULT_CHUNK,
            zero_state=False, native=False):
    """Fast vs naive in float64: outputs, final state and every gradient; returns the stats.
    ``zero_state``: both ops get initial_state=None (zeros) instead of a random state.
    ``native``: the per-sample memory pass runs the native CPU kernel (else the algebra)."""
    d, h, N = layer.input_size, layer.hidden_size, layer.memory_size
    per_sample = layer.trace_mode == "per_sample"
    x = 2 * torch.randn(B, T, d, dtype=torch.double)
    h0 = torch.randn(B, h, dtype=torch.double)
    H0 = 0.02 * torch.randn((B, N, h) if per_sample else (N, h), dtype=torch.double)
    lengths = torch.randint(1, T + 1, (B,)) if with_lengths else None
    noise = 0.01 * torch.randn(T, N, h, dtype=torch.double) if with_noise else None
    params = list(layer.parameters())
    weights = layer.layer_weights(0)
    stats: dict = {}
    results = []
    for fast in (True, False):
        xi, hi, Hi = (t.clone().requires_grad_() for t in (x, h0, H0))
        state = None if zero_state else EngramState(hi, Hi)
        if fast:
            out, (h_n, H_n), _ = fast_engram(xi, weights, layer.hyper, state, lengths=lengths,
                                             noise=noise, chunk=chunk, stats=stats,
                                             native=native)
        else:
            out, (h_n, H_n) = naive_engram(xi, weights, layer.hyper, state,
                                           output_final_state=True, lengths=lengths, noise=noise)
        torch.manual_seed(1)
        probes = [torch.randn(t.shape, dtype=t.dtype) for t in (out, h_n, H_n)]  # layout-free
        loss = sum((t * p).sum() for t, p in zip((out, h_n, H_n), probes, strict=True))
        inputs = [xi] if zero_state else [xi, hi, Hi]
        grads = torch.autograd.grad(loss, [*inputs, *params])
        results.append((out, h_n, H_n, *grads))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)
    if expect_step is not None:
        assert ("step_samples" in stats) == expect_step
    assert stats.get("native", False) == native
    return stats


SHAPES = [(1, 1, 3, 4, 3), (3, 9, 5, 8, 6), (2, 21, 4, 6, 5)]  # (B, T, d, h, N)
GRID = [
    pytest.param(trace, native, top_k, lengths, noise, shape,
                 id=f"{trace}{'-native' if native else ''}-k{top_k}-"
                    f"{'len' if lengths else 'full'}-{'noise' if noise else 'clean'}-"
                    f"B{shape[0]}T{shape[1]}")
    for trace in ("per_sample", "shared")
    for native in (False, True)
    for top_k in (None, 2)
    for lengths in (False, True)
    for noise in (False, True)
    for shape in SHAPES
]


@pytest.mark.parametrize("trace,native,top_k,with_lengths,with_noise,shape", GRID)
def test_fast_matches_naive(trace, native, top_k, with_lengths, with_noise, shape):
    B, T, d, h, N = shape
    layer = make_layer(d, h, N, trace, top_k, trace_clip=10.0)  # the algebra branch
    compare(layer, B, T, with_lengths, with_noise, expect_step=False, chunk=4, native=native)


@pytest.mark.parametrize("native", [False, True])
def test_long_sequence_default_chunk_matches_naive(native):
    layer = make_layer(4, 6, 5, "per_sample", trace_clip=10.0)
    compare(layer, 2, 70, True, True, expect_step=False, native=native)


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("with_noise", [False, True])
@pytest.mark.parametrize("top_k", [None, 2])
def test_native_kernel_is_exact_with_an_active_clip(with_lengths, with_noise, top_k):
    layer = make_layer(4, 6, 5, "per_sample", top_k, trace_clip=0.05, hebbian_lr=0.5)
    compare(layer, 4, 40, with_lengths, with_noise, expect_step=False, native=True)


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("with_noise", [False, True])
def test_active_clip_runs_the_step_loop_and_still_matches(with_lengths, with_noise):
    # a strong Hebbian rate and a small clip: the clip acts on some samples
    layer = make_layer(4, 6, 5, "per_sample", trace_clip=0.05, hebbian_lr=0.5)
    stats = compare(layer, 4, 12, with_lengths, with_noise, expect_step=True, native=False)
    assert stats["checked"] > 0


def test_failed_bound_without_clipping_stays_on_the_fast_path():
    layer = make_layer(4, 6, 5, "per_sample", hebbian_lr=0.3, trace_clip=10.0)
    torch.manual_seed(3)  # the draws compare() makes below
    x = 2 * torch.randn(3, 10, 4, dtype=torch.double)
    hx = EngramState(torch.randn(1, 3, 6, dtype=torch.double),
                     0.02 * torch.randn(1, 3, 5, 6, dtype=torch.double))
    _, _, inter = layer.eval()(x, hx, return_intermediates=True)
    true_max = inter.trace.abs().max().item()
    # just above the true maximum: the bound (always looser) fails, the exact check passes
    layer.hyper = type(layer.hyper)(**{**layer.hyper.__dict__, "trace_clip": 1.001 * true_max})
    torch.manual_seed(3)
    stats = compare(layer, 3, 10, False, False, expect_step=False)
    assert stats["checked"] > 0


def test_layer_reports_its_path(kernel_env):
    layer = Engram(4, 6, memory_size=5, batch_first=True, trace_noise=0.0).eval()
    layer(torch.randn(2, 5, 4))
    assert layer.last_path == ("native",)  # per-sample on the CPU (the kernel builds here)
    layer(torch.randn(2, 5, 4), return_intermediates=True)
    assert layer.last_path == ("step",)
    strong = Engram(4, 6, memory_size=5, batch_first=True, trace_noise=0.0, hebbian_lr=0.9,
                    trace_clip=0.01).eval()
    strong(torch.randn(2, 8, 4))
    assert strong.last_path == ("native",)  # exact with the clip: no step loop
    kernel_env(ENN_NATIVE=0)  # as on a machine without the kernels
    strong(torch.randn(2, 8, 4))
    assert strong.last_path == ("fast+step",)
    layer(torch.randn(2, 5, 4))
    assert layer.last_path[0] in ("fast", "fast-checked")


@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_step_by_step_equals_one_pass(trace):
    layer = make_layer(4, 6, 5, trace).eval()
    x = torch.randn(3, 11, 4, dtype=torch.double)
    out, state = layer(x)
    hx, steps = None, []
    for t in range(11):
        o, hx = layer(x[:, t : t + 1], hx)
        steps.append(o)
    torch.testing.assert_close(torch.cat(steps, dim=1), out)
    torch.testing.assert_close(hx.trace, state.trace)


def test_training_noise_is_one_draw_per_step_shared_by_the_batch():
    layer = Engram(4, 6, memory_size=5, batch_first=True, trace_noise=0.01).double().train()
    x = torch.randn(3, 7, 4, dtype=torch.double)
    other = x.clone()
    other[1:] = torch.randn(2, 7, 4, dtype=torch.double)
    torch.manual_seed(5)
    out, state = layer(x)
    torch.manual_seed(5)
    out2, state2 = layer(other)
    # per-sample mode stays independent of the other samples' data, noise included
    torch.testing.assert_close(out2[0], out[0])
    torch.testing.assert_close(state2.trace[0, 0], state.trace[0, 0])
    # and the noise is the layer's (T, N, h) draw given to the reference
    torch.manual_seed(5)
    noise = trace_noise((7, 5, 6), 0.01, x.device, torch.double)
    zero = layer.initial_state(3)
    ref, _ = naive_engram(x, layer.layer_weights(0), layer.hyper,
                          EngramState(zero.h[0].double(), zero.trace[0].double()), noise=noise)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("with_noise", [False, True])
@pytest.mark.parametrize("top_k", [None, 2])
def test_chunk_scan_backward_passes_gradcheck(with_noise, top_k):
    from enn.ops.engram.chunk_scan import chunk_scan

    torch.manual_seed(0)
    B, c, N = 2, 4, 5
    shapes = {"Kz": (B, c, N), "WG": (B, c, c), "XK": (B, c, N), "WX": (B, c, c, N),
              "P": (B, N), "Q": (B, N), "Mz_eff": (B, c, N), "Mz": (B, c, N)}
    t = {k: 0.3 * torch.randn(v, dtype=torch.double) for k, v in shapes.items()}
    t["Q"] = t["Q"].abs()
    t["Msq"] = 1 + torch.rand(c, N, dtype=torch.double)  # norms stay well above the clamp
    t["izn"] = 1 + torch.rand(B, c, dtype=torch.double)
    t["zsq"] = 1 + torch.rand(B, c, dtype=torch.double)
    if not with_noise:
        t["XK"] = t["WX"] = None
    names = ["Kz", "WG", "XK", "WX", "P", "Q", "Msq", "Mz_eff", "izn", "Mz", "zsq"]
    inputs = [t[k] if t[k] is None else t[k].requires_grad_() for k in names]
    assert torch.autograd.gradcheck(
        lambda *a: chunk_scan(*a, 0.5, 0.05, 1 / 0.75, top_k), inputs)


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("top_k", [None, 2])
def test_shared_scan_backward_passes_gradcheck_with_active_clip(with_mask, top_k):
    from enn.ops.engram.shared_scan import shared_scan

    torch.manual_seed(0)
    B, T, N, h = 3, 6, 4, 5
    z = torch.randn(B, T, h, dtype=torch.double, requires_grad=True)
    zn = torch.randn(B, T, h, dtype=torch.double, requires_grad=True)
    M = torch.randn(N, h, dtype=torch.double, requires_grad=True)
    H0 = (0.05 * torch.randn(N, h, dtype=torch.double)).requires_grad_()
    noise = 0.01 * torch.randn(T, N, h, dtype=torch.double)
    mask = (torch.arange(T) < torch.tensor([[6], [4], [2]])) if with_mask else None
    n_active = (mask.sum(0) if with_mask else torch.full((T,), B)).tolist()
    clip = 0.08  # hebbian_lr 0.5 below makes the clip act on some entries
    _, _, H = shared_scan(z, zn, M, H0, noise, mask, n_active, 0.5, 0.5, clip, 1.3, top_k)
    assert (H.abs() == clip).any() and (H.abs() < clip).any()
    assert torch.autograd.gradcheck(
        lambda *a: shared_scan(*a, noise, mask, n_active, 0.5, 0.5, clip, 1.3, top_k),
        (z, zn, M, H0))


@pytest.mark.parametrize("trace", ["per_sample", "shared"])
@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("clip_acts", [False, True])
def test_no_initial_state_means_zeros(trace, native, clip_acts):
    kw = {"trace_clip": 0.05, "hebbian_lr": 0.5} if clip_acts else {"trace_clip": 10.0}
    layer = make_layer(4, 6, 5, trace, **kw)
    compare(layer, 3, 12, True, True, zero_state=True, native=native,
            expect_step=clip_acts if trace == "per_sample" and not native else None)


def test_clip_bound_holds_over_many_chunks():
    from enn.ops.engram.fast import _clip_bound, _noise_part

    torch.manual_seed(0)
    B, T, N, h, eta = 3, 50, 4, 5, 0.2
    A = torch.softmax(3 * torch.randn(B, T, N, dtype=torch.double), -1)
    z = torch.randn(B, T, h, dtype=torch.double)
    H0 = 0.3 * torch.randn(B, N, h, dtype=torch.double)
    noise = 0.5 * torch.randn(T, N, h, dtype=torch.double)
    X = _noise_part(noise, eta, chunk=8)
    bound = _clip_bound(H0, A, z, X, eta, chunk=8)  # (B, T, N)
    H, true_max = H0, []
    for t in range(T):
        H = (1 - eta) * H + eta * (A[:, t, :, None] * z[:, t, None, :] + noise[t])
        true_max.append(H.abs().amax(-1))
    true_max = torch.stack(true_max, 1)  # (B, T, N)
    assert (bound >= true_max - 1e-12).all()
    assert (bound < 3 * true_max + 0.5).all()  # and not uselessly loose
