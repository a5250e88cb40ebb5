"""With torch and numpy alone (the optional packages blocked), ``enn`` imports, the layer
trains, ``enn --help`` works and a command that needs an extra says which one."""

import subprocess
import sys
import textwrap

OPTIONAL = ("lightning", "tensorboard", "yaml", "tqdm", "sklearn", "matplotlib", "scipy",
            "triton", "pytorch_lightning", "torchmetrics")

# None in sys.modules: importing the module fails, and importlib finds no spec for it
BLOCK = f"import sys\nsys.modules.update(dict.fromkeys({OPTIONAL!r}))\n"


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_the_layer_runs_without_the_optional_packages():
    result = run("""
        import torch
        from enn import Engram

        rnn = Engram(3, 8, batch_first=True, memory_size=4)
        out, state = rnn(torch.randn(2, 5, 3))
        out.sum().backward()
        assert out.shape == (2, 5, 8)
        assert all(p.grad is not None for p in rnn.parameters())
    """)
    assert result.returncode == 0, result.stderr


def test_the_command_line_names_the_extra_a_command_needs():
    result = run("""
        from enn.cli import main

        assert main(["--help"]) == 0
        print("train:", main(["train", "--task", "digits", "--model", "engram"]))
        print("report:", main(["report", "."]))
    """)
    assert result.returncode == 0, result.stderr
    assert "train: 2" in result.stdout and "report: 2" in result.stdout
    assert "COMMAND" in result.stdout  # the help
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0] == ("enn train: error: needs 'lightning', from the 'train' extra: "
                        "pip install 'engram-nn[train]'")
    assert lines[1] == ("enn report: error: needs 'matplotlib', from the 'analysis' extra: "
                        "pip install 'engram-nn[analysis]'")


def test_the_models_and_their_config_import_without_pyyaml():
    result = run("""
        import enn.models
        from enn.models import build_model, resolve
        from enn.models.build import DataShape
        from enn.models.config import ASSOCIATIVE, validate

        cfg = validate(resolve("digits", "engram"))
        assert cfg.model.write_key == ASSOCIATIVE["write_key"]
        build_model(cfg.model, DataShape("classification", 10, input_size=8))
    """)
    assert result.returncode == 0, result.stderr
