"""The training recipe's pieces: per-variable clipping, Adam's epsilon, output-layer and
uniform initialisation, SGD with a step schedule, the summed LM loss, the Penn Treebank task,
the Zaremba et al. config, and language models under two-process DDP."""

import csv
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from data_fixtures import PTB_SPLITS, serve, wiki_text, write_ptb, write_wikitext
from torch import nn

from enn.cli import main
from enn.data import DataIntegrityError, get_datamodule, sources
from enn.data.downloader import download
from enn.models import build_model, resolve
from enn.models.build import DataShape
from enn.models.config import apply_overrides, load_yaml_overrides, validate
from enn.train.lit import LitSequenceModel, clip_per_variable

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = DataShape("classification", num_classes=10, input_size=28)
LM = DataShape("language_model", num_classes=50, vocab_size=50)


def config(task="mnist", backbone="lstm", preset="default", **overrides):
    return validate(apply_overrides(resolve(task, backbone, preset), overrides))


def grads_after_clipping(clip: str, precision: str = "32-true", fused: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two parameters, gradient norms 1e4 and 0.5; clipped at 1 the LightningModule's way."""
    cfg = config(**{"train.clip": clip})
    lit = LitSequenceModel(nn.Linear(1, 1), "classification", cfg.train)
    lit.trainer = pl.Trainer(
        gradient_clip_val=1.0,
        precision=precision,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    big, small = lit.model.weight, lit.model.bias
    big.grad, small.grad = torch.full_like(big, 1e4), torch.full_like(small, 0.5)
    opt = (torch.optim.Adam(lit.parameters(), fused=True) if fused
           else torch.optim.SGD(lit.parameters(), lr=1.0))
    lit.configure_gradient_clipping(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    return big.grad, small.grad


def test_per_variable_clip_leaves_the_other_gradients_alone():
    big, small = grads_after_clipping("per_variable")
    assert torch.allclose(big.norm(), torch.tensor(1.0)) and small.item() == 0.5
    big, small = grads_after_clipping("global")  # the global norm shrinks everything
    assert torch.allclose(torch.cat([big.flatten(), small]).norm(), torch.tensor(1.0))
    assert small.item() == pytest.approx(0.5 / 1e4, rel=1e-4)


def test_bf16_mixed_clips_the_global_norm_with_a_fused_adam():
    # Lightning's AMP plugin refuses any clip with a fused optimizer (the language models'
    # protocol); without a grad scaler there is nothing to refuse
    for clip in ("global", "per_variable"):
        expected = grads_after_clipping(clip)
        for got, want in zip(grads_after_clipping(clip, "bf16-mixed", fused=True), expected,
                             strict=True):
            assert torch.equal(got, want)


def test_per_variable_clip_is_keras_rule_for_every_tensor():
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4]), torch.zeros(3)]
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    clip_per_variable(params, 2.0)  # g * c / max(||g||, c)
    assert torch.allclose(params[0].grad, torch.tensor([1.2, 1.6]))
    assert torch.equal(params[1].grad, grads[1]) and torch.equal(params[2].grad, grads[2])


def test_adam_eps_and_sgd_reach_the_optimiser():
    lit = LitSequenceModel(nn.Linear(1, 1), "classification", config(preset="paper").train)
    opt = lit.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["eps"] == 1e-7
    assert opt.defaults["fused"] is None and opt.defaults["foreach"] is None  # torch's default
    lit.train_cfg = config(**{"train.optimizer": "sgd", "train.lr": 1}).train
    opt = lit.configure_optimizers()["optimizer"]
    assert type(opt) is torch.optim.SGD and opt.defaults["lr"] == 1.0
    assert opt.defaults["momentum"] == 0


def test_the_language_model_protocol_runs_adam_fused():
    overrides = load_yaml_overrides(ROOT / "configs" / "adam-ptb.yaml")
    lit = LitSequenceModel(nn.Linear(2, 2), "language_model", config("ptb", **overrides).train)
    opt = lit.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["fused"] is True
    lit.model.weight.grad = torch.ones(2, 2)
    opt.step()  # the fused kernel runs on the CPU
    assert lit.model.weight.grad is not None and opt.state[lit.model.weight]["step"] == 1


def test_step_schedule_keeps_the_rate_then_halves_it_every_epoch():
    cfg = config(**{"train.schedule": "step", "train.lr": 1, "train.decay_after": 4})
    lit = LitSequenceModel(nn.Linear(1, 1), "classification", cfg.train)
    out = lit.configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(13):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == [1.0] * 4 + [0.5**k for k in range(1, 10)]
    resumed = lit.configure_optimizers()  # a checkpoint's states after epoch 6, restored
    opt, sched = resumed["optimizer"], resumed["lr_scheduler"]["scheduler"]
    replay = lit.configure_optimizers()
    for _ in range(6):
        replay["optimizer"].step()
        replay["lr_scheduler"]["scheduler"].step()
    opt.load_state_dict(replay["optimizer"].state_dict())
    sched.load_state_dict(replay["lr_scheduler"]["scheduler"].state_dict())
    assert [opt.param_groups[0]["lr"]] == rates[6:7]
    sched.step()
    assert opt.param_groups[0]["lr"] == rates[7]
    cfg.train.min_lr = 0.1  # the floor holds
    sched = lit.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert sched.lr_lambdas[0](12) == pytest.approx(0.1)


def plateau_rates(val_losses, **overrides) -> list[float]:
    """The rate of each epoch when the epochs before it ended with these validation losses."""
    cfg = config(**{"train.lr": 1, **overrides})
    out = LitSequenceModel(nn.Linear(1, 1), "classification", cfg.train).configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    rates = [opt.param_groups[0]["lr"]]
    for loss in val_losses:
        sched.step(loss)
        rates.append(opt.param_groups[0]["lr"])
    return rates


def test_plateau_schedule_lowers_the_rate_after_lr_patience_bad_epochs_as_keras():
    # patience 2: the second epoch in a row without a loss lower by 1e-4 halves the rate, so
    # that early stopping's patience 3 leaves a run one epoch at the lower rate
    losses = [1.0, 1.1, 1.1, 0.95, 0.94995, 0.96, 0.9, 0.95]
    assert plateau_rates(losses) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert plateau_rates(losses, **{"train.lr_patience": 1}) == [
        1, 1, 0.5, 0.25, 0.25, 0.125, 0.0625, 0.0625, 0.03125]
    assert plateau_rates(losses, **{"train.lr_patience": 0}) == plateau_rates(
        losses, **{"train.lr_patience": 1})  # Keras: patience 0 and 1 alike
    assert plateau_rates([1.0] * 8, **{"train.min_lr": 0.3})[-1] == 0.3
    assert plateau_rates([10.0, 9.9995, 9.999]) == [1, 1, 1, 1]  # 1e-4 absolute, not relative


@pytest.mark.parametrize("task, shape", [("mnist", CLASSIFIER), ("ptb", LM)])
def test_glorot_output_layers_with_zero_bias(task, shape):
    torch_init = build_model(config(task).model, shape)
    glorot = build_model(config(task, preset="paper").model, shape)
    layer = glorot.decoder if task == "ptb" else glorot.head
    fan_out, fan_in = layer.weight.shape
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert layer.bias.abs().max() == 0 and layer.weight.abs().max() <= bound
    assert layer.weight.abs().max() > 0.9 * bound  # uniform over the whole range
    torch_layer = torch_init.decoder if task == "ptb" else torch_init.head
    assert torch_layer.bias.abs().max() > 0  # torch's default has a random bias


def test_attention_score_is_glorot_too_and_tied_decoders_are_left_alone():
    model = build_model(config(preset="paper", **{"model.pooling": "attention"}).model, CLASSIFIER)
    assert model.pool.score.bias.abs().max() == 0
    cfg = config("ptb", preset="paper", **{"model.tie_weights": True, "model.embed_dim": 128})
    lm = build_model(cfg.model, LM)
    assert lm.decoder.weight is lm.embedding.weight and lm.decoder.bias.abs().max() > 0


def test_init_range_draws_every_parameter_uniformly():
    model = build_model(config("ptb", **{"model.init_range": 0.1}).model, LM)
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert -0.1 <= values.min() < -0.099 and 0.099 < values.max() <= 0.1
    assert values.mean() == pytest.approx(0.0, abs=0.001)
    assert values.abs().mean() == pytest.approx(0.05, abs=0.002)
    default = torch.cat(
        [p.detach().flatten() for p in build_model(config("ptb").model, LM).parameters()]
    )
    assert default.abs().max() > 0.1  # the embedding is N(0, 1) by default


def test_sum_steps_loss_is_the_window_sum_of_the_mean_row_loss():
    model = build_model(config("ptb", **{"model.dropout": 0}).model, LM)
    x, y = torch.randint(0, 50, (3, 7)), torch.randint(0, 50, (3, 7))
    losses = {}
    for mode in ("mean", "sum_steps"):
        lit = LitSequenceModel(
            model, "language_model", config("ptb", **{"train.lm_loss": mode}).train
        )
        lit.log = lambda *a, **k: None
        losses[mode] = lit._lm_step((x, y), "train")
    nll = model.nll(model(x)[0], y)
    assert torch.allclose(losses["mean"], nll.mean())
    assert torch.allclose(losses["sum_steps"], nll.sum(1).mean())
    assert torch.allclose(losses["sum_steps"], 7 * losses["mean"])


def test_zaremba_config_is_the_papers_setting():
    cfg = config("ptb", **load_yaml_overrides(str(ROOT / "configs" / "zaremba-small-ptb.yaml")))
    m, t = cfg.model, cfg.train
    assert (m.hidden_sizes, m.embed_dim, m.tie_weights, m.dropout) == ((200, 200), 200, False, 0)
    assert (m.init_range, t.optimizer, t.lr, t.batch_size, cfg.data["bptt"]) == (
        0.1,
        "sgd",
        1.0,
        20,
        20,
    )
    assert (t.schedule, t.decay_after, t.lr_factor, t.epochs) == ("step", 4, 0.5, 13)
    assert (t.clip, t.clip_norm, t.lm_loss) == ("global", 5.0, "sum_steps")
    assert build_model(m, DataShape("language_model", 10_000, vocab_size=10_000)).decoder



def test_adam_config_changes_only_the_optimiser_of_zarembas_setting():
    def load(name):
        return config("ptb", **load_yaml_overrides(str(ROOT / "configs" / name)))

    adam, sgd = load("adam-ptb.yaml"), load("zaremba-small-ptb.yaml")
    assert adam.model.init_range == 0 and sgd.model.init_range == 0.1
    adam.model.init_range = sgd.model.init_range
    assert adam.model == sgd.model and adam.data == sgd.data
    t = adam.train
    assert (t.optimizer, t.lr, t.lm_loss, t.schedule, t.clip_norm) == (
        "adam", 1e-3, "mean", "plateau", 1.0
    )
    assert (t.batch_size, t.epochs, t.patience) == (20, 20, 3)


LM_WIDTHS = {  # scripts/reproduce.sh: (vocabulary, overrides, LSTM parameters, other widths)
    "ptb": (10_000, {}, 4_653_200,
            {"engram": "199", "engram-paper": "207", "gru": "211,211", "rnn": "242,242"}),
    "wt2": (33_278, {"model.adaptive_cutoffs": "2000,10000"}, 8_390_936,
            {"engram": "199", "engram-paper": "209", "gru": "216,216", "rnn": "268,268"}),
}


MODELS = ("engram", "engram-paper", "gru", "rnn")  # the order of the script's widths


@pytest.mark.parametrize("comparison, model", [(c, m) for c in LM_WIDTHS for m in MODELS])
def test_the_lm_comparisons_size_every_model_to_the_small_lstm(comparison, model):
    """The widths scripts/reproduce.sh ptb and wt2 give each model: within 0.15% of the LSTM."""
    vocab, overrides, lstm_params, widths = LM_WIDTHS[comparison]
    shape = DataShape("language_model", vocab, vocab_size=vocab)
    adam = load_yaml_overrides(str(ROOT / "configs" / "adam-ptb.yaml"))

    def params(backbone, preset="default", **extra):
        cfg = config("ptb", backbone, preset, **{**adam, **overrides, **extra})
        return sum(p.numel() for p in build_model(cfg.model, shape).parameters())

    assert params("lstm") == lstm_params
    backbone, _, preset = model.partition("-")
    n = params(backbone, preset or "default", **{"model.hidden_sizes": widths[model]})
    assert abs(n / lstm_params - 1) < 0.0015
    script = (ROOT / "scripts" / "reproduce.sh").read_text()
    assert f"widths=({' '.join(widths[m].split(',')[0] for m in MODELS)})" in script


# --- the Penn Treebank ------------------------------------------------------------------------
def test_ptb_reads_the_official_files_and_checks_their_md5(tmp_path):
    write_ptb(tmp_path)
    dm = get_datamodule("ptb", data_dir=tmp_path, verify_checksums=False, batch_size=1, bptt=4)
    dm.prepare_data()
    dm.setup()
    assert dm.vocab[:2] == ["<unk>", "<eos>"] and dm.vocab[2] == "the"  # most frequent
    counts = {s: sum(len(line.split()) + 1 for line in PTB_SPLITS[s]) for s in PTB_SPLITS}
    assert {k: len(v) for k, v in dm.streams.items()} == {
        "train": counts["train"],
        "val": counts["valid"],
        "test": counts["test"],
    }
    words = [dm.vocab[i] for i in dm.streams["test"]]
    assert words == ["black", "monday", "fell", "<eos>", "<unk>", "N", "<eos>"]
    assert words.count("<unk>") == 1 and "<unk>" in [dm.vocab[i] for i in dm.streams["train"]]
    with pytest.raises(DataIntegrityError, match="checksum mismatch"):  # not the official bytes
        get_datamodule("ptb", data_dir=tmp_path).prepare_data()
    assert dict(sources.SOURCES["ptb"].files) == {
        "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
        "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
        "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
    }


def test_ptb_download_fetches_each_file_and_verifies_it(tmp_path, monkeypatch):
    served = write_ptb(tmp_path / "server")
    files = tuple(
        (f.name, hashlib.md5(f.read_bytes()).hexdigest()) for f in sorted(served.iterdir())
    )
    with serve(tmp_path / "server") as (url, server):
        monkeypatch.setitem(
            sources.SOURCES, "ptb", sources.Source("ptb", "ptb", (url + "ptb/",), files, files)
        )
        paths = download("ptb", data_dir=tmp_path / "data")
        assert sorted(p for p, _ in server.requests) == [
            "/ptb/ptb.test.txt",
            "/ptb/ptb.train.txt",
            "/ptb/ptb.valid.txt",
        ]
    assert [p.read_bytes() for p in paths] == [(served / p.name).read_bytes() for p in paths]
    dm = get_datamodule("ptb", data_dir=tmp_path / "data", batch_size=1)  # checksums on
    dm.prepare_data()
    dm.setup()
    assert dm.vocab_size == len({w for line in PTB_SPLITS["train"] for w in line.split()}) + 1


# --- language models under data parallel ------------------------------------------------------
def test_shards_are_the_rows_of_one_process_with_the_whole_batch(tmp_path):
    write_wikitext(tmp_path)

    def windows(batch_size, rank=0, world=1):
        dm = get_datamodule(
            "wikitext2", data_dir=tmp_path, verify_checksums=False, batch_size=batch_size, bptt=3
        )
        dm.setup()
        dm.shard(rank, world)
        return list(dm.train_dataloader())

    whole = windows(4)
    halves = [windows(2, rank, 2) for rank in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(whole)
    for k, (x, y) in enumerate(whole):
        assert torch.equal(x, torch.cat([halves[0][k][0], halves[1][k][0]]))
        assert torch.equal(y, torch.cat([halves[0][k][1], halves[1][k][1]]))
    with pytest.raises(ValueError, match="rank 2 is not one of the 2"):
        get_datamodule("wikitext2", data_dir=tmp_path).shard(2, 2)


def write_corpus(root: Path, seed: int = 0) -> None:
    """A WikiText-2 folder of learnable text over 30 words (each word mostly followed by one
    other): enough windows for a trajectory that falls."""
    gen = torch.Generator().manual_seed(seed)
    out = root / "wikitext-2"
    out.mkdir(parents=True)
    for name, n_lines in (("train", 120), ("valid", 24), ("test", 24)):
        lines = []
        for _ in range(n_lines):
            word = int(torch.randint(0, 30, (1,), generator=gen))
            line = []
            for _ in range(10):
                line.append(f"w{word}")
                noise = torch.rand(1, generator=gen).item() < 0.2
                word = (
                    int(torch.randint(0, 30, (1,), generator=gen)) if noise else (7 * word + 3) % 30
                )
            lines.append(" ".join(line))
        (out / f"wiki.{name}.tokens").write_text(wiki_text(lines), encoding="utf-8")


def test_epoch_log_has_each_epochs_own_train_perplexity(tmp_path):
    write_corpus(tmp_path / "data")
    args = ["train", "--task", "wikitext2", "--model", "lstm", "--data-dir", tmp_path / "data",
            "--out", tmp_path / "run", "--epochs", "2", "model.hidden_sizes=8",
            "model.embed_dim=8", "train.batch_size=8", "data.verify_checksums=false"]
    assert main([str(a) for a in args]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 2
    for row in rows:  # the token-weighted mean loss of the same epoch
        assert float(row["train_ppl"]) == pytest.approx(math.exp(float(row["train_loss"])))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_the_classifier_loss_is_float32_at_least(dtype, monkeypatch):
    cfg = config("mnist", "lstm")
    lit = LitSequenceModel(build_model(cfg.model, CLASSIFIER).to(dtype), "classification",
                           cfg.train)
    monkeypatch.setattr(lit, "log", lambda *args, **kwargs: None)
    x, y = torch.randn(4, 5, 28, dtype=dtype), torch.randint(0, 10, (4,))
    assert lit._step((x, y), "train").dtype == torch.promote_types(dtype, torch.float32)


def test_the_language_model_protocol_trains_in_bf16_mixed(tmp_path):
    # a fused Adam with the global clip, and the adaptive softmax under autocast
    write_corpus(tmp_path / "data")
    args = ["train", "--task", "wikitext2", "--model", "engram", "--data-dir", tmp_path / "data",
            "--out", tmp_path / "run", "--config", ROOT / "configs" / "adam-ptb.yaml",
            "--epochs", "1", "model.hidden_sizes=8", "model.embed_dim=8",
            "model.memory_size=4", "model.adaptive_cutoffs=10", "train.batch_size=8",
            "train.precision=bf16-mixed", "data.verify_checksums=false"]
    assert main([str(a) for a in args]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert math.isfinite(metrics["test_ppl"]) and math.isfinite(metrics["val_loss"])


@pytest.mark.slow
def test_two_ranks_with_half_the_rows_train_like_one_process_with_all(tmp_path):
    """Same rows, same order, gradients averaged over equal shards: the per-epoch validation
    losses of 2 processes x batch 4 equal those of 1 process x batch 8 (float sums aside)."""
    write_corpus(tmp_path / "data")
    common = [
        "-m",
        "enn.cli",
        "train",
        "--task",
        "wikitext2",
        "--model",
        "lstm",
        "--data-dir",
        tmp_path / "data",
        "--epochs",
        "3",
        "model.hidden_sizes=16",
        "model.embed_dim=8",
        "model.dropout=0",
        "data.bptt=5",
        "train.lr=0.03",
        "train.threads=1",
        "train.accelerator=cpu",
        "data.verify_checksums=false",
    ]
    runs = {
        "one": ["train.batch_size=8"],
        "ddp": ["train.batch_size=4", "train.devices=2", "train.strategy=ddp"],
    }
    for name, extra in runs.items():
        cmd = [sys.executable, *map(str, common), "--out", str(tmp_path / name), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-2000:]
    curves = {}
    for name in runs:
        rows = (tmp_path / name / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        curves[name] = [
            float(r.split(",")[header.index(k)]) for r in rows[1:] for k in ("val_loss", "val_ppl")
        ]
    assert len(curves["one"]) == 6
    assert curves["ddp"] == pytest.approx(curves["one"], rel=1e-5)
    assert curves["one"][4] < curves["one"][0] - 0.2  # it learns: a real trajectory


def test_a_batch_too_large_for_a_split_is_one_line_naming_it(tmp_path, capsys):
    write_ptb(tmp_path / "data")
    args = ["train", "--task", "ptb", "--model", "lstm", "--data-dir", tmp_path / "data",
            "--out", tmp_path / "run", "train.batch_size=1000", "data.verify_checksums=false"]
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the train split's 17 tokens" in err and "1000 rows" in err
    assert not (tmp_path / "run").exists()
