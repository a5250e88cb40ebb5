"""The packages import downwards only (``enn.tools.imports``): no later layer, no private name
of another layer, no cycle; every import counts, also those inside functions."""

import subprocess
import sys
from pathlib import Path

from enn.tools.imports import edges_of, layer_graph, violations

SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_sources_keep_the_layering():
    assert violations(edges_of(SRC)) == []


def test_the_layers_below_training_need_no_training_code():
    graph = layer_graph(edges_of(SRC))
    assert graph["ops"] == []
    assert graph["nn"] == ["ops"]
    assert "train" not in graph["analysis"] and "cli" not in graph["train"]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "enn" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_upward_private_or_cyclic_import_is_reported(tmp_path):
    src = write(tmp_path, {
        "__init__.py": "from .nn import Engram\n",
        "nn/__init__.py": "",
        "nn/engram.py": "def f():\n    from ..train.run import fit\n",  # inside a function
        "train/__init__.py": "",
        "train/run.py": "from ..analysis.report import _table\nfrom . import lit\n",
        "train/lit.py": "import enn.train.run\n",
        "analysis/__init__.py": "",
        "analysis/report.py": "_table = None\n",
    })
    assert violations(edges_of(src)) == [
        "enn.nn.engram:2: imports enn.train.run.fit, of the later layer train",
        "enn.train.run:1: imports the private enn.analysis.report._table of the layer analysis",
        "cycle: enn.train.lit -> enn.train.run -> enn.train.lit",
    ]


def test_the_command_prints_the_graph_and_fails_on_a_problem(tmp_path):
    src = write(tmp_path, {"__init__.py": "", "ops/__init__.py": "from ..cli import main\n",
                           "cli/__init__.py": ""})
    run = subprocess.run([sys.executable, "-m", "enn.tools.imports", str(src)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "  cli       imports no other layer" in run.stdout
    assert "enn.ops:1: imports enn.cli.main, of the later layer cli" in run.stdout
    ok = subprocess.run([sys.executable, "-m", "enn.tools.imports"], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and "no upward, private or cyclic import" in ok.stdout
