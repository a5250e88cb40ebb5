"""Every backend of the Engram layer against the reference (ops/engram/naive.py), and the
semantics they must share: NaN, double backward, meta tensors, torch.compile, strided and
mixed-dtype parameters, the training noise."""

import shutil

import pytest
import torch
from torch.func import functional_call

from enn import Engram, EngramState
from enn.ops.engram import encode, engram_layer, native

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler here")


def test_the_kernels_build_wherever_there_is_a_c_compiler():
    # not skipped with the native tests: a compiler that fails to build them is a failure
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine")
    assert native.available()


def make_layer(d, h, N, trace, dtype=torch.double, **kw):
    kw.setdefault("trace_noise", 0.0)
    return Engram(d, h, batch_first=True, memory_size=N, trace=trace, **kw).to(dtype)


def run(layer, x, state, lengths, noise, backend, probe_seed=1):
    """Outputs, final state, attention and the gradients of every input and parameter."""
    weights, options = layer.layer_weights(0), layer._layer_options("_l0")
    xi = x.clone().requires_grad_()
    si = None if state is None else EngramState(*(t.clone().requires_grad_() for t in state[:2]))
    out, final, mem = engram_layer(xi, weights, layer.hyper, si, True, lengths, noise,
                                   backend=backend, options=options)
    results = (out, final.h, final.trace, mem.attention, mem.recall)
    g = torch.Generator().manual_seed(probe_seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.double).to(t.dtype)).sum()
               for t in results)  # the same probes in every dtype
    wants = [xi, *([] if si is None else si[:2]),
             *(p for p in (*weights, *options) if p is not None)]
    return (*results, *torch.autograd.grad(loss, wants))


def random_case(B, T, d, h, N, trace, with_state, with_lengths, with_noise, dtype=torch.double):
    x = 2 * torch.randn(B, T, d, dtype=dtype)
    state = None
    if with_state:
        trace_shape = (B, N, h) if trace == "per_sample" else (N, h)
        state = EngramState(torch.randn(B, h, dtype=dtype),
                            0.05 * torch.randn(trace_shape, dtype=dtype))
    lengths = None
    if with_lengths:
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
    noise = 0.01 * torch.randn(T, N, h, dtype=dtype) if with_noise else None
    return x, state, lengths, noise


def assert_native_matches(layer, case, reference):
    """The native layer's outputs and gradients (``run``) against the reference's."""
    for got, expected in zip(run(layer, *case, "native"), reference, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)


# (B, T, d, h, N): batches past the register tiles' rows (8) and the shared kernel's blocks,
# hidden sizes that fill 8 x 32 tiles and leave edges, memory 8 and 64, odd lengths
SHAPES = [(9, 13, 7, 40, 8), (12, 5, 3, 48, 64), (17, 19, 5, 41, 8), (1, 1, 2, 40, 64)]
GRID = [
    pytest.param(shape, trace, top_k, with_state, with_lengths, with_noise,
                 id=f"B{shape[0]}T{shape[1]}h{shape[3]}N{shape[4]}-{trace}-k{top_k}-"
                    f"{'state' if with_state else 'zeros'}-{'len' if with_lengths else 'full'}-"
                    f"{'noise' if with_noise else 'clean'}")
    for shape in SHAPES
    for trace in ("per_sample", "shared")
    for top_k, with_state, with_lengths, with_noise in (
        (None, True, True, True), (3, False, False, False), (None, False, True, False),
        (5, True, False, True),
    )
]


@needs_native
@pytest.mark.parametrize("shape, trace, top_k, with_state, with_lengths, with_noise", GRID)
def test_native_matches_the_reference_with_every_gradient(shape, trace, top_k, with_state,
                                                          with_lengths, with_noise):
    B, T, d, h, N = shape
    layer = make_layer(d, h, N, trace, top_k=top_k)
    case = random_case(B, T, d, h, N, trace, with_state, with_lengths, with_noise)
    assert_native_matches(layer, case, run(layer, *case, "torch"))


@needs_native
@pytest.mark.parametrize("trace", ["per_sample", "shared"])
@pytest.mark.parametrize("decay", [0.9, 1.0, 0.3, 0.0])
def test_native_matches_the_reference_with_a_separate_decay(trace, decay):
    # the backward walks the trace back by dividing by the decay: 0 and 1 are its edges
    B, T, d, h, N = SHAPES[2]  # 19 steps: two checkpoint chunks
    layer = make_layer(d, h, N, trace, hebbian_lr=0.5, trace_decay=decay, trace_clip=0.2)
    case = random_case(B, T, d, h, N, trace, True, True, True)
    reference = run(layer, *case, "torch")
    assert (reference[2].abs() == 0.2).any() and (reference[2].abs() < 0.2).any()
    assert_native_matches(layer, case, reference)


@needs_native
@pytest.mark.parametrize("update", ["residual", "gated"])
@pytest.mark.parametrize("shape, trace, with_state, with_lengths", [
    (SHAPES[0], "per_sample", True, True), (SHAPES[1], "shared", False, False),
    (SHAPES[2], "per_sample", False, True), (SHAPES[3], "per_sample", True, False),
])
def test_native_hidden_updates_match_the_reference(shape, trace, with_state, with_lengths,
                                                   update):
    B, T, d, h, N = shape
    layer = make_layer(d, h, N, trace, hidden_update=update)
    case = random_case(B, T, d, h, N, trace, with_state, with_lengths, False)
    assert_native_matches(layer, case, run(layer, *case, "torch"))


@needs_native
@pytest.mark.parametrize("update", ["paper", "residual", "gated"])
def test_native_matches_the_reference_without_biases(update):
    B, T, d, h, N = SHAPES[2]
    layer = make_layer(d, h, N, "per_sample", hidden_update=update, bias=False)
    biases = [p for n, p in layer.layer_weights(0)._asdict().items() if n.startswith("bias")]
    assert len(biases) == 3 and all(p is None for p in biases)
    case = random_case(B, T, d, h, N, "per_sample", True, True, True)
    assert_native_matches(layer, case, run(layer, *case, "torch"))


@needs_native
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1]])
@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_native_smooth_cosine_matches_the_reference_at_a_zero_encoding(shape, trace):
    B, T, d, h, N = shape
    layer = make_layer(d, h, N, trace, cosine_eps=1e-3)
    with torch.no_grad():
        layer.layer_weights(0).bias_z.fill_(-1.0)  # a zero input row encodes to exactly 0
    case = random_case(B, T, d, h, N, trace, True, True, True)
    case[0][: B // 2, T // 2] = 0
    assert not encode(case[0], layer.layer_weights(0), layer.hyper.ln_eps)[0, T // 2].any()
    assert_native_matches(layer, case, run(layer, *case, "torch"))


@needs_native
@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_native_matches_the_reference_where_the_clip_acts(trace):
    B, T, d, h, N = 10, 21, 5, 40, 8  # 21 steps: two checkpoint chunks
    layer = make_layer(d, h, N, trace, hebbian_lr=0.5, trace_clip=0.02)
    case = random_case(B, T, d, h, N, trace, True, True, True)
    ref = run(layer, *case, "torch")
    assert (ref[2].abs() == 0.02).any() and (ref[2].abs() < 0.02).any()
    assert_native_matches(layer, case, ref)


@needs_native
@pytest.mark.parametrize("trace, update", [("per_sample", "paper"), ("shared", "paper"),
                                           ("per_sample", "residual"), ("per_sample", "gated")])
def test_float32_at_the_paper_shapes_is_as_accurate_as_the_reference_in_float32(trace,
                                                                                update):
    # float32 gradients of this layer are ill-conditioned (a LayerNorm over a mostly-zero
    # ReLU output divides by a tiny deviation), so the measure is the reference's own float32
    # error against float64: the kernels may not be worse. In a sample or two a unit can sit
    # on its ReLU's edge, where any rounding of the other path flips it and moves that
    # sample's gradient by a few percent; those samples are left out (a kernel bug moves most)
    B, T, d, h, N = 128, 28, 28, 128, 64
    layer = make_layer(d, h, N, trace, hidden_update=update)
    case = random_case(B, T, d, h, N, trace, False, False, True)
    case32 = [None if t is None else t.float() for t in case]
    exact = run(layer, *case, "torch")
    got = run(layer.float(), *case32, "native")
    grad_x_error = (got[5].double() - exact[5]).abs().amax(dim=(1, 2))  # (B,)
    flipped = grad_x_error > 1e3 * grad_x_error.median()
    assert flipped.sum() <= 2
    if flipped.any():
        case = [case[0][~flipped], None, None, case[3]]
        case32 = [None if t is None else t.float() for t in case]
        exact = run(layer.double(), *case, "torch")
        got = run(layer.float(), *case32, "native")
    ref32 = run(layer, *case32, "torch")
    params = {**layer.layer_weights(0)._asdict(), **layer._layer_options("_l0")._asdict()}
    names = ["output", "h", "trace", "attention", "recall", "grad x",
             *(f"grad {n}" for n, p in params.items() if p is not None)]
    for name, g, r, e in zip(names, got, ref32, exact, strict=True):
        err, ref_err = ((t.double() - e).abs().max().item() for t in (g, r))
        assert err <= 2 * ref_err + 1e-6 * e.abs().max().item(), (
            f"{name}: error {err:.2e} against the reference's {ref_err:.2e}")


@needs_native
@pytest.mark.parametrize("trace, update", [("per_sample", "paper"), ("shared", "paper"),
                                           ("per_sample", "gated")])
def test_step_by_step_equals_one_pass(trace, update):
    """Outputs, final state and every gradient, one step a call against the whole sequence."""
    layer = make_layer(4, 40, 8, trace, hidden_update=update).eval()
    x = torch.randn(9, 11, 4, dtype=torch.double, requires_grad=True)
    params = list(layer.parameters())
    probe = torch.randn(9, 11, 40, dtype=torch.double)

    def outputs_and_grads(out, state):
        loss = (out * probe).sum() + state.h.sin().sum() + state.trace.sin().sum()
        return (out, state.h, state.trace, *torch.autograd.grad(loss, [x, *params]))

    whole = outputs_and_grads(*layer(x))
    hx, steps = None, []
    for t in range(11):
        o, hx = layer(x[:, t : t + 1], hx)
        steps.append(o)
    assert layer.last_path == ("native",)
    stepped = outputs_and_grads(torch.cat(steps, dim=1), hx)
    for got, expected in zip(stepped, whole, strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_nan_input_propagates_as_nan_on_every_backend(trace, backend):
    layer = make_layer(4, 40, 8, trace).eval()
    x = torch.randn(9, 7, 4, dtype=torch.double)
    x[2, 3, 1] = float("nan")
    x[5, 0, 0] = float("inf")
    out, final, _ = engram_layer(x, layer.layer_weights(0), layer.hyper, None, True,
                                 backend=backend)
    nan_out = out.isnan()
    if trace == "per_sample":  # like nn.LSTM: a sample's outputs from the bad step on
        assert nan_out[2, 3:].all() and nan_out[5].all() and not nan_out[2, :3].any()
        assert not nan_out[[0, 1, 3, 4, 6, 7, 8]].any()
        assert final.h.isnan()[[2, 5]].all() and not final.h.isnan()[[0, 1, 3, 4, 6, 7, 8]].any()
    else:  # the shared trace carries it to every sample
        assert nan_out[:, 1:].all() and final.h.isnan().all() and final.trace.isnan().any()


@needs_native
@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_double_backward_raises_on_native_and_works_on_torch(trace):
    layer = make_layer(3, 40, 8, trace)
    x = torch.randn(9, 5, 3, dtype=torch.double, requires_grad=True)
    for backend in ("torch", "native"):
        out, _, _ = engram_layer(x, layer.layer_weights(0), layer.hyper, backend=backend)
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        if backend == "torch":
            torch.autograd.grad(gx.sum(), x)
        else:
            with pytest.raises(RuntimeError, match="no autograd formula was registered"):
                torch.autograd.grad(gx.sum(), x)


@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_meta_tensors_infer_shapes(trace):
    layer = Engram(3, 40, 2, batch_first=True, memory_size=8, trace=trace, device="meta")
    out, state = layer(torch.empty(9, 5, 3, device="meta"))
    assert out.shape == (9, 5, 40) and out.device.type == "meta"
    assert state.trace.shape == ((2, 9, 8, 40) if trace == "per_sample" else (2, 8, 40))


@needs_native
@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_fake_tensors_trace_the_native_operators(trace):
    from torch._subclasses.fake_tensor import FakeTensorMode

    layer = make_layer(3, 40, 8, trace, dtype=torch.float32)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(9, 30, 3)
        out, final, mem = engram_layer(x, layer.layer_weights(0), layer.hyper, None, True,
                                       backend="native")
        out.sum().backward()
    assert out.shape == (9, 30, 40) and mem.attention.shape == (9, 30, 8)


class _Classifier(torch.nn.Module):
    def __init__(self, trace):
        super().__init__()
        self.rnn = make_layer(6, 40, 8, trace, dtype=torch.float32)
        self.head = torch.nn.Linear(40, 3)

    def forward(self, x, lengths=None):
        out, _ = self.rnn(x, lengths=lengths)
        return self.head(out.sum(1))  # padded steps output zeros


@needs_native
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_compiled_fullgraph_training_matches_eager(trace, with_lengths):
    model = _Classifier(trace)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x, y = torch.randn(9, 7, 6), torch.randint(0, 3, (9,))
    lengths = torch.tensor([7, 1, 5, 7, 3, 2, 6, 4, 7]) if with_lengths else None
    grads = []
    for fn in (model, compiled):
        loss = torch.nn.functional.cross_entropy(fn(x, lengths), y)
        grads.append((loss, *torch.autograd.grad(loss, list(model.parameters()))))
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected)


@needs_native
def test_strided_parameters_are_read_as_their_values():
    # torch.func.functional_call may hand the layer parameters that are strided views
    layer = make_layer(3, 40, 8, "per_sample", dtype=torch.float32)
    x = torch.randn(9, 6, 3)
    strided = {n: torch.stack([p, torch.zeros_like(p)], dim=-1)[..., 0]
               for n, p in layer.named_parameters()}
    assert not strided["bias_c_l0"].is_contiguous()
    out, state = functional_call(layer, strided, (x,))
    ref, ref_state = layer(x)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    torch.testing.assert_close(state.trace, ref_state.trace, atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_a_parameter_of_another_dtype_is_an_error(backend):
    if backend == "native" and not native.available():
        pytest.skip("no C compiler here")
    layer = make_layer(3, 40, 8, "per_sample", dtype=torch.float32)
    weights = layer.layer_weights(0)
    weights = weights._replace(bias_c=weights.bias_c.double())
    with pytest.raises(TypeError, match="expected bias_c of dtype torch.float32"):
        engram_layer(torch.randn(2, 3, 3), weights, layer.hyper, backend=backend)


@needs_native
@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_same_seed_same_training_run_with_or_without_the_kernels(trace, kernel_env):
    layer = make_layer(4, 40, 8, trace, dtype=torch.float32, trace_noise=0.05).train()
    x = torch.randn(9, 10, 4)
    outs = []
    for setting in ("1", "0"):  # "0": what a machine without a C compiler runs
        kernel_env(ENN_NATIVE=setting)
        torch.manual_seed(3)
        out, state = layer(x)
        outs.append((out, state.trace, layer.last_path))
    assert outs[0][2] == ("native",) and outs[1][2] == ("torch",)
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=1e-6, rtol=1e-5)


def test_training_noise_is_one_draw_per_step_shared_by_the_batch():
    layer = make_layer(4, 6, 5, "per_sample", trace_noise=0.01).train()
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
    torch.manual_seed(5)
    noise = 0.01 * torch.randn(7, 5, 6, dtype=torch.double)  # (T, N, h) from torch's generator
    ref, _, _ = engram_layer(x, layer.layer_weights(0), layer.hyper, noise=noise,
                             backend="torch")
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("backend", ["native", "triton"])
def test_recording_the_traces_on_a_kernel_backend_is_an_error(backend):
    layer = make_layer(3, 40, 8, "per_sample", dtype=torch.float32)
    with pytest.raises(ValueError, match=f"the {backend} backend does not record"):
        engram_layer(torch.randn(2, 3, 3), layer.layer_weights(0), layer.hyper,
                     record_traces=True, backend=backend)
    _, _, mem = engram_layer(torch.randn(2, 3, 3), layer.layer_weights(0), layer.hyper,
                             record_traces=True)
    assert mem.traces is not None and mem.traces.shape == (2, 3, 8, 40)
