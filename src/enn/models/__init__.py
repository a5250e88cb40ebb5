"""Models: backbones (ENN and the paper's baselines), classifier, language model, configs."""

from .backbones import BACKBONES, count_parameters, detach_state, make_backbone
from .build import build_model, match_baseline_width
from .classifier import SequenceClassifier
from .config import PRESETS, ConfigError, ModelConfig, RunConfig, TrainConfig, resolve
from .language_model import LanguageModel

__all__ = [
    "BACKBONES",
    "PRESETS",
    "ConfigError",
    "LanguageModel",
    "ModelConfig",
    "RunConfig",
    "SequenceClassifier",
    "TrainConfig",
    "build_model",
    "count_parameters",
    "detach_state",
    "make_backbone",
    "match_baseline_width",
    "resolve",
]
