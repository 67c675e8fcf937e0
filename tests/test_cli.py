import json

import pytest

from rnnpool.cli import main


def test_profile_compare_writes_files(tmp_path, capsys):
    main(["profile", "mobilenetv2_035_rnnpool", "--compare", "mobilenetv2_035", "--dtype", "int8",
          "--json", str(tmp_path / "a.json"), "--csv", str(tmp_path / "a.csv"), "--plot", str(tmp_path / "a.png")])
    out = capsys.readouterr().out
    assert "mobilenetv2_035_rnnpool" in out and "RAM vs first" in out
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["model"] == "mobilenetv2_035_rnnpool" and data["dtype"] == "int8" and data["convention"] == "layer"
    assert (tmp_path / "a.csv").exists() and (tmp_path / "a.png").exists()


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


def test_bad_input_shape(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "mobilenetv2", "--input", "3by224"])
    assert "input shape must look like 3x224x224" in capsys.readouterr().err
