"""Accuracy of the int8 reference against the float model on annotated face images.

Both run at the model's fixed input size (the deployed program has one); their head outputs go through the
same S3FD post-processing (:mod:`rnnpool.models.detection_utils`), and AP is computed with the WIDER FACE
protocol of :mod:`rnnpool.metrics.widerface` against the annotations (boxes scaled back to each image's
pixels). Nothing here needs the training engine.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.faces import load_face_annotations
from ..metrics.widerface import evaluate_widerface, truth_from_boxes
from ..models.detection_utils import flatten_heads, make_anchors, merge_detections, postprocess, wider_rows
from ..models.face import FaceDetector
from .export import image_tensor, load_image
from .graph import build_graph, run_float
from .int8_reference import dequantize, run_int8
from .quantize import QuantizedGraph
from ..errors import InvalidInputError


def _flatten(maps, channels: int) -> torch.Tensor:
    """Per-head (H, W, k) arrays -> (1, A, k), the layout of :func:`~rnnpool.models.detection_utils.flatten_heads`."""
    return torch.cat([torch.from_numpy(np.ascontiguousarray(m)).reshape(-1, channels) for m in maps]).float()[None]


def _add_power(power: Dict[str, List[float]], graph: QuantizedGraph, float_values: Dict[str, torch.Tensor],
               int_values: Dict[str, np.ndarray]) -> None:
    """Add each tensor's signal and quantization-noise power (float map vs dequantized int8 map) to ``power``."""
    for name, q in int_values.items():
        if name not in float_values:
            continue
        f = float_values[name][0].double()
        if name in graph.equalized:  # the int8 map holds gain * (x - centre) per channel
            gain, centre = graph.equalized[name]
            f = gain.double()[:, None, None] * (f - centre.double()[:, None, None])
        f = f.permute(1, 2, 0).numpy()  # (H, W, C), as the int8 maps are stored
        d = np.asarray(dequantize(graph, name, q), dtype=np.float64).reshape(f.shape)
        signal, noise = power.setdefault(name, [0.0, 0.0])
        power[name] = [signal + float((f**2).sum()), noise + float(((f - d) ** 2).sum())]


def _sqnr_table(power: Dict[str, List[float]], graph: QuantizedGraph) -> Dict[str, float]:
    """Module path (tensor name where two share one) -> SQNR in dB, in execution order."""
    table: Dict[str, float] = {}
    for name, (signal, noise) in power.items():
        key = graph.layer_of(name)
        table[key if key not in table else f"{key} ({name})"] = 10 * float(np.log10(max(signal, 1e-30) / max(noise, 1e-30)))
    return table


def largest_loss(sqnr: Dict[str, float]) -> Tuple[str, float, float]:
    """Of a :func:`tensor_sqnr` table (in execution order), the map after which int8 loses most precision, past
    the exact image and the first layer that reads it: (name, SQNR of the map before, its own SQNR)."""
    names = list(sqnr)
    if len(names) < 3:
        raise InvalidInputError(f"largest_loss needs the SQNR of at least three maps, got {len(names)}")
    worst = min(range(2, len(names)), key=lambda i: sqnr[names[i]] - sqnr[names[i - 1]])
    return names[worst], sqnr[names[worst - 1]], sqnr[names[worst]]


@torch.no_grad()
def tensor_sqnr(model: nn.Module, graph: QuantizedGraph, images: Sequence[np.ndarray]) -> Dict[str, float]:
    """Where int8 loses precision: for every map of the int8 reference ``graph``, the SQNR (dB) of its
    dequantized values against the float model's, over ``images`` (uint8 (H, W, C) at the graph's input size),
    keyed by the model's module path in execution order. The image itself is exact (its SQNR, above 100 dB, only
    measures float rounding)."""
    model.eval()
    float_graph = build_graph(model, graph.input_shape[1:])
    power: Dict[str, List[float]] = {}
    for image in images:
        x = image_tensor(image)[None]
        _add_power(power, graph, run_float(float_graph, x), run_int8(graph, image))
    return _sqnr_table(power, graph)


@torch.no_grad()
def int8_accuracy(model: FaceDetector, graph: QuantizedGraph, annotations: str, image_root: Optional[str] = None,
                  limit: Optional[int] = None) -> Dict[str, float]:
    """AP of the float face detector and of its int8 reference ``graph``, their difference (both through S3FD's
    evaluation post-processing), the mean head-output SQNR (dB) and every map's SQNR (:func:`tensor_sqnr`)."""
    model.eval()
    float_graph = build_graph(model, (graph.input_shape[1], graph.input_shape[2]))
    power: Dict[str, List[float]] = {}
    data = load_face_annotations(annotations, image_root)
    records = data.records[:limit] if limit else data.records
    c, h, w = graph.input_shape
    predictions: Dict[str, Dict[str, np.ndarray]] = {"fp32": {}, "int8": {}}
    sqnr = []
    for record in records:
        with Image.open(record.path) as img:
            width, height = img.size
        image = load_image(record.path, c, (h, w))
        x = image_tensor(image)[None]
        outputs = model(x)
        conf, loc = flatten_heads(outputs)
        anchors = make_anchors([tuple(c.shape[2:]) for c in outputs["conf"]], model.head_strides, model.anchor_sizes, x.device)
        values = run_int8(graph, image)
        _add_power(power, graph, run_float(float_graph, x), values)
        q_conf = _flatten([dequantize(graph, hd.conf, values[hd.conf]) for hd in graph.heads], 2)
        q_loc = _flatten([dequantize(graph, hd.loc, values[hd.loc]) for hd in graph.heads], 4)
        for f, q in ((conf, q_conf), (loc, q_loc)):
            sqnr.append(10 * np.log10(float((f**2).mean()) / max(float(((f - q) ** 2).mean()), 1e-20)))
        factor = torch.tensor([width / w, height / h, width / w, height / h])
        for key, (cf, lc) in (("fp32", (conf, loc)), ("int8", (q_conf, q_loc))):
            det = postprocess(cf, lc, anchors)[0]
            det = merge_detections([det["boxes"] * factor], [det["scores"]], (height, width))  # as the training evaluator does
            predictions[key][record.name] = wider_rows(det)
    truth = truth_from_boxes({r.name: r.boxes for r in records}, {r.name: r.invalid for r in records})
    ap = {key: evaluate_widerface(p, truth)["all"]["ap"] for key, p in predictions.items()}
    return {"images": len(records), "ap_fp32": ap["fp32"], "ap_int8": ap["int8"], "ap_drop": ap["fp32"] - ap["int8"],
            "head_sqnr_db": float(np.mean(sqnr)), "tensor_sqnr_db": _sqnr_table(power, graph)}


@torch.no_grad()
def int8_top1(model: nn.Module, graph: QuantizedGraph, samples: Iterable[Tuple[np.ndarray, int]]) -> Dict[str, float]:
    """Top-1 of a classifier in float and of its int8 reference ``graph`` on the same uint8 (H, W, 3) images
    (at the graph's input size) with their labels, and how often the two predict the same class."""
    model.eval()
    float_graph = build_graph(model, graph.input_shape[1:])
    counts = np.zeros(4, dtype=np.int64)  # images, float correct, int8 correct, same prediction
    for image, label in samples:
        float_class = int(run_float(float_graph, image_tensor(image)[None])[graph.logits].flatten().argmax())
        int8_class = int(run_int8(graph, image)[graph.logits].reshape(-1).argmax())
        counts += [1, float_class == label, int8_class == label, float_class == int8_class]
    if counts[0] == 0:
        raise InvalidInputError("int8_top1 needs at least one labelled image")
    images = int(counts[0])
    return {"images": images, "top1_fp32": counts[1] / images, "top1_int8": counts[2] / images,
            "top1_drop": (counts[1] - counts[2]) / images, "agreement": counts[3] / images}


__all__ = ["int8_accuracy", "int8_top1", "largest_loss", "tensor_sqnr"]
