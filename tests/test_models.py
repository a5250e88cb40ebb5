"""The plain nn.Module models: classifier, language model, baselines, parameter matching."""

import warnings

import pytest
import torch

from enn.models import (
    LanguageModel,
    SequenceClassifier,
    count_parameters,
    make_backbone,
    match_baseline_width,
    resolve,
)
from enn.models.build import DataShape, build_model


@pytest.mark.parametrize("kind", ["engram", "rnn", "gru", "lstm"])
@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_classifier_ignores_padding(kind, pooling):
    if kind == "engram":
        backbone = make_backbone(kind, 5, (12,), memory_size=4, trace_noise=0.0)
    else:
        backbone = make_backbone(kind, 5, (12, 6))
    model = SequenceClassifier(backbone, 3, pooling=pooling).eval()
    x = torch.randn(2, 7, 5)
    lengths = torch.tensor([7, 4])
    logits = model(x, lengths)
    padded = x.clone()
    padded[1, 4:] = 50.0
    torch.testing.assert_close(model(padded, lengths), logits)
    torch.testing.assert_close(model(x[1:, :4])[0], logits[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cutoffs", [(), (10, 30)], ids=["full", "adaptive"])
def test_language_model_loss_in_reduced_precision(cutoffs):
    lm = LanguageModel(make_backbone("lstm", 16, (16,)), 50, 16, adaptive_cutoffs=cutoffs).eval()
    tokens = torch.randint(0, 50, (3, 6))
    hidden, _ = lm(tokens)
    reference = lm.nll(hidden, tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # train.precision=bf16-mixed
        hidden_bf16, _ = lm(tokens)
        nll = lm.nll(hidden_bf16, tokens)
    assert nll.dtype == torch.float32
    torch.testing.assert_close(nll, reference, atol=0.05, rtol=0.02)
    lm = lm.to(torch.bfloat16)  # train.precision=bf16-true: the loss still in float32
    hidden, _ = lm(tokens)
    nll = lm.nll(hidden, tokens)
    assert nll.dtype == torch.float32
    if not cutoffs:  # the bf16 logits' exact float32 loss, not a rounded one
        logp = torch.log_softmax(lm.logits(hidden).float(), -1)
        torch.testing.assert_close(nll, -logp.gather(-1, tokens[..., None]).squeeze(-1))


def test_language_model_full_tied_and_adaptive_softmax():
    backbone = make_backbone("engram", 16, (16,), memory_size=4)
    full = LanguageModel(backbone, 50, 16, tie_weights=True).eval()
    assert full.decoder.weight is full.embedding.weight
    tokens = torch.randint(0, 50, (3, 6))
    hidden, state = full(tokens)
    nll = full.nll(hidden, tokens)
    logp = torch.log_softmax(full.logits(hidden), -1)
    torch.testing.assert_close(nll, -logp.gather(-1, tokens[..., None]).squeeze(-1))
    # the carried state continues the stream exactly
    h1, s1 = full(tokens[:, :3])
    h2, _ = full(tokens[:, 3:], s1)
    torch.testing.assert_close(torch.cat([h1, h2], 1), hidden, atol=1e-5, rtol=1e-5)

    adaptive = LanguageModel(
        make_backbone("lstm", 16, (16,)), 50, 16, adaptive_cutoffs=(10, 30)
    ).eval()
    hidden, _ = adaptive(tokens)
    nll = adaptive.nll(hidden, tokens)
    logp = adaptive.logits(hidden)  # (B, T, V) log-probabilities
    torch.testing.assert_close(nll, -logp.gather(-1, tokens[..., None]).squeeze(-1))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 6))
    with pytest.raises(ValueError, match="tie_weights needs embed_dim"):
        LanguageModel(make_backbone("gru", 16, (8,)), 50, 16, tie_weights=True)
    with pytest.raises(ValueError, match=r"below the vocabulary size 50, got \[10, 50\]"):
        LanguageModel(make_backbone("gru", 16, (8,)), 50, 16, adaptive_cutoffs=(10, 50))


def test_match_params_sizes_a_baseline_to_the_enn():
    shape = DataShape("classification", 10, input_size=28)
    target = count_parameters(build_model(resolve("mnist", "engram").model, shape))
    cfg = match_baseline_width(resolve("mnist", "lstm").model, shape, target)
    got = count_parameters(build_model(cfg, shape))
    assert abs(got - target) / target < 0.02
    assert (
        cfg.hidden_sizes[0] == 2 * cfg.hidden_sizes[1]
        or abs(cfg.hidden_sizes[0] - 2 * cfg.hidden_sizes[1]) <= 1
    )


def test_embed_dim_on_float_inputs_warns():
    from enn.models import ModelConfig

    floats = DataShape("classification", 3, input_size=5)
    cfg = ModelConfig(backbone="lstm", embed_dim=64)
    with pytest.warns(UserWarning, match="model.embed_dim=64 has no effect on float inputs"):
        build_model(cfg, floats)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model(cfg, DataShape("classification", 3, vocab_size=20))  # token inputs
        build_model(ModelConfig(backbone="lstm"), floats)  # the default


def test_language_model_loss_keeps_float64():
    lm = LanguageModel(make_backbone("lstm", 16, (16,)), 50, 16).double()
    tokens = torch.randint(0, 50, (3, 6))
    hidden, _ = lm(tokens)
    assert lm.nll(hidden, tokens).dtype == torch.float64
