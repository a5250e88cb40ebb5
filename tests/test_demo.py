"""``enn demo --quick`` end to end: trains, explains, reports."""

import pytest
import torch

from enn.cli import main


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    threads = torch.get_num_threads()
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads
    printed = capsys.readouterr().out
    for task in ("digits", "assoc"):
        report = tmp_path / task / "report.md"
        assert str(report) in printed
        text = report.read_text()
        assert "| engram | 0, 1 |" in text and "| lstm | 0, 1 |" in text
        assert "one-way ANOVA on test_acc" in text
        assert (tmp_path / task / "report.html").is_file()
        pngs = list((tmp_path / task).rglob("*.png"))
        assert any(p.name == "learning_curves.png" for p in pngs)
        assert any(p.name == "attribution_test0.png" for p in pngs)
        assert all(p.stat().st_size > 0 for p in pngs)
        assert "Which slots drove the decisions" in text
    paper_cell = (tmp_path / "assoc-paper-cell" / "report.md").read_text()
    assert "| engram | 0 |" in paper_cell
    assert "assoc, associative preset" in printed and "assoc, paper preset" in printed
    assert "test_acc" in printed
