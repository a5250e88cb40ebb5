"""Typed run configuration, the ``paper``, ``default`` and ``associative`` presets, and
``key=value`` overrides.

A run is ``RunConfig(task, preset, seed, model=ModelConfig, train=TrainConfig, data={...})``.
``resolve(task, backbone, preset)`` gives the preset's config; ``apply_overrides`` changes
fields by dotted name (``train.epochs=3``, ``model.hidden_sizes=64,64``): an unknown field or
a value of the wrong type is a ``ConfigError`` that names it. ``validate`` checks every value's
range (and that a requested accelerator exists) before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..nn.engram import INIT_STATES
from ..ops.engram import HIDDEN_UPDATES, SHARPNESS, TRACE_MODES, WRITE_KEYS
from .classifier import POOLINGS

PRESETS = ("paper", "default", "associative")
LM_TASKS = ("wikitext103", "wikitext2", "wikitext103-small", "ptb")
PER_STEP_TASKS = ("mqar",)  # a target at some steps of each sequence: pooling "each"
# The paper's epoch counts; tasks it did not run get MNIST's.
PAPER_EPOCHS = {"cifar10": 30, "wikitext103": 10, "wikitext2": 10, "wikitext103-small": 10}


class ConfigError(ValueError):
    """A bad configuration field or value."""


@dataclass
class ModelConfig:
    backbone: str = "engram"
    hidden_sizes: tuple[int, ...] = (128,)
    layer_dropout: float = 0.0  # between stacked recurrent layers
    dropout: float = 0.3  # before the output layer
    pooling: str = "last"  # classifier: "last", "attention" or "each" (a target per step)
    embed_dim: int = 128  # token inputs (language models, assoc with encoding=tokens)
    tie_weights: bool = False
    adaptive_cutoffs: tuple[int, ...] = ()  # language model: adaptive softmax when set
    head_init: str = "torch"  # output layers: torch's default, or "glorot" (Keras' Dense)
    init_range: float = 0.0  # > 0: every parameter drawn from U(-r, r) first (Zaremba et al.)
    # Engram only (ignored by the baselines)
    memory_size: int = 64
    trace: str = "per_sample"
    init_state: str = "zeros"
    hebbian_lr: float = 0.05
    trace_scale: float = 0.5
    temperature: float = 1.5
    sparsity: float = 0.1
    trace_clip: float | None = 0.1
    trace_noise: float = 0.001
    top_k: int | None = None
    sparsity_penalty: float = 0.0
    slot_diversity: float = 0.0
    layer_norm_eps: float = 1e-6
    trace_decay: float | None = None
    write_key: str = "current"
    address_trace: bool = True
    delta_rule: bool = False
    sharpness: str = "fixed"
    neuromodulation: bool = False
    cosine_eps: float = 0.0
    hidden_update: str = "paper"

    def engram_kwargs(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in ENGRAM_FIELDS}


# The ModelConfig fields that are Engram arguments (the baselines ignore them).
ENGRAM_FIELDS = (
    "memory_size", "trace", "init_state", "hebbian_lr", "trace_scale", "temperature",
    "sparsity", "trace_clip", "trace_noise", "top_k", "sparsity_penalty", "slot_diversity",
    "layer_norm_eps", "trace_decay", "write_key", "address_trace", "delta_rule", "sharpness",
    "neuromodulation", "cosine_eps", "hidden_update",
)
ENGRAM_KEYS = frozenset(f"model.{n}" for n in ENGRAM_FIELDS)  # as dotted config keys
# The associative memory (docs/model.md): each value written under the key before it, both
# addresses on the bank alone, a slow decay apart from a full-strength write clipped at 1, a
# learned sharpness, a smooth cosine and the gated hidden update (docs/results/memory.md).
ASSOCIATIVE = dict(
    write_key="previous", address_trace=False, trace_clip=1.0, trace_decay=0.98,
    hebbian_lr=1.0, sharpness="layer", temperature=0.1, sparsity=0.0, trace_noise=0.0,
    cosine_eps=1e-3, layer_norm_eps=1e-5, hidden_update="gated",
)


@dataclass
class TrainConfig:
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    clip_norm: float = 1.0
    clip: str = "global"  # "global" norm, or "per_variable" (Keras' clipnorm: each tensor)
    optimizer: str = "adam"  # "adam" or "sgd" (plain, no momentum)
    adam_eps: float = 1e-8  # torch's default; Keras' is 1e-7
    adam_fused: bool = False  # Adam's fused kernel: one pass over the parameters, several
    # times faster a step where they are many (language models); rounds differently
    schedule: str = "plateau"  # ReduceLROnPlateau, or "step": x lr_factor each epoch after
    decay_after: int = 4  # step schedule: epochs at the full rate
    lm_loss: str = "mean"  # language models: "mean" token NLL, or "sum_steps" (summed over
    # the window's steps, averaged over the batch rows: Zaremba et al.'s loss)
    patience: int = 3  # early stopping on validation loss, best weights restored
    lr_factor: float = 0.5  # ReduceLROnPlateau
    lr_patience: int = 2  # bad epochs in a row that lower the rate (Keras' count)
    min_lr: float = 1e-5
    precision: str = "32-true"  # any Lightning precision, e.g. "bf16-mixed"
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"  # "ddp" for multi-process data parallel
    num_workers: int = 0
    threads: int = 0  # CPU threads for torch (0 = torch's default); 1 suits small models
    limit_train_batches: float = 1.0  # fraction (<= 1) or number of batches per epoch
    limit_eval_batches: float = 1.0  # of each validation pass
    limit_test_batches: float = 1.0  # of the final test (below 1: a partial test score)


@dataclass
class RunConfig:
    task: str
    preset: str = "default"
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: dict[str, Any] = field(default_factory=dict)  # task options, checked by the loader

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        cfg = RunConfig(task=d["task"])
        apply_overrides(cfg, _flatten({k: v for k, v in d.items() if k != "task"}))
        return cfg


def config_differences(a: RunConfig, b: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every field where the two differ."""
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    keys = list(dict.fromkeys([*flat_a, *flat_b]))
    return [(k, flat_a.get(k), flat_b.get(k)) for k in keys if flat_a.get(k) != flat_b.get(k)]


def format_value(value: Any) -> str:
    """A value as it would be written on the command line (``64,64``, ``per_sample``)."""
    if isinstance(value, list | tuple):
        return ",".join(format_value(v) for v in value) if value else "[]"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def resolve(task: str, backbone: str, preset: str = "default", seed: int = 42) -> RunConfig:
    """The preset's configuration for one task and backbone (see docs/training.md)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    lm = task in LM_TASKS
    model = ModelConfig(backbone=backbone)
    if backbone != "engram":
        model.hidden_sizes = (128, 128) if lm else (128, 64)
    if lm:
        model.sparsity = 0.3
    if task in PER_STEP_TASKS:
        model.pooling = "each"
    train = TrainConfig(epochs=PAPER_EPOCHS.get(task, 15))
    if preset == "paper":
        model.trace, model.init_state = "shared", "random"
        # The reference's Keras recipe: clipnorm (each variable), Adam's epsilon, Dense init.
        train.clip, train.adam_eps, model.head_init = "per_variable", 1e-7, "glorot"
    if preset in ("default", "associative"):  # the same ENN (docs/results/memory.md)
        for name, value in ASSOCIATIVE.items():
            setattr(model, name, value)
    return RunConfig(task=task, preset=preset, seed=seed, model=model, train=train)


# Fields no override sets, and what sets them. The run's own, set by options: as overrides
# they would relabel the run without resolving the preset or task (the model would stay the
# old one's), or train another model than the one named. The data module's common arguments,
# which are not task options.
RUN_OPTIONS = {"task": "--task", "preset": "--preset", "seed": "--seed (enn compare: --seeds)",
               "model.backbone": "--model (enn compare: --models)",
               "data.batch_size": "train.batch_size", "data.num_workers": "train.num_workers",
               "data.seed": "--seed", "data.data_dir": "--data-dir", "data.download": "--download"}


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["train.epochs=3", ...]`` -> ``{"train.epochs": "3"}``; values are parsed later."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected an override of the form key=value, got {item!r}")
        out[key.strip().removeprefix("--")] = value
    return _refuse_run_options(out)


def _refuse_run_options(overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    for key, option in RUN_OPTIONS.items():
        if key in overrides:
            raise ConfigError(f"{where}set the {key} with {option}, "
                              f"not {key}={format_value(overrides[key])}")
    return overrides


def load_yaml_overrides(path: str) -> dict[str, Any]:
    import yaml  # lazily: the core install (the layer alone) has no PyYAML

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"--config: expected a YAML file, got the folder {path}") from None
    except OSError as err:
        raise ConfigError(f"--config: cannot read {path} ({err.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"--config: {path} is not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return _refuse_run_options(_flatten(data), f"--config {path}: ")


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Set dotted fields in place; strings are parsed as YAML scalars, then type-checked."""
    for key, raw in overrides.items():
        section, _, name = key.rpartition(".")
        if section == "data":
            cfg.data[name] = _parse(raw)
            continue
        target = {"": cfg, "model": cfg.model, "train": cfg.train}.get(section)
        fields = {f.name: f for f in dataclasses.fields(target)} if target is not None else {}
        if name not in fields or (target is cfg and name in ("model", "train", "data")):
            known = _known_fields(cfg)
            raise ConfigError(f"unknown config field {key!r}; known fields: {', '.join(known)}")
        hint = typing.get_type_hints(type(target))[name]
        setattr(target, name, _coerce(key, _parse(raw), hint))
    return cfg


def _known_fields(cfg: RunConfig) -> list[str]:
    """The fields an override may set."""
    names = [f"model.{f.name}" for f in dataclasses.fields(cfg.model)]
    names += [f"train.{f.name}" for f in dataclasses.fields(cfg.train)]
    return [n for n in names if n not in RUN_OPTIONS] + ["data.<task option>"]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("model", "train", "data"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parse(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    import yaml  # lazily: the core install (the layer alone) has no PyYAML

    if "," in raw and not raw.strip().startswith(("[", "{")):
        return [_parse(part) for part in raw.split(",") if part.strip()]
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type; ints widen to floats, lists become tuples."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        (elem, _) = typing.get_args(hint)
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(key, v, elem) for v in items)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-8 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # e.g. precision=32
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config field {key!r} expects {hint.__name__}, got {value!r}")
    return value


# --- ranges ---------------------------------------------------------------------------------
# Lightning's precision names (lightning.pytorch.trainer.connectors.accelerator_connector).
PRECISIONS = (
    "64-true", "64", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true",
    "bf16-true",
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "single_device")
HEAD_INITS = ("torch", "glorot")
CLIPS = ("global", "per_variable")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("plateau", "step")
LM_LOSSES = ("mean", "sum_steps")
MAX_SEED = 2**32 - 1  # numpy's seed range, which seed_everything uses
FLOAT16_TINY = 2.0**-14  # float16's smallest normal number


def validate(cfg: RunConfig) -> RunConfig:
    """Check every value's range; the first bad one is a ``ConfigError`` naming its key,
    what it expects and what it got."""
    from .backbones import BACKBONES

    m, t = cfg.model, cfg.train
    _choice("model.backbone", m.backbone, BACKBONES)
    if cfg.preset not in PRESETS:
        _bad("preset", f"one of {', '.join(PRESETS)}", cfg.preset)
    _int_range("seed", cfg.seed, 0, MAX_SEED)
    if not m.hidden_sizes:
        _bad("model.hidden_sizes", "at least one width", list(m.hidden_sizes))
    for width in m.hidden_sizes:
        _int_range("model.hidden_sizes", width, 1, what=list(m.hidden_sizes))
    if m.backbone == "engram" and len(set(m.hidden_sizes)) > 1:
        _bad("model.hidden_sizes", "one width for all Engram layers", list(m.hidden_sizes))
    _fraction("model.layer_dropout", m.layer_dropout)
    _fraction("model.dropout", m.dropout)
    _choice("model.pooling", m.pooling, POOLINGS)
    if (m.pooling == "each") != (cfg.task in PER_STEP_TASKS):
        expected = "each (a target per step)" if cfg.task in PER_STEP_TASKS else "last or attention"
        _bad("model.pooling", f"{expected} for task {cfg.task}", m.pooling)
    _int_range("model.embed_dim", m.embed_dim, 1)
    cutoffs = list(m.adaptive_cutoffs)
    if any(c < 1 for c in cutoffs) or cutoffs != sorted(set(cutoffs)):
        _bad("model.adaptive_cutoffs", "increasing positive integers", cutoffs)
    _choice("model.head_init", m.head_init, HEAD_INITS)
    _float_range("model.init_range", m.init_range, 0.0)
    _int_range("model.memory_size", m.memory_size, 1)
    _choice("model.trace", m.trace, TRACE_MODES)
    _choice("model.init_state", m.init_state, INIT_STATES)
    _float_range("model.hebbian_lr", m.hebbian_lr, 0.0, 1.0)
    for name in ("trace_scale", "sparsity", "trace_noise", "sparsity_penalty",
                 "slot_diversity"):
        _float_range(f"model.{name}", getattr(m, name), 0.0)
    for name in ("temperature", "layer_norm_eps"):
        _float_range(f"model.{name}", getattr(m, name), 0.0, strict=True)
    if m.trace_clip is not None:
        _float_range("model.trace_clip", m.trace_clip, 0.0, strict=True)
    if m.trace_decay is not None:
        _float_range("model.trace_decay", m.trace_decay, 0.0, 1.0)
    _float_range("model.cosine_eps", m.cosine_eps, 0.0)
    _choice("model.write_key", m.write_key, WRITE_KEYS)
    _choice("model.sharpness", m.sharpness, SHARPNESS)
    _choice("model.hidden_update", m.hidden_update, HIDDEN_UPDATES)
    if m.top_k is not None:
        _int_range("model.top_k", m.top_k, 1, m.memory_size, f"model.memory_size={m.memory_size}")
    _int_range("train.epochs", t.epochs, 1)
    _int_range("train.batch_size", t.batch_size, 1)
    _float_range("train.lr", t.lr, 0.0, strict=True)
    _float_range("train.clip_norm", t.clip_norm, 0.0)
    _choice("train.clip", t.clip, CLIPS)
    _choice("train.optimizer", t.optimizer, OPTIMIZERS)
    _float_range("train.adam_eps", t.adam_eps, 0.0, strict=True)
    _choice("train.schedule", t.schedule, SCHEDULES)
    _int_range("train.decay_after", t.decay_after, 0)
    _choice("train.lm_loss", t.lm_loss, LM_LOSSES)
    _int_range("train.patience", t.patience, 0)
    if not (math.isfinite(t.lr_factor) and 0 < t.lr_factor < 1):
        _bad("train.lr_factor", "a number in (0, 1)", t.lr_factor)
    _int_range("train.lr_patience", t.lr_patience, 0)
    _float_range("train.min_lr", t.min_lr, 0.0)
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("train.accelerator", t.accelerator, ACCELERATORS)
    _check_accelerator(t.accelerator)
    _check_precision(t)
    _int_range("train.devices", t.devices, 1)
    _choice("train.strategy", t.strategy, STRATEGIES)
    if cfg.task in LM_TASKS and t.strategy in ("ddp_spawn", "ddp_fork", "ddp_notebook"):
        # each process takes its rows of the token stream before the launch, by its rank,
        # which these launchers give the processes only after it
        _bad("train.strategy", "ddp or auto for a language model", t.strategy)
    _int_range("train.num_workers", t.num_workers, 0)
    _int_range("train.threads", t.threads, 0)
    for name in ("limit_train_batches", "limit_eval_batches", "limit_test_batches"):
        value = getattr(t, name)
        if not (math.isfinite(value) and value > 0 and (value <= 1 or value == int(value))):
            _bad(f"train.{name}", "a fraction in (0, 1] or a whole number of batches", value)
    _warn_without_effect(cfg)
    return cfg


# Fields that one kind of task alone reads: (dotted key, read by language models, what it does).
# model.embed_dim, read for token inputs alone, is build_model's to check (it knows the data).
KIND_FIELDS = (
    ("model.tie_weights", True, "it ties a language model's decoder to its embedding"),
    ("model.adaptive_cutoffs", True, "it gives a language model an adaptive softmax"),
    ("train.lm_loss", True, "it is a language model's loss"),
    ("model.pooling", False, "a language model predicts at every step; it pools a classifier's"),
)


def _warn_without_effect(cfg: RunConfig) -> None:
    """A warning for each field set on a task that ignores it; the defaults stay silent, as
    saved configs hold every field."""
    lm = cfg.task in LM_TASKS
    for key, for_lm, what in KIND_FIELDS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if for_lm != lm and value != getattr(type(getattr(cfg, section)), name):
            kind = "language-model" if lm else "classification"
            warnings.warn(f"{key}={format_value(value)} has no effect on task {cfg.task}, a "
                          f"{kind} task: {what}", stacklevel=2)


def _bad(key: str, expected: str, got: Any) -> None:
    raise ConfigError(f"config field {key!r} expects {expected}, got {got!r}")


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _bad(key, f"one of {', '.join(choices)}", value)


def _int_range(
    key: str, value: int, low: int, high: int | None = None, high_name: str | None = None,
    what: Any = None,
) -> None:
    if value < low or (high is not None and value > high):
        bound = f"an integer >= {low}" if high is None else (
            f"an integer from {low} to {high_name or high}"
        )
        _bad(key, bound, value if what is None else what)


def _float_range(
    key: str, value: float, low: float, high: float | None = None, strict: bool = False
) -> None:
    above = value > low if strict else value >= low
    if not (math.isfinite(value) and above and (high is None or value <= high)):
        bound = f"a number {'>' if strict else '>='} {low:g}"
        if high is not None:
            bound = f"a number in [{low:g}, {high:g}]"
        _bad(key, bound, value)


def _fraction(key: str, value: float) -> None:
    if not (math.isfinite(value) and 0 <= value < 1):
        _bad(key, "a probability in [0, 1)", value)


def _check_precision(t: TrainConfig) -> None:
    import torch

    if t.precision in ("16-mixed", "16") and t.optimizer == "adam" and t.adam_fused and t.clip_norm:
        # the fused step unscales the gradients itself, so the clip would see them scaled
        raise ConfigError(f"train.adam_fused=true cannot clip gradients under "
                          f"train.precision={t.precision} (the fused step unscales them "
                          f"itself, after the clip): expected train.adam_fused=false, or "
                          f"train.clip_norm=0")
    if t.precision in ("16-mixed", "16") and (
            t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())):
        # Lightning would run bf16-mixed instead, and the run's config would say 16-mixed
        _bad("train.precision", "bf16-mixed on the CPU (16-mixed needs a GPU)", t.precision)
    if t.precision == "16-true" and t.optimizer == "adam" and t.adam_eps < FLOAT16_TINY:
        # Adam's epsilon, cast to the parameters' float16, would be 0: NaN from the first step
        raise ConfigError(f"train.adam_eps={t.adam_eps:g} is 0 in float16 "
                          f"(train.precision=16-true): expected train.adam_eps >= "
                          f"{FLOAT16_TINY:.2g}, or another precision")


def _check_accelerator(name: str) -> None:
    import torch

    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        _bad("train.accelerator", "cpu or auto on this machine (no CUDA GPU is visible)", name)
    if name == "mps" and not torch.backends.mps.is_available():
        _bad("train.accelerator", "cpu or auto on this machine (no MPS device)", name)
