"""S3FD's anchors, box coding and post-processing, next to the detectors that use them (as torchvision keeps
``models/detection/_utils.py``): one square anchor per head location, centred on the stride grid; SSD
offsets with variances (0.1, 0.2); softmax scores, a score threshold and NMS. The training loss and
matching live in :mod:`rnnpool.engine.s3fd`; the int8 runtime decodes boxes with the same variances.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_convert, clip_boxes_to_image, nms

VARIANCES = (0.1, 0.2)
SCORE_THRESHOLD, NMS_THRESHOLD, MAX_DETECTIONS = 0.05, 0.3, 750  # S3FD's evaluation settings
PRE_NMS_TOP = 5000  # candidates NMS looks at per image


def make_anchors(feature_sizes: Sequence[Tuple[int, int]], strides: Sequence[int], sizes: Sequence[int],
                 device: torch.device) -> torch.Tensor:
    """(A, 4) anchors as cx, cy, w, h in pixels, head by head, row-major within a head."""
    out = []
    for (h, w), stride, size in zip(feature_sizes, strides, sizes):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        centres = torch.stack(((xs.reshape(-1) + 0.5) * stride, (ys.reshape(-1) + 0.5) * stride), 1).float()
        out.append(torch.cat((centres, torch.full_like(centres, float(size))), 1))
    return torch.cat(out, 0)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """xyxy boxes -> SSD offsets relative to cx, cy, w, h anchors."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    return torch.cat(((centre - anchors[:, :2]) / (VARIANCES[0] * anchors[:, 2:]), torch.log(wh / anchors[:, 2:]) / VARIANCES[1]), 1)


def decode(offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """SSD offsets (..., A, 4) -> xyxy boxes."""
    centre = anchors[:, :2] + offsets[..., :2] * VARIANCES[0] * anchors[:, 2:]
    wh = anchors[:, 2:] * torch.exp(offsets[..., 2:] * VARIANCES[1])
    return torch.cat((centre - wh / 2, centre + wh / 2), -1)


def flatten_heads(outputs: Dict[str, List[torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """A face detector's per-head maps (``conf`` (N, 2, H, W) and ``loc`` (N, 4, H, W) lists) as conf (N, A, 2)
    and loc (N, A, 4), head by head, row-major within a head: the order of :func:`make_anchors`."""
    n = outputs["conf"][0].shape[0]
    conf = torch.cat([c.permute(0, 2, 3, 1).reshape(n, -1, 2) for c in outputs["conf"]], 1)
    loc = torch.cat([l.permute(0, 2, 3, 1).reshape(n, -1, 4) for l in outputs["loc"]], 1)
    return conf, loc


def postprocess(conf: torch.Tensor, loc: torch.Tensor, anchors: torch.Tensor, score_threshold: float = SCORE_THRESHOLD,
                nms_threshold: float = NMS_THRESHOLD, max_detections: int = MAX_DETECTIONS) -> List[Dict[str, torch.Tensor]]:
    """Detections per image from conf (N, A, 2) and loc (N, A, 4): face probability above the threshold, the
    best PRE_NMS_TOP, NMS; ``boxes`` (K, 4) xyxy in input pixels, ``scores``, ``labels`` (1 = face)."""
    scores = conf.float().softmax(-1)[..., 1]
    boxes = decode(loc.float(), anchors)
    results = []
    for s, b in zip(scores, boxes):
        keep = s > score_threshold
        s, b = s[keep], b[keep]
        order = s.argsort(descending=True)[:PRE_NMS_TOP]
        s, b = s[order], b[order]
        kept = nms(b, s, nms_threshold)[:max_detections]
        results.append({"boxes": b[kept], "scores": s[kept], "labels": torch.ones_like(kept)})
    return results


def merge_detections(boxes: Sequence[torch.Tensor], scores: Sequence[torch.Tensor], image_size: Tuple[int, int],
                     nms_threshold: float = NMS_THRESHOLD, max_detections: int = MAX_DETECTIONS) -> Dict[str, torch.Tensor]:
    """One image's detections from one or several input scales (boxes already in the image's pixels): clipped
    to the image (H, W), then NMS across all of them; what is scored against the ground truth."""
    b, s = clip_boxes_to_image(torch.cat(list(boxes)), image_size), torch.cat(list(scores))
    kept = nms(b, s, nms_threshold)[:max_detections]
    return {"boxes": b[kept], "scores": s[kept], "labels": torch.ones_like(kept)}


def wider_rows(detections: Dict[str, torch.Tensor]) -> np.ndarray:
    """One image's detections as the WIDER FACE evaluator takes them (its prediction files' format): (K, 5)
    rows of x, y, w, h, score."""
    xywh = box_convert(detections["boxes"].detach().cpu().float(), "xyxy", "xywh")
    return np.c_[xywh.numpy(), detections["scores"].detach().cpu().float().numpy()]


__all__ = ["MAX_DETECTIONS", "NMS_THRESHOLD", "SCORE_THRESHOLD", "VARIANCES", "decode", "encode", "flatten_heads", "make_anchors",
           "merge_detections", "postprocess", "wider_rows"]
