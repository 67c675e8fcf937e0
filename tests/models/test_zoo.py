import pytest
import torch
import torchvision

from rnnpool.analysis import profile_model
from rnnpool.analysis.zoo import zoo_markdown
from rnnpool.models import create_model, list_models, model_info
from rnnpool.nn import RNNPool2d


@pytest.mark.parametrize("name", list_models())
def test_zoo_model_matches_readme(name, readme_zoo_table):
    """Builds, runs at its input size, and has the params / MAdds / peak RAM the README table prints."""
    info = model_info(name)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *info.input_shape))
    if info.task == "classification":
        assert out.shape == (1, model.num_classes)
    else:
        _, h, w = info.input_shape
        assert len(out["conf"]) == len(model.heads) == len(model.head_strides)
        for conf, loc, stride in zip(out["conf"], out["loc"], model.head_strides):
            assert conf.shape[:2] == (1, 2) and loc.shape[:2] == (1, 4)
            assert conf.shape[2:] == loc.shape[2:] == (-(-h // stride), -(-w // stride))
    row = readme_zoo_table[name]
    layer = profile_model(model, info.input_shape, "fp32", "layer")
    tensor = profile_model(model, info.input_shape, "int8", "tensor")
    assert row["params"] == f"{layer.params:,}"
    assert row["MAdds"] == f"{layer.madds:,}"
    assert row["layer fp32 KiB"] == f"{layer.peak_bytes / 1024:,.1f}"
    assert row["tensor int8 KiB"] == f"{tensor.peak_bytes / 1024:,.1f}"


def test_readme_zoo_entries_against_hand_counts(readme_zoo_table):
    """A few README entries worked out by hand (not by the code that generated the table)."""
    # MobileNetV2 at 224 (the paper's 2.29 MB): its first block holds its 32x112x112 input + 16x112x112 output
    mbv2 = (32 + 16) * 112 * 112
    assert readme_zoo_table["mobilenetv2"]["layer fp32 KiB"] == f"{4 * mbv2 / 1024:,.1f}" == "2,352.0"
    assert readme_zoo_table["mobilenetv2"]["layer int8 KiB"] == f"{mbv2 / 1024:,.1f}"
    assert readme_zoo_table["mobilenetv2"]["params"] == "3,504,872"  # torchvision's mobilenet_v2, 1000 classes
    # DenseNet121: the stem's max pool, 64x112x112 in and 64x56x56 out, is larger than any dense block
    dense = 64 * 112 * 112 + 64 * 56 * 56
    assert readme_zoo_table["densenet121"]["layer fp32 KiB"] == f"{4 * dense / 1024:,.1f}" == "3,920.0"


def test_every_zoo_model_is_in_the_readme(readme_zoo_table):
    assert sorted(readme_zoo_table) == list_models()


@pytest.mark.parametrize("ours,theirs", [("mobilenetv2", "mobilenet_v2"), ("densenet121", "densenet121")])
def test_baselines_have_torchvision_parameter_counts(ours, theirs):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(create_model(ours)) == count(torchvision.models.get_model(theirs))


def test_rnnpool_models_follow_the_paper():
    m = create_model("mobilenetv2_rnnpool")
    pool = [mod for mod in m.modules() if isinstance(mod, RNNPool2d)][0]
    assert (pool.in_channels, pool.patch_size, pool.stride, pool.hidden_row, pool.out_channels) == (32, (6, 6), (4, 4), 16, 64)
    assert m.feature_info[1] == {"num_chs": 64, "reduction": 8, "module": "features.1"}
    d = create_model("densenet121_rnnpool")
    pool = [mod for mod in d.modules() if isinstance(mod, RNNPool2d)][0]
    assert (pool.in_channels, pool.patch_size, pool.hidden_row, pool.out_channels) == (64, (8, 8), 48, 192)
    assert [f["num_chs"] for f in d.feature_info] == [64, 192, 1024, 1024]
    vww = create_model("mobilenetv2_035_rnnpool")
    pool = [mod for mod in vww.modules() if isinstance(mod, RNNPool2d)][0]
    assert (pool.in_channels, pool.hidden_row, vww.num_features, vww.num_classes) == (8, 8, 320, 2)


@pytest.mark.parametrize("downsample", ["avg", "max", "strided_conv", "renet"])
def test_pooling_ablation_variants(downsample):
    m = create_model("mobilenetv2_rnnpool", downsample=downsample, num_classes=10).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 224, 224)).shape == (2, 10)
    assert not any(isinstance(mod, RNNPool2d) for mod in m.modules())


def test_last_and_intermediate_rnnpool():
    m = create_model("densenet121_rnnpool", intermediate_pool="rnnpool", last_pool="rnnpool", block_config=(12, 8), num_classes=10).eval()
    pools = [mod for mod in m.modules() if isinstance(mod, RNNPool2d)]
    assert len(pools) == 4  # stem, T2, T3, last
    assert pools[1].patch_size == (4, 4) and pools[1].stride == (2, 2) and pools[1].hidden_row == 256 // 4
    assert pools[-1].patch_size == (7, 7) and pools[-1].hidden_row == m.num_features // 4
    with torch.no_grad():
        assert m(torch.randn(1, 3, 224, 224)).shape == (1, 10)
    m = create_model("mobilenetv2_rnnpool", last_pool="rnnpool", input_size=160).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 160, 160)).shape == (1, 1000)


def test_classifier_interface():
    m = create_model("mobilenetv2_035_rnnpool").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (1, 320, 7, 7)
        assert m.forward_head(feats, pre_logits=True).shape == (1, 320)
        m.reset_classifier(5)
        assert m(x).shape == (1, 5)


def test_bad_model_arguments():
    with pytest.raises(KeyError, match="did you mean 'mobilenetv2_rnnpool'"):
        create_model("mobilenetv2_rnnpol")
    with pytest.raises(ValueError, match="last_pool must be"):
        create_model("mobilenetv2", last_pool="median")
    with pytest.raises(ValueError, match="unknown downsample 'min'"):
        create_model("mobilenetv2_rnnpool", downsample="min")
    with pytest.raises(ValueError, match="positive multiple of 32"):
        create_model("densenet121", input_size=100)
    with pytest.raises(ValueError, match=r"expects \(N, 1, H, W\) images"):
        create_model("rnnpool_face_m4")(torch.zeros(1, 3, 240, 320))


def test_zoo_markdown_format():
    text = zoo_markdown([{"model": "m", "input": "3x8x8", "params": 1234, "MAdds": 5, "layer fp32 KiB": 1.25,
                          "layer int8 KiB": 0.5, "tensor fp32 KiB": 2.0, "tensor int8 KiB": 1.0}])
    assert text.splitlines()[2] == "| m | 3x8x8 | 1,234 | 5 | 1.2 | 0.5 | 2.0 | 1.0 |"


def test_create_model_loads_a_checkpoint_and_takes_torchvision_names(tmp_path):
    from rnnpool.errors import UnknownModelError, UnsupportedError
    from rnnpool.models.checkpoint import CheckpointError

    torch.manual_seed(0)
    trained = create_model("mobilenetv2_035_rnnpool", num_classes=10, input_size=64)
    path = tmp_path / "w.pt"
    torch.save({"model": trained.state_dict(), "config": {"model": "mobilenetv2_035_rnnpool"}}, path)
    torch.manual_seed(1)
    loaded = create_model("mobilenetv2_035_rnnpool", num_classes=10, input_size=64, checkpoint_path=path).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), trained.eval()(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="is mobilenetv2_035_rnnpool, not mobilenetv2_035"):
        create_model("mobilenetv2_035", num_classes=10, checkpoint_path=path)
    with pytest.raises(UnsupportedError, match="no pretrained weights"):
        create_model("mobilenetv2", pretrained=True)
    r18 = create_model("torchvision:resnet18", num_classes=7)
    assert isinstance(r18, torchvision.models.ResNet) and r18.fc.out_features == 7
    with pytest.raises(UnknownModelError, match="did you mean 'resnet18'"):
        create_model("torchvision:resnet1")
