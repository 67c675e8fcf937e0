"""The README's benchmark tables are generated from the committed JSON (benchmarks/readme_tables.py)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_benchmark_json():
    tables = _module()
    sections = tables.generated_sections()
    if not sections:
        pytest.skip("no benchmark JSON committed under benchmarks/results")
    text = (ROOT / "README.md").read_text()
    new, missing = tables.update(text, sections)
    assert not missing, f"README.md lacks the markers of {missing}"
    assert new == text, "README.md's tables differ from benchmarks/results: run python benchmarks/readme_tables.py"


def test_tables_show_a_row_per_result_and_failures_as_such(tmp_path):
    tables = _module()
    row = {"model": "m", "ram_target_bytes": 65536, "weights": "seeded", "fits": False, "needed_bytes": 70000}
    text = tables.deploy_table({"results": [row], "references": [{"what": "x", "ram": "1 KB", "note": "y"}]})
    assert "does not fit: needs 70,000 B" in text and "- x: 1 KB; y." in text
    readme = "a\n<!-- deploy-table:start -->\nold\n<!-- deploy-table:end -->\nb\n"
    new, missing = tables.update(readme, {"deploy-table": "new\n", "train-faces-table": "t\n"})
    assert new == "a\n<!-- deploy-table:start -->\nnew\n<!-- deploy-table:end -->\nb\n" and missing == ["train-faces-table"]
