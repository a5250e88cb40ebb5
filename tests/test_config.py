"""Presets and typed overrides of the run configuration."""

import warnings
from pathlib import Path

import pytest
import yaml

from enn.models import ConfigError, resolve
from enn.models.config import (
    ASSOCIATIVE,
    LM_TASKS,
    PRESETS,
    RunConfig,
    apply_overrides,
    load_yaml_overrides,
    parse_overrides,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]


def test_paper_preset_matches_the_spec():
    enn = resolve("mnist", "engram", "paper")
    assert enn.model.hidden_sizes == (128,) and enn.model.memory_size == 64
    assert enn.model.trace == "shared" and enn.model.init_state == "random"
    assert (enn.train.lr, enn.train.clip_norm, enn.train.batch_size) == (1e-3, 1.0, 128)
    assert (enn.train.patience, enn.train.lr_factor, enn.train.lr_patience) == (3, 0.5, 2)
    assert enn.train.min_lr == 1e-5 and enn.train.epochs == 15
    assert resolve("mnist", "lstm", "paper").model.hidden_sizes == (128, 64)
    assert resolve("wikitext103", "gru", "paper").model.hidden_sizes == (128, 128)
    assert resolve("wikitext103", "engram", "paper").model.sparsity == 0.3
    assert resolve("cifar10", "rnn", "paper").train.epochs == 30


def test_default_preset_is_the_associative_enn_without_the_keras_recipe():
    paper, default = resolve("mnist", "engram", "paper"), resolve("mnist", "engram", "default")
    assert default.model.trace == "per_sample" and default.model.init_state == "zeros"
    assert (paper.train.clip, paper.train.adam_eps, paper.model.head_init) == (
        "per_variable", 1e-7, "glorot"
    )
    assert (default.train.clip, default.train.adam_eps, default.model.head_init) == (
        "global", 1e-8, "torch"
    )
    assert default.model.cosine_eps > 0 and paper.model.cosine_eps == 0  # the zero encoding
    paper.model.trace, paper.model.init_state, paper.preset = "per_sample", "zeros", "default"
    paper.train.clip, paper.train.adam_eps, paper.model.head_init = "global", 1e-8, "torch"
    for name, value in ASSOCIATIVE.items():
        setattr(paper.model, name, value)
    assert paper == default
    associative = resolve("mnist", "engram", "associative")
    associative.preset = "default"
    assert associative == default


def test_overrides_are_typed():
    cfg = resolve("digits", "engram")
    apply_overrides(
        cfg,
        parse_overrides(
            [
                "train.epochs=3",
                "model.hidden_sizes=64,64",
                "train.lr=1",
                "model.top_k=4",
                "data.k=8",
            ]
        ),
    )
    apply_overrides(cfg, {"seed": 7})  # a saved config's field (the command line refuses it)
    assert cfg.train.epochs == 3 and cfg.model.hidden_sizes == (64, 64)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.top_k == 4 and cfg.data == {"k": 8} and cfg.seed == 7
    apply_overrides(cfg, parse_overrides(["train.adam_eps=1e-8", "model.cosine_eps=1e-3"]))
    assert cfg.train.adam_eps == 1e-8 and cfg.model.cosine_eps == 1e-3
    apply_overrides(cfg, {"model.top_k": "null"})
    assert cfg.model.top_k is None


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.epoch=3", "unknown config field 'train.epoch'"),
        ("model=3", "unknown config field 'model'"),
        ("train.epochs=three", "'train.epochs' expects int, got 'three'"),
        ("model.trace_clip=abc", "'model.trace_clip' expects float"),
        ("train.epochs=true", "'train.epochs' expects int, got True"),
    ],
)
def test_bad_overrides_name_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(resolve("digits", "engram"), parse_overrides([override]))
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_round_trip_through_dict():
    cfg = resolve("assoc", "lstm", "paper", seed=3)
    cfg.data["k"] = 6
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "override, match",
    [
        ("preset=paper", "set the preset with --preset, not preset=paper"),
        ("task=mnist", "set the task with --task, not task=mnist"),
        ("seed=7", r"set the seed with --seed \(enn compare: --seeds\), not seed=7"),
        ("model.backbone=gru",
         r"set the model.backbone with --model \(enn compare: --models\), not model.backbone=gru"),
        ("data.batch_size=32", "set the data.batch_size with train.batch_size, not "),
        ("data.data_dir=/tmp", "set the data.data_dir with --data-dir, not "),
    ],
)
def test_the_command_line_and_config_files_refuse_the_runs_own_fields(override, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        parse_overrides(["train.epochs=3", override])
    key, _, value = override.partition("=")
    section, _, name = key.rpartition(".")
    field = f"{section}:\n  {name}: {value}" if section else f"{key}: {value}"
    path = tmp_path / "run.yaml"
    path.write_text(f"train:\n  epochs: 3\n{field}\n")
    with pytest.raises(ConfigError, match=f"--config {path}: {match}"):
        load_yaml_overrides(str(path))


def test_a_saved_config_yaml_still_loads_with_its_task_preset_and_seed(tmp_path):
    cfg = resolve("mnist", "engram", "paper", seed=7)
    path = tmp_path / "config.yaml"  # what a run folder holds (train.run.saved_config reads it)
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert RunConfig.from_dict(yaml.safe_load(path.read_text())) == cfg


def test_the_choice_lists_have_one_definition():
    from enn.models import classifier, config
    from enn.nn import engram
    from enn.ops.engram import common

    for name in ("TRACE_MODES", "WRITE_KEYS", "SHARPNESS", "HIDDEN_UPDATES"):
        assert getattr(config, name) is getattr(common, name)
    assert config.INIT_STATES is engram.INIT_STATES
    assert config.POOLINGS is classifier.POOLINGS


@pytest.mark.parametrize(
    "task, override, match",
    [
        ("digits", {"model.tie_weights": True},
         "model.tie_weights=true has no effect on task digits, a classification task"),
        ("mnist", {"model.adaptive_cutoffs": [10, 20]},
         "model.adaptive_cutoffs=10,20 has no effect on task mnist, a classification task"),
        ("assoc", {"train.lm_loss": "sum_steps"},
         "train.lm_loss=sum_steps has no effect on task assoc, a classification task"),
        ("ptb", {"model.pooling": "attention"},
         "model.pooling=attention has no effect on task ptb, a language-model task"),
    ],
)
def test_a_field_the_task_ignores_warns(task, override, match):
    with pytest.warns(UserWarning, match=match) as record:
        validate(apply_overrides(resolve(task, "lstm"), override))
    assert len(record) == 1


def test_the_presets_and_the_shipped_configs_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for task in ("digits", "mnist", "cifar10", "assoc", "mqar", *LM_TASKS):
            for preset in PRESETS:
                for backbone in ("engram", "lstm"):
                    validate(resolve(task, backbone, preset))
        for path in sorted((ROOT / "configs").glob("*.yaml")):
            for task in ("ptb", "wikitext2"):
                validate(apply_overrides(resolve(task, "lstm"), load_yaml_overrides(str(path))))
        # a saved config holds every field, the defaults included
        validate(RunConfig.from_dict(resolve("digits", "lstm").to_dict()))


@pytest.mark.parametrize("task, strategy, refused", [
    ("ptb", "ddp_spawn", True), ("wikitext2", "ddp_fork", True), ("ptb", "ddp", False),
    ("mnist", "ddp_spawn", False),
])
def test_language_models_refuse_the_launchers_that_rank_processes_late(task, strategy,
                                                                        refused):
    cfg = apply_overrides(resolve(task, "lstm"), {"train.strategy": strategy,
                                                  "train.devices": "2"})
    if refused:
        with pytest.raises(ConfigError, match=f"expects ddp or auto for a language model, "
                                              f"got '{strategy}'"):
            validate(cfg)
    else:
        validate(cfg)


@pytest.mark.parametrize("overrides", [{"train.adam_eps": "1e-4"}, {"train.optimizer": "sgd"}])
def test_float16_training_takes_an_adam_epsilon_float16_holds(overrides):
    # the default epsilon is refused (test_cli_errors); one float16 holds, or SGD, is not
    cfg = resolve("digits", "engram", "default")
    validate(apply_overrides(cfg, {"train.precision": "16-true", **overrides}))


@pytest.mark.parametrize("overrides, refused", [
    ({}, True), ({"train.clip": "per_variable"}, True), ({"train.clip_norm": "0"}, False),
    ({"train.adam_fused": "false"}, False), ({"train.precision": "bf16-mixed"}, False),
])
def test_a_fused_adam_does_not_clip_under_the_float16_grad_scaler(overrides, refused):
    """The fused step unscales the gradients itself, so that a clip before it would see them
    scaled (Lightning refuses the global clip at the first step): refused at once, anywhere."""
    cfg = apply_overrides(resolve("ptb", "lstm"), {
        "train.adam_fused": "true", "train.precision": "16-mixed", "train.accelerator": "auto",
        **overrides})
    if refused:
        with pytest.raises(ConfigError, match="train.adam_fused=true cannot clip gradients "
                                              "under train.precision=16-mixed"):
            validate(cfg)
    elif cfg.train.precision == "bf16-mixed":
        validate(cfg)
    else:  # what stops it on this CPU is the precision alone
        with pytest.raises(ConfigError, match="bf16-mixed on the CPU"):
            validate(cfg)
