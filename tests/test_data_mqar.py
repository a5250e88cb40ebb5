"""The multi-query associative-recall task and the per-step classifier it trains."""

import numpy as np
import pytest
import torch

from enn.data import get_datamodule
from enn.data.mqar import NO_TARGET, generate
from enn.models import build_model, resolve
from enn.models.build import DataShape
from enn.models.config import ConfigError, apply_overrides, validate


def test_every_key_is_asked_once_after_the_pairs_and_answered_by_its_value():
    n_keys, n_values, pairs, length = 16, 8, 5, 24
    tokens, targets = generate(200, pairs, length, n_keys, n_values, np.random.default_rng(0))
    blank = n_keys + n_values
    for row, target in zip(tokens, targets, strict=True):
        keys, values = row[0 : 2 * pairs : 2], row[1 : 2 * pairs : 2] - n_keys
        assert len(set(keys)) == pairs and (values >= 0).all()
        asked = np.flatnonzero(target != NO_TARGET)
        assert len(asked) == pairs and asked.min() >= 2 * pairs
        assert sorted(row[asked]) == sorted(keys)
        stored = dict(zip(keys, values, strict=True))
        assert all(target[t] == stored[row[t]] for t in asked)
        rest = np.setdiff1d(np.arange(2 * pairs, length), asked)
        assert (row[rest] == blank).all()


def test_the_data_module_shapes_seeds_and_bad_options():
    dm = get_datamodule("mqar", pairs=4, length=20, n_train=64, n_val=8, n_test=8, seed=1)
    dm.setup()
    x, y = dm.datasets["train"].tensors
    assert x.shape == (64, 20, 32 + 32 + 1) and y.shape == (64, 20) and dm.num_classes == 32
    again = get_datamodule("mqar", pairs=4, length=20, n_train=64, n_val=8, n_test=8, seed=1)
    again.setup()
    assert torch.equal(again.datasets["train"].tensors[1], y)
    with pytest.raises(ValueError, match="length must be an integer >= 12"):
        get_datamodule("mqar", pairs=4, length=11)
    with pytest.raises(ValueError, match="pairs must be at most n_keys=8"):
        get_datamodule("mqar", pairs=9, n_keys=8)


def test_the_classifier_predicts_every_step_and_the_config_requires_it():
    cfg = resolve("mqar", "engram", "associative")
    assert cfg.model.pooling == "each"
    model = build_model(cfg.model, DataShape("classification", 8, input_size=5))
    assert model(torch.randn(3, 7, 5)).shape == (3, 7, 8)
    with pytest.raises(ConfigError, match="pooling"):
        validate(apply_overrides(resolve("mqar", "lstm"), {"model.pooling": "last"}))
    with pytest.raises(ConfigError, match="pooling"):
        validate(apply_overrides(resolve("digits", "lstm"), {"model.pooling": "each"}))


def test_the_loss_and_accuracy_count_only_the_asked_steps():
    from enn.models import TrainConfig
    from enn.train.lit import LitSequenceModel

    class Fixed(torch.nn.Module):  # logits that answer class 1 everywhere
        def forward(self, x, lengths=None):
            return torch.tensor([0.0, 5.0]).expand(*x.shape[:2], 2)

        aux_loss = None

    lit = LitSequenceModel(Fixed(), "classification", TrainConfig())
    logged = {}
    lit.log = lambda name, value, **kw: logged.update({name: (float(value), kw["batch_size"])})
    y = torch.full((2, 4), NO_TARGET)
    y[0, 1], y[1, 3], y[1, 2] = 1, 1, 0
    lit._step((torch.zeros(2, 4, 3), y), "val")
    assert logged["val_acc"] == (pytest.approx(2 / 3), 3)
    expected = torch.nn.functional.cross_entropy(torch.tensor([[0.0, 5.0]] * 3),
                                                 torch.tensor([1, 1, 0]))
    assert logged["val_loss"][0] == pytest.approx(float(expected))


def test_sizes_beyond_the_machine_s_memory_are_refused(monkeypatch):
    from enn.data import mqar

    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2**18}  # a machine of 1 GiB
    monkeypatch.setattr(mqar.os, "sysconf", pages.__getitem__)
    with pytest.raises(ValueError, match=r"n_train=20000, n_keys=1000, length=64 need 5\.1 GiB "
                                         r"to generate, more than this machine's 1\.0 GiB; use "
                                         r"smaller sizes or encoding=tokens"):
        get_datamodule("mqar", n_keys=1000)
    assert get_datamodule("mqar", n_keys=1000, encoding="tokens").n_keys == 1000
    assert get_datamodule("mqar").input_size == 65  # the defaults need 0.3 GiB
