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
    cell = EngramCell(4, 8, memory_size=5)
    with pytest.raises(ValueError, match=r"hx.trace of shape \(2, 5, 8\)"):
        cell(torch.randn(2, 4), EngramState(torch.zeros(2, 8), torch.zeros(5, 8)))


def test_bad_lengths(layer):
    x = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match=r"lengths of shape \(2,\)"):
        layer(x, lengths=torch.tensor([3]))
    with pytest.raises(ValueError, match=r"every length in \[1, 3\]"):
        layer(x, lengths=torch.tensor([3, 4]))
    with pytest.raises(TypeError, match="integer lengths"):
        layer(x, lengths=torch.tensor([3.0, 2.0]))
