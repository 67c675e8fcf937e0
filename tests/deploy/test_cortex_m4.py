"""The generated C cross-compiled for a Cortex-M4 and run in qemu-system-arm (mps2-an386), end to end through
the CLI: RAM (static + painted stack + an exception frame) measured and claimed, the claim checked under
interrupts everywhere, an overflow faulting at once, instructions per layer, bit-exact with the reference."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.cli import main
from rnnpool.deploy.export import export_c
from rnnpool.deploy.programs import ExportError, toolchain_available

needs_m4 = pytest.mark.skipif(not toolchain_available("cortex-m4"),
                              reason="gcc-arm-none-eabi / qemu-system-arm not installed (see .ci/run)")
needs_stm32 = pytest.mark.skipif(not toolchain_available("stm32f439"), reason="gcc-arm-none-eabi not installed")


def photos(folder, size, channels, count=3):
    """Photo-like images (smooth random colours), different from each other."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng(i)
        small = rng.integers(0, 256, (max(2, size[0] // 8), max(2, size[1] // 8), 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR)
        img.convert("L" if channels == 1 else "RGB").save(folder / f"photo_{i}.png")
    return folder


@needs_m4
@pytest.mark.parametrize("name,size,channels,limit,pool", [("rnnpool_face_quant", (480, 640), 3, 128 * 1024, "stages.1.0.0"),
                                                           ("rnnpool_face_m4", (240, 320), 1, 64 * 1024, "stages.0.1.0")])
def test_face_models_run_on_the_m4_within_their_ram_targets(name, size, channels, limit, pool, tmp_path, capsys):
    images = photos(tmp_path / "calib", size, channels)
    report_path = tmp_path / "report.json"
    main(["export", "c", name, "-o", str(tmp_path / "out"), "--target", "cortex-m4", "--calib", str(images),
          "--run", str(images / "photo_2.png"), "--json", str(report_path), "--threshold", "0.3", "--ram-kib", str(limit // 1024)])
    report = json.loads(report_path.read_text())
    m4 = report["cortex_m4"]
    assert report["bit_exact"] is True and report["mismatches"] == []
    assert m4["ram_bytes"] == m4["static_ram_bytes"] + m4["stack_bytes"] <= limit
    assert m4["stack_bytes"] >= m4["stack_high_water_bytes"] + m4["exception_frame_bytes"]
    assert m4["static_ram_bytes"] >= report["schedule"]["arena_bytes"]
    assert m4["claimed_ram_run"]["same_output"] is True
    assert m4["claimed_minus_64"] == "stack overflow"
    assert abs(report["predicted_ram"]["total"] - m4["ram_bytes"]) <= 0.02 * m4["ram_bytes"]  # profile's stream convention
    bound = m4["stack_static_bound"]
    assert bound["chain"][0] == "program_main" and 0.8 * m4["stack_high_water_bytes"] < bound["bytes"]
    assert m4["flash_bytes"] > report["schedule"]["weight_bytes"]
    assert sum(layer["instructions"] for layer in m4["layers"]) <= m4["instructions"] < 2e9
    assert all(layer["instructions"] > 0 for layer in m4["layers"] if layer["kind"] != "detect")
    assert report["calibration"] == {"source": str(images), "images": 3, "method": "minmax", "equalized": [pool]}
    assert "never in RAM" in report["image_feed"]
    assert "bit-exact with the int8 reference: True" in capsys.readouterr().out


@needs_m4
def test_visual_wake_words_classifier_runs_on_the_m4(tmp_path, capsys):
    """The issue's command: the paper's VWW model on the M4 within 64 KiB, printing its class scores."""
    images = photos(tmp_path / "calib", (224, 224), 3)
    report_path = tmp_path / "report.json"
    main(["export", "c", "mobilenetv2_035_rnnpool", "--input", "3x224x224", "--target", "cortex-m4", "--run",
          str(images / "photo_0.png"), "--calib", str(images), "-o", str(tmp_path / "out"), "--ram-kib", "64",
          "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert report["bit_exact"] is True and len(report["logits"]) == 2
    assert report["cortex_m4"]["ram_bytes"] <= 64 * 1024
    assert abs(report["predicted_ram"]["total"] - report["cortex_m4"]["ram_bytes"]) <= 0.02 * report["cortex_m4"]["ram_bytes"]
    assert report["schedule"]["choices"]  # the planner traded work for RAM to fit 64 KiB
    out = capsys.readouterr().out
    assert f"class scores (int8 logits): {report['logits']}" in out and "planner (to fit the RAM)" in out


@needs_m4
def test_check_runs_the_m4_build_on_every_image_and_names_one_that_differs(tmp_path, capsys, monkeypatch):
    """--check: the program linked with the RAM it claimed runs in QEMU on each image, each output compared with the
    int8 reference; a reference that differs on one image is reported with that image, and the CLI fails."""
    import rnnpool.deploy.export as export

    images = photos(tmp_path / "calib", (64, 64), 3, count=4)
    report_path = tmp_path / "report.json"
    args = ["export", "c", "mobilenetv2_035_rnnpool", "--input-size", "64", "--target", "cortex-m4", "--run", str(images / "photo_0.png"),
            "--calib", str(images), "--check", str(images), "--check-limit", "3", "-o", str(tmp_path / "out"), "--ram-kib", "32"]
    main(args + ["--json", str(report_path)])
    report = json.loads(report_path.read_text())
    checked = report["checked"]
    assert checked["images"] == 3 and checked["bit_exact"] == 3 and "claimed" in checked["on"]
    assert [r["image"] for r in checked["runs"]] == [str(images / f"photo_{i}.png") for i in range(3)]
    assert checked["runs"][0]["logits"] == report["logits"]  # the --run image, run again: the same scores
    assert len({tuple(r["logits"]) for r in checked["runs"]}) == 3  # each run read its own image
    assert all(0 < r["instructions"] < 1e8 for r in checked["runs"])
    assert (tmp_path / "out" / "input.raw").read_bytes() == np.asarray(Image.open(images / "photo_0.png").convert("RGB")).tobytes()
    assert "checked on 3 images (the Cortex-M4 build linked with the" in capsys.readouterr().out

    real = export.reference_output
    calls = []

    def off_on_the_third(graph, image, settings):
        reference = real(graph, image, settings)
        calls.append(1)
        if len(calls) == 4:  # the --run image, then the three --check images: the last one
            reference["classes"] = [v + 1 for v in reference["classes"]]
        return reference

    monkeypatch.setattr(export, "reference_output", off_on_the_third)
    with pytest.raises(SystemExit, match=r"differs from the int8 reference on 1 of 3 --check images, first .*photo_2\.png: logits"):
        main(args)


def test_check_needs_an_image_to_run_first(tmp_path):
    images = photos(tmp_path / "calib", (64, 64), 3, count=1)
    with pytest.raises(SystemExit, match="needs an image to build and measure it on first"):
        main(["export", "c", "mobilenetv2_035_rnnpool", "--input-size", "64", "--calib", str(images), "--check", str(images),
              "-o", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="--check .*does not exist"):
        main(["export", "c", "mobilenetv2_035_rnnpool", "--input-size", "64", "--calib", str(images), "--check",
              str(tmp_path / "nowhere"), "--run", str(images / "photo_0.png"), "-o", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="--check-limit must be at least 1"):
        main(["export", "c", "mobilenetv2_035_rnnpool", "--input-size", "64", "--calib", str(images), "--check", str(images),
              "--check-limit", "0", "--run", str(images / "photo_0.png"), "-o", str(tmp_path / "out")])


@needs_m4
def test_a_ram_target_that_cannot_be_met_names_the_need(tmp_path):
    images = photos(tmp_path / "calib", (240, 320), 1)
    with pytest.raises(ExportError, match=r"needs [\d,]+ B of RAM .* the target has 32,768; largest buffers: ") as info:
        export_c("rnnpool_face_m4", tmp_path / "out", calib=str(images), target="cortex-m4",
                 run_image=str(images / "photo_0.png"), ram_bytes=32 * 1024)
    # buffers are named by the model's layers (module paths), not only by the program's tensor names
    assert re.search(r"largest buffers: \w+ \((stages|heads)\.[\w.]+\) [\d,]+ B", str(info.value))
    assert re.search(r"the planner already stages\.[\w.]+ \(n\d+_t\d+\): recompute", str(info.value))


@needs_stm32
def test_stm32f439_image_builds(tmp_path):
    images = photos(tmp_path / "calib", (240, 320), 1)
    report = export_c("rnnpool_face_m4", tmp_path / "out", calib=str(images), target="stm32f439",
                      run_image=str(images / "photo_0.png"))
    stm = report["stm32f439"]
    assert (tmp_path / "out" / stm["elf"]).is_file() and stm["bin_bytes"] > stm["flash_bytes"] * 0.9
    assert stm["sram_bytes"] <= 192 * 1024 and stm["flash_bytes"] <= 2048 * 1024
    assert report["bit_exact"] is True  # the same model code, run on the host


def test_export_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(SystemExit, match="--calib"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path)])
    with pytest.raises(SystemExit, match="no images"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path / "out"), "--calib", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown model"):
        main(["export", "c", "rnnpool_face_m5", "-o", str(tmp_path), "--calib", str(tmp_path)])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    photos(tmp_path / "calib", (240, 320), 1, 1)
    with pytest.raises(SystemExit, match="corrupt"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path), "--calib", str(tmp_path / "calib"), "--weights",
              str(tmp_path / "bad.pt")])
    with pytest.raises(SystemExit, match="give a MODEL"):
        main(["export", "c", "-o", str(tmp_path / "out"), "--calib", str(tmp_path / "calib")])
    torch.save({"model": {}, "config": {"model": "rnnpool_face_quant"}}, tmp_path / "quant.pt")
    with pytest.raises(SystemExit, match="is rnnpool_face_quant, not rnnpool_face_m4"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path / "out"), "--calib", str(tmp_path / "calib"), "--weights",
              str(tmp_path / "quant.pt")])
    (tmp_path / "broken" / "x").mkdir(parents=True)
    (tmp_path / "broken" / "x" / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(SystemExit, match="cannot read image"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path / "out"), "--calib", str(tmp_path / "broken")])
    with pytest.raises(SystemExit, match="input is fixed at 1x240x320"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path / "out"), "--calib", str(tmp_path / "calib"), "--input", "3x480x640"])
    with pytest.raises(SystemExit, match="square RGB"):
        main(["export", "c", "mobilenetv2_035_rnnpool", "-o", str(tmp_path / "out"), "--calib", str(tmp_path / "calib"),
              "--input", "3x224x160"])
    with pytest.raises(SystemExit, match="densenet121.* DenseBlock|does not support"):
        main(["export", "c", "densenet121_rnnpool", "-o", str(tmp_path / "out"), "--calib", str(tmp_path / "calib")])
