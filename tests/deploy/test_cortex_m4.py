"""The generated C cross-compiled for a Cortex-M4 and run in qemu-system-arm (mps2-an386), end to end
through the CLI: under 256 KB of RAM (static + measured stack), bit-exact with the int8 reference."""
import json

import numpy as np
import pytest
from PIL import Image

from rnnpool.cli import main
from rnnpool.deploy import generate_c, quantize_model
from rnnpool.deploy.export import ExportError, run_program, toolchain_available

from .conftest import face_model, smooth_images, to_uint8

needs_m4 = pytest.mark.skipif(not toolchain_available("cortex-m4"),
                              reason="gcc-arm-none-eabi / qemu-system-arm not installed (see .ci/run)")
LIMIT = 256 * 1024


def photo(path, size, channels):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR)
    img.convert("L" if channels == 1 else "RGB").save(path)
    return path


@needs_m4
@pytest.mark.parametrize("name,size,channels", [("rnnpool_face_quant", (480, 640), 3), ("rnnpool_face_m4", (240, 320), 1)])
def test_face_models_run_on_the_m4_within_256_kib(name, size, channels, tmp_path, capsys):
    image = photo(tmp_path / "photo.png", size, channels)
    report_path = tmp_path / "report.json"
    main(["export", "c", name, "-o", str(tmp_path / "out"), "--target", "cortex-m4", "--run", str(image),
          "--json", str(report_path), "--threshold", "0.3"])
    report = json.loads(report_path.read_text())
    assert report["bit_exact"] is True and report["mismatches"] == []
    assert report["ram_bytes"] == report["static_ram_bytes"] + report["stack_bytes"]
    assert report["ram_bytes"] < LIMIT
    assert 0 < report["stack_bytes"] < 8192
    assert report["static_ram_bytes"] >= report["arena_bytes"]
    assert report["flash_bytes"] > report["weight_bytes"]
    assert report["instructions"] > 1e8
    assert report["claimed_ram_run"]["same_output"] is True
    assert report["input"] == {"height": size[0], "width": size[1], "channels": channels}
    assert "never in RAM" in report["image_feed"]
    assert '"bit_exact": true' in capsys.readouterr().out


@needs_m4
def test_link_fails_when_static_ram_overflows(tmp_path):
    model = face_model("rnnpool_face_quant")
    images = smooth_images(model, 1)
    generate_c(quantize_model(model, images), tmp_path)
    to_uint8(images[0]).tofile(tmp_path / "input.raw")
    with pytest.raises(ExportError, match="overflow|MIN_STACK"):
        run_program(tmp_path, "cortex-m4", ram_bytes=128 * 1024)


def test_export_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(SystemExit, match="--calib DIR or --run IMAGE"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a face detector"):
        main(["export", "c", "mobilenetv2", "-o", str(tmp_path), "--calib", str(tmp_path)])
    with pytest.raises(SystemExit, match="no images"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path / "out"), "--calib", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown model"):
        main(["export", "c", "rnnpool_face_m5", "-o", str(tmp_path), "--calib", str(tmp_path)])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="corrupt"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path), "--calib", str(tmp_path), "--weights", str(tmp_path / "bad.pt")])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(SystemExit, match="cannot read image"):
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path / "out"), "--calib", str(tmp_path)])
