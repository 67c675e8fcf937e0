import numpy as np
import pytest
import torch
from torch import nn

from rnnpool.deploy import calibrate, quantize_graph, quantize_model, run_int8
from rnnpool.deploy.graph import build_graph, run_float
from rnnpool.deploy.int8_reference import dequantize, int8_detections

from .conftest import face_model, smooth_images, to_uint8


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    return 10 * np.log10((reference**2).mean() / ((reference - approx) ** 2).mean())


@pytest.mark.parametrize("name", ["rnnpool_face_m4", "rnnpool_face_quant", "rnnpool_face_a"])
def test_graph_runs_like_the_model(name):
    model = face_model(name)
    x = torch.stack(smooth_images(model, 1))
    graph = build_graph(model)
    values, out = run_float(graph, x), model(x)
    for head, conf, loc in zip(graph.heads, out["conf"], out["loc"]):
        torch.testing.assert_close(values[head.conf], conf, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(values[head.loc], loc, atol=1e-5, rtol=1e-5)


def test_int8_reference_tracks_float_model(face_m4_quantized):
    model, graph, images = face_m4_quantized
    fgraph = build_graph(model)
    image = images[0]
    floats = run_float(fgraph, image[None])
    ints = run_int8(graph, to_uint8(image))
    for head in graph.heads:
        for name in (head.conf, head.loc):
            f = floats[name][0].permute(1, 2, 0).numpy()
            assert ints[name].dtype == np.int8 and ints[name].shape == f.shape
            assert sqnr_db(f, dequantize(graph, name, ints[name])) > 25, name
    # the RNNPool layer itself (FastGRNN in Q12/Q14 with table sigmoid/tanh)
    pool = next(op for op in graph.ops if type(op).__name__ == "QRNNPool")
    f = floats[pool.output][0].permute(1, 2, 0).numpy()
    assert sqnr_db(f, dequantize(graph, pool.output, ints[pool.output])) > 25


def test_quant_nonlinearities_and_low_rank_cells_quantize():
    model = face_model("rnnpool_face_m4")
    layer = model.stages[0][1][0]
    from rnnpool.nn import RNNPool2d

    replacement = RNNPool2d(layer.in_channels, 8, 4, 16, 16, cell_kwargs={"gate_nonlinearity": "quant_sigmoid",
                                                                       "update_nonlinearity": "quant_tanh", "w_rank": 2})
    model.stages[0][1][0] = replacement.eval()
    images = smooth_images(model, 2)
    graph = quantize_model(model, images)
    floats = run_float(build_graph(model), images[0][None])
    ints = run_int8(graph, to_uint8(images[0]))
    name = graph.heads[0].conf
    assert sqnr_db(floats[name][0].permute(1, 2, 0).numpy(), dequantize(graph, name, ints[name])) > 25


def test_detections_are_ranked_by_integer_score(face_m4_quantized):
    _, graph, images = face_m4_quantized
    values = run_int8(graph, to_uint8(images[1]))
    dets = int8_detections(graph, values)
    keys = [d["key"] for d in dets]
    assert keys == sorted(keys, reverse=True)
    assert all(d["score"] > 0.5 for d in dets)


def test_unsupported_models_and_inputs_are_refused():
    with pytest.raises(NotImplementedError, match="face detectors"):
        build_graph(nn.Sequential(nn.Conv2d(3, 4, 3)))
    model = face_model("rnnpool_face_m4")
    from rnnpool.nn import RNNPool2d

    model.stages[0][1][0] = RNNPool2d(4, 8, 4, 16, 16, cell="gru").eval()
    with pytest.raises(NotImplementedError, match="FastGRNN"):
        build_graph(model)
    model = face_model("rnnpool_face_m4")
    graph = build_graph(model)
    with pytest.raises(ValueError, match="calibration images must be"):
        calibrate(graph, [torch.rand(3, 240, 320)])
    with pytest.raises(ValueError, match="at least one image"):
        calibrate(graph, [])
    qgraph = quantize_graph(graph, calibrate(graph, smooth_images(model, 1)))
    with pytest.raises(ValueError, match="uint8"):
        run_int8(qgraph, np.zeros((240, 320, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="takes"):
        run_int8(qgraph, np.zeros((480, 640, 1), dtype=np.uint8))
