"""scripts/variant_table.py: per-seed scores of comparison folders against the first one."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "variant_table.py"
spec = importlib.util.spec_from_file_location("variant_table", SCRIPT)
variant_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(variant_table)


def write_runs(folder: Path, scores: list[float], model: str = "engram",
               field: str = "test_acc") -> Path:
    for seed, score in enumerate(scores):
        run = folder / f"{model}-seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"model": model, "seed": seed,
                                                      field: score, "test_loss": 1.0}))
    (folder / f"{model}-seed9").mkdir()  # unfinished: no metrics.json
    return folder


def test_rows_give_each_folders_difference_from_the_first(tmp_path):
    base = write_runs(tmp_path / "base", [0.90, 0.92, 0.94])
    other = write_runs(tmp_path / "other", [0.95, 0.96, 0.97])
    lines = variant_table.rows([base, other], "engram", "test_acc")
    assert lines[2] == "| base | 0.9000, 0.9200, 0.9400 | 0.9200 ± 0.0200 | | | |"
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells[:3] == ["other", "0.9500, 0.9600, 0.9700", "0.9600 ± 0.0100"]
    diff, interval = cells[3].split(" ", 1)
    assert float(diff) == pytest.approx(0.04)
    low, high = (float(x) for x in interval.strip("[]").split(", "))
    assert low < 0.04 < high
    assert 0 < float(cells[4]) < 0.1  # Welch's p


def test_a_folder_without_finished_runs_is_an_error(tmp_path):
    base = write_runs(tmp_path / "base", [0.9, 0.8])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no finished engram runs"):
        variant_table.rows([base, tmp_path / "empty"], "engram", "test_acc")


def test_perplexities_and_published_records_are_read_and_a_missing_field_named(tmp_path):
    base = write_runs(tmp_path / "base", [140.0, 142.0], field="test_ppl")
    published = write_runs(tmp_path / "published" / "runs", [150.0, 152.0], field="test_ppl")
    lines = variant_table.rows([base, published.parent], "engram")
    assert lines[0].startswith("| folder | test score per seed |")
    assert lines[2] == "| base | 140.0000, 142.0000 | 141.0000 ± 1.4142 | | | |"
    assert lines[3].startswith("| published | 150.0000, 152.0000 | 151.0000 ± 1.4142 | +10.0000 [")
    with pytest.raises(SystemExit,
                       match="has no 'test_acc'; its fields: model, seed, test_loss, test_ppl"):
        variant_table.rows([base], "engram", "test_acc")


def test_seeds_are_listed_in_seed_order_and_small_p_values_as_such(tmp_path):
    base = tmp_path / "base"
    for seed, acc in ((0, 0.90), (1, 0.901), (2, 0.902), (10, 0.903)):  # "seed10" < "seed2"
        run = base / f"engram-seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"model": "engram", "seed": seed,
                                                      "test_acc": acc, "test_loss": 1.0}))
    other = write_runs(tmp_path / "other", [0.99, 0.991, 0.992])
    lines = variant_table.rows([base, other], "engram", "test_acc")
    assert "| 0.9000, 0.9010, 0.9020, 0.9030 |" in lines[2]
    assert "| < 0.001 |" in lines[3]
