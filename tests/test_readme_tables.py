"""The README's benchmark tables are generated from the committed JSON (benchmarks/readme_tables.py)."""
import json
import math
from pathlib import Path

import pytest

from .conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return load_benchmark("readme_tables")


@pytest.fixture
def tables():
    return _module()


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


def test_calibration_table_names_the_weights_where_a_model_has_several():
    tables = _module()
    run = {"command": "python benchmarks/calibration.py", "date": "2026-11-27", "processor": "x86_64"}
    row = {"model": "m", "method": "minmax", "metric": "AP", "float": 0.2, "int8": 0.19, "drop": 0.01, "input": "1x240x320", "run": run}
    text = tables.calibration_table({"results": [{**row, "weights": "a/m.pt"}, {**row, "weights": "b/m.pt", "int8": 0.2, "drop": 0.0},
                                                 {**row, "model": "n", "weights": "a/n.pt"}]})
    assert "| m (1x240x320, `a/m.pt`) | minmax | AP 0.2000 | 0.1900 | +1.00 | - | 1 |" in text
    assert "| m (1x240x320, `b/m.pt`) | minmax | AP 0.2000 | 0.2000 | +0.00 | - | 1 |" in text
    assert "| n (1x240x320) | minmax |" in text  # one weights file: not named


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


def test_merge_joins_side_by_side_result_files_and_a_later_row_replaces_in_place(tmp_path):
    report = load_benchmark("_report")
    write = lambda name, rows: (tmp_path / name).write_text(json.dumps({"results": rows, "args": {"from": name}}))
    write("out.json", [{"model": "a", "top1": 0.1}, {"model": "b", "top1": 0.2}])
    write("one.json", [{"model": "a", "top1": 0.5}])
    write("two.json", [{"model": "c", "top1": 0.7}])
    report.merge_results(tmp_path / "out.json", [tmp_path / "one.json", tmp_path / "two.json"])
    merged = json.loads((tmp_path / "out.json").read_text())
    assert merged["results"] == [{"model": "a", "top1": 0.5}, {"model": "b", "top1": 0.2}, {"model": "c", "top1": 0.7}]
    assert merged["args"] == {"from": "two.json"}
    report.merge_results(tmp_path / "new.json", [tmp_path / "two.json"])  # a new output file
    assert json.loads((tmp_path / "new.json").read_text())["results"] == [{"model": "c", "top1": 0.7}]


def test_pair_table_shows_runs_the_time_limit_cut_and_the_learning_rate_left(tables):
    run = {"accelerator": "GPU", "date": "2026-11-27", "command": "python benchmarks/train_pairs.py"}
    common = {"madds": 3.4e6, "peak_int8_kib": 2.4, "params": 1000, "minutes": 7.7, "input_size": 64, "batch_size": 256,
              "lr": 0.2, "min_scale": 0.25, "per_class": 0, "test_images": 10000, "warmup_epochs": 2, "run": run}
    rows = [{"model": "cut", "top1": 0.786, "epochs": 60, "epochs_done": 49, "probe_train_epoch_s": 6.8, **common},
            {"model": "whole", "top1": 0.796, "epochs": 39, "epochs_done": 39, "probe_train_epoch_s": 10.4, **common},
            {"model": "old", "top1": 0.5, "epochs": 15, **common}]
    text = tables.train_pairs_table({"results": rows})
    left = 0.5 * (1 + math.cos(math.pi * 47 / 58))  # after epoch 49 of 60, 2 of them warm-up
    assert f"| cut | 78.6% | 49 / 60 ({100 * left:.0f}%) |" in text and "| whole | 79.6% | 39 / 39 |" in text
    assert "| old | 50.0% | 15 / 15 |" in text
    assert "cut: a schedule of at most 60 epochs" in text and "whole: 39 epochs" in text and "lr left:" in text


def test_pair_table_says_on_the_gpu_only_for_runs_that_cropped_on_one(tables):
    common = {"top1": 0.7, "epochs": 10, "madds": 3.4e6, "peak_int8_kib": 2.4, "params": 1000, "minutes": 12.0, "input_size": 64,
              "batch_size": 256, "lr": 0.2, "min_scale": 0.25, "per_class": 0, "test_images": 10000, "data_on_device": True}
    gpu = {"model": "gpu", "run": {"accelerator": "NVIDIA H200", "date": "d", "command": "c"}, **common}
    cpu = {"model": "cpu", "run": {"accelerator": "none", "date": "d", "command": "c"}, **common}
    lines = {line.split(":")[0]: line for line in tables.train_pairs_table({"results": [gpu, cpu]}).splitlines()
             if line.startswith("- ")}
    assert "flips on the GPU" in lines["- gpu"] and "on NVIDIA H200" in lines["- gpu"]
    assert "on the GPU" not in lines["- cpu"] and "on a CPU" in lines["- cpu"]


def test_int8_classifier_table_says_where_the_float_model_came_from(tables):
    row = {"model": "m", "quantization": "post-training", "top1_fp32": 0.79, "top1_int8": 0.785, "drop_from_float": 0.005,
           "agreement": 0.98, "images": 10000}
    args = {"input_size": 64, "per_class": 1000, "qat_epochs": 2, "qat_lr": 0.0005, "test_per_class": 0, "calibration": "minmax",
            "equalize": True, "float_weights": "w.pt", "epochs": 15}
    run = {"target_drop": 0.005, "command": "c", "date": "d", "processor": "p", "results": [row]}
    text = tables.int8_classifier_table({**run, "args": args, "float_training": {"epochs": 60, "epochs_done": 48, "lr": 0.2,
                                                                                 "batch_size": 256}})
    assert "+0.50 (met)" in text and "`w.pt`, 48 epochs of a 60-epoch cosine schedule (lr 0.2, batch 256)" in text
    assert "on 1000 training images per class" in text and "10,000 test images (the whole test split)" in text
    trained_here = tables.int8_classifier_table({**run, "args": {**args, "float_weights": None, "test_per_class": 100},
                                                 "results": [{**row, "drop_from_float": 0.0051}]})
    assert "15 float epochs on 1000 training images per class" in trained_here and "(100 per class)" in trained_here
    assert "(not met)" in trained_here
