"""`enn bench` (benchmarks/bench.py): the table, the breakdown and the JSON it writes (tiny
shapes, no timings)."""

import json
import sys

import pytest
import torch

from benchmarks.bench import matmul_macs, round_ratios
from enn.cli import main
from enn.ops.engram import native


def test_bench_writes_rows_and_breakdown(tmp_path):
    out = tmp_path / "speed.json"
    argv = ["bench", "--batch", "4", "--steps", "5", "--input-size", "3", "--hidden", "8",
            "--memory", "4", "--repeats", "1", "--warmup", "0", "--no-memory",
            "--baselines", "gru", "--breakdown", "--backends", "--out", str(out)]
    assert main(argv) == 0

    def not_json(constant):
        raise AssertionError(f"{constant} is not JSON")

    report = json.loads(out.read_text(), parse_constant=not_json)  # strict: no NaN
    rows = {(r["model"], r["trace"]): r for r in report["rows"]}
    assert all(r["saved_mib"] is None for r in rows.values())  # --no-memory: not measured
    variants = {("ENN", f"{t}:{v}") for t in ("per_sample", "shared")
                for v in ("torch-hidden", "torch-memory", "torch")}
    assert set(rows) == {("ENN", "per_sample"), ("ENN", "shared"), ("LSTM (2 layers)", "-"),
                         ("GRU (2 layers)", "-"), *variants}
    gains = report["kernel_gains"]  # each variant's step over its layer's, in the same round
    assert set(gains) == {f"enn_{trace}" for _, trace in variants}
    variant, base = rows[("ENN", "shared:torch")], rows[("ENN", "shared")]
    assert gains["enn_shared:torch"]["median"] == pytest.approx(
        variant["train_ms_all"][0] / base["train_ms_all"][0])
    assert rows[("ENN", "shared:torch-hidden")]["path"] == "native/torch"
    assert rows[("ENN", "shared:torch")]["path"] == "torch"
    assert rows[("LSTM (2 layers)", "-")]["ratio_to_lstm_per_round"]["median"] == 1.0
    assert all(r["peak_mib"] is None for r in rows.values())  # CUDA's allocator alone
    assert all(r["train_ms"] > 0 and r["infer_seq_per_s"] > 0 for r in rows.values())
    assert rows[("ENN", "per_sample")]["path"] == rows[("ENN", "shared")]["path"] == "native"
    for mode in ("per_sample", "shared"):
        assert set(report["breakdown"][mode]) == {
            "encoder", "memory pass (native)", "hidden pass (native)", "memory pass (torch)",
            "hidden pass (torch)", "trace noise", "LSTM step"}
    matmul = report["matmul"]
    assert (matmul["enn_associative_gmac"] > matmul["enn_shared_gmac"]
            > matmul["enn_per_sample_gmac"] > matmul["lstm_gmac"] > 0)
    assert report["allocator"] == "keeps freed memory"  # glibc, as on every supported machine
    assert all(r["page_faults_per_step"] >= 0 for r in rows.values())
    assert rows[("LSTM (2 layers)", "-")]["ratio_to_lstm_per_round"]["median"] == 1.0


def test_bench_can_keep_the_system_allocator(tmp_path):
    out = tmp_path / "speed.json"
    argv = ["bench", "--batch", "2", "--steps", "3", "--input-size", "3", "--hidden", "4",
            "--memory", "2", "--repeats", "1", "--warmup", "0", "--no-memory", "--baselines",
            "--trace", "shared", "--system-allocator", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["allocator"] == "system"


def test_round_ratios_pair_each_step_with_the_baseline_of_its_round():
    # a load that slows both models alike in a round cancels, however much the steps vary
    times, base = [2.0, 4.0, 8.0, 16.0, 6.0], [1.0, 2.0, 4.0, 8.0, 3.0]
    assert round_ratios(times, base) == {"q1": 2.0, "median": 2.0, "q3": 2.0}
    assert round_ratios([1.0, 3.0, 2.0], [1.0, 1.0, 1.0]) == {"q1": 1.5, "median": 2.0,
                                                              "q3": 2.5}
    assert round_ratios([3.0], [2.0]) == {"q1": 1.5, "median": 1.5, "q3": 1.5}
    with pytest.raises(ValueError):
        round_ratios([1.0, 2.0], [1.0])


def test_breakdown_of_the_associative_preset(tmp_path):
    out = tmp_path / "speed.json"
    argv = ["bench", "--batch", "4", "--steps", "5", "--input-size", "3", "--hidden", "8",
            "--memory", "4", "--repeats", "1", "--warmup", "0", "--no-memory", "--trace",
            "per_sample", "--presets", "associative", "--breakdown", "--out", str(out)]
    assert main(argv) == 0
    parts = json.loads(out.read_text())["breakdown"]["associative"]
    # its memory on the clipped scan where the kernels are built, its hidden pass gated;
    # no trace noise in this preset
    scan = "scan" if native.available() else "torch"
    hidden = "native" if native.available() else "torch"
    assert set(parts) == {"encoder", f"memory pass ({scan})", "memory pass (torch)",
                          f"hidden pass ({hidden})", "hidden pass (torch)", "LSTM step"}
    assert all(v > 0 for v in parts.values())


def test_matmul_count_at_the_paper_shapes():
    macs = matmul_macs(batch=128, steps=28, input_size=28, hidden=128, memory=64)
    tokens, h, n = 128 * 28, 128, 64
    # forward + 2x backward, but the first layer's input product: forward + its weights' grad
    assert macs["lstm"] == tokens * (2 * 4 * h * 28 + 3 * 4 * (h * h + 64 * (h + 64)))
    assert macs["enn_per_sample"] == tokens * (2 * 28 * h + 3 * (9 * h * h + 3 * h * h + 2 * n * h))
    # the shared trace's write is a batch product, the per-sample one an outer product
    assert macs["enn_shared"] - macs["enn_per_sample"] == 3 * tokens * n * h
    # the gate and the recall's product with the trace (the write address reuses the read's)
    assert macs["enn_associative"] - macs["enn_per_sample"] == 3 * tokens * (3 * h * h + n * h)
    assert abs(macs["enn_associative"] / macs["lstm"] - 2.19) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_runs_on_cuda(tmp_path):
    out = tmp_path / "speed.json"
    argv = ["bench", "--device", "cuda", "--batch", "4", "--steps", "5", "--input-size", "3",
            "--hidden", "8", "--memory", "4", "--repeats", "1", "--warmup", "0", "--baselines",
            "--breakdown", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert all(r["train_ms"] > 0 and r["peak_mib"] >= 0 for r in report["rows"])


def test_bench_outside_a_checkout_is_one_error_line(monkeypatch, capsys):
    from enn.cli import bench

    monkeypatch.delitem(sys.modules, bench.MODULE, raising=False)
    monkeypatch.setattr(bench, "benchmark_file", lambda: None)
    assert main(["bench", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("enn bench: error: the benchmark is not installed with the package")


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/a-file/x.json"], "--out: cannot create {tmp}/a-file"),
    (["--out", "{tmp}"], "--out: expected a file, got the folder {tmp}"),
    (["--plot-dir", "{tmp}/plots"], "--plot-dir draws the --scaling curves; give --scaling too"),
    (["--out", "/proc/self/x.json"], "--out: cannot write /proc/self/x.json"),
])
def test_bad_outputs_are_one_line_before_any_timing(tmp_path, capsys, monkeypatch, args,
                                                    message):
    from benchmarks import bench

    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("timed before checking"))
    argv = ["bench", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.replace("{tmp}", str(tmp_path)) in err


def test_plots_without_matplotlib_are_refused_before_any_timing(capsys, monkeypatch, tmp_path):
    from benchmarks import bench

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("timed before checking"))
    assert main(["bench", "--scaling", "--plot-dir", str(tmp_path / "plots")]) == 2
    assert "--plot-dir needs matplotlib" in capsys.readouterr().err


def test_the_associative_memory_has_no_pytorch_path_variant():
    from benchmarks import bench

    with pytest.raises(ValueError, match="no PyTorch-path variant"):
        bench.build("enn_associative:torch-memory", 3, 8, 4)
    assert bench.build("enn_associative:torch-hidden", 3, 8, 4) is not None
