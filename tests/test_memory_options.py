"""The options beyond the paper's cell (eqs. 10-12 of docs/model.md): the chunked linear
memory and the native clipped scan against the reference, the layer's paths against each
other, and what each option means."""

import math

import pytest
import torch

from enn import Engram, EngramCell, EngramState
from enn.models.config import ASSOCIATIVE
from enn.ops.engram import (
    MemoryConfig,
    chunk_memory,
    encode,
    engram_layer,
    naive_memory,
    native,
    scan_memory,
)
from enn.ops.engram.naive import memory_step

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler here")

LINEAR = dict(address_trace=False, trace_clip=None)


def memory_case(B, T, h, N, per_step_rates, with_lengths, with_state, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.double)

    z = randn(B, T, h)
    z[1, 2] = 0  # an exactly zero encoding
    memory = randn(N, h)
    if per_step_rates:
        decay = torch.sigmoid(2 + randn(B, T))
        strength = torch.sigmoid(randn(B, T))
    else:
        decay, strength = 0.9, 0.7
    lengths = torch.randint(1, T + 1, (B,), generator=g) if with_lengths else None
    if lengths is not None:
        lengths[0] = T
    H0 = 0.3 * randn(B, N, h) if with_state else None
    return z, memory, decay, strength, lengths, H0


def chunk_case(B, T, h, N, write_key, variant, dtype=torch.double):
    """Inputs of the chunked memory for a variant (its parts joined by "+": per-step rates,
    lengths, an initial trace, trace noise; or a sharpness per slot with top-k), in dtype:
    (the arguments of naive_memory, key_mix, the leaves that take a gradient)."""
    parts = variant.split("+")
    z, memory, decay, strength, lengths, H0 = memory_case(
        B, T, h, N, per_step_rates="rates" in parts, with_lengths="lengths" in parts,
        with_state="state" in parts)
    noise = (0.05 * torch.randn(T, N, h, generator=torch.Generator().manual_seed(2),
                                dtype=torch.double) if "noise" in parts else None)
    inv_temperature = (torch.linspace(1.0, 5.0, N, dtype=torch.double) if "slot" in parts
                       else 2.0)
    key_mix = (torch.tensor(0.3, dtype=torch.double) if write_key in ("mix", "own key")
               else None)

    def cast(t):
        return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    z, memory, decay, strength, H0, noise, inv_temperature, key_mix = map(
        cast, (z, memory, decay, strength, H0, noise, inv_temperature, key_mix))
    leaves = [t for t in (z, memory, decay, strength, H0, inv_temperature, key_mix)
              if isinstance(t, torch.Tensor)]
    for t in leaves:
        t.requires_grad_()
    cfg = MemoryConfig(0.5, inv_temperature, None, 3 if "topk" in parts else None,
                       address_trace=False, cosine_eps=1e-3 if variant == "plain" else 0.0)
    k = None if write_key == "current" else torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
    return (z, k, z, memory, decay, strength, cfg, noise, H0, True, lengths), key_mix, leaves


def chunk_results(run, args, key_mix, leaves):
    """Attention, recall, final trace and the gradients of a random probe of all three."""
    out, H = run(*args, key_mix=key_mix)
    values = (out.attention, out.recall, H)
    probe = torch.Generator().manual_seed(1)
    loss = sum((v * torch.randn(v.shape, generator=probe, dtype=torch.double).to(v.dtype)).sum()
               for v in values)
    return (*values, *torch.autograd.grad(loss, leaves))


# (B, T, h, N, chunk size): one chunk, several with a ragged end, memory 8 and 64
SHAPES = [(9, 13, 40, 8, 64), (9, 13, 40, 8, 4), (10, 17, 41, 64, 5)]


@pytest.mark.parametrize("B,T,h,N,C", SHAPES)
@pytest.mark.parametrize("write_key", ["current", "previous", "mix"])
@pytest.mark.parametrize("variant", ["plain", "rates+lengths", "state+noise", "slot+topk",
                                     "state+lengths", "noise+lengths"])
def test_chunked_memory_matches_the_reference_with_every_gradient(B, T, h, N, C, write_key,
                                                                  variant):
    args, key_mix, leaves = chunk_case(B, T, h, N, write_key, variant)
    expected = chunk_results(naive_memory, args, key_mix, leaves)
    # "previous" reuses the read addresses for the shifted key; "mix" addresses its key anew
    shifted = write_key == "previous"
    got = chunk_results(lambda *a, **kw: chunk_memory(*a, **kw, chunk_size=C,
                                                      shifted_key=shifted), args, key_mix,
                        leaves)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("variant", ["rates+lengths", "state+noise+lengths", "slot+topk"])
def test_chunked_memory_in_float32_against_float64(variant):
    # five chunks of 8 steps, the last ragged; float32 within 2e-6 of each result's largest
    # entry (measured: at most 3.1e-7, as close as the float32 reference)
    B, T, h, N, C = 9, 37, 40, 8, 8
    expected = chunk_results(naive_memory, *chunk_case(B, T, h, N, "mix", variant))
    got = chunk_results(lambda *a, **kw: chunk_memory(*a, **kw, chunk_size=C),
                        *chunk_case(B, T, h, N, "mix", variant, torch.float))
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.dtype == torch.float
        err, scale = (g.double() - e).abs().max().item(), e.abs().max().item()
        assert err <= 2e-6 * scale, f"result {i}: max error {err:.3g}, max |ref| {scale:.3g}"


def outputs_and_gradients(run, inputs, leaves, key_mix, **options):
    """Attention, recall, final trace and the gradients of a random probe of all three."""
    z, k, memory, decay, strength, cfg, H0, lengths = inputs
    out, H = run(z, k, z, memory, decay, strength, cfg, None, H0, True, lengths, key_mix=key_mix,
                 **options)
    values = (out.attention, out.recall, H)
    probe = torch.Generator().manual_seed(1)
    loss = sum((v * torch.randn(v.shape, generator=probe, dtype=v.dtype)).sum() for v in values)
    return (*values, *torch.autograd.grad(loss, leaves))


# (B, T, h, N): several checkpoint chunks with a ragged end, memory 8 and 64, batch and hidden
# beyond a vector's lanes
SCAN_SHAPES = [(9, 37, 40, 8), (10, 17, 41, 64)]


@needs_native
@pytest.mark.parametrize("B,T,h,N", SCAN_SHAPES)
@pytest.mark.parametrize("write_key", ["current", "previous", "mix", "own key"])
@pytest.mark.parametrize("variant", ["plain", "rates+lengths", "state", "slot+topk",
                                     "state+lengths"])
def test_clipped_scan_matches_the_reference_with_every_gradient(B, T, h, N, write_key, variant):
    # "previous" and "mix" write under the previous encoding, as the layer does (the scan
    # reuses the read addresses); "own key" under keys of their own, some of them zero
    z, memory, decay, strength, lengths, H0 = memory_case(
        B, T, h, N, per_step_rates=variant == "rates+lengths",
        with_lengths=variant.endswith("lengths"), with_state=variant.startswith("state"))
    inv_temperature = (torch.linspace(1.0, 5.0, N, dtype=torch.double) if variant == "slot+topk"
                       else 2.0)
    key_mix = (torch.tensor(0.3, dtype=torch.double) if write_key in ("mix", "own key")
               else None)
    leaves = [z, memory, *(t for t in (decay, strength, H0, key_mix)
                           if isinstance(t, torch.Tensor))]
    if isinstance(inv_temperature, torch.Tensor):
        leaves.append(inv_temperature)
    for t in leaves:
        t.requires_grad_()
    clip = 1.2 / N  # one that acts: a good share of the written entries end at it
    cfg = MemoryConfig(0.5, inv_temperature, clip, 3 if variant == "slot+topk" else None,
                       address_trace=False, cosine_eps=1e-3 if variant == "plain" else 0.0)
    k = None if write_key == "current" else torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
    if write_key == "own key":
        k = torch.randn(z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(1))
        k[:, T // 2] = 0
        leaves.append(k.requires_grad_())
    inputs = (z, k, memory, decay, strength, cfg, H0, lengths)
    _, _, H, *_ = expected = outputs_and_gradients(naive_memory, inputs, leaves, key_mix)
    assert (H.abs() == clip).sum() > 0.05 * (H != 0).sum()
    shifted = write_key in ("previous", "mix")
    if shifted:  # the first step's key alone, as the layer passes it
        inputs = (z, k[:, :1], *inputs[2:])
    got = outputs_and_gradients(scan_memory, inputs, leaves, key_mix, shifted_key=shifted)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10)


@needs_native
def test_clipped_scan_in_float32_at_the_paper_shapes_is_as_close_as_the_reference():
    # the associative preset at batch 32, 28 steps, hidden 128, memory 64: float32 scan and
    # float32 reference against the float64 reference
    z64, memory64, *_ = memory_case(32, 28, 128, 64, False, False, False)
    cfg = MemoryConfig(0.5, 10.0, 1.0, address_trace=False, cosine_eps=1e-3)
    results = {}
    for name, run, dtype in [("ref64", naive_memory, torch.double),
                             ("ref32", naive_memory, torch.float), ("scan32", scan_memory,
                                                                    torch.float)]:
        z, memory = (t.to(dtype).requires_grad_() for t in (z64, memory64))
        k = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
        options = {"shifted_key": True} if run is scan_memory else {}
        results[name] = outputs_and_gradients(run, (z, k, memory, 0.98, 1.0, cfg, None, None),
                                              [z, memory], None, **options)
    for ref64, ref32, scan32 in zip(*results.values(), strict=True):
        scale = ref64.abs().max()
        ref_error = (ref32.double() - ref64).abs().max() / scale
        scan_error = (scan32.double() - ref64).abs().max() / scale
        assert scan_error <= 4 * ref_error + 1e-6


MODULATED = dict(write_key="mix", trace_decay=0.95, hebbian_lr=1.0, sharpness="slot",
                 neuromodulation=True, hidden_update="residual", cosine_eps=1e-3,
                 trace_noise=0.0)


def move_options(layer, seed=1):
    """Every option's parameters away from where they start (where each equals its fixed
    counterpart): a gated decay and strength that vary with the encoding, a sharpness that
    differs between slots, a write key mix off one half, a gate bias off zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.double).to(p.dtype)
            if name.startswith("weight_mod"):
                p.copy_(0.2 * noise)
            elif name.startswith(("bias_mod", "log_sharpness", "bias_g")):
                p.add_(0.5 * noise)
            elif name.startswith("write_mix"):
                p.fill_(1.2)


def expected_path(memory_backend):
    """The layer's last_path for a memory pass on ``memory_backend`` and a hidden pass on
    float64 CPU tensors (native where the kernels are built)."""
    hidden = "native" if native.available() else "torch"
    return ("/".join(dict.fromkeys((memory_backend, hidden))),)


def probe_loss(values, seed=3):
    """A random linear probe of every value: a plain sum of a LayerNorm's outputs has a
    gradient of (nearly) zero."""
    g = torch.Generator().manual_seed(seed)
    return sum((v * torch.randn(v.shape, generator=g, dtype=v.dtype)).sum() for v in values)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("options,path", [
    (dict(MODULATED, **LINEAR), "chunk"),
    pytest.param(dict(MODULATED, address_trace=False, trace_clip=0.2), "scan",
                 marks=needs_native),
    pytest.param(ASSOCIATIVE, "scan", marks=needs_native),
])
def test_the_layer_runs_the_fast_path_and_it_matches_the_torch_path(options, path, with_state):
    torch.manual_seed(0)
    B, h, N = 9, 40, 8
    layer = Engram(7, h, batch_first=True, memory_size=N, **options).double()
    move_options(layer)
    x = torch.randn(B, 19, 7, dtype=torch.double, requires_grad=True)
    lengths = torch.randint(1, 20, (B,))
    state = leaves = None
    if with_state:  # a state carried over from an earlier call: its trace and write key
        g = torch.Generator().manual_seed(2)
        leaves = [torch.randn(B, h, generator=g, dtype=torch.double),
                  0.1 * torch.randn(B, N, h, generator=g, dtype=torch.double),
                  torch.randn(B, h, generator=g, dtype=torch.double)]
        state = EngramState(*(t.requires_grad_() for t in leaves))
    layer(x, EngramState(*(t[None] for t in state)) if with_state else None, lengths=lengths)
    assert layer.last_path == expected_path(path)

    def run(backend):
        out, final, _ = engram_layer(x, layer.layer_weights(0), layer.hyper, state, True,
                                     lengths, backend=backend,
                                     options=layer._layer_options("_l0"))
        wrt = [x, *layer.parameters(), *(leaves or [])]
        return (out, *final, *torch.autograd.grad(probe_loss((out, *final)), wrt))

    for got, expected in zip(run("auto"), run("torch"), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("options,path", [
    pytest.param(dict(write_key="previous", **LINEAR), "chunk",  # 70 steps: two chunks
                 id="previous_key_chunk"),
    pytest.param(dict(MODULATED, **LINEAR), "chunk", id="modulated_chunk"),
    pytest.param(ASSOCIATIVE, "scan", marks=needs_native,  # five checkpoint chunks
                 id="associative_scan"),
    pytest.param(dict(write_key="previous", delta_rule=True, hidden_update="gated"), "torch",
                 id="delta_rule_torch"),
    pytest.param(dict(write_key="mix", neuromodulation=True, sharpness="layer"), "torch",
                 id="modulated_torch"),
])
def test_steps_one_at_a_time_equal_one_pass(options, path):
    torch.manual_seed(0)
    B, T, h, N = 3, 70, 16, 8
    options = {"trace_noise": 0.0, **options}
    layer = Engram(5, h, batch_first=True, memory_size=N, **options).double()
    move_options(layer)
    cell = EngramCell(5, h, memory_size=N, **options).double()
    cell.load_state_dict({name.removesuffix("_l0"): p for name, p in layer.state_dict().items()})
    x = torch.randn(B, T, 5, dtype=torch.double, requires_grad=True)
    g = torch.Generator().manual_seed(2)  # a state carried over: h, trace and write key
    start = [torch.randn(B, h, generator=g, dtype=torch.double),
             0.1 * torch.randn(B, N, h, generator=g, dtype=torch.double),
             torch.randn(B, h, generator=g, dtype=torch.double)]
    for t in start:
        t.requires_grad_()

    out, state = layer(x, EngramState(*(t[None] for t in start)))
    assert layer.last_path == expected_path(path)
    step_state, outs = EngramState(*start), []
    for t in range(T):
        step_state = cell(x[:, t], step_state)
        outs.append(step_state.h)
    assert cell.last_path == expected_path(path)
    stepped = (torch.stack(outs, 1), *step_state)
    one_pass = (out, *(s[0] for s in state))
    for got, expected in zip(stepped, one_pass, strict=True):  # output, h, trace, key
        torch.testing.assert_close(got, expected)
    for got, expected in zip(torch.autograd.grad(probe_loss(stepped), [x, *start,
                                                                         *cell.parameters()]),
                             torch.autograd.grad(probe_loss(one_pass), [x, *start,
                                                                          *layer.parameters()]),
                             strict=True):
        torch.testing.assert_close(got, expected)


def test_the_previous_key_writes_each_value_under_the_key_before_it():
    # one-hot encodings and a bank equal to them: key e_i at step t, value e_j at t + 1
    h = N = 4
    memory = torch.eye(N, dtype=torch.double)
    z = torch.eye(h, dtype=torch.double)[[0, 1, 2, 3]][None]  # (1, 4, 4): a b c d
    k = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
    cfg = MemoryConfig(1.0, 50.0, None, address_trace=False)
    _, H = naive_memory(z, k, z, memory, 1.0, 1.0, cfg, output_final_state=True)
    # row i (the address of key i) holds the value that followed it
    torch.testing.assert_close(H[0], torch.eye(4, dtype=torch.double).roll(1, 1).triu(),
                               atol=1e-6, rtol=0)


def test_the_delta_rule_replaces_a_key_s_value_where_the_plain_write_adds():
    h = N = 3
    memory = torch.eye(N, dtype=torch.double)
    key = torch.tensor([[1.0, 0, 0]], dtype=torch.double)
    v1, v2 = torch.tensor([[0, 1.0, 0]], dtype=torch.double), torch.tensor([[0, 0, 1.0]],
                                                                           dtype=torch.double)
    for delta, expected in ((False, v1 + v2), (True, v2)):
        cfg = MemoryConfig(1.0, 50.0, None, address_trace=False, delta_rule=delta)
        H = torch.zeros(1, N, h, dtype=torch.double)
        for v in (v1, v2):
            _, _, H = memory_step(key, key, v, H, memory, 1.0, 1.0, None, cfg)
        torch.testing.assert_close(H[0, 0:1], expected, atol=1e-6, rtol=0)


def test_the_options_start_where_their_fixed_counterparts_are():
    torch.manual_seed(0)
    fixed = Engram(6, 12, batch_first=True, memory_size=8, trace_noise=0.0, trace_decay=0.9,
                   hebbian_lr=0.2).double()
    learned = Engram(6, 12, batch_first=True, memory_size=8, trace_noise=0.0, trace_decay=0.9,
                     hebbian_lr=0.2, sharpness="slot", neuromodulation=True).double()
    learned.load_state_dict(fixed.state_dict(), strict=False)
    assert torch.allclose(learned.log_sharpness_l0.exp(),
                          torch.full((8,), 1 / fixed.hyper.effective_temperature,
                                     dtype=torch.double))
    x = torch.randn(2, 5, 6, dtype=torch.double)
    torch.testing.assert_close(learned(x)[0], fixed(x)[0])


def test_hidden_updates_residual_and_gated_follow_their_equations():
    torch.manual_seed(0)
    paper = Engram(4, 8, batch_first=True, memory_size=4, trace_noise=0.0).double()
    residual = Engram(4, 8, batch_first=True, memory_size=4, trace_noise=0.0,
                      hidden_update="residual").double()
    gated = Engram(4, 8, batch_first=True, memory_size=4, trace_noise=0.0,
                   hidden_update="gated").double()
    for other in (residual, gated):
        other.load_state_dict(paper.state_dict(), strict=False)
    x = torch.randn(2, 3, 4, dtype=torch.double)
    h0 = torch.randn(1, 2, 8, dtype=torch.double)
    state = (h0, torch.zeros(1, 2, 4, 8, dtype=torch.double))
    w = paper.layer_weights(0)
    with torch.no_grad():
        out_p, _ = paper(x[:, :1], state)
        out_r, _ = residual(x[:, :1], state)
        gated.weight_g_l0.zero_()
        gated.bias_g_l0.fill_(40.0)  # gate open: the new candidate
        out_open, _ = gated(x[:, :1], state)
        gated.bias_g_l0.fill_(-40.0)  # gate shut: h_prev
        out_shut, _ = gated(x[:, :1], state)
        # the residual form by hand: LN(h_prev + u), u the paper's output before its LayerNorm
        z = encode(x[:, 0], w, 1e-6)
        m = (torch.softmax(cosines(z, w.memory) / paper.hyper.effective_temperature, -1)
             @ w.memory)
        c = torch.relu(torch.cat([z, m, h0[0]], -1) @ w.weight_c.t() + w.bias_c)
        u = torch.relu(c @ w.weight_o.t() + w.bias_o)
    ln = torch.nn.functional.layer_norm
    torch.testing.assert_close(out_open, out_p)
    torch.testing.assert_close(out_shut[:, 0], ln(h0[0], (8,), w.ln_h_weight, w.ln_h_bias, 1e-6))
    torch.testing.assert_close(out_r[:, 0], ln(h0[0] + u, (8,), w.ln_h_weight, w.ln_h_bias, 1e-6))
    torch.testing.assert_close(out_p[:, 0], ln(u, (8,), w.ln_h_weight, w.ln_h_bias, 1e-6))


def cosines(z, memory):
    return torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(
        memory, dim=-1).t()


def test_a_zero_encoding_gives_a_bounded_cosine_gradient_with_cosine_eps():
    memory = torch.randn(8, 16, dtype=torch.double)
    for eps, bound in ((0.0, None), (1e-3, 1 / math.sqrt(1e-3))):
        z = torch.zeros(1, 1, 16, dtype=torch.double, requires_grad=True)
        cfg = MemoryConfig(0.5, 4.0, None, address_trace=False, cosine_eps=eps)
        out, _ = naive_memory(z, None, z, memory, 0.9, 0.1, cfg)
        (out.attention * torch.arange(8.0, dtype=torch.double)).sum().backward()
        largest = z.grad.abs().max().item()
        if bound is None:
            assert largest > 1e5  # the paper's clamp at 1e-6
        else:
            assert largest < 4.0 * bound


def test_the_paper_defaults_keep_the_paper_s_memory_and_parameters():
    layer = Engram(4, 8)
    assert layer.hyper.paper_memory and layer.hyper.hidden_update == "paper"
    assert len(list(layer.parameters())) == 11


@pytest.mark.parametrize("kwargs,match", [
    (dict(write_key="next"), "write_key must be one of"),
    (dict(sharpness="global"), "sharpness must be one of"),
    (dict(hidden_update="lstm"), "hidden_update must be one of"),
    (dict(trace_decay=1.5), "trace_decay must be in"),
    (dict(cosine_eps=-1.0), "cosine_eps must be"),
    (dict(trace_clip=0.0), "trace_clip must be finite and > 0"),
    (dict(neuromodulation=True, trace="shared"), "needs trace='per_sample', got trace='shared'"),
])
def test_bad_option_values_raise_one_clear_error(kwargs, match):
    for layer_class in (Engram, EngramCell):
        with pytest.raises(ValueError, match=match):
            layer_class(4, 8, **kwargs)


def test_the_kernel_backends_refuse_the_options():
    layer = Engram(4, 8, batch_first=True, write_key="previous")
    with pytest.raises(RuntimeError, match="paper's memory only"):
        engram_layer(torch.randn(2, 3, 4), layer.layer_weights(0), layer.hyper, backend="native")


def test_a_two_element_state_still_continues_a_sequence():
    torch.manual_seed(0)
    layer = Engram(4, 8, batch_first=True, trace_noise=0.0)
    x = torch.randn(2, 6, 4)
    _, state = layer(x[:, :3])
    full, _ = layer(x[:, 3:], EngramState(*state))
    pair, _ = layer(x[:, 3:], (state.h, state.trace))
    torch.testing.assert_close(pair, full)

