"""Quantization-aware training's fake quantization against the NumPy integer reference (the oracle: the
arithmetic the C program runs), op by op and end to end, and its gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnpool.deploy.fake_quant import FakeQuantModel, calibrate_ranges, check_ranges, fold_batchnorm_
from rnnpool.deploy.graph import ConvOp, MBConvOp, RNNPoolOp, build_graph
from rnnpool.deploy.int8_reference import run_int8, run_op
from rnnpool.deploy.quantize import quantize_graph, quantize_model
from rnnpool.errors import InvalidInputError
from rnnpool.nn import FastGRNNCell
from rnnpool.nn.blocks import ConvBNAct

from .conftest import input_shape, live_model, smooth_images, to_uint8


def _codes(fq: FakeQuantModel, name: str, value: torch.Tensor) -> np.ndarray:
    """A dequantized (1, C, H, W) map as the reference's int8 (H, W, C)."""
    t = fq.quantization[name]
    return torch.round(value[0] / t.scale + t.zero_point).permute(1, 2, 0).numpy().astype(np.int64)


def _values(fq: FakeQuantModel, name: str, codes: np.ndarray) -> torch.Tensor:
    t = fq.quantization[name]
    return ((torch.from_numpy(codes.astype(np.float64)) - t.zero_point) * t.scale).permute(2, 0, 1)[None]


def _setup(name: str, **cell_options):
    model = live_model(name).double()
    for cell in (m for m in model.modules() if isinstance(m, FastGRNNCell)):
        for key, value in cell_options.items():
            setattr(cell, key, value)
    images = [i.double() for i in smooth_images(input_shape(model), 3)]
    ranges = calibrate_ranges(model, images[:2])
    return model, ranges, images


@pytest.mark.parametrize("name,cells", [("rnnpool_face_m4", {}), ("rnnpool_face_quant", {}), ("mobilenetv2_035_rnnpool", {}),
                                        ("rnnpool_face_m4", {"gate_nonlinearity": "quant_sigmoid", "update_nonlinearity": "quant_tanh"}),
                                        ("rnnpool_face_m4", {"gate_nonlinearity": "quant_sigmoid", "update_nonlinearity": "tanh"})])
def test_every_op_rounds_as_the_integer_reference(name, cells):
    """Each op fed the reference's own input: RNNPool bit for bit (float64), the rest within one step on at most
    0.1% of the values (the reference's 31-bit multipliers round some ties the other way)."""
    model, ranges, images = _setup(name, **cells)
    fq = FakeQuantModel(model, ranges)
    graph = quantize_graph(build_graph(model), ranges)
    reference = run_int8(graph, to_uint8(images[2].float()))
    assert len({v.tobytes() for v in reference.values()}) == len(reference)  # live: no two maps alike
    with torch.no_grad():
        for op, qop in zip(fq.graph.ops, graph.ops):
            got = _codes(fq, op.output, fq.run_op(op, _values(fq, op.input, reference[op.input])))
            want = run_op(qop, reference[op.input]).astype(np.int64)
            assert got.shape == want.shape, op.output
            diff = np.abs(got - want)
            if isinstance(op, RNNPoolOp):
                assert diff.max() == 0, f"{op.output}: RNNPool differs from the integer reference"
            else:
                assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, f"{op.output}: {diff.max()} / {(diff > 0).mean():.4f}"


def test_end_to_end_outputs_follow_the_integer_model():
    model, ranges, images = _setup("rnnpool_face_m4")
    fq = FakeQuantModel(model, ranges)
    graph = quantize_graph(build_graph(model), ranges)
    reference = run_int8(graph, to_uint8(images[2].float()))
    with torch.no_grad():
        values = fq.run(images[2][None])
    for head in graph.heads:
        for name in (head.conf, head.loc):
            diff = np.abs(_codes(fq, name, values[name]) - reference[name])
            assert diff.max() <= 2 and (diff > 0).mean() < 0.02, name


def test_gradients_reach_every_parameter_and_quantize_model_takes_the_ranges():
    """One step through the fake-quantized detector changes every trainable tensor (straight-through rounding,
    the lookup tables' smooth functions); the integer model built afterwards from the kept ranges is what the
    fake quantization computes with the new weights."""
    torch.manual_seed(0)
    model, ranges, images = _setup("rnnpool_face_m4")
    fq = FakeQuantModel(model, ranges)
    fq.train()
    out = fq(torch.stack(images[:2]))
    loss = sum((o * torch.randn_like(o)).sum() for o in out["conf"] + out["loc"])
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    no_grad = [n for n, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, no_grad
    with torch.no_grad():
        for p in trainable.values():
            p -= 1e-3 * p.grad / p.grad.abs().max()
    after = quantize_model(model, [], ranges=ranges)  # no images: the ranges are the fine-tuning's
    reference = run_int8(after, to_uint8(images[2].float()))
    with torch.no_grad():
        values = fq.run(images[2][None])
    diff = np.abs(_codes(fq, "head0_conf", values["head0_conf"]) - reference["head0_conf"])
    assert (diff > 0).mean() < 0.02
    before = quantize_graph(build_graph(live_model("rnnpool_face_m4").double()), ranges)
    assert not np.array_equal(run_int8(before, to_uint8(images[2].float()))["head0_conf"], reference["head0_conf"])


def test_classifier_takes_its_normalised_input():
    """A classifier's fake quantization reads the model's own (ImageNet-normalised) input and un-normalises it."""
    model, ranges, images = _setup("mobilenetv2_035_rnnpool")
    fq = FakeQuantModel(model, ranges)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)[:, None, None]
    with torch.no_grad():
        logits = fq(((images[2] - mean) / std)[None])
        raw = fq.run(images[2][None])["logits"].flatten(1)
    assert torch.equal(logits, raw)
    reference = run_int8(quantize_graph(build_graph(model), ranges), to_uint8(images[2].float()))
    assert np.abs(_codes(fq, "logits", logits[:, :, None, None]) - reference["logits"]).max() <= 1


def test_bad_ranges_are_refused_by_name():
    model, ranges, _ = _setup("rnnpool_face_m4")
    missing = dict(ranges)
    missing.pop(next(iter(k for k in ranges if k.startswith("head"))))
    with pytest.raises(InvalidInputError, match="no activation range for heads"):
        FakeQuantModel(model, missing)
    with pytest.raises(InvalidInputError, match="'t1' is \\(1.0, 0.0\\)"):
        check_ranges({"t1": (1.0, 0.0)}, "x.pt")
    with pytest.raises(InvalidInputError, match="not \\(low, high\\)"):
        check_ranges({"t1": "wide"}, "x.pt")
    with pytest.raises(InvalidInputError, match="expected \\(N, 1, H, W\\)"):
        FakeQuantModel(model, ranges)(torch.rand(1, 3, 32, 32, dtype=torch.float64))


def _conv_weights(graph) -> dict:
    """Every convolution's deployed (folded) weight, by output tensor."""
    weights = {}
    for op in graph.ops:
        for conv in op.convs() if isinstance(op, MBConvOp) else [op] if isinstance(op, ConvOp) else []:
            weights[conv.output] = conv.weight
    return weights


def test_fold_batchnorm_keeps_the_model_and_trains_the_deployed_weights():
    model, _, images = _setup("rnnpool_face_m4")
    x = torch.stack(images)
    with torch.no_grad():
        before, graph = model(x), build_graph(model)
    assert fold_batchnorm_(model) == sum(isinstance(m, ConvBNAct) for m in model.modules())
    with torch.no_grad():
        after = model(x)
    for key in before:
        for a, b in zip(before[key], after[key]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    convs = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    assert all(not block[1].weight.requires_grad for block in convs)
    folded, original = _conv_weights(build_graph(model)), _conv_weights(graph)
    assert folded.keys() == original.keys()
    for name in folded:
        torch.testing.assert_close(folded[name], original[name], rtol=1e-9, atol=1e-9)
    assert torch.equal(convs[0][0].weight.double(), build_graph(model).ops[0].weight)  # the parameter is the deployed weight
