import json

import pytest
import torch
import torchvision
from torch import nn

from rnnpool.analysis import compare_table, profile_model
from rnnpool.analysis.plot import plot_memory
from rnnpool.models import create_model
from rnnpool.nn import RNNPool2d

F32 = 4


def unit(profile, name):
    return next(l for l in profile.layers if l.name == name)


@pytest.mark.parametrize("name,madds,params", [("mobilenet_v2", 300e6, 3.50e6), ("densenet121", 2.83e9, 7.98e6)])
def test_torchvision_documented_figures(name, madds, params):
    p = profile_model(torchvision.models.get_model(name), (3, 224, 224))
    assert p.madds == pytest.approx(madds, rel=0.01)
    assert p.params == pytest.approx(params, rel=0.005)
    assert p.uncounted_ops == []


def test_paper_worked_example_mobilenetv2():
    """First MBConv holds 112x112x32 in + 112x112x16 out = 602,112 floats (2.29 MB) and decides the peak."""
    p = profile_model(torchvision.models.mobilenet_v2(), (3, 224, 224))
    assert p.convention == "layer" and p.peak_layer == "features.1"
    assert p.peak_bytes == 602_112 * F32
    assert profile_model(torchvision.models.mobilenet_v2(), (3, 224, 224), dtype="int8").peak_bytes == 602_112


def test_rnnpool_streams_the_stem():
    """The stem conv and the image are computed per patch; the peak is then the first MBConv after RNNPool."""
    p = profile_model(create_model("mobilenetv2_rnnpool"), (3, 224, 224))
    assert unit(p, "features.0.0").held_bytes == 0
    pool = unit(p, "features.1.0")
    assert pool.kind == "rnnpool" and pool.held_bytes == (28 * 28 * 64 + 32 * 6 * 6) * F32
    assert p.peak_bytes == (28 * 28 * 64 + 14 * 14 * 64) * F32 and p.peak_layer == "features.2.0"
    assert pool.madds == 28 * 28 * (2 * 36 * (16 * 32 + 16 * 16) + 2 * 12 * (16 * 16 + 16 * 16))


def test_block_rules_residual_dense_inception():
    r18 = profile_model(torchvision.models.resnet18(), (3, 64, 64))
    block = unit(r18, "layer2.0")
    assert block.kind == "residual" and block.held_bytes == max(64 * 16 * 16, 128 * 8 * 8) * F32
    # the note gives the physical count: layer1.0 keeps its 64x16x16 input (the skip) beside conv1's and conv2's
    # outputs (BN and ReLU in place): 3 maps, against the 1 that max(input, output) counts
    (note,) = r18.notes
    assert "8 residual blocks" in note and "up to 3.00x" in note and "layer1.0: 192.0 KiB, counted 64.0 KiB" in note
    # at 64x64 the max pool (64x32x32 in, 64x16x16 out: 320 KiB) still makes the peak either way
    assert "the peak counted physically is 320.0 KiB (counted 320.0 KiB)" in note and "note: 8 residual blocks" in r18.table()
    dn = profile_model(create_model("densenet121"), (3, 64, 64))
    block = unit(dn, "features.4")
    assert block.kind == "dense" and block.held_bytes == 256 * 16 * 16 * F32
    g = profile_model(torchvision.models.googlenet(init_weights=False, aux_logits=False), (3, 224, 224))
    block = unit(g, "inception3a")
    branches = sorted([64, 128, 32, 32])[:3]
    assert block.kind == "inception" and block.held_bytes == (192 + sum(branches)) * 28 * 28 * F32


def test_pointwise_into_depthwise_is_on_the_fly():
    model = nn.Sequential(nn.Conv2d(8, 48, 1), nn.BatchNorm2d(48), nn.ReLU(inplace=True), nn.Conv2d(48, 48, 3, 2, 1, groups=48))
    p = profile_model(model, (8, 16, 16))
    assert unit(p, "0").held_bytes == 8 * 16 * 16 * F32  # its output is never materialised
    assert unit(p, "3").held_bytes == (8 * 16 * 16 + 48 * 8 * 8) * F32
    t = profile_model(model, (8, 16, 16), convention="tensor")  # no on-the-fly in the tensor convention
    assert t.peak_bytes == 2 * 48 * 16 * 16 * F32 and t.peak_layer == "1"  # conv out + BN out (not in place)


def test_tensor_convention_live_ranges():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.b(self.a(x)) + x  # x lives until the add

    p = profile_model(Skip(), (2, 4, 4), convention="tensor")
    hw = 16
    assert unit(p, "a").held_bytes == (2 + 4) * hw * F32
    assert unit(p, "b").held_bytes == (2 + 4 + 2) * hw * F32
    assert p.peak_bytes == 8 * hw * F32


def test_uncounted_ops_are_named():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.einsum("nchw,nchw->n", x, x)

    assert profile_model(Odd(), (2, 4, 4)).uncounted_ops == ["einsum"]


def test_rnn_modules_are_counted():
    p = profile_model(create_model("mobilenetv2_rnnpool", downsample="renet"), (3, 224, 224))
    assert p.uncounted_ops == []
    renet = unit(p, "features.1.horizontal")
    assert renet.madds == 28 * 28 * 2 * 3 * 32 * (32 * 4 * 4 + 32)  # 28x28 patches of 4x4x32, 2 directions, 3 gates


def test_outputs_json_csv_plot(tmp_path):
    a = profile_model(create_model("mobilenetv2_035_rnnpool"), (3, 224, 224))
    b = profile_model(create_model("mobilenetv2_035"), (3, 224, 224))
    a.save_json(tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert {"model", "input", "dtype", "convention", "peak_bytes", "peak_layer", "madds", "params", "layers"} <= set(data)
    assert data["peak_bytes"] == max(l["held_bytes"] for l in data["layers"])
    a.save_csv(tmp_path / "p.csv")
    assert len((tmp_path / "p.csv").read_text().splitlines()) == len(a.layers) + 1
    plot_memory([a, b], tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_table_columns_align_and_ratios_are_the_peaks():
    long_name = profile_model(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), (3, 16, 16), name="torchvision:a_long_model_name_x")
    short = profile_model(nn.Sequential(nn.Conv2d(3, 2, 3, padding=1)), (3, 16, 16), name="s")
    lines = compare_table([long_name, short]).splitlines()
    header, rows = lines[0], lines[1:3]
    assert rows[0].startswith("torchvision:a_long_model_name_x  ")  # a long name does not push its row out of line
    for column in ("params", "MAdds (M)", "peak RAM"):  # right-aligned numbers end under their header
        end = header.index(column) + len(column)
        assert all(r[end - 1] != " " and (end == len(r) or r[end] == " ") for r in rows)
    # the ratio column: 2 * 16 * 16 * 4 B against 8 * 16 * 16 * 4 B (the 3-channel input is held too: 3 + 2 vs 3 + 8)
    assert rows[0].endswith("1.00x") and rows[1].endswith(f"{(3 + 2) / (3 + 8):.2f}x")


def test_memory_plot_names_layers_marks_the_peak_and_keeps_zero_byte_layers():
    from rnnpool.analysis.plot import memory_figure

    p = profile_model(create_model("mobilenetv2_035_rnnpool"), (3, 224, 224))
    fig = memory_figure([p])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert p.peak_layer in labels and labels[0] == p.layers[0].name
    assert any(t.get_text() == f"peak: {p.peak_layer}" for t in ax.texts)
    assert ax.get_yscale() == "symlog"  # a layer holding 0 B is drawn at 0, not dropped by a log axis
    held = list(ax.lines[0].get_ydata())
    assert held == [l.held_bytes / 1024 for l in p.layers]


def test_bad_arguments():
    model = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        profile_model(model, (3, 8, 8), dtype="int4")
    with pytest.raises(ValueError, match="unknown convention 'row'"):
        profile_model(model, (3, 8, 8), convention="row")
    with pytest.raises(ValueError, match="input shape must be"):
        profile_model(model, (8, 8))


def test_rnnpool_layer_in_the_middle_holds_its_input():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), RNNPool2d(8, 4, 4, 4, 4))
    p = profile_model(model, (3, 16, 16))
    # the first RNNPool streams everything before it: its input is never held
    assert unit(p, "3").held_bytes == (16 * 4 * 4 + 8 * 16) * F32
    assert unit(p, "0").held_bytes == 0


def test_rnnpool_after_the_body_streams_nothing():
    """RNNPool as the last pool: the blocks before it are a network's body, not a stem that can run patch by
    patch, so they are held as in the same network with average pooling (the peak is the body's, not 1.6 KiB)."""
    kwargs = dict(num_classes=10, input_size=64)
    last = profile_model(create_model("mobilenetv2_035", last_pool="rnnpool", **kwargs), (3, 64, 64), "int8")
    avg = profile_model(create_model("mobilenetv2_035", **kwargs), (3, 64, 64), "int8")
    assert unit(last, "features.0.0").held_bytes == unit(avg, "features.0.0").held_bytes == 3 * 64 * 64 + 8 * 32 * 32
    assert last.peak_bytes == avg.peak_bytes == 20 * 1024
    # the same width with RNNPool as its stem still streams the image and the stem
    assert profile_model(create_model("mobilenetv2_035_rnnpool", **kwargs), (3, 64, 64), "int8").peak_bytes < avg.peak_bytes / 8


def test_map_needed_after_the_rnnpool_is_held_whole():
    """A stem map with a consumer after the RNNPool (here a skip branch) cannot be streamed away."""
    class SkipAroundPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = RNNPool2d(8, 4, 4, 4, 4)

        def forward(self, x):
            s = self.stem(x)
            return self.pool(s), nn.functional.avg_pool2d(s, 4)

    p = profile_model(SkipAroundPool(), (3, 16, 16))
    assert unit(p, "stem").held_bytes == 8 * 16 * 16 * F32  # the image still streams; the stem map is held
    assert unit(p, "pool").held_bytes == (8 * 16 * 16 + 16 * 4 * 4 + 8 * 4 * 4) * F32


def test_a_block_declares_its_memory_rule():
    """A new block class says how it is counted (memory_rule); the analysis needs no edit for it."""

    class Skip(nn.Module):
        memory_rule = "residual"

        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(self.a(x)) + x

    p = profile_model(nn.Sequential(nn.Conv2d(3, 4, 1), Skip()), (3, 8, 8))
    block = unit(p, "1")
    assert block.kind == "residual" and block.held_bytes == 4 * 8 * 8 * F32  # max(input, output), both 4x8x8
    assert "up to 4.00x that (1: 4.0 KiB, counted 1.0 KiB)" in p.notes[0]  # input 4 + a's 8 + b's 4 channels live at once

    class Odd(Skip):
        memory_rule = "pyramid"

    with pytest.raises(ValueError, match="Odd.memory_rule is 'pyramid'; expected one of mbconv, residual"):
        profile_model(nn.Sequential(nn.Conv2d(3, 4, 1), Odd()), (3, 8, 8))
