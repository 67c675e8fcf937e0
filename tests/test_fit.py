"""rnnpool fit: RNNPool placed in a model's trunk to meet a RAM budget, checked against hand counts."""
import json

import pytest
import torch
import torchvision
from torch import nn

from rnnpool.analysis import profile_model
from rnnpool.cli import main
from rnnpool.errors import InvalidInputError, UnknownModelError, UnsupportedError
from rnnpool.fit import describe, fit_model, save_fitted
from rnnpool.fit.plot import fit_figure
from rnnpool.models import create_model
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


class Residual(nn.Module):
    """Layers in separate attributes (no Sequential trunk), a residual add, functional pooling: torch.fx's case.

    stem 8x32x32 -> down 16x8x8 (4x below the stem) -> + body (two maps live) -> out 32x4x4 (8x) -> mean -> fc."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.act = nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()
        self.down, self.body, self.out = nn.Conv2d(8, 16, 3, 4, 1), nn.Conv2d(16, 16, 3, 1, 1), nn.Conv2d(16, 32, 3, 2, 1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        y = self.down(self.act(self.stem(x)))
        y = y + self.body(y)
        return self.fc(self.out(y).mean((2, 3)))


class Dynamic(nn.Module):
    """No Sequential trunk, and a branch on the data: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, 4, 1), nn.Linear(8, 2)

    def forward(self, x):
        x = self.conv(x)
        if x.mean() > 0:
            x = x * 2
        return self.fc(x.mean((2, 3)))


class NoConv(nn.Module):
    """Traceable, but no convolution to keep as the stem."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def small(num_classes: int = 10) -> nn.Module:
    """A factory for ``tests.test_fit:small`` (the user's own code)."""
    model = Small()
    model.head[-1] = nn.Linear(32, num_classes)
    return model


def not_a_model():
    return "a string"


def test_search_on_a_small_trunk_matches_hand_counts():
    torch.manual_seed(0)
    model = Small()
    fitted, report = fit_model(model, (3, 64, 64), 3000, "int8")
    # one cut (after the last 8x8 layer, 4x below the stem's 32x32), two patch sizes (stride + 2, 2 x stride), two
    # widths (4 x h2 = the cut's 32 channels, or 64 with the conv after the cut widened to read them)
    assert [(c.replaced, c.patch, c.stride, c.hidden_summary, c.adapter, c.output, c.widened) for c in report.candidates] == [
        ("features.1-features.3", 6, 4, 8, False, (32, 8, 8), []), ("features.1-features.3", 6, 4, 16, False, (32, 8, 8), ["features.2"]),
        ("features.1-features.3", 8, 4, 8, False, (32, 8, 8), []), ("features.1-features.3", 8, 4, 16, False, (32, 8, 8), ["features.2"])]
    # int8, 'layer': the stem and the image are streamed into the RNNPool; the last conv holds 32x8x8 in + 32x4x4
    # out; with the 8x8 patch the RNNPool holds as much (32x8x8 out + one 8x8x8 patch) and comes first
    first, wide, second, _ = report.candidates
    assert first.peak_bytes == second.peak_bytes == 32 * 8 * 8 + 32 * 4 * 4 == 32 * 8 * 8 + 8 * 8 * 8 and first.fits and second.fits
    assert (first.peak_layer, second.peak_layer) == ("features.2", "features.1")
    assert wide.peak_bytes == 64 * 8 * 8 + 32 * 4 * 4 and wide.peak_layer == "features.2" and not wide.fits  # the widened conv
    assert report.original["peak_bytes"] == 3 * 64 * 64 + 8 * 32 * 32  # the stem: image in + 8x32x32 out
    # of the two that fit at the same cut and width, the smaller patch costs less
    assert report.chosen == 0 and report.candidates[0].madds < report.candidates[2].madds
    pool = fitted.features[1]
    assert isinstance(pool, RNNPool2d) and pool.patch_size == (6, 6) and pool.stride == (4, 4) and pool.out_channels == 32
    assert fitted(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert profile_model(fitted, (3, 64, 64), "int8").peak_bytes == report.candidates[0].peak_bytes
    assert model.features[1].out_channels == 16  # the original is left as it was
    # with room for the wide RNNPool it is still not picked: it costs 2x the original's MAdds, the narrow one 0.75x
    _, report = fit_model(model, (3, 64, 64), 5000, "int8")
    wide = report.candidates[1]
    assert wide.fits and wide.madds > report.original["madds"] > report.candidates[0].madds and report.chosen == 0


def test_a_budget_that_cannot_be_met_says_the_smallest_peak():
    fitted, report = fit_model(Small(), (3, 64, 64), 2000, "int8")
    assert fitted is None and report.chosen is None
    assert "none fits 2.0 KiB: the smallest peak is 2.5 KiB" in report.table() and "at features.2" in report.table()


def test_the_plot_shows_every_candidate_the_budget_and_the_pick():
    _, report = fit_model(Small(), (3, 64, 64), 3000, "int8")
    figure = fit_figure(report)
    ax = figure.axes[0]
    points = sorted(tuple(p) for collection in ax.collections for p in collection.get_offsets().tolist())
    wanted = [(c.peak_bytes / 1024, c.madds / 1e6) for c in report.candidates]
    wanted += [(report.original["peak_bytes"] / 1024, report.original["madds"] / 1e6), wanted[report.chosen]]
    assert points == sorted(wanted)  # the original, each candidate once, and the pick's ring
    assert ax.lines[0].get_xdata()[0] == 3000 / 1024 and "picked: features.1-features.3" in "".join(t.get_text() for t in ax.get_legend().get_texts())


def test_traced_models_are_cut_where_one_map_flows(tmp_path):
    """No Sequential trunk: torch.fx finds the cuts (never inside the residual), rewires the graph, widens the reader."""
    torch.manual_seed(0)
    model = Residual()
    x = torch.randn(2, 3, 64, 64)
    before = model(x)
    fitted, report = fit_model(model, (3, 64, 64), 1600, "int8")
    # 8x8 (4x): the last single map there is the sum, read only by `out`; 4x4 (8x): `out`, read by the mean
    assert [(c.replaced, c.patch, c.stride, c.hidden_summary, c.output, c.widened) for c in report.candidates] == [
        ("down-body", 6, 4, 4, (16, 8, 8), []), ("down-body", 6, 4, 8, (16, 8, 8), ["out"]),
        ("down-body", 8, 4, 4, (16, 8, 8), []), ("down-body", 8, 4, 8, (16, 8, 8), ["out"]),
        ("down-out", 10, 8, 8, (32, 4, 4), []), ("down-out", 16, 8, 8, (32, 4, 4), [])]
    # the narrow 6/4 stage: `out` holds 16x8x8 in + 32x4x4 out; the RNNPool 16x8x8 out + one 8x6x6 patch
    first = report.candidates[0]
    assert first.peak_bytes == 16 * 8 * 8 + 32 * 4 * 4 and first.peak_layer == "out"
    assert report.candidates[1].peak_bytes == 32 * 8 * 8 + 32 * 4 * 4 > 1600  # widened: does not fit
    assert report.chosen == 0 and report.original["peak_bytes"] == 3 * 64 * 64 + 8 * 32 * 32
    assert isinstance(fitted, torch.fx.GraphModule) and isinstance(fitted.rnnpool_stage, RNNPool2d)
    assert not hasattr(fitted, "down") and not hasattr(fitted, "body")  # the replaced layers are gone
    assert fitted(x).shape == (2, 10) and torch.equal(model(x), before)  # the original is left as it was
    assert profile_model(fitted, (3, 64, 64), "int8").peak_bytes == first.peak_bytes
    saved = tmp_path / "fitted.pt"
    save_fitted(fitted, report, str(saved))
    assert torch.equal(create_model(str(saved))(x), fitted(x))  # the GraphModule round-trips through the file
    # with room for it, the wide RNNPool is kept (every candidate here costs more MAdds than the original, so none
    # is preferred for that); "madds" takes the cheapest instead
    wide, report = fit_model(model, (3, 64, 64), 4096, "int8")
    assert report.chosen == 1 and all(c.madds > report.original["madds"] for c in report.candidates)
    assert wide.rnnpool_stage.out_channels == 32 and wide.out.in_channels == 32 and wide(x).shape == (2, 10)
    assert fit_model(model, (3, 64, 64), 4096, "int8", objective="madds")[1].chosen == 0


def test_torchvision_resnet18_is_fitted_through_its_graph():
    fitted, report = fit_model(torchvision.models.resnet18(num_classes=10), (3, 64, 64), 2**14, "int8", downsampling=(4,))
    chosen = report.candidates[report.chosen]
    assert chosen.replaced == "maxpool-layer2" and chosen.output == (128, 8, 8)  # the paper's ResNet18 cut (28x28 at 224)
    assert {c.hidden_summary for c in report.candidates} == {32, 64}  # 4 x 32 = the cut's 128 channels (the paper's h)
    assert [c.widened for c in report.candidates if c.hidden_summary == 64][0] == ["layer3.0.conv1", "layer3.0.downsample.0"]
    assert fitted(torch.randn(1, 3, 64, 64)).shape == (1, 10) and chosen.peak_bytes <= 2**14 < report.original["peak_bytes"]


def test_last_layer_rnnpool_replaces_the_global_pooling():
    torch.manual_seed(0)
    fitted, report = fit_model(Small(), (3, 64, 64), 3000, "int8", last_pool=True)  # a pooling module: replaced in place
    last = fitted.head[0]
    assert isinstance(last, RNNPool2d) and last.patch_size == (4, 4) and last.out_channels == 32 and report.candidates[0].last_pool
    traced, _ = fit_model(Residual(), (3, 64, 64), 1600, "int8", last_pool=True)  # x.mean((2, 3)): replaced in the graph
    last = traced.rnnpool_last_pool
    assert isinstance(last[0], RNNPool2d) and last[0].patch_size == (4, 4) and isinstance(last[1], nn.Flatten)
    outputs = traced(torch.randn(2, 3, 64, 64))
    assert outputs.shape == (2, 10) and not torch.equal(outputs[0], outputs[1])
    mnv2, report = fit_model(torchvision.models.mobilenet_v2(num_classes=10), (3, 64, 64), 2**15, "int8", last_pool=True,
                             downsampling=(4,))  # torchvision's functional adaptive_avg_pool2d, the trunk kept whole
    assert isinstance(mnv2.rnnpool_last_pool, RNNPool2d) and mnv2(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert all("RNNPool" in describe(c) for c in report.candidates)


def test_models_that_cannot_be_cut_are_refused_with_the_reason():
    with pytest.raises(UnsupportedError, match=r"Dynamic keeps its layers in separate attributes \(conv, fc\).*torch.fx cannot trace "
                                                r"Dynamic \(TraceError"):
        fit_model(Dynamic(), (3, 64, 64), 256 * 1024)
    with pytest.raises(SystemExit, match="error: Dynamic keeps its layers"):
        main(["fit", "tests.test_fit:Dynamic", "--ram", "256KiB"])
    with pytest.raises(UnsupportedError, match="no convolution reads the model's"):
        fit_model(NoConv(), (3, 2, 2), 100)


def test_the_stream_convention_fits_the_int8_program():
    """--convention stream: every peak is the RAM of the int8 C program export c would build."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10)
    fitted, report = fit_model(model, (3, 32, 32), 48 * 1024, "int8", "stream", downsampling=(4,))
    chosen = report.candidates[report.chosen]
    assert report.original["peak_bytes"] == profile_model(model, (3, 32, 32), "int8", "stream").peak_bytes > 48 * 1024
    assert chosen.peak_bytes == profile_model(fitted.eval(), (3, 32, 32), "int8", "stream").peak_bytes <= 48 * 1024
    assert "the whole program: arena" in chosen.peak_layer
    with pytest.raises(InvalidInputError, match="use dtype int8"):
        fit_model(model, (3, 32, 32), 2**15, "fp32", "stream")
    with pytest.raises(UnsupportedError, match="int8 deployment"):  # hard-swish and SE blocks: no C path
        fit_model(torchvision.models.mobilenet_v3_small(num_classes=10), (3, 32, 32), 2**15, "int8", "stream")


def test_torchvision_mobilenet_v2_gets_the_papers_model():
    """At 224x224 fp32 and 0.25 MiB: RNNPool after the first conv, h1 = h2 = 16, 64 channels at 28x28 (the next
    block's first conv widened to read them), the peak of the zoo's mobilenetv2_rnnpool, fewer MAdds than the original."""
    fitted, report = fit_model(torchvision.models.mobilenet_v2(), (3, 224, 224), 2**18, "fp32")
    chosen = report.candidates[report.chosen]
    assert chosen.replaced == "features.1-features.6" and (chosen.patch, chosen.stride, chosen.hidden_row, chosen.hidden_summary) == (6, 4, 16, 16)
    assert chosen.channels == 64 and chosen.output[1:] == (28, 28) and chosen.widened == ["features.2.conv.0.0"]
    paper = profile_model(create_model("mobilenetv2_rnnpool"), (3, 224, 224), "fp32")
    assert abs(chosen.peak_bytes - paper.peak_bytes) <= 0.05 * paper.peak_bytes
    assert chosen.peak_bytes <= 2**18 < report.original["peak_bytes"] and chosen.madds < report.original["madds"]
    assert isinstance(fitted.features[0], torchvision.ops.Conv2dNormActivation) and isinstance(fitted.features[1], RNNPool2d)


def test_user_factories_build_models():
    model = create_model("tests.test_fit:small", num_classes=3)
    assert isinstance(model, Small) and model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(UnknownModelError, match="cannot import 'tests.no_such_module'"):
        create_model("tests.no_such_module:small")
    with pytest.raises(UnknownModelError, match="has no callable 'nothing'"):
        create_model("tests.test_fit:nothing")
    with pytest.raises(InvalidInputError, match="returned a str, not a torch.nn.Module"):
        create_model("tests.test_fit:not_a_model")
    with pytest.raises(InvalidInputError, match="takes no option 'depth'"):
        create_model("tests.test_fit:small", depth=3)


def test_cli_fit_save_and_profile_round_trip(tmp_path, capsys):
    saved = tmp_path / "fitted.pt"
    plot = tmp_path / "fit.png"
    main(["fit", "torchvision:mobilenet_v2", "--input", "3x64x64", "--ram", "16KiB", "--save", str(saved), "--json", "-",
          "--plot", str(plot)])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "picked (*)" in captured.err and f"wrote {saved}" in captured.err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chosen = report["candidates"][report["chosen"]]
    main(["profile", str(saved), "--dtype", "int8", "--json", "-"])  # the input it was fitted at, from the file
    profile = json.loads(capsys.readouterr().out)
    assert profile["input"] == [1, 3, 64, 64] and profile["peak_bytes"] == chosen["peak_bytes"] <= 16 * 1024
    with pytest.raises(SystemExit, match="nothing to save: no candidate fits"):
        main(["fit", "torchvision:mobilenet_v2", "--input", "3x64x64", "--ram", "100B", "--save", str(tmp_path / "x.pt")])
    with pytest.raises(SystemExit):
        main(["fit", "torchvision:mobilenet_v2", "--ram", "lots"])
    assert "RAM must look like 256KiB" in capsys.readouterr().err
