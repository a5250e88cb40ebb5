"""Bad arguments and inputs give errors that name the problem."""

import pytest
import torch

from enn import Engram, EngramCell, EngramState


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"memory_size": 0}, "memory_size"),
        ({"hebbian_lr": -0.1}, "hebbian_lr"),
        ({"trace_clip": 0.0}, "trace_clip"),
        ({"temperature": 0.0}, "temperature"),
        ({"trace_noise": -1.0}, "trace_noise"),
        ({"sparsity": -1.0}, "sparsity"),
        ({"dropout": 1.5}, "dropout"),
        ({"num_layers": 0}, "num_layers"),
        ({"trace": "global"}, "trace"),
        ({"init_state": "ones"}, "init_state"),
        ({"top_k": 100}, "top_k"),
        ({"hebbian_lr": float("nan")}, "hebbian_lr must be in .* got nan"),
        ({"trace_scale": float("inf")}, "trace_scale must be finite .* got inf"),
        ({"trace_decay": float("nan")}, "trace_decay"),
        ({"sparsity": float("inf")}, "sparsity"),
        ({"cosine_eps": float("nan")}, "cosine_eps"),
        ({"temperature": float("inf")}, "temperature must be finite"),
        ({"dropout": float("nan")}, "dropout"),
    ],
)
def test_invalid_hyper_parameters_raise_value_error_naming_them(kwargs, match):
    args = {"input_size": 4, "hidden_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        Engram(**args)


@pytest.fixture
def layer():
    return Engram(4, 8, memory_size=5).eval()


def test_wrong_rank(layer):
    with pytest.raises(ValueError, match="expected input of 2 .* or 3 .* dimensions, got 4"):
        layer(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="got 1"):
        layer(torch.randn(4))


def test_wrong_feature_size(layer):
    with pytest.raises(ValueError, match=r"input_size=4, got 7"):
        layer(torch.randn(3, 2, 7))


def test_input_of_another_dtype_than_the_layer(layer):
    with pytest.raises(ValueError, match="expected input of dtype torch.float32 .* got "
                                         "torch.float64"):
        layer(torch.randn(3, 2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="got torch.bfloat16"):
        EngramCell(4, 8)(torch.randn(2, 4, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts it: no error
        assert layer(torch.randn(3, 2, 4, dtype=torch.bfloat16))[0].dtype == torch.float32
        # but not float64, on either side
        with pytest.raises(ValueError, match="float32 .* got torch.float64"):
            layer(torch.randn(3, 2, 4, dtype=torch.float64))
        with pytest.raises(ValueError, match="float64 .* got torch.float32"):
            Engram(4, 8).double()(torch.randn(3, 2, 4))


def test_integer_input(layer):
    with pytest.raises(TypeError, match="floating-point input, got torch.int64"):
        layer(torch.ones(3, 2, 4, dtype=torch.long))


def test_empty_sequence_and_batch(layer):
    with pytest.raises(ValueError, match="non-empty sequence"):
        layer(torch.randn(0, 2, 4))
    with pytest.raises(ValueError, match="non-empty batch"):
        layer(torch.randn(3, 0, 4))


def test_mismatched_state_shapes(layer):
    x = torch.randn(3, 2, 4)
    good = EngramState(torch.zeros(1, 2, 8), torch.zeros(1, 2, 5, 8))
    layer(x, good)
    with pytest.raises(ValueError, match=r"hx.h of shape \(1, 2, 8\), got \(1, 3, 8\)"):
        layer(x, EngramState(torch.zeros(1, 3, 8), good.trace))
    with pytest.raises(ValueError, match=r"hx.trace of shape \(1, 2, 5, 8\), got \(1, 5, 8\)"):
        layer(x, EngramState(good.h, torch.zeros(1, 5, 8)))
    with pytest.raises(TypeError, match="EngramState"):
        layer(x, torch.zeros(1, 2, 8))
    with pytest.raises(TypeError, match="expected hx.h to be a Tensor, got list"):
        layer(x, ([0.0] * 8, good.trace))
    cell = EngramCell(4, 8, memory_size=5)
    with pytest.raises(ValueError, match=r"hx.trace of shape \(2, 5, 8\)"):
        cell(torch.randn(2, 4), EngramState(torch.zeros(2, 8), torch.zeros(5, 8)))
    # unbatched: the shapes the caller passed, not the batch of one made of them
    with pytest.raises(ValueError, match=r"hx.h of shape \(8,\), got \(7,\)"):
        cell(torch.randn(4), (torch.zeros(7), torch.zeros(5, 8)))
    with pytest.raises(ValueError, match=r"hx.h of shape \(8,\), got \(3, 8\)"):
        cell(torch.randn(4), cell(torch.randn(3, 4)))
    state = cell(torch.randn(4), (torch.zeros(8), torch.zeros(5, 8)))
    assert state.h.shape == (8,) and state.trace.shape == (5, 8) and state.key.shape == (8,)


def test_bad_lengths(layer):
    x = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match=r"lengths of shape \(2,\)"):
        layer(x, lengths=torch.tensor([3]))
    with pytest.raises(ValueError, match=r"every length in \[1, 3\]"):
        layer(x, lengths=torch.tensor([3, 4]))
    with pytest.raises(TypeError, match="integer lengths"):
        layer(x, lengths=torch.tensor([3.0, 2.0]))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_lengths_of_any_integer_dtype(dtype):
    layer = Engram(4, 8, memory_size=5, batch_first=True).eval()
    x = torch.randn(2, 5, 4)
    ref, ref_state = layer(x, lengths=torch.tensor([5, 3]))
    out, state = layer(x, lengths=torch.tensor([5, 3], dtype=dtype))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(state.h, ref_state.h, rtol=0, atol=0)


@pytest.mark.parametrize("layer", [
    Engram(5, 8),
    Engram(5, 8, num_layers=2, bias=False, batch_first=True, dropout=0.2, trace="shared",
           memory_size=6, top_k=3, write_key="mix", delta_rule=True, trace_decay=0.9),
    EngramCell(37, 20, write_key="previous", address_trace=False, trace_clip=None,
               sharpness="slot", hidden_update="gated", neuromodulation=True),
])
def test_repr_names_every_setting_off_its_default(layer):
    """Like nn.LSTM's repr, and complete: the printed layer rebuilds the same layer."""
    text = repr(layer)
    rebuilt = eval(text, {"Engram": Engram, "EngramCell": EngramCell})
    assert rebuilt.options() == layer.options() and repr(rebuilt) == text
    for name in ("num_layers", "bias", "batch_first", "dropout"):
        assert getattr(rebuilt, name, None) == getattr(layer, name, None)
    assert text.startswith(f"{type(layer).__name__}({layer.input_size}, {layer.hidden_size}, ")
    assert ("hebbian_lr" in text) == (layer.hebbian_lr != 0.05)


def test_an_unknown_keyword_names_the_layer():
    with pytest.raises(TypeError, match="Engram: unexpected keyword argument.* proj_size"):
        Engram(4, 8, proj_size=2)
    with pytest.raises(TypeError, match="EngramCell: unexpected keyword argument.* "
                                        "bidirectional"):
        EngramCell(4, 8, bidirectional=True)
