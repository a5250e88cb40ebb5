"""scripts/collect_results.py: a published comparison keeps its runs' records, and seeds
trained later, without the earlier run folders, are summarised together with them."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from enn.models.config import resolve

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "collect_results.py"
spec = importlib.util.spec_from_file_location("collect_results", SCRIPT)
collect_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_results)

PPL = {"engram": [150.0, 160.0, 140.0], "lstm": [170.0, 172.0, 168.0]}


def fake_runs(root: Path, seeds: list[int]) -> Path:
    """Finished language-model runs (no enn explain for them), as ``enn compare`` leaves them;
    the ENN runs with a checkpoint folder."""
    for model, ppls in PPL.items():
        for seed in seeds:
            run = root / f"{model}-seed{seed}"
            run.mkdir(parents=True)
            config = resolve("ptb", model, seed=seed).to_dict()
            (run / "config.yaml").write_text(yaml.safe_dump(config))
            with open(run / "metrics.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["epoch", "epoch_seconds", "steps", "train_loss", "val_loss", "val_ppl"])
                for e in (1, 2):
                    w.writerow([e, 10.0 + seed, 100, 6 - e, 5.5 - e / 10, 200 - e])
            (run / "metrics.json").write_text(json.dumps({
                "task": "ptb", "model": model, "preset": "default", "seed": seed,
                "params": 1000, "test_ppl": ppls[seed], "test_loss": 5.0,
            }))
            if model == "engram":
                (run / "checkpoints").mkdir()
    (root / "summary.json").write_text("{}")  # what marks a comparison folder for main
    return root


def publish_all(runs: Path, docs: Path) -> dict:
    docs.mkdir(exist_ok=True)
    readme = docs / "README.md"
    if not readme.exists():
        readme.write_text(f"# Results\n{collect_results.START}\n{collect_results.END}\nend\n")
    collect_results.main([str(runs), str(docs)])
    return json.loads((docs / "cmp" / "summary.json").read_text())


def test_seeds_run_later_join_the_published_records(tmp_path):
    docs = tmp_path / "docs"
    first = publish_all(fake_runs(tmp_path / "first" / "cmp", [0, 1]).parent, docs)
    assert first["models"]["engram"]["seeds"] == [0, 1]
    record = docs / "cmp" / "runs" / "engram-seed0"
    assert sorted(p.name for p in record.iterdir()) == ["config.yaml", "metrics.csv",
                                                        "metrics.json"]

    # another machine: only seed 2's run folders, the earlier ones gone
    summary = publish_all(fake_runs(tmp_path / "later" / "cmp", [2]).parent, docs)
    for model, ppls in PPL.items():
        assert summary["models"][model]["seeds"] == [0, 1, 2]
        assert summary["models"][model]["test_ppl"]["mean"] == sum(ppls) / 3
    assert summary["models"]["engram"]["epochs_run"]["mean"] == 2
    assert summary["tests"]["left_out"] == []
    assert sorted(p.name for p in (docs / "cmp" / "runs").iterdir()) == [
        f"{m}-seed{s}" for m in ("engram", "lstm") for s in range(3)
    ]
    report = (docs / "cmp" / "report.md").read_text()
    # the memory section is of the run that has its files
    assert "engram-seed2: test_ppl = 140.0000" in report
    assert "Published records, without their recordings: engram-seed0, engram-seed1" in report
    readme = (docs / "README.md").read_text()
    assert "| [cmp](cmp/report.md) | engram | 3 | test_ppl 150.0000 ± 10.0000 |" in readme


def test_the_best_run_with_its_files_is_chosen_over_a_better_record(tmp_path):
    docs = tmp_path / "docs"
    publish_all(fake_runs(tmp_path / "first" / "cmp", [2]).parent, docs)  # the best ENN
    publish_all(fake_runs(tmp_path / "later" / "cmp", [0]).parent, docs)
    report = (docs / "cmp" / "report.md").read_text()
    assert "engram-seed0: test_ppl = 150.0000" in report
    assert "Published records, without their recordings: engram-seed2" in report


def test_the_explained_record_keeps_its_pictures(tmp_path):
    """A record published with ``enn explain``'s files keeps them when it is republished from
    the record alone."""
    docs = tmp_path / "docs"
    publish_all(fake_runs(tmp_path / "first" / "cmp", [0]).parent, docs)
    picture = docs / "cmp" / "engram-seed0" / "explain" / "attention_test0.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(b"png")
    publish_all(fake_runs(tmp_path / "later" / "cmp", [1]).parent, docs)  # seed 0 the best
    assert picture.read_bytes() == b"png"


def test_bad_folders_and_a_readme_without_markers_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        collect_results.main([str(tmp_path / "missing"), str(tmp_path)])
    assert stop.value.code == 2 and "missing is not a folder" in capsys.readouterr().err
    (tmp_path / "README.md").write_text("# Results\n")
    with pytest.raises(SystemExit) as stop:
        collect_results.main([str(tmp_path), str(tmp_path)])
    assert stop.value.code == 2 and "lacks the overview markers" in capsys.readouterr().err


def test_records_of_other_runs_are_not_joined(tmp_path, capsys):
    docs = tmp_path / "docs"
    publish_all(fake_runs(tmp_path / "first" / "cmp", [0, 1]).parent, docs)
    later = fake_runs(tmp_path / "later" / "cmp", [2])
    other = resolve("ptb", "engram", seed=2)
    other.model.hidden_update = "residual"
    (later / "engram-seed2" / "config.yaml").write_text(yaml.safe_dump(other.to_dict()))
    with pytest.raises(SystemExit) as stop:
        publish_all(later.parent, docs)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "was made with model.hidden_update=gated" in err
    assert not (later / "engram-seed0").exists()  # nothing joined
    assert json.loads((docs / "cmp" / "summary.json").read_text())["models"]["engram"][
        "seeds"] == [0, 1]  # the published comparison untouched


def test_a_published_seed_unfinished_here_is_not_dropped(tmp_path, capsys):
    docs = tmp_path / "docs"
    runs = fake_runs(tmp_path / "runs" / "cmp", [0, 1])
    publish_all(runs.parent, docs)
    (runs / "lstm-seed1" / "metrics.json").unlink()  # its rerun is under way here
    with pytest.raises(SystemExit) as stop:
        publish_all(runs.parent, docs)
    assert stop.value.code == 2
    assert "lstm-seed1 published but unfinished here" in capsys.readouterr().err
    assert json.loads((docs / "cmp" / "summary.json").read_text())["models"]["lstm"][
        "seeds"] == [0, 1]  # the published comparison untouched


def test_the_overview_says_n_a_for_a_model_whose_every_run_diverged():
    summary = {"score": "test_ppl", "models": {
        "rnn": {"seeds": [0, 1]},  # no finite score or loss in any run
        "lstm": {"seeds": [0], "test_ppl": {"mean": 170.0, "std": None, "ci95": None, "n": 1},
                 "test_loss": {"mean": 5.1}, "params": {"mean": 8390936},
                 "seconds_per_epoch": {"mean": 413.5}}}}
    rnn, lstm = collect_results.overview_rows("cmp", summary)
    assert rnn == "| [cmp](cmp/report.md) | rnn | 2 | test_ppl n/a | n/a | n/a | n/a |"
    assert lstm.endswith("| test_ppl 170.0000 | 5.1000 | 8,390,936 | 413.5 |")


def test_a_folder_of_variants_publishes_its_records_beside_earlier_ones(tmp_path):
    """Variant folders (no summary of their own, as scripts/memory_ablation.sh leaves them)
    publish only their finished runs' records, and runs made later on another machine join
    them; the overview table does not list them."""
    docs = tmp_path / "docs"
    for machine, seeds in (("first", [0, 1]), ("later", [2])):
        variant = fake_runs(tmp_path / machine / "abl" / "base", seeds)
        (variant / "summary.json").unlink()
        if machine == "first":
            (variant / "engram-seed1" / "metrics.json").unlink()  # unfinished: not published
        publish_all(fake_runs(tmp_path / machine / "cmp", seeds).parent, docs)
    records = docs / "abl" / "base" / "runs"
    assert sorted(p.name for p in records.iterdir()) == [
        "engram-seed0", "engram-seed2", "lstm-seed0", "lstm-seed1", "lstm-seed2"]
    assert sorted(p.name for p in (records / "engram-seed2").iterdir()) == [
        "config.yaml", "metrics.csv", "metrics.json"]
    assert json.loads((records / "engram-seed2" / "metrics.json").read_text())["epochs_run"] == 2
    assert "abl" not in (docs / "README.md").read_text()
