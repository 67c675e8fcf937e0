"""rnnpool fit: RNNPool placed in a model's trunk to meet a RAM budget, checked against hand counts."""
import json

import pytest
import torch
import torchvision
from torch import nn

from rnnpool.analysis import profile_model
from rnnpool.cli import main
from rnnpool.errors import UnsupportedError
from rnnpool.fit import fit_model
from rnnpool.nn import RNNPool2d


class Small(nn.Module):
    """stem 8x32x32 -> 16x16x16 -> 16x16x16 -> 32x8x8 (4x below the stem) -> 32x4x4, then a classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 1, 1),
                                      nn.Conv2d(16, 32, 3, 2, 1), nn.Conv2d(32, 32, 3, 2, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_search_on_a_small_trunk_matches_hand_counts():
    torch.manual_seed(0)
    model = Small()
    fitted, report = fit_model(model, (3, 64, 64), 3000, "int8")
    # one cut (after the last 8x8 layer, 4x below the stem's 32x32), two patch sizes (stride + 2, 2 x stride)
    assert [(c.replaced, c.patch, c.stride, c.hidden_summary, c.adapter, c.output) for c in report.candidates] == [
        ("features.1-features.3", 6, 4, 8, False, (32, 8, 8)), ("features.1-features.3", 8, 4, 8, False, (32, 8, 8))]
    # int8, 'layer': the stem and the image are streamed into the RNNPool; the last conv holds 32x8x8 in + 32x4x4
    # out; with the 8x8 patch the RNNPool holds as much (32x8x8 out + one 8x8x8 patch) and comes first
    first, second = report.candidates
    assert first.peak_bytes == second.peak_bytes == 32 * 8 * 8 + 32 * 4 * 4 == 32 * 8 * 8 + 8 * 8 * 8 and first.fits and second.fits
    assert (first.peak_layer, second.peak_layer) == ("features.2", "features.1")
    assert report.original["peak_bytes"] == 3 * 64 * 64 + 8 * 32 * 32  # the stem: image in + 8x32x32 out
    assert report.chosen == 0 and report.candidates[0].madds < report.candidates[1].madds  # the smaller patch costs less
    pool = fitted.features[1]
    assert isinstance(pool, RNNPool2d) and pool.patch_size == (6, 6) and pool.stride == (4, 4) and pool.out_channels == 32
    assert fitted(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert profile_model(fitted, (3, 64, 64), "int8").peak_bytes == report.candidates[0].peak_bytes
    assert model.features[1].out_channels == 16  # the original is left as it was


def test_a_budget_that_cannot_be_met_says_the_smallest_peak():
    fitted, report = fit_model(Small(), (3, 64, 64), 2000, "int8")
    assert fitted is None and report.chosen is None
    assert "none fits 2.0 KiB: the smallest peak is 2.5 KiB" in report.table() and "at features.2" in report.table()


def test_models_without_a_sequential_trunk_are_refused_with_the_reason():
    with pytest.raises(UnsupportedError, match=r"ResNet keeps its layers in separate attributes \(conv1, .*layer1"):
        fit_model(torchvision.models.resnet18(), (3, 64, 64), 256 * 1024)
    with pytest.raises(SystemExit, match="error: ResNet keeps its layers"):
        main(["fit", "torchvision:resnet18", "--ram", "256KiB"])


def test_torchvision_mobilenet_v2_gets_the_papers_placement():
    """At 224x224 fp32 and 0.25 MiB: RNNPool after the first conv, 28x28 output, fewer MAdds than the original."""
    fitted, report = fit_model(torchvision.models.mobilenet_v2(), (3, 224, 224), 2**18, "fp32", downsampling=(4,))
    chosen = report.candidates[report.chosen]
    assert chosen.replaced == "features.1-features.6" and chosen.output == (32, 28, 28) and (chosen.patch, chosen.stride) == (6, 4)
    assert chosen.peak_bytes <= 2**18 < report.original["peak_bytes"] and chosen.madds < report.original["madds"]
    assert isinstance(fitted.features[0], torchvision.ops.Conv2dNormActivation) and isinstance(fitted.features[1], RNNPool2d)


def test_cli_fit_save_and_profile_round_trip(tmp_path, capsys):
    saved = tmp_path / "fitted.pt"
    main(["fit", "torchvision:mobilenet_v2", "--input", "3x64x64", "--ram", "16KiB", "--save", str(saved), "--json", "-"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "picked (*)" in captured.err and f"wrote {saved}" in captured.err
    chosen = report["candidates"][report["chosen"]]
    main(["profile", str(saved), "--dtype", "int8", "--json", "-"])  # the input it was fitted at, from the file
    profile = json.loads(capsys.readouterr().out)
    assert profile["input"] == [1, 3, 64, 64] and profile["peak_bytes"] == chosen["peak_bytes"] <= 16 * 1024
    with pytest.raises(SystemExit, match="nothing to save: no candidate fits"):
        main(["fit", "torchvision:mobilenet_v2", "--input", "3x64x64", "--ram", "100B", "--save", str(tmp_path / "x.pt")])
    with pytest.raises(SystemExit):
        main(["fit", "torchvision:mobilenet_v2", "--ram", "lots"])
    assert "RAM must look like 256KiB" in capsys.readouterr().err
