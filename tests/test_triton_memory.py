"""The Triton memory kernels against the naive reference: outputs, final trace and gradients.

Without CUDA the kernels run in Triton's interpreter on CPU tensors (small shapes); with
CUDA the same tests run on the GPU, plus the paper's shapes.

Tolerances (measured errors are 10-100 times smaller):
* float64 kernels against the float64 reference: rtol 1e-9, atol 1e-11;
* float32 against float64: atol 1e-6 on outputs and the trace, gradients within 1e-5 of the
  reference's largest entry (at the paper's shape on CUDA: 2e-5 and 1e-4; at T 784 on
  CUDA: 1e-6 and 2e-5);
* float16 / bfloat16 z (the bank in z's dtype or float32) against the float32 reference on
  the same rounded inputs: attention and recall within atol 5e-4 (bfloat16: 5e-3), the
  float32 final trace within 1e-6, gradients within 1e-3 (bfloat16: 1e-2) of the
  reference's largest entry; at the paper's shape on CUDA (bfloat16 z, float32 bank)
  attention, recall and dz within one bfloat16 ulp of each entry plus 1e-5 of the largest,
  the trace within 1e-6, dM and dH0 within 1e-5 of the largest.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined
pytest.importorskip("triton")

from enn.ops.engram.common import MemoryConfig  # noqa: E402
from enn.ops.engram.naive import naive_memory  # noqa: E402
from enn.ops.engram.triton_memory import INTERPRET, fused_recurrent_memory  # noqa: E402

CUDA = torch.cuda.is_available() and not INTERPRET
DEV = torch.device("cuda" if CUDA else "cpu")
ALPHA, INV_TAU = 0.5, 1 / 0.75
MODES = ["per_sample", "shared"]


def make(B, T, D, N, shared, dtype=torch.float64, h0=False, noise=False, lengths=None,
         zero_rows=False):
    """Inputs on DEV: z ~ N(0, 1), a bank small enough that the trace moves the addressing;
    ``zero_rows``: two encodings exactly zero (blank MNIST rows after the ReLU)."""
    z = torch.randn(B, T, D, dtype=torch.float64)
    if zero_rows:
        z[0, 1] = z[B - 1, T - 2] = 0.0
    M = 0.1 * torch.randn(N, D, dtype=torch.float64)
    H0 = 0.05 * torch.randn(*(() if shared else (B,)), N, D, dtype=torch.float64) if h0 else None
    nz = 0.01 * torch.randn(T, N, D, dtype=torch.float64) if noise else None
    lens = None if lengths is None else torch.tensor(lengths, device=DEV)

    def to(x):
        return None if x is None else x.to(DEV, dtype).requires_grad_(x is not nz)

    return to(z), to(M), to(H0), None if nz is None else nz.to(DEV, dtype), lens


def run(fn, z, M, H0, noise, lens, cfg, eta, grads=None, decay=None, **kw):
    """Outputs, final trace and the gradients of z, M, H0 under upstream gradients ``grads``
    (random, on all three outputs); the trace decays by ``decay`` (None: 1 - eta, the
    paper's)."""
    decay = 1 - eta if decay is None else decay
    if fn is naive_memory:
        out, hT = naive_memory(z, None, z, M, decay, eta, cfg, noise, H0,
                               output_final_state=True, lengths=lens)
    else:
        out, hT = fused_recurrent_memory(z, M, decay, eta, cfg, noise, H0, True, lens, **kw)
    if grads is None:
        grads = [torch.randn_like(x) for x in (out.attention, out.recall, hT)]
    loss = sum((x * g).sum() for x, g in zip((out.attention, out.recall, hT), grads,
                                                strict=True))
    wrt = [x for x in (z, M, H0) if x is not None]
    return (out.attention, out.recall, hT), torch.autograd.grad(loss, wrt), grads


def assert_close_scaled(got, ref, tol, what):
    """|got - ref| <= tol * max|ref| (gradients: entries vary over orders of magnitude)."""
    err = (got.double() - ref.double()).abs().max().item()
    scale = ref.double().abs().max().item()
    assert err <= tol * max(scale, 1e-30), f"{what}: max error {err:.3g}, max |ref| {scale:.3g}"


CASES = {  # B, T, h, N, options
    "plain": (3, 5, 20, 6, {}),
    "noise_h0": (3, 5, 20, 6, dict(noise=True, h0=True)),
    "lengths": (3, 5, 20, 6, dict(h0=True, lengths=[3, 2, 0])),  # steps 3, 4: none active
    "topk_clip": (3, 5, 20, 6, dict(noise=True, h0=True, lengths=[5, 4, 1], eta=0.5,
                                    clip=0.02, top_k=2)),
    "odd_T_chunks": (3, 7, 20, 6, dict(h0=True, lengths=[7, 4, 6], chunk_size=2, eta=0.5,
                                       clip=0.05)),
    "wide": (9, 6, 40, 8, dict(noise=True, h0=True, lengths=[6, 1, 5, 6, 0, 3, 6, 2, 4],
                               top_k=3)),
    "two_sample_blocks": (17, 3, 20, 6, dict(noise=True, lengths=[3, 2, 1, 0] * 4 + [3])),
    "smooth_cosine_zero_rows": (3, 7, 20, 6, dict(noise=True, h0=True, lengths=[7, 4, 6],
                                                  cosine_eps=1e-3, zero_rows=True, eta=0.5,
                                                  clip=0.05, chunk_size=3)),
    # N and h past the shared write's tiles of 64, N x h past its backward's 1,024 entries:
    # several programs per grid
    "several_tiles": (3, 4, 70, 70, dict(noise=True, h0=True, lengths=[4, 2, 3])),
}


def compare(mode, B, T, D, N, dtype=torch.float64, eta=0.05, clip=0.1, top_k=None,
            chunk_size=None, cosine_eps=0.0, rtol=1e-9, atol=1e-11, grad_tol=None, decay=None,
            **inputs):
    shared = mode == "shared"
    cfg = MemoryConfig(ALPHA, INV_TAU, clip, top_k, shared, cosine_eps=cosine_eps)
    z, M, H0, noise, lens = make(B, T, D, N, shared, dtype, **inputs)
    got, got_g, grads = run(fused_recurrent_memory, z, M, H0, noise, lens, cfg, eta,
                            decay=decay, chunk_size=chunk_size)
    ref_in = [None if x is None else x.detach().double().requires_grad_(x.requires_grad)
              for x in (z, M, H0, noise)]
    ref, ref_g, _ = run(naive_memory, *ref_in, lens, cfg, eta,
                        grads=[g.double() for g in grads], decay=decay)
    for name, g, r in zip(("attention", "recall", "final trace"), got, ref, strict=True):
        assert g.dtype == (dtype if name != "final trace" or H0 is not None else
                           (torch.float64 if dtype == torch.float64 else torch.float32))
        torch.testing.assert_close(g.double(), r, rtol=rtol, atol=atol, msg=name)
    for name, g, r in zip(("dz", "dM", "dH0"), got_g, ref_g, strict=False):
        if grad_tol is None:
            torch.testing.assert_close(g.double(), r, rtol=rtol, atol=atol, msg=name)
        else:
            assert_close_scaled(g, r, grad_tol, name)
    return got, ref, cfg


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference_float64(mode, case):
    B, T, D, N, opts = CASES[case]
    got, ref, cfg = compare(mode, B, T, D, N, **opts)
    if case == "topk_clip":  # the clip acts on part of the trace, not all of it
        at_clip = (ref[2].abs() >= cfg.trace_clip * (1 - 1e-12)).double().mean().item()
        assert 0.05 < at_clip < 0.95
        att = got[0][torch.tensor(opts["lengths"], device=DEV)[:, None] > torch.arange(T,
                                                                                      device=DEV)]
        assert ((att > 0).sum(-1) <= cfg.top_k).all()


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_checkpoint_chunks(chunk_size):
    compare("per_sample", 3, 5, 20, 6, chunk_size=chunk_size, h0=True, lengths=[5, 3, 4],
            eta=0.5, clip=0.05)


DECAYS = {  # trace_decay, hebbian_lr, clip: a decay apart from the paper's 1 - eta
    "0.9_eta_0.05": (0.9, 0.05, 0.1),
    "1_eta_0.5": (1.0, 0.5, 0.05),  # nothing forgotten: only the clip bounds the trace
    "0_eta_0.5": (0.0, 0.5, 0.05),  # everything forgotten: the trace is the last write
}


@pytest.mark.parametrize("case", list(DECAYS))
@pytest.mark.parametrize("mode", MODES)
def test_a_decay_apart_from_the_write_strength(mode, case):
    """``trace_decay`` set: the kernels take the decay and the strength as two numbers, in
    the forward and in every gradient (odd T over checkpoint chunks, ragged lengths)."""
    decay, eta, clip = DECAYS[case]
    compare(mode, 3, 7, 20, 6, decay=decay, eta=eta, clip=clip, chunk_size=3, noise=True,
            h0=True, lengths=[7, 4, 6])


@pytest.mark.parametrize("mode", MODES)
def test_float32_against_float64(mode):
    compare(mode, 3, 5, 20, 6, dtype=torch.float32, noise=True, h0=True, lengths=[5, 2, 4],
            eta=0.5, clip=0.05, top_k=4, rtol=0, atol=1e-6, grad_tol=1e-5)


@pytest.mark.parametrize(("z_dtype", "m_dtype"), [(torch.bfloat16, torch.bfloat16),
                                                  (torch.bfloat16, torch.float32),
                                                  (torch.float16, torch.float16)])
@pytest.mark.parametrize("mode", MODES)
def test_half_precision(mode, z_dtype, m_dtype):
    """Half inputs: the kernels compute in float32, so they match the float32 reference on
    the same rounded inputs up to the rounding of the outputs."""
    shared = mode == "shared"
    cfg = MemoryConfig(ALPHA, INV_TAU, 0.05, None, shared)
    z, M, H0, noise, lens = make(3, 5, 20, 6, shared, torch.float32, h0=True, noise=True,
                                 lengths=[5, 3, 4])
    zh = z.detach().to(z_dtype).requires_grad_()
    Mh = M.detach().to(m_dtype).requires_grad_()
    got, got_g, grads = run(fused_recurrent_memory, zh, Mh, H0, noise, lens, cfg, 0.5)
    assert got[0].dtype == got[1].dtype == z_dtype and got[2].dtype == torch.float32
    assert got_g[0].dtype == z_dtype and got_g[1].dtype == m_dtype
    ref_in = [x.detach().float().requires_grad_() for x in (zh, Mh, H0)]
    ref, ref_g, _ = run(naive_memory, *ref_in, noise, lens, cfg, 0.5,
                        grads=[g.float() for g in grads])
    bf16 = z_dtype == torch.bfloat16
    for name, g, r in zip(("attention", "recall"), got, ref, strict=False):
        torch.testing.assert_close(g.float(), r, rtol=0, atol=5e-3 if bf16 else 5e-4, msg=name)
    torch.testing.assert_close(got[2], ref[2], rtol=0, atol=1e-6)  # the trace stays float32
    for name, g, r in zip(("dz", "dM", "dH0"), got_g, ref_g, strict=True):
        assert_close_scaled(g, r, 1e-2 if bf16 else 1e-3, name)


@pytest.mark.parametrize("mode", MODES)
def test_padding_leaves_state_and_zero_outputs(mode):
    shared = mode == "shared"
    cfg = MemoryConfig(ALPHA, INV_TAU, 0.1, None, shared)
    z, M, H0, _, _ = make(3, 5, 20, 6, shared, h0=True)
    lens = torch.tensor([2, 0, 5], device=DEV)
    with torch.no_grad():
        out, hT = fused_recurrent_memory(z, M, 0.95, 0.05, cfg, None, H0, True, lens)
        out2, hT2 = fused_recurrent_memory(z[:, :2], M, 0.95, 0.05, cfg, None, H0, True)
    assert (out.attention[0, 2:] == 0).all() and (out.recall[1] == 0).all()
    torch.testing.assert_close(out.attention[0, :2].sum(-1), torch.ones(2, dtype=z.dtype,
                                                                         device=DEV))
    if not shared:
        assert torch.equal(hT[1], H0[1])  # no step at all
        torch.testing.assert_close(hT[0], hT2[0], rtol=0, atol=0)
    else:  # all lengths 0: nothing is written
        out0, hT0 = fused_recurrent_memory(z, M, 0.95, 0.05, cfg, None, H0, True, lens * 0)
        assert torch.equal(hT0, H0) and (out0.attention == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_without_grad_and_without_final_state(mode):
    """No saved states under no_grad; output_final_state=False still gives the H0 gradient."""
    shared = mode == "shared"
    cfg = MemoryConfig(ALPHA, INV_TAU, 0.05, 2, shared)
    z, M, H0, noise, lens = make(3, 5, 20, 6, shared, h0=True, noise=True, lengths=[5, 1, 3])
    with torch.no_grad():
        ng, nh = fused_recurrent_memory(z, M, 0.5, 0.5, cfg, noise, H0, True, lens)
    out, none = fused_recurrent_memory(z, M, 0.5, 0.5, cfg, noise, H0, False, lens)
    assert none is None
    torch.testing.assert_close(out.attention, ng.attention, rtol=0, atol=0)
    ref, _ = naive_memory(z, None, z, M, 0.5, 0.5, cfg, noise, H0, lengths=lens)
    g = torch.randn_like(out.recall)
    got_g = torch.autograd.grad((out.recall * g).sum(), (z, M, H0))
    ref_g = torch.autograd.grad((ref.recall * g).sum(), (z, M, H0))
    for a, b in zip(got_g, ref_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_fullgraph(mode):
    shared = mode == "shared"
    cfg = MemoryConfig(ALPHA, INV_TAU, 0.05, None, shared)
    z, M, H0, noise, lens = make(3, 5, 20, 6, shared, torch.float32, h0=True, noise=True,
                                 lengths=[5, 3, 4])

    def loss(z, M, H0):
        out, hT = fused_recurrent_memory(z, M, 0.5, 0.5, cfg, noise, H0, True, lens)
        return out.recall.sum() + out.attention.square().sum() + hT.square().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = compiled(z, M, H0)
    got_g = torch.autograd.grad(got, (z, M, H0))
    ref = loss(z, M, H0)
    ref_g = torch.autograd.grad(ref, (z, M, H0))
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    for a, b in zip(got_g, ref_g, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.parametrize("mode", MODES)
def test_nan_input_propagates_as_in_the_reference(mode):
    """A NaN in one encoding gives NaN where the reference's does (its clamp keeps NaN), not
    a trace clipped to finite values that hides it."""
    shared = mode == "shared"
    cfg = MemoryConfig(ALPHA, INV_TAU, 0.1, shared=shared)
    z, M, _, _, _ = make(3, 5, 20, 6, shared)
    z, M = z.detach().clone(), M.detach()
    z[1, 2, 3] = float("nan")
    got, got_final = fused_recurrent_memory(z, M, 0.95, 0.05, cfg, output_final_state=True)
    ref, ref_final = naive_memory(z, None, z, M, 0.95, 0.05, cfg, output_final_state=True)
    for g, r in ((got.attention, ref.attention), (got.recall, ref.recall),
                 (got_final, ref_final)):
        assert torch.equal(g.isnan(), r.isnan()) and r.isnan().any()
    assert not ref.recall[:, :2].isnan().any()  # the steps before it


def test_double_backward_raises():
    cfg = MemoryConfig(ALPHA, INV_TAU, 0.1)
    z, M, _, _, _ = make(2, 3, 20, 6, False)
    out, _ = fused_recurrent_memory(z, M, 0.95, 0.05, cfg)
    (gz,) = torch.autograd.grad(out.recall.sum(), z, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(gz.sum(), z)


def _bad_inputs():
    z = torch.randn(2, 3, 8, device=DEV)
    M = torch.randn(4, 8, device=DEV)
    zeros = torch.zeros
    shared = MemoryConfig(ALPHA, INV_TAU, 0.1, shared=True)
    return {  # name: (changed arguments, exception, message)
        "z device": (dict(z=z.to("meta")), ValueError, "expected (CPU|CUDA) tensors"),
        "z int": (dict(z=z.long()), TypeError, "expected z float16"),
        "z 2-d": (dict(z=z[0]), ValueError, r"expected z of shape \(B, T, h\)"),
        "memory h": (dict(memory=M[:, :5]), ValueError, r"expected memory of shape \(N, 8\)"),
        "memory dtype": (dict(memory=M.double()), TypeError, "expected memory in"),
        "half z, float64 bank": (dict(z=z.half(), memory=M.double()), TypeError,
                                 "expected memory in"),
        "noise shape": (dict(noise=zeros(3, 4, 7, device=DEV)), ValueError,
                        r"expected noise of shape \(3, 4, 8\)"),
        "h0 shape": (dict(initial_state=zeros(4, 8, device=DEV)), ValueError,
                     r"expected initial_state of shape \(2, 4, 8\)"),
        "shared h0 shape": (dict(initial_state=zeros(2, 4, 8, device=DEV), cfg=shared),
                            ValueError, r"expected initial_state of shape \(4, 8\)"),
        "lengths shape": (dict(lengths=torch.ones(3, dtype=torch.long, device=DEV)),
                          ValueError, r"expected lengths of shape \(2,\)"),
        "lengths float": (dict(lengths=torch.ones(2, device=DEV)), TypeError,
                          "expected integer lengths"),
        "decay tensor": (dict(decay=torch.ones(2, 3, device=DEV)), TypeError,
                         "expected decay a Python number"),
        "top_k 0": (dict(cfg=MemoryConfig(ALPHA, INV_TAU, 0.1, top_k=0)), ValueError,
                    "expected top_k"),
        "tile too large": (dict(z=torch.randn(1, 1, 1024, device=DEV),
                                memory=torch.randn(128, 1024, device=DEV)), ValueError,
                           "expected next_pow2"),
        # the shared trace of every step and the noise hold (T + 1) N h entries, whatever B
        "too long for int32 offsets": (dict(z=torch.zeros(0, 2**16, 256, device=DEV),
                                            memory=torch.randn(128, 256, device=DEV)), ValueError,
            r"\(T \+ 1\) \* N \* h < 2\*\*31"),
    }, z, M


@pytest.mark.parametrize("name", list(_bad_inputs()[0]))
def test_errors(name):
    cases, z, M = _bad_inputs()
    change, exc, match = cases[name]
    args = dict(z=z, memory=M, decay=0.95, strength=0.05, cfg=MemoryConfig(ALPHA, INV_TAU, 0.1))
    with pytest.raises(exc, match=match):
        fused_recurrent_memory(**(args | change))


# ---------------------------------------------------------------------------------- CUDA only

cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (not the interpreter)")


@cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_paper_shape_float32(mode):
    """The paper's B 128, T 28, h 128, N 64 in float32 against the float64 reference."""
    compare(mode, 128, 28, 128, 64, dtype=torch.float32, noise=True, h0=True,
            lengths=[28 - i % 7 for i in range(128)], rtol=0, atol=2e-5, grad_tol=1e-4)


BF16_ULP = 2.0**-7  # one bfloat16 ulp (8 significant bits), relative to the entry


def assert_within_rounding(got, ref, tol, what):
    """|got - ref| <= 2**-7 |ref| + tol * max|ref|: ``got`` is the float32 result rounded to
    bfloat16 once (to nearest on CUDA: half an ulp; Triton's interpreter truncates: less than
    one), ``tol`` what float32 adds (sums in another order)."""
    err = (got.double() - ref.double()).abs()
    bound = BF16_ULP * ref.double().abs() + tol * ref.double().abs().max()
    worst = (err - bound).argmax()
    assert (err <= bound).all(), (f"{what}: error {err.flatten()[worst]:.3g} over its bound "
                                  f"{bound.flatten()[worst]:.3g} at |ref| "
                                  f"{ref.abs().flatten()[worst]:.3g}")


def paper_shape_bfloat16(mode):
    """bfloat16 z with a float32 bank and trace at the paper's shape, and the float32
    reference on the same rounded z: outputs, final traces and gradients of both."""
    shared = mode == "shared"
    cfg = MemoryConfig(ALPHA, INV_TAU, 0.1, None, shared)
    z, M, H0, _, _ = make(128, 28, 128, 64, shared, torch.float32, h0=True)
    zh = z.detach().bfloat16().requires_grad_()
    got, got_g, grads = run(fused_recurrent_memory, zh, M, H0, None, None, cfg, 0.05)
    ref, ref_g, _ = run(naive_memory, zh.detach().float().requires_grad_(), M, H0, None, None,
                        cfg, 0.05, grads=[g.float() for g in grads])
    return got, got_g, ref, ref_g


@cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_paper_shape_bfloat16(mode):
    """The kernels compute in float32 and round attention, recall and dz to bfloat16 once:
    those within that rounding of each entry (attention entries are about 1 / 64), the
    float32 final trace, dM and dH0 as close as float32 gets. Measured in the interpreter:
    beyond the rounding 6e-8 of the largest entry; trace 2e-8; dM and dH0 4e-7."""
    got, got_g, ref, ref_g = paper_shape_bfloat16(mode)
    assert got[0].dtype == got[1].dtype == got_g[0].dtype == torch.bfloat16
    for name, g, r in zip(("attention", "recall"), got, ref, strict=False):
        assert_within_rounding(g, r, 1e-5, name)
    torch.testing.assert_close(got[2], ref[2], rtol=0, atol=1e-6, msg="final trace")
    assert_within_rounding(got_g[0], ref_g[0], 1e-5, "dz")
    for name, g, r in zip(("dM", "dH0"), got_g[1:], ref_g[1:], strict=True):
        assert_close_scaled(g, r, 1e-5, name)


@cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_large_shape(mode):
    """B 256, T 784, h 256, N 128: forward against the reference, backward finite."""
    shared = mode == "shared"
    cfg = MemoryConfig(ALPHA, INV_TAU, 0.1, None, shared)
    z, M, _, _, _ = make(256, 784, 256, 128, shared, torch.float32)
    out, hT = fused_recurrent_memory(z, M, 0.95, 0.05, cfg, output_final_state=True)
    with torch.no_grad():
        ref, ref_h = naive_memory(z, None, z, M, 0.95, 0.05, cfg, output_final_state=True)
    torch.testing.assert_close(out.recall, ref.recall, rtol=0, atol=1e-4)
    torch.testing.assert_close(hT, ref_h, rtol=0, atol=1e-4)
    gz, gM = torch.autograd.grad(out.recall.sum() + hT.sum(), (z, M))
    assert torch.isfinite(gz).all() and torch.isfinite(gM).all()


LONG = dict(h0=True, noise=True, lengths=[784, 783, 390, 29])  # 28 chunks of 28 steps, ragged


@cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_long_sequence_every_gradient(mode):
    """T 784 at h 256, N 128 in float32, a batch of 4: the backward over 28 checkpoint
    chunks (ragged lengths end mid-chunk) against the float64 reference. Measured in the
    interpreter: outputs and trace 2e-8, gradients 1.1e-6 of their largest entry."""
    compare(mode, 4, 784, 256, 128, dtype=torch.float32, rtol=0, atol=1e-6, grad_tol=2e-5,
            **LONG)


@pytest.mark.parametrize("mode", MODES)
def test_the_layer_runs_its_memory_pass_on_triton(mode):
    from enn import Engram
    from enn.ops.engram import engram_layer

    # a decay apart from 1 - hebbian_lr: the layer hands the kernels both
    layer = Engram(3, 20, batch_first=True, memory_size=6, trace=mode,
                   trace_decay=0.9).double().to(DEV)
    x = torch.randn(5, 7, 3, dtype=torch.float64, device=DEV, requires_grad=True)
    lengths = torch.tensor([7, 3, 7, 1, 5], device=DEV)
    results = []
    for backend in ("triton", "torch"):
        out, final, mem = engram_layer(x, layer.layer_weights(0), layer.hyper, None, True,
                                       lengths, backend=backend)
        loss = out.sin().sum() + final.trace.sum() + mem.attention[:, 2].sum()
        results.append((out, final.trace, *torch.autograd.grad(loss, [x, *layer.parameters()])))
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)


# --------------------------------------------------------------------------------------------
# The clipped trace of a memory addressed by its bank alone (bank.py's scan on CUDA)
# --------------------------------------------------------------------------------------------


def clipped_reference(a, w, v, decays, H0, lengths, decay, clip):
    """read_t = a_t H_{t-1}, H_t = clip(d_t H_{t-1} + outer(w_t, v_t)); padded steps read
    nothing and leave H alone."""
    B, T, N = a.shape
    H = a.new_zeros(B, N, v.shape[2]) if H0 is None else H0
    reads = []
    for t in range(T):
        active = (torch.ones(B, dtype=torch.bool, device=a.device) if lengths is None
                  else lengths > t)[:, None]
        d = decay if decays is None else decays[:, t, None, None]
        reads.append(torch.einsum("bn,bnh->bh", a[:, t], H) * active)
        written = (d * H + w[:, t, :, None] * v[:, t, None, :]).clamp(-clip, clip)
        H = torch.where(active[..., None], written, H)
    return torch.stack(reads, 1), H


CLIPPED_CASES = {  # B, T, h, N, per-step decays, initial trace, lengths
    "plain": (3, 5, 20, 6, False, False, None),
    "rates_state_lengths": (3, 7, 20, 6, True, True, [7, 4, 0]),  # chunks of 3, 3, 1
    "wide": (9, 10, 40, 8, False, True, [10, 1, 5, 10, 7, 3, 10, 2, 9]),
}


def clipped_case(B, T, D, N, per_step, with_state, lengths, dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(3 * torch.randn(B, T, N, generator=g, dtype=torch.float64), -1)
    w = torch.softmax(3 * torch.randn(B, T, N, generator=g, dtype=torch.float64), -1)
    v = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    decays = 0.8 + 0.2 * torch.rand(B, T, generator=g, dtype=torch.float64) if per_step else None
    H0 = 0.3 * torch.randn(B, N, D, generator=g, dtype=torch.float64) if with_state else None
    tensors = [None if t is None else t.to(DEV, dtype).requires_grad_()
               for t in (a, w, v, decays, H0)]
    lens = None if lengths is None else torch.tensor(lengths, device=DEV)
    return tensors, lens


def clipped_outputs_and_gradients(fn, tensors, lens, clip):
    read, H = fn(*tensors, lens, 0.9, clip)[:2]
    g = torch.Generator().manual_seed(1)
    g_read, g_H = (torch.randn(t.shape, generator=g, dtype=torch.float64).to(DEV, t.dtype)
                   for t in (read, H))
    leaves = [t for t in tensors if t is not None]
    grads = torch.autograd.grad((read * g_read).sum() + (H * g_H).sum(), leaves)
    return [read, H, *grads]


@pytest.mark.parametrize("case", list(CLIPPED_CASES))
def test_clipped_trace_matches_the_reference_with_every_gradient(case):
    from enn.ops.engram.triton_memory import clipped_trace

    tensors, lens = clipped_case(*CLIPPED_CASES[case], torch.float64)
    clip = 0.25  # acts on a good share of the entries
    expected = clipped_outputs_and_gradients(clipped_reference, tensors, lens, clip)
    H = expected[1]
    assert (H.abs() == clip).sum() > 0.05 * (H != 0).sum()
    got = clipped_outputs_and_gradients(
        lambda *args: clipped_trace(*args, save=True), tensors, lens, clip)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)


def test_clipped_trace_in_float32_against_float64():
    from enn.ops.engram.triton_memory import clipped_trace

    results = []
    for dtype in (torch.float32, torch.float64):
        tensors, lens = clipped_case(*CLIPPED_CASES["rates_state_lengths"], dtype)
        results.append(clipped_outputs_and_gradients(
            lambda *args: clipped_trace(*args, save=True), tensors, lens, 0.25))
    for g, e in zip(*results, strict=True):
        assert g.dtype == torch.float32
        assert_close_scaled(g, e, 1e-6, "clipped trace")


def test_clipped_trace_without_saving_refuses_the_backward():
    from enn.ops.engram.triton_memory import clipped_trace

    tensors, lens = clipped_case(*CLIPPED_CASES["plain"], torch.float64)
    read, H, _ = clipped_trace(*tensors, lens, 0.9, 0.25, save=False)
    with pytest.raises(RuntimeError, match="without saving"):
        read.sum().backward()


@cuda
def test_the_associative_layer_runs_the_clipped_scan_on_cuda():
    from enn import Engram
    from enn.models.config import ASSOCIATIVE
    from enn.ops.engram import engram_layer
    from enn.ops.engram.layer import hidden_backend

    layer = Engram(3, 40, batch_first=True, memory_size=8, **ASSOCIATIVE).double().to(DEV)
    x = torch.randn(9, 19, 3, dtype=torch.float64, device=DEV)
    lengths = torch.tensor([19, 3, 7, 1, 5, 19, 18, 2, 11], device=DEV)
    layer(x, lengths=lengths)
    # the memory pass on the clipped scan, the hidden pass on its own backend ("torch": the
    # native kernels take CPU tensors), named after it where the two differ
    hidden = hidden_backend(x)
    assert hidden == "torch"
    assert layer.last_path == ("/".join(dict.fromkeys(("scan", hidden))),)
    results = []
    for backend in ("auto", "torch"):
        out, final, _ = engram_layer(x, layer.layer_weights(0), layer.hyper, None, True, lengths,
                                     backend=backend, options=layer._layer_options("_l0"))
        loss = out.sin().sum() + final.trace.square().sum()
        results.append((out, final.trace, *torch.autograd.grad(loss, list(layer.parameters()))))
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)


# --------------------------------------------------------------------------------------------
# Which layers the kernels take: next_pow2(N) * next_pow2(h) <= MAX_TILE
# --------------------------------------------------------------------------------------------


def fake_cuda(*shape):
    """A CUDA tensor's metadata without a GPU: what the backend choice reads."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.empty(*shape, device="cuda")


def test_auto_runs_triton_on_cuda_only_where_the_tile_fits():
    import warnings

    from enn import Engram
    from enn.models.config import ASSOCIATIVE
    from enn.ops.engram import choose_backend, layer_backend
    from enn.ops.engram.triton_memory import _warn_once

    _warn_once.cache_clear()
    small, large = fake_cuda(2, 3, 1024), fake_cuda(2, 3, 1500)  # N 64: 65536 and 131072
    assert choose_backend(small, memory_size=64) == "triton"
    with pytest.warns(RuntimeWarning, match=r"<= 65536, got N 64, h 1500, so the slower"):
        assert choose_backend(large, memory_size=64) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per shape
        assert choose_backend(large, memory_size=64) == "torch"
    hyper = Engram(3, 8, memory_size=4, **ASSOCIATIVE).hyper  # the clipped scan's memory
    assert layer_backend(small, hyper, memory_size=64) == "scan"
    with pytest.warns(RuntimeWarning, match="got N 65, h 1024"):
        assert layer_backend(small, hyper, memory_size=65) == "torch"


def test_triton_asked_for_a_layer_too_large_for_its_tile_is_one_clear_error():
    from enn import Engram
    from enn.ops.engram import engram_layer

    layer = Engram(3, 1025, batch_first=True, memory_size=64).to(DEV)
    x = torch.randn(1, 2, 3, device=DEV)
    match = (r"^enn: the triton kernels need next_pow2\(N\) \* next_pow2\(h\) <= 65536, "
             r"got N 64, h 1025$")
    with pytest.raises(ValueError, match=match):
        engram_layer(x, layer.layer_weights(0), layer.hyper, backend="triton")


def test_the_gpu_benchmark_checks_then_times_both_interleaved(monkeypatch, capsys):
    """benchmarks/gpu_memory.py in the interpreter at a small shape: the differences to the
    reference first (small), then both kernels' steps and their per-round ratio."""
    from benchmarks import gpu_memory

    monkeypatch.setitem(gpu_memory.SHAPES, "paper", (3, 5, 16, 8))
    calls = []
    real = gpu_memory.step
    monkeypatch.setattr(gpu_memory, "step", lambda name, *a: calls.append(name) or real(name, *a))
    device = "cuda" if CUDA else "cpu"
    (result,) = gpu_memory.main(["--shapes", "paper", "--modes", "shared", "--dtypes",
                                 "float64", "--repeat", "2", "--device", device])
    assert max(result["max_abs_diff"].values()) < 1e-8
    assert calls[:2] == ["triton", "naive"]  # checked before any timing
    assert calls[2:8] == ["triton", "naive"] * 3  # a warm-up round, then two, interleaved
    assert result["triton"]["ms"] > 0 and result["naive"]["ms"] > 0
    assert set(result["naive_over_triton"]) == {"q1", "median", "q3"}
    assert "naive / triton per round" in capsys.readouterr().out


def test_clipped_trace_takes_inputs_of_any_strides():
    """Inputs laid out in another order (same values) give the same outputs and gradients:
    the kernels write the gradients row-major into buffers made so."""
    from enn.ops.engram.triton_memory import clipped_trace

    tensors, lens = clipped_case(*CLIPPED_CASES["rates_state_lengths"], torch.float64)
    permuted = [t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
                for t in tensors[:3]]
    assert not any(t.is_contiguous() for t in permuted)
    expected = clipped_outputs_and_gradients(clipped_reference, tensors, lens, 0.25)
    got = clipped_outputs_and_gradients(lambda *args: clipped_trace(*args, save=True),
                                        [*permuted, *tensors[3:]], lens, 0.25)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)


def test_a_nan_value_propagates_through_the_clipped_trace():
    from enn.ops.engram.triton_memory import clipped_trace

    tensors, lens = clipped_case(*CLIPPED_CASES["plain"], torch.float64)
    a, w, v = (t.detach().clone() for t in tensors[:3])
    v[1, 2, 0] = float("nan")
    got = clipped_trace(a, w, v, None, None, None, 0.9, 0.25, save=False)[:2]
    expected = clipped_reference(a, w, v, None, None, None, 0.9, 0.25)
    for g, e in zip(got, expected, strict=True):
        assert e.isnan().any() and not e.isnan().all()
        assert torch.equal(g.isnan(), e.isnan())


@pytest.mark.parametrize("write_key", ["current", "previous", "mix"])
@pytest.mark.parametrize("per_step", [False, True])
def test_bank_scan_on_triton_matches_the_reference(write_key, per_step):
    # bank.py's scan as it runs on CUDA (the addresses in PyTorch, then the Triton trace),
    # with the write key as the layer passes it: the first step's key alone, shifted
    from enn.ops.engram.bank import _triton_scan

    B, T, D, N = 3, 7, 20, 6
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    z[1, 2] = 0  # an encoding that addresses nothing as the next step's key
    M = torch.randn(N, D, generator=g, dtype=torch.float64)
    first = torch.randn(B, 1, D, generator=g, dtype=torch.float64)
    rates = [torch.sigmoid(2 + torch.randn(B, T, generator=g, dtype=torch.float64))
             for _ in range(2)] if per_step else [0.9, 0.7]
    mix = torch.tensor(0.3, dtype=torch.float64) if write_key == "mix" else None
    lens = torch.tensor([T, 4, 1], device=DEV)
    z, M, first = (t.to(DEV).requires_grad_() for t in (z, M, first))
    leaves = [z, M] if write_key == "current" else [z, M, first]
    rates = [r.to(DEV).requires_grad_() if isinstance(r, torch.Tensor) else r for r in rates]
    leaves += [r for r in rates if isinstance(r, torch.Tensor)]
    cfg = MemoryConfig(0.5, 3.0, 0.25, address_trace=False, cosine_eps=1e-3)
    k = None if write_key == "current" else torch.cat([first, z[:, :-1]], 1)

    def outputs_and_gradients(out, H):
        loss = out.attention.sin().sum() + out.recall.cos().sum() + H.sum()
        return (out.attention, out.recall, H, *torch.autograd.grad(loss, leaves))

    expected = outputs_and_gradients(*naive_memory(z, k, z, M, *rates, cfg, None, None, True,
                                                   lens, key_mix=mix))
    got = outputs_and_gradients(*_triton_scan(z, None if k is None else first, z, M, *rates,
                                              cfg, None, True, lens, mix, k is not None))
    for g_, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g_, e, rtol=1e-9, atol=1e-11)
