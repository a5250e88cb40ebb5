"""Memory statistics, attribution plumbing and slot removal against hand-computed values."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from enn.analysis import metrics
from enn.models import ModelConfig, build_model
from enn.models.build import DataShape
from enn.nn import Engram
from enn.ops.engram import encode


def tiny_classifier(trace: str = "per_sample", memory_size: int = 6, layers: int = 1):
    cfg = ModelConfig(hidden_sizes=(8,) * layers, memory_size=memory_size, trace=trace)
    return build_model(cfg, DataShape("classification", num_classes=3, input_size=5))


def test_trace_stats_by_hand():
    trace = torch.tensor([[0.0, 0.005], [-0.02, 0.05]])
    s = metrics.trace_stats(trace)
    assert s["min"] == pytest.approx(-0.02)
    assert s["max"] == pytest.approx(0.05)
    assert s["mean_abs"] == pytest.approx((0 + 0.005 + 0.02 + 0.05) / 4)
    assert s["std"] == pytest.approx(np.std([0.0, 0.005, -0.02, 0.05]))
    assert s["sparsity"] == pytest.approx(0.5)


def test_attention_statistics_by_hand():
    uniform = torch.full((2, 3, 4), 0.25)
    assert metrics.attention_entropy(uniform) == pytest.approx(math.log(4))
    assert metrics.effective_slots(uniform) == pytest.approx(4.0)
    one_hot = torch.eye(4)[[1, 1, 1, 2]]  # (4 rows, 4 slots)
    assert metrics.attention_entropy(one_hot) == pytest.approx(0.0, abs=1e-9)
    assert metrics.effective_slots(one_hot) == pytest.approx(1.0)
    np.testing.assert_allclose(metrics.slot_win_frequency(one_hot), [0, 0.75, 0.25, 0])
    s = metrics.attention_stats(one_hot)
    assert s["top_slot"] == 1 and s["top_slot_share"] == pytest.approx(0.75)


def test_class_slot_usage_by_hand():
    attention = torch.tensor(
        [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]
    )  # (B=3, T=2, N=2)
    usage = metrics.class_slot_usage(attention, torch.tensor([0, 0, 1]), num_classes=3)
    np.testing.assert_allclose(usage[:2], [[0.75, 0.25], [0.0, 1.0]])
    assert np.isnan(usage[2]).all()


@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_attribution_matches_a_hand_gradient_for_one_step(trace):
    """T = 1 from zero state: the class logit depends on m_0 only through W_cm m_0, so
    d logit / d m_0 can be recomputed by hand; the scores sum to m_0 . that gradient."""
    model = tiny_classifier(trace).eval()
    x = torch.randn(4, 1, 5)
    att = metrics.slot_attribution(model, x)
    _, record = metrics.probe(model, x)
    engram = model.backbone.rnn
    w = engram.layer_weights(0)
    z = encode(x[:, 0], w, engram.hyper.ln_eps)  # (B, h)
    m = record.recall[:, 0].clone().requires_grad_(True)  # (B, h)
    w_cz, w_cm, _ = w.weight_c.split(8, dim=1)
    c = F.relu(F.linear(z, w_cz, w.bias_c) + F.linear(m, w_cm))  # (B, 3h)
    h = F.layer_norm(
        F.relu(F.linear(c, w.weight_o, w.bias_o)),
        (8,),
        w.ln_h_weight,
        w.ln_h_bias,
        engram.hyper.ln_eps,
    )  # (B, h)
    logits = model.head(h)  # (B, C)
    torch.testing.assert_close(logits, att.logits)
    (g,) = torch.autograd.grad(logits.gather(1, att.target[:, None]).sum(), m)
    torch.testing.assert_close(att.scores.sum(1), (g * m).sum(1), rtol=1e-4, atol=1e-6)
    assert att.scores.shape == (4, 6) and att.attention.shape == (4, 1, 6)


def test_attribution_of_a_stacked_engram_and_errors():
    model = tiny_classifier(layers=2)
    att = metrics.slot_attribution(model, torch.randn(2, 3, 5), layer=0)
    assert att.scores.shape == (2, 6)
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="one-layer"):
        metrics.remove_slots(model.backbone.rnn, [0])
    baseline = build_model(
        ModelConfig(backbone="gru", hidden_sizes=(8,)), DataShape("classification", 3, 5)
    )
    assert metrics.find_engram(baseline) is None
    with pytest.raises(ValueError, match="no Engram"):
        metrics.slot_attribution(baseline, torch.randn(2, 3, 5))


@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_remove_slots_keeps_rows_and_parameters(trace):
    engram = Engram(5, 8, batch_first=True, memory_size=6, trace=trace, top_k=5).eval()
    smaller = metrics.remove_slots(engram, [1, 4])
    assert smaller.memory_size == 4 and smaller.hyper.top_k == 4 and not smaller.training
    torch.testing.assert_close(smaller.memory_l0, engram.memory_l0[[0, 2, 3, 5]])
    torch.testing.assert_close(smaller.weight_c_l0, engram.weight_c_l0)
    x = torch.randn(2, 3, 5)
    _, state, record = smaller.forward_with_intermediates(x)
    assert record.attention.shape == (2, 3, 4)
    torch.testing.assert_close(record.attention.sum(-1), torch.ones(2, 3))
    assert state.trace.shape[-2] == 4
    same = metrics.remove_slots(Engram(5, 8, batch_first=True, memory_size=6).eval(), [])
    with pytest.raises(ValueError, match="every"):
        metrics.remove_slots(engram, range(6))
    assert same.memory_size == 6


def test_without_slots():
    model = tiny_classifier().eval()
    smaller = metrics.without_slots(model, [2])
    assert smaller.backbone.rnn.memory_size == 5 and model.backbone.rnn.memory_size == 6
    x = torch.randn(3, 4, 5)
    torch.testing.assert_close(smaller.head(torch.ones(1, 8)), model.head(torch.ones(1, 8)))
    assert smaller(x).shape == (3, 3)
    assert model.backbone.rnn.forward.__func__ is Engram.forward  # recording undone


def test_ablation_numbers_are_consistent():
    model = tiny_classifier().eval()
    x = torch.randn(1, 4, 5)
    att = metrics.slot_attribution(model, x)
    result = metrics.ablation(model, x, att.scores[0], int(att.target[0]), k=2, draws=5)
    assert result.prob == pytest.approx(float(att.prob[0]), abs=1e-6)
    assert result.top_slots == att.scores[0].topk(2).indices.tolist()
    d = result.as_dict()
    assert d["drop_top"] == pytest.approx(result.prob - result.prob_top)
    assert 0 <= d["prob_random"] <= 1 and d["draws"] == 5
    with pytest.raises(ValueError, match="k must be"):
        metrics.ablation(model, x, att.scores[0], 0, k=6)


def test_removing_slots_keeps_every_option_and_per_slot_parameter():
    from enn.models.config import ASSOCIATIVE

    engram = Engram(5, 12, batch_first=True, **{**ASSOCIATIVE, "memory_size": 6,
                                                "sharpness": "slot", "write_key": "mix"}).eval()
    with torch.no_grad():
        engram.log_sharpness_l0.copy_(torch.arange(6.0) / 3)
    smaller = metrics.remove_slots(engram, [1, 4])
    assert smaller.options() == {**engram.options(), "memory_size": 4}
    torch.testing.assert_close(smaller.log_sharpness_l0, engram.log_sharpness_l0[[0, 2, 3, 5]])
    torch.testing.assert_close(smaller.memory_l0, engram.memory_l0[[0, 2, 3, 5]])
    x = torch.randn(2, 7, 5)
    torch.testing.assert_close(metrics.remove_slots(engram, [])(x)[0], engram(x)[0])
