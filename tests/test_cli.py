import json

import pytest

from rnnpool.cli import main
from rnnpool.models.checkpoint import CheckpointError


def test_profile_compare_writes_files(tmp_path, capsys):
    main(["profile", "mobilenetv2_035_rnnpool", "--compare", "mobilenetv2_035", "--dtype", "int8",
          "--json", str(tmp_path / "a.json"), "--csv", str(tmp_path / "a.csv"), "--plot", str(tmp_path / "a.png")])
    out = capsys.readouterr().out
    assert "mobilenetv2_035_rnnpool" in out and "RAM vs first" in out
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["model"] == "mobilenetv2_035_rnnpool" and data["dtype"] == "int8" and data["convention"] == "layer"
    assert data["compare"]["model"] == "mobilenetv2_035" and data["compare"]["peak_bytes"] > 5 * data["peak_bytes"]
    assert (tmp_path / "a.csv").exists() and (tmp_path / "a.png").exists()
    for path in ("a.json", "a.csv", "a.png"):  # each file it wrote is named
        assert f"wrote {tmp_path / path}" in out


def test_profile_torchvision_model(capsys):
    main(["profile", "torchvision:resnet18", "--input", "3x64x64", "--convention", "tensor"])
    assert "convention 'tensor'" in capsys.readouterr().out


def test_list(capsys):
    main(["list", "*face*"])
    out = capsys.readouterr().out
    assert "rnnpool_face_quant" in out and "mobilenetv2" not in out


@pytest.mark.parametrize("argv,message", [
    (["profile", "mobilenetv2_rnnpol"], "did you mean 'mobilenetv2_rnnpool'"),
    (["profile", "torchvision:resnet81"], "unknown torchvision model 'resnet81'"),
    (["profile"], "give a MODEL"),
])
def test_errors_name_the_problem(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_bad_size_bins(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "detect", "--val", "x.txt", "--size-bins", "32,16"])
    assert "size bins are ascending positive pixel edges like 16,32,64, got '32,16'" in capsys.readouterr().err


def test_bad_input_shape(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "mobilenetv2", "--input", "3by224"])
    assert "input shape must look like 3x224x224" in capsys.readouterr().err


@pytest.mark.parametrize("extra,expected", [([], 10.0), (["--grad-clip", "2.5"], 2.5), (["--grad-clip", "0"], None)])
def test_detection_clips_the_gradient_to_norm_10_unless_told(extra, expected, tmp_path, monkeypatch):
    import rnnpool.engine

    seen = []
    monkeypatch.setattr(rnnpool.engine, "train_detector", seen.append)
    main(["train", "detect", "--model", "rnnpool_face_a", "--train", str(tmp_path / "gt.txt"), *extra])
    assert len(seen) == 1 and seen[0].grad_clip == expected


@pytest.mark.parametrize("value", ["-1", "ten"])
def test_bad_gradient_norm(value, capsys):
    with pytest.raises(SystemExit):
        main(["train", "detect", "--model", "rnnpool_face_a", "--train", "gt.txt", "--grad-clip", value])
    err = capsys.readouterr().err
    assert "the gradient norm must be" in err and repr(value) in err


@pytest.mark.parametrize("argv,message", [
    (["train", "classify", "--model", "mobilenetv2_035", "--data", "/no/such/folder"], "error: /no/such/folder: no train folder"),
    (["train", "classify", "--model", "mobilenetv2_03", "--data", "."], "error: unknown model 'mobilenetv2_03'; did you mean"),
    (["train", "detect", "--model", "rnnpool_face_a", "--train", "/no/gt.txt"], "error: annotation file /no/gt.txt does not exist"),
    (["eval", "detect", "--model", "mobilenetv2", "--val", "x.txt"], "error: 'mobilenetv2' is not a face detector"),
])
def test_training_errors_are_messages_not_tracebacks(argv, message, monkeypatch):
    monkeypatch.delenv("RNNPOOL_TRACEBACK", raising=False)
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_corrupt_checkpoint_and_traceback_switch(tmp_path, monkeypatch):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    argv = ["detect", "photo.jpg", "--model", "rnnpool_face_a", "--weights", str(junk), "--device", "cpu"]
    with pytest.raises(SystemExit, match=f"error: checkpoint {junk} is corrupt or not a checkpoint"):
        main(argv)
    monkeypatch.setenv("RNNPOOL_TRACEBACK", "1")
    with pytest.raises(CheckpointError, match="corrupt or not a checkpoint"):
        main(argv)


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("rnnpool.cli.cmd_list", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["list"])
    assert exit_info.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_json_dash_writes_standard_output(capsys):
    """``--json -``: the JSON alone on standard output (the readable table moves to standard error)."""
    main(["profile", "mobilenetv2_035_rnnpool", "--input", "3x64x64", "--json", "-"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == "mobilenetv2_035_rnnpool"
    assert "mobilenetv2_035_rnnpool" in captured.err


def test_help_is_instant_and_imports_no_torch():
    """The parser is built (and --help answered) without importing torch."""
    import subprocess
    import sys

    code = "import sys; from rnnpool.cli import make_parser; make_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    done = subprocess.run([sys.executable, "-m", "rnnpool.cli", "train", "classify", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--epochs" in done.stdout


def test_each_subcommand_has_its_own_description_and_shows_defaults(capsys):
    from rnnpool.engine.config import DetectConfig

    with pytest.raises(SystemExit):
        main(["train", "detect", "--help"])
    out = capsys.readouterr().out
    assert "Train a face detector" in out and "thin mapper" not in out  # not the top-level text again
    defaults = {f.name: f.default for f in DetectConfig.__dataclass_fields__.values()}
    options = out[out.index("options:"):]
    for option, key in (("--epochs EPOCHS", "epochs"), ("--input-size INPUT_SIZE", "input_size"), ("--workers WORKERS", "workers")):
        line = options[options.index(option):].split("\n  --")[0]  # this option's help, up to the next option
        assert f"(default: {defaults[key]})" in " ".join(line.split()), option  # from DetectConfig, not a copy
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    out = capsys.readouterr().out
    assert out.count("Examples:") == 1 and "rnnpool profile --zoo" in out and "rnnpool list" not in out


def test_profile_zoo_shows_progress(monkeypatch, capsys):
    """--zoo profiles every model (a minute or two): it says which one it is on, on stderr."""
    from rnnpool.analysis import zoo

    monkeypatch.setattr(zoo, "list_models", lambda: ["mobilenetv2_035", "rnnpool_face_m4"])
    main(["profile", "--zoo", "--markdown"])
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["[1/2] mobilenetv2_035", "[2/2] rnnpool_face_m4"]
    assert "| mobilenetv2_035 |" in captured.out and "[1/2]" not in captured.out
