"""scripts/capacity_plot.py: the capacity curve from run folders, merged into capacity.json."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "capacity_plot.py"
spec = importlib.util.spec_from_file_location("capacity_plot", SCRIPT)
capacity_plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capacity_plot)


def write_run(root: Path, folder: str, run: str, acc: float) -> None:
    path = root / folder / run
    path.mkdir(parents=True)
    metrics = {"test_acc": acc, "epochs_run": 30, "best_epoch": 30, "params": 60_000,
               "hidden_sizes": [64], "preset": "associative"}
    (path / "metrics.json").write_text(json.dumps(metrics))


def test_new_runs_replace_their_point_and_keep_the_others(tmp_path):
    runs, dest = tmp_path / "runs", tmp_path / "dest"
    for seed, acc in enumerate([0.10, 0.12, 0.14]):
        write_run(runs, "capacity-p16", f"lstm-seed{seed}", acc)
    write_run(runs, "capacity-p16-paper-cell", "engram-seed0", 0.03)
    dest.mkdir()
    old = {"LSTM": {"4": {"test_acc": [0.3], "mean": 0.3, "std": 0.0},
                    "16": {"test_acc": [0.5], "mean": 0.5, "std": 0.0}}}
    (dest / "capacity.json").write_text(json.dumps(old))
    capacity_plot.main([str(runs), str(dest)])
    curves = json.loads((dest / "capacity.json").read_text())
    assert list(curves) == ["ENN, paper preset", "LSTM"]  # the legend's order, every time
    assert list(curves["LSTM"]) == ["4", "16"]
    assert curves["LSTM"]["4"]["mean"] == 0.3  # kept: no runs of it here
    assert curves["LSTM"]["16"]["test_acc"] == [0.10, 0.12, 0.14]  # replaced by the runs
    assert abs(curves["LSTM"]["16"]["std"] - 0.02) < 1e-12
    assert curves["ENN, paper preset"]["16"]["test_acc"] == [0.03]
    assert (dest / "capacity.png").stat().st_size > 0


def test_bad_folders_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        capacity_plot.main([str(tmp_path / "missing"), str(tmp_path / "dest")])
    assert stop.value.code == 2 and "missing is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        capacity_plot.main([str(tmp_path), str(tmp_path / "dest")])
    assert stop.value.code == 2 and "no finished capacity runs" in capsys.readouterr().err
