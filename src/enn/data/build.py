"""From a ``ModelConfig`` and the data's shape to a model; baseline sizing at equal parameters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from .backbones import count_parameters, make_backbone
from .classifier import SequenceClassifier
from .config import ModelConfig
from .language_model import LanguageModel


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about its data (read off a data module)."""

    kind: str  # "classification" or "language_model"
    num_classes: int
    input_size: int | None = None  # float features per step
    vocab_size: int | None = None  # token inputs

    @classmethod
    def of(cls, dm) -> DataShape:
        return cls(dm.kind, dm.num_classes, dm.input_size, dm.vocab_size)


def build_model(cfg: ModelConfig, shape: DataShape) -> nn.Module:
    model = _build(cfg, shape)
    if cfg.init_range > 0:
        for p in model.parameters():
            nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
    if cfg.head_init == "glorot":
        for layer in output_layers(model):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def output_layers(model: nn.Module) -> list[nn.Linear]:
    """The dense layers after the recurrent backbone (the reference's Keras ``Dense``):
    the classifier's head and attention score, the language model's decoder (unless tied)."""
    if isinstance(model, LanguageModel):
        tied = model.decoder is not None and model.decoder.weight is model.embedding.weight
        return [] if model.decoder is None or tied else [model.decoder]
    return [model.head] + ([model.pool.score] if model.pool is not None else [])


def _build(cfg: ModelConfig, shape: DataShape) -> nn.Module:
    tokens = shape.vocab_size is not None
    backbone = make_backbone(
        cfg.backbone,
        cfg.embed_dim if tokens else shape.input_size,
        tuple(cfg.hidden_sizes),
        cfg.layer_dropout,
        **(cfg.engram_kwargs() if cfg.backbone == "engram" else {}),
    )
    if shape.kind == "language_model":
        return LanguageModel(
            backbone,
            shape.vocab_size,
            cfg.embed_dim,
            cfg.dropout,
            cfg.tie_weights,
            tuple(cfg.adaptive_cutoffs) or None,
        )
    return SequenceClassifier(
        backbone,
        shape.num_classes,
        cfg.dropout,
        cfg.pooling,
        vocab_size=shape.vocab_size,
        embed_dim=cfg.embed_dim if tokens else None,
    )


def match_baseline_width(cfg: ModelConfig, shape: DataShape, target_params: int) -> ModelConfig:
    """Scale a baseline's widths (keeping their ratios) so its parameter count is closest to
    ``target_params`` (usually the ENN's), by bisection on the scale."""
    if cfg.backbone == "engram":
        return cfg
    base = tuple(cfg.hidden_sizes)

    def sized(scale: float) -> ModelConfig:
        sizes = tuple(max(1, round(h * scale)) for h in base)
        return dataclasses.replace(cfg, hidden_sizes=sizes)

    def params(scale: float) -> int:
        return count_parameters(build_model(sized(scale), shape))

    lo, hi = 0.01, 1.0
    while params(hi) < target_params:
        hi *= 2
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if params(mid) < target_params else (lo, mid)
    best = min((lo, hi), key=lambda s: abs(params(s) - target_params))
    return sized(best)
