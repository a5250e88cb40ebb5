"""The shell scripts behind docs/results, run with a stand-in ``enn`` that records its
arguments: usage errors, the shared settings of common.sh, and resuming an interrupted grid."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(tmp_path, *args) -> tuple[int, list[list[str]]]:
    """Runs a script with ``enn`` and ``python3`` as stubs, its outputs and the published
    records it reads under ``tmp_path``; returns its exit code and the argument lists of its
    ``enn`` calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    log.unlink(missing_ok=True)
    for name in ("enn", "python3"):
        stub = bin_dir / name
        # one line a call, its arguments separated by tabs so that each stays one
        stub.write_text(f'#!/usr/bin/env bash\nIFS=$\'\\t\'; echo "{name}\t$*" >> "{log}"\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "PUBLISHED": str(tmp_path / "published")}
    done = subprocess.run(["bash", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=60)
    lines = log.read_text().splitlines() if log.exists() else []
    return done.returncode, [line.split("\t")[1:] for line in lines if line.startswith("enn\t")]


@pytest.mark.parametrize("script", ["reproduce.sh", "memory_evidence.sh"])
def test_an_unknown_part_is_a_usage_error(tmp_path, script):
    code, calls = run_script(tmp_path, SCRIPTS / script, "no-such-part")
    assert code == 2 and calls == []


def test_the_shared_settings_reach_every_run(tmp_path):
    """The arrays of common.sh expand to one argument each, in every run that uses them."""
    code, calls = run_script(tmp_path, SCRIPTS / "memory_evidence.sh", "recall")
    assert code == 0 and len(calls) == 4
    for call in calls:
        for arg in ("data.n_train=50000", "data.n_val=5000", "data.n_test=10000",
                    "train.threads=1"):
            assert call.count(arg) == 1, call
    code, calls = run_script(tmp_path, SCRIPTS / "memory_evidence.sh", "hidden")
    assert code == 0 and len(calls) == 12
    paper_cell = [c for c in calls if "--preset" in c and c[c.index("--preset") + 1] == "paper"]
    assert len(paper_cell) == 8  # 3 updates on two tasks, 2 on full MNIST
    for call in paper_cell:
        for arg in ("model.trace=per_sample", "model.init_state=zeros", "train.clip=global",
                    "train.adam_eps=1e-8", "model.head_init=torch"):
            assert call.count(arg) == 1, call
    code, calls = run_script(tmp_path, SCRIPTS / "reproduce.sh", "assoc-100k",
                             "model.hidden_update=residual")
    assert code == 0 and len(calls) == 2  # h = 20 and 50
    for call in calls:
        assert call[call.index("--epochs") + 1] == "300"
        assert {"train.patience=10", "train.lr_patience=5"} <= set(call)
        assert call[-1] == "model.hidden_update=residual"  # the caller's overrides come last


def test_the_ablation_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "out" / "ablation-assoc-k4"
    finished = out / "linear" / "engram-seed0"
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    interrupted = out / "plus-clip" / "engram-seed0" / "checkpoints"
    interrupted.mkdir(parents=True)
    (interrupted / "last.ckpt").write_text("")
    code, calls = run_script(tmp_path, SCRIPTS / "memory_ablation.sh", 4, 0)
    assert code == 0
    runs = {c[c.index("--out") + 1]: c for c in calls}
    assert len(runs) == len(calls) == 14  # the 15 rows but the finished one
    assert str(finished) not in runs
    assert "--resume" in runs[str(interrupted.parent)]
    assert sum("--resume" in c for c in calls) == 1
    assert all(c.count("model.trace_clip=null") == 1 for c in calls)


def test_the_ablation_counts_published_records_as_done(tmp_path):
    """A run whose record is published (made on another machine) is copied in, not trained;
    a local run is kept even where a record of it is published."""
    published = tmp_path / "published" / "ablation-mqar-p8"
    for variant in ("preset", "minus-clip"):
        record = published / variant / "runs" / "engram-seed1"
        record.mkdir(parents=True)
        (record / "metrics.json").write_text('{"from": "record"}')
    local = tmp_path / "out" / "ablation-mqar-p8" / "minus-clip" / "engram-seed1"
    local.mkdir(parents=True)
    (local / "metrics.json").write_text('{"from": "here"}')
    code, calls = run_script(tmp_path, SCRIPTS / "memory_ablation.sh", "mqar", 1)
    assert code == 0
    trained = sorted(Path(c[c.index("--out") + 1]).parent.name for c in calls)
    assert trained == ["minus-previous-key", "minus-residual", "minus-separate-decay"]
    out = tmp_path / "out" / "ablation-mqar-p8"
    assert (out / "preset" / "engram-seed1" / "metrics.json").read_text() == '{"from": "record"}'
    assert (local / "metrics.json").read_text() == '{"from": "here"}'
