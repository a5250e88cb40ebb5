"""The native CPU backend (ops/engram/native.py): gradcheck of its operators, the
per-sample backward's two ways through a chunk, threads, argument checks, the build and what
happens where it fails. Its match with the reference over a grid is in test_backends.py."""

import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from enn import Engram
from enn.models.config import ASSOCIATIVE
from enn.ops.engram import HIDDEN_UPDATES, EngramHyper, layer, native

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler here")


def native_memory_scan(z, M, H0, noise, lengths, hyper):
    """The per-sample memory pass on the native backend: attention, recall, final trace."""
    mem, H = layer.memory_pass(z, M, hyper, noise, H0, lengths, False, "native")
    return mem.attention, mem.recall, H


def native_shared_scan(z, M, H0, noise, lengths, hyper):
    shared = EngramHyper(**{**hyper.__dict__, "trace_mode": "shared"})
    mem, H = layer.memory_pass(z, M, shared, noise, H0, lengths, False, "native")
    return mem.attention, mem.recall, H


def native_hidden_pass(z, m, h0, w_c, b_c, w_o, b_o, ln_w, ln_b, eps, lengths, update=0):
    return torch.ops.enn.hidden_pass(z, m, h0, w_c, b_c, w_o, b_o, ln_w, ln_b, eps, lengths,
                                     update)[:2]


def scan_inputs(B=3, T=9, N=4, h=5, dtype=torch.double, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, h, dtype=dtype, generator=g).requires_grad_()
    M = torch.randn(N, h, dtype=dtype, generator=g).requires_grad_()
    H0 = (0.05 * torch.randn(B, N, h, dtype=dtype, generator=g)).requires_grad_()
    noise = 0.01 * torch.randn(T, N, h, dtype=dtype, generator=g)
    return z, M, H0, noise


def assert_same_bits_with_1_and_2_threads(run, more=()):
    """``run()`` returns tensors; they must be the same to the last bit on 1 and 2 threads (and
    on the thread counts ``more``)."""
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, *more):
            torch.set_num_threads(threads)
            results.append(run())
    finally:
        torch.set_num_threads(before)
    for first, *others in zip(*results, strict=True):
        for other in others:
            torch.testing.assert_close(other, first, atol=0, rtol=0)


def test_the_library_cache_key_covers_every_source_file(monkeypatch, tmp_path):
    csrc = tmp_path / "csrc"
    shutil.copytree(native._CSRC, csrc)
    monkeypatch.setattr(native, "_CSRC", csrc)
    keys = {native._library_path()}
    for source in sorted(csrc.iterdir()):
        source.write_text(source.read_text() + "\n")
        keys.add(native._library_path())
    assert len(keys) == 1 + len(list(csrc.iterdir())) >= 5


@pytest.mark.parametrize("top_k", [None, 2])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_native_backward_passes_gradcheck_with_active_clip(top_k, with_lengths):
    z, M, H0, noise = scan_inputs(T=20)  # 20 steps: more than one checkpoint interval
    lengths = torch.tensor([20, 17, 3]) if with_lengths else None
    hyper = EngramHyper(hebbian_lr=0.5, trace_clip=0.08, top_k=top_k)
    _, _, H = native_memory_scan(z, M, H0, noise, lengths, hyper)
    assert (H.abs() == 0.08).any() and (H.abs() < 0.08).any()  # the clip acts, not everywhere
    # all three outputs feed the check, the attention's gradient included
    assert torch.autograd.gradcheck(
        lambda *a: native_memory_scan(*a, noise, lengths, hyper), (z, M, H0))


@pytest.mark.parametrize("with_lengths", [False, True])
def test_chunks_the_clip_spares_are_walked_back_by_undoing_the_writes(with_lengths):
    # sample 0's trace stays far below the clip, so the backward undoes its writes from the
    # trace each chunk ends with; sample 1's is clipped, so its chunks are rewritten from
    # their starts; sample 2 clips in its last chunk only
    z, M, H0, noise = scan_inputs(T=40)  # three chunks: steps 0-15, 16-31, 32-39
    late = torch.arange(40)[None, :, None] >= 32
    scale = torch.tensor([0.01, 20.0, 0.01], dtype=torch.double)[:, None, None]
    scale = torch.where(late & (torch.arange(3)[:, None, None] == 2), 20.0, scale)
    z = (z.detach() * scale).requires_grad_()
    H0 = (H0.detach() * torch.tensor([0.1, 1.0, 0.1], dtype=torch.double)[:, None, None]
          ).requires_grad_()
    lengths = torch.tensor([40, 37, 36]) if with_lengths else None
    hyper = EngramHyper()
    A, _, H = native_memory_scan(z, M, H0, noise, lengths, hyper)
    assert marked_chunks(A).tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 1]]
    assert (H[1].abs() == hyper.trace_clip).any() and (H[0].abs() < 0.5 * hyper.trace_clip).all()
    assert torch.autograd.gradcheck(
        lambda *a: native_memory_scan(*a, noise, lengths, hyper), (z, M, H0))
    assert_float32_gradients_match_float64(z, M, H0, noise, lengths, hyper)


def test_fast_decaying_traces_are_rewritten_not_walked_back():
    # with eta = 0.5, undoing 16 writes would multiply float32's rounding by 2^16; the clip
    # never acts here, yet the backward rewrites the chunks and stays as exact as float64
    z, M, H0, noise = scan_inputs(T=40)
    hyper = EngramHyper(hebbian_lr=0.5, trace_clip=1e3)
    A, _, _ = native_memory_scan(z, M, H0, noise, None, hyper)
    assert not marked_chunks(A).any()
    assert_float32_gradients_match_float64(z, M, H0, noise, None, hyper)


def test_noise_alone_can_mark_a_chunk_as_clipped():
    # tiny encodings write almost nothing, but a large noise drives the trace to the clip:
    # the forward's bound must count the noise, or the backward undoes clipped writes
    z, M, H0, noise = scan_inputs(T=40)
    z = (1e-3 * z.detach()).requires_grad_()
    noise = 50 * noise  # std 0.5; each write adds eta x noise
    hyper = EngramHyper()
    A, _, H = native_memory_scan(z, M, H0, noise, None, hyper)
    assert marked_chunks(A).all() and (H.abs() == hyper.trace_clip).any()
    assert torch.autograd.gradcheck(
        lambda *a: native_memory_scan(*a, noise, None, hyper), (z, M, H0))


def test_long_sequences_match_the_reference_with_their_own_checkpoint_spacing():
    # past MIN_CHUNK^2 steps the traces are saved every ceil(sqrt(T)) steps, forward and
    # backward alike; sample 1 clips, sample 0 does not (both ways through a chunk)
    T = native.MIN_CHUNK**2 + 44
    assert native.checkpoint_spacing(T) != native.MIN_CHUNK
    z, M, H0, noise = scan_inputs(B=2, T=T, N=8, h=6)
    z = (z.detach() * torch.tensor([0.01, 20.0], dtype=torch.double)[:, None, None]
         ).requires_grad_()
    lengths = torch.tensor([T, T - 37])
    hyper = EngramHyper()
    results = []
    for backend in ("native", "torch"):
        mem, H = layer.memory_pass(z, M, hyper, noise, H0, lengths, False, backend)
        loss = mem.recall.sin().sum() + H.cos().sum() + mem.attention[:, ::7].sum()
        results.append((mem.attention, mem.recall, H, *torch.autograd.grad(loss, (z, M, H0))))
    assert (results[0][2][1].abs() == hyper.trace_clip).any()
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)


def marked_chunks(A):
    """(B, chunks): where the forward found that the clip may have acted (kept for the
    backward beside the attention A)."""
    return A.grad_fn.saved_tensors[7]


def assert_float32_gradients_match_float64(z, M, H0, noise, lengths, hyper):
    grads = []
    for dtype in (torch.double, torch.float):
        inputs = [t.detach().to(dtype).requires_grad_() for t in (z, M, H0)]
        A, m, H = native_memory_scan(*inputs, noise.to(dtype), lengths, hyper)
        loss = m.sin().sum() + H.cos().sum() + A[:, 7].sum()
        grads.append(torch.autograd.grad(loss, inputs))
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("initial", ["zeros", "given", "given-with-grad"])
def test_initial_trace_is_read_where_it_lies(initial):
    # the backward reads the first chunk's start from H0 itself (or zeros), and writes H0's
    # gradient only when it is wanted: the same gradients as from an explicit zero/given H0
    z, M, H0, noise = scan_inputs(T=20)  # more than one checkpoint interval
    hyper = EngramHyper(hebbian_lr=0.5, trace_clip=0.08)
    start = torch.zeros_like(H0) if initial == "zeros" else H0.detach()
    reference = start.clone().requires_grad_()
    passed = None if initial == "zeros" else start.requires_grad_(initial == "given-with-grad")
    results = []
    for H in (reference, passed):
        A, m, HT = native_memory_scan(z, M, H, noise, None, hyper)
        loss = m.sin().sum() + HT.cos().sum() + A[:, 5].sum()
        wants = [z, M] + ([H] if H is not None and H.requires_grad else [])
        results.append((A, m, HT, *torch.autograd.grad(loss, wants)))
    for got, expected in zip(results[1], results[0], strict=False):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_results_do_not_depend_on_the_thread_count():
    z, M, H0, noise = scan_inputs(B=70, T=18)  # more samples than gradient blocks

    def run():
        A, m, H = native_memory_scan(z, M, H0, noise, None, EngramHyper())
        grads = torch.autograd.grad((m.sin().sum() + H.sum() + A[:, 3].sum()), (z, M, H0))
        return (A, m, H, *grads)

    assert_same_bits_with_1_and_2_threads(run)


def test_broadcast_output_gradients_are_read_correctly():
    # .sum() hands the backward expanded (stride 0) gradients, which it must copy and keep
    z, M, H0, noise = scan_inputs()
    hyper = EngramHyper(top_k=3)
    grads = []
    for dense in (False, True):
        A, m, H = native_memory_scan(z, M, H0, noise, None, hyper)
        if dense:  # the same loss through materialised, contiguous gradients
            loss = (m * torch.ones_like(m)).sum() + (H * torch.ones_like(H)).sum()
        else:
            loss = m.sum() + H.sum()
        grads.append(torch.autograd.grad(loss, (z, M, H0)))
    for one, two in zip(*grads, strict=True):
        torch.testing.assert_close(one, two, atol=0, rtol=0)


def test_without_the_kernel_the_layer_keeps_the_pytorch_path(kernel_env, tmp_path):
    kernel_env(CC=tmp_path / "no-such-compiler", ENN_CACHE_DIR=tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert not native.available()
    engram = Engram(4, 6, memory_size=5, batch_first=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning came once, not at every call
        engram(torch.randn(2, 5, 4))
    assert engram.last_path == ("torch",)
    with pytest.raises(RuntimeError, match="needs float32/64 CPU tensors and built kernels"):
        layer.engram_layer(torch.randn(2, 5, 4), engram.layer_weights(0), engram.hyper,
                           backend="native")


def test_enn_native_takes_0_or_1(kernel_env):
    kernel_env(ENN_NATIVE="0")
    assert not native.available()
    kernel_env(ENN_NATIVE="banana")
    with pytest.raises(ValueError, match="ENN_NATIVE must be 0 or 1, got 'banana'"):
        native.available()


@pytest.mark.slow
def test_the_first_build_says_that_it_compiles_once(tmp_path):
    code = ("import torch; from enn import Engram; "
            "[Engram(3, 8, memory_size=4)(torch.randn(2, 3, 3)) for _ in range(2)]")
    env = {"ENN_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=300) for _ in range(2)]
    assert runs[0].stderr.count("enn: compiling the native CPU kernels") == 1, runs[0].stderr
    assert "compiling" not in runs[1].stderr  # cached


@pytest.mark.slow
@pytest.mark.parametrize("flags", ["-mno-avx512f", "-fno-openmp"])
def test_kernels_built_without_avx512_or_openmp_match_the_reference(flags, kernel_env,
                                                                    tmp_path):
    # the plain C paths of the register tiles and the clipped scan (any CPU without AVX-512,
    # and float64 everywhere), and a build with no threads
    kernel_env(ENN_NATIVE_CFLAGS=flags, ENN_CACHE_DIR=tmp_path)
    layers = [dict(trace="per_sample", hidden_update="paper"),
              dict(trace="shared", hidden_update="gated"), ASSOCIATIVE]
    for options in layers:
        engram = Engram(5, 40, batch_first=True, memory_size=8, **options).float()
        x = torch.randn(11, 9, 5, requires_grad=True)
        results = []
        for backend in ("native" if options is not ASSOCIATIVE else "auto", "torch"):
            out, final, _ = layer.engram_layer(x, engram.layer_weights(0), engram.hyper, None,
                                               True, backend=backend,
                                               options=engram._layer_options("_l0"))
            loss = out.sin().sum() + final.trace.sum()
            results.append((out, final.trace,
                            *torch.autograd.grad(loss, [x, *engram.parameters()])))
        for got, expected in zip(*results, strict=True):
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-4)


def test_arguments_of_the_wrong_kind_are_errors_not_misreadings():
    z = torch.randn(9, 5, 40)
    M, consts = torch.randn(8, 40), (0.5, 0.95, 0.05, 0.1, 1.0, 0.0, 0, False)
    with pytest.raises(ValueError, match="expected memory of shape"):
        torch.ops.enn.per_sample_memory(z, torch.randn(8, 41), None, None, None, *consts)
    with pytest.raises(TypeError, match="expected initial trace of dtype torch.float32"):
        torch.ops.enn.per_sample_memory(z, M, torch.zeros(9, 8, 40, dtype=torch.double), None,
                                        None, *consts)
    with pytest.raises(TypeError, match="float32 or float64 CPU tensor"):
        torch.ops.enn.per_sample_memory(z.half(), M.half(), None, None, None, *consts)
    strided = torch.randn(40, 8).t()  # the same shape, not contiguous: read as its values
    out = torch.ops.enn.per_sample_memory(z, strided, None, None, None, *consts)
    expected = torch.ops.enn.per_sample_memory(z, strided.contiguous(), None, None, None,
                                               *consts)
    for got, want in zip(out[:3], expected[:3], strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("top_k", [None, 2])
def test_native_shared_scan_passes_gradcheck_with_active_clip(with_lengths, top_k):
    torch.manual_seed(0)
    B, T, N, h = 11, 6, 4, 5  # more samples than the kernel's blocks
    z = torch.randn(B, T, h, dtype=torch.double, requires_grad=True)
    M = torch.randn(N, h, dtype=torch.double, requires_grad=True)
    H0 = (0.05 * torch.randn(N, h, dtype=torch.double)).requires_grad_()
    noise = 0.01 * torch.randn(T, N, h, dtype=torch.double)
    lengths = None
    if with_lengths:  # no sample reaches the last step: the kernel pads it
        lengths = torch.randint(1, T, (B,)).index_fill_(0, torch.tensor([0]), T - 1)
        assert lengths.max() == T - 1
    hyper = EngramHyper(hebbian_lr=0.5, trace_clip=0.08, trace_scale=0.5, temperature=1.3,
                        sparsity=0.0, top_k=top_k)  # the clip acts
    out = native_shared_scan(z, M, H0, noise, lengths, hyper)
    H = out[2]
    assert (H.abs() == 0.08).any() and (H.abs() < 0.08).any()
    shared = EngramHyper(**{**hyper.__dict__, "trace_mode": "shared"})
    mem, H_ref = layer.memory_pass(z, M, shared, noise, H0, lengths, False, "torch")
    for got, want in zip(out, (mem.attention, mem.recall, H_ref), strict=True):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(
        lambda *a: native_shared_scan(*a, noise, lengths, hyper), (z, M, H0))


def test_native_shared_scan_does_not_depend_on_the_thread_count():
    # three blocks of samples, one shorter, on 1 and 2 threads; eight on 8 threads
    z, M, H0, noise = scan_inputs(B=70, T=7)

    def run():
        A, m, H = native_shared_scan(z, M, H0[0], noise, None, EngramHyper())
        grads = torch.autograd.grad(m.sin().sum() + H.sum() + A[:, 3].sum(), (z, M))
        return (A, m, H, *grads)

    assert_same_bits_with_1_and_2_threads(run, more=(8,))


def clipped_memory_results(dtype, decays_per_step, clip=0.05):
    """Addresses, reads, final trace and every gradient of the clipped memory (bank.py's scan
    on the CPU) at the float kernel's edges: 150 columns (a block of 128 and one of 22), 40
    rows, a shifted write key mixed with the read's address, keys that address nothing,
    per-step strengths, decays per step or one for all (the float backward then keeps pass
    masks, not traces), per-slot sharpness, an initial trace and lengths from 0 to T; the
    inputs are the same float32 values in either dtype."""
    B, T, N, h = 5, 37, 40, 150
    g = torch.Generator().manual_seed(0)
    s = 2 * torch.rand(B, T, N, generator=g) - 1  # cosines
    key_scores = 2 * torch.rand(B, 1, N, generator=g) - 1
    beta = 1 + 4 * torch.rand(N, generator=g)
    mix = torch.tensor(0.7)
    v = torch.randn(B, T, h, generator=g)
    decays = 0.8 + 0.2 * torch.rand(B, T, generator=g)
    strengths = 0.5 + torch.rand(B, T, generator=g)
    H0 = 0.3 * torch.randn(B, N, h, generator=g)
    valid = torch.rand(B, T, generator=g) > 0.2
    if not decays_per_step:
        decays = None
    inputs = [t.to(dtype).requires_grad_()
              for t in (s, beta, key_scores, mix, v, decays, strengths, H0) if t is not None]
    s, beta, key_scores, mix, v, *rest = inputs
    decays, strengths, H0 = rest if decays_per_step else (None, *rest)
    lengths = torch.tensor([T, 0, 16, 17, 5])
    A, read, H, _, _ = torch.ops.enn.clipped_memory(
        s, beta, key_scores, native.KEY_MODES.index("shifted"), valid, mix, v, decays,
        strengths, H0, lengths, 0, 0.9, 0.0, clip, True)
    g_A, g_read, g_H = (torch.randn(t.shape, generator=g).to(dtype) for t in (A, read, H))
    grads = torch.autograd.grad((A * g_A).sum() + (read * g_read).sum() + (H * g_H).sum(),
                                inputs)
    return A, read, H, *grads


@pytest.mark.parametrize("decays_per_step", [True, False])
def test_clipped_memory_in_float32_matches_float64_at_the_kernel_edges(decays_per_step):
    # float64 runs the plain C loops, which test_memory_options.py holds to the reference;
    # float32 here is within 2e-6 of the largest entry of each result
    got, expected = (clipped_memory_results(dtype, decays_per_step)
                     for dtype in (torch.float, torch.double))
    H = expected[2]
    assert (H.abs() == 0.05).sum() > 0.05 * (H != 0).sum()  # the clip acts
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        err, scale = (g.double() - e).abs().max().item(), e.abs().max().item()
        assert err <= 2e-6 * scale, f"result {i}: max error {err:.3g}, max |ref| {scale:.3g}"


def test_clipped_memory_checks_its_arguments():
    B, T, N, h = 2, 3, 4, 5
    s, v, beta = torch.rand(B, T, N), torch.randn(B, T, h), torch.ones(N)
    shifted = native.KEY_MODES.index("shifted")

    def run(**changed):
        args = dict(s=s, beta=beta, key_scores=torch.rand(B, 1, N), key_mode=shifted,
                    valid=None, mix=None, v=v, decays=None, strengths=None, H0=None,
                    lengths=None, top_k=0, decay=0.9, strength=1.0, trace_clip=1.0,
                    save=False)
        return torch.ops.enn.clipped_memory(**{**args, **changed})

    assert run()[0].shape == (B, T, N)
    with pytest.raises(ValueError, match="expected key_mode in 0..2, got 3"):
        run(key_mode=3)
    with pytest.raises(ValueError, match=r"expected key scores of shape \(2, 1, 4\), got "
                                         r"\(2, 3, 4\)"):
        run(key_scores=torch.rand(B, T, N))
    with pytest.raises(ValueError, match="the write key's address needs key_scores"):
        run(key_scores=None)
    with pytest.raises(ValueError, match=r"expected beta of shape \(4,\), got \(3,\)"):
        run(beta=torch.ones(N - 1))
    with pytest.raises(TypeError, match="expected decays of dtype torch.float32"):
        run(decays=torch.ones(B, T, dtype=torch.double))


@pytest.mark.parametrize("decays_per_step", [True, False])
def test_clipped_memory_does_not_depend_on_the_thread_count(decays_per_step):
    assert_same_bits_with_1_and_2_threads(
        lambda: clipped_memory_results(torch.float, decays_per_step))


HIDDEN_SHAPES = {"z": "BTh", "m": "BTh", "h0": "Bh", "w_c": "33", "b_c": "3", "w_o": "u3",
                 "b_o": "u", "ln_w": "h", "ln_b": "h"}
UPDATES = {name: code for code, name in enumerate(HIDDEN_UPDATES)}  # the kernel's codes


def hidden_inputs(B, T, h, dtype, update="paper"):
    """The operator's tensors; w_o and b_o stack W_g and b_g below W_o and b_o when gated."""
    size = {"B": B, "T": T, "h": h, "3": 3 * h, "u": 2 * h if update == "gated" else h}
    return [torch.randn(*(size[c] for c in shape), dtype=dtype, requires_grad=True)
            for shape in HIDDEN_SHAPES.values()]


@pytest.mark.parametrize("update", list(UPDATES))
@pytest.mark.parametrize("with_mask, with_bias", [(False, True), (True, True), (False, False)])
def test_native_hidden_pass_passes_gradcheck(update, with_mask, with_bias):
    torch.manual_seed(0)
    B, T, h = 11, 5, 4  # more samples than a register tile, and a remainder
    lengths = torch.randint(1, T + 1, (B,)) if with_mask else None
    args = hidden_inputs(B, T, h, torch.double, update)
    if not with_bias:  # a layer built with bias=False
        for name in ("b_c", "b_o"):
            args[list(HIDDEN_SHAPES).index(name)] = None
    assert torch.autograd.gradcheck(
        lambda *a: native_hidden_pass(*a, 1e-6, lengths, UPDATES[update]), tuple(args))


@pytest.mark.parametrize("update", ["paper", "gated"])
def test_native_hidden_pass_does_not_depend_on_the_thread_count(update):
    torch.manual_seed(0)
    args = hidden_inputs(37, 6, 32, torch.float, update)

    def run():
        out, h_n = native_hidden_pass(*args, 1e-6, None, UPDATES[update])
        return (out, h_n, *torch.autograd.grad(out.sin().sum() + h_n.sum(), args))

    assert_same_bits_with_1_and_2_threads(run)


def test_native_hidden_pass_reads_strided_inputs_as_their_values():
    torch.manual_seed(0)
    args = hidden_inputs(5, 4, 8, torch.double)
    z, m = args[0].detach(), args[1].detach()
    # the same values laid out (T, B, h) and viewed as (B, T, h)
    strided = [z.transpose(0, 1).contiguous().transpose(0, 1),
               m.transpose(0, 1).contiguous().transpose(0, 1), *args[2:]]
    assert not strided[0].is_contiguous() and not strided[1].is_contiguous()
    for got, expected in zip(native_hidden_pass(*strided, 1e-6, None),
                             native_hidden_pass(z, m, *args[2:], 1e-6, None),
                             strict=True):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_native_hidden_pass_checks_its_arguments():
    args = hidden_inputs(3, 4, 8, torch.float)
    with pytest.raises(ValueError, match="expected update in 0..2, got 3"):
        native_hidden_pass(*args, 1e-6, None, 3)
    with pytest.raises(ValueError, match=r"expected weight_o of shape \(16, 24\), got \(8, 24\)"):
        native_hidden_pass(*args, 1e-6, None, UPDATES["gated"])
    with pytest.raises(TypeError, match="expected weight_c of dtype torch.float32"):
        native_hidden_pass(*args[:3], args[3].double(), *args[4:], 1e-6, None)
