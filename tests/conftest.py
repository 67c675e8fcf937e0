import importlib.util
import os
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

# The GPU kernels' tests (tests/nn/test_fused_triton.py) run through Triton's interpreter where there is no GPU.
# Triton chooses the interpreter for its own library when it is first imported, and importing torchvision
# imports it: choose it here, before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated.*")


def load_benchmark(name: str):
    """The script benchmarks/NAME.py as a module (its folder on the path: the scripts import their neighbours)."""
    folder = str(ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def readme_zoo_table():
    """Rows of the README's generated zoo table, keyed by model name."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- zoo-table:start -->(.*?)<!-- zoo-table:end -->", text, re.S)
    assert block, "README.md has no zoo table between <!-- zoo-table:start/end --> markers"
    lines = [l for l in block.group(1).strip().splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows
