"""The README's benchmark tables are generated from the committed JSON (benchmarks/readme_tables.py)."""
from pathlib import Path

import pytest

from .conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return load_benchmark("readme_tables")


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


def test_calibration_table_averages_the_calibration_sets():
    tables = _module()
    run = {"command": "python benchmarks/calibration.py", "date": "2026-11-26", "processor": "x86_64"}
    rows = [{"model": "m", "method": "minmax", "metric": "AP", "float": 0.2, "int8": int8, "drop": 0.2 - int8,
             "head_sqnr_db": db, "input": "1x240x320", "run": run} for int8, db in ((0.18, 22.0), (0.19, 23.0))]
    text = tables.calibration_table({"results": rows})
    assert "| m (1x240x320) | minmax | AP 0.2000 | 0.1850 | +1.50 (+1.00 .. +2.00) | 22.5 dB | 2 |" in text
    assert "- m: measured by `python benchmarks/calibration.py` (2026-11-26, x86_64)." in text


def test_triton_variants_table_names_the_default_and_the_fastest_of_each_precision():
    tables = _module()
    run = {"command": "python benchmarks/triton_variants.py", "date": "2026-11-27"}

    def row(block, warps, precision, us, diff=0.0, default=False):
        return {"config": "densenet121", "units": 48, "block": block, "num_warps": warps, "precision": precision,
                "kernel_us": us, "max_abs_diff": diff, "default": default}

    runs = [row(32, 4, "ieee", 301.0, default=True), row(16, 4, "ieee", 260.0), row(64, 4, "tf32x3", 73.0, 5e-7),
            row(32, 4, "tf32x3", 86.0, 4e-7)]
    text = tables.triton_variants_table({"batch": 8, "runs": runs, "run": run, "device": "GPU", "triton": "3.6", "torch": "2.11"})
    assert "| DenseNet121 | 48 | 301 us (32, 4, ieee) | 260 us (16, 4, ieee) | 73 us (64, 4, tf32x3) | 5.0e-07 |" in text
    assert "4 variants" in text and "on GPU (Triton 3.6" in text


def test_committed_results_name_files_portably(tmp_path):
    """write_json makes paths in this repository relative and paths in the shared data folder ``../shared/...``;
    other strings stay as they are."""
    report = load_benchmark("_report")
    payload = {"rows": [{"weights": str(ROOT / "benchmarks" / "weights" / "m.pt"),
                         "image": str(ROOT.parent / "shared" / "data" / "a.jpg"), "note": "/tmp/elsewhere", "n": 3}]}
    target = tmp_path / "out.json"
    report.write_json(target, payload)
    row = __import__("json").loads(target.read_text())["rows"][0]
    assert row == {"weights": "benchmarks/weights/m.pt", "image": "../shared/data/a.jpg", "note": "/tmp/elsewhere", "n": 3}

    def strings(value):
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    for result in (ROOT / "benchmarks" / "results").glob("*.json"):
        absolute = [s for s in strings(__import__("json").loads(result.read_text()))
                    if s.startswith("/") and ("/benchmarks/" in s or "/shared/data/" in s)]
        assert not absolute, f"{result.name} names files by absolute paths: {absolute[:3]}"
