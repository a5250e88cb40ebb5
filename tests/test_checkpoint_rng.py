"""The checkpoint hooks save and restore every RNG, CUDA's too, in weights-only files."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from enn.models import TrainConfig
from enn.train.lit import LitSequenceModel


def lit() -> LitSequenceModel:
    return LitSequenceModel(nn.Linear(1, 1), "classification", TrainConfig())


def saved(tmp_path) -> dict:
    """A checkpoint written by the save hook, read back the weights-only way."""
    checkpoint = {}
    lit().on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "x.ckpt")
    return torch.load(tmp_path / "x.ckpt", weights_only=True)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA with two devices, the second this process's (a DDP rank 1), each generator's
    state a byte tensor, on this CPU-only machine."""
    gen = {0: torch.zeros(16, dtype=torch.uint8), 1: torch.arange(16, dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": gen[1].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device="cuda": gen.update({1: state.clone()}))
    return gen


def test_cuda_generator_state_round_trips_through_the_hooks(tmp_path, fake_cuda):
    checkpoint = saved(tmp_path)
    assert torch.equal(checkpoint["enn_rng"]["cuda"], torch.arange(16, dtype=torch.uint8))
    fake_cuda[1] = torch.ones(16, dtype=torch.uint8)  # the run draws on
    lit().on_load_checkpoint(checkpoint)
    assert torch.equal(fake_cuda[1], torch.arange(16, dtype=torch.uint8))
    assert torch.equal(fake_cuda[0], torch.zeros(16, dtype=torch.uint8))  # another rank's


def test_checkpoint_without_cuda_state_still_loads(tmp_path, fake_cuda):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    checkpoint = saved(tmp_path)
    checkpoint["enn_rng"].pop("cuda")  # as written by a CPU run, or before CUDA was saved
    expected = torch.rand(3), np.random.rand(3), random.random()
    fake_cuda[1] = torch.ones(16, dtype=torch.uint8)
    lit().on_load_checkpoint(checkpoint)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3),
                                                                      expected[1])
    assert random.random() == expected[2]
    assert torch.equal(fake_cuda[1], torch.ones(16, dtype=torch.uint8))  # untouched


def test_cpu_run_saves_no_cuda_state(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert set(saved(tmp_path)["enn_rng"]) == {"torch", "numpy", "python"}
