"""S3FD's anchors and box coding, next to the detectors that use them (as torchvision keeps
``models/detection/_utils.py``): one square anchor per head location, centred on the stride grid; SSD
offsets with variances (0.1, 0.2). The training loss and matching live in :mod:`rnnpool.engine.s3fd`; the
int8 runtime decodes boxes with the same variances.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

VARIANCES = (0.1, 0.2)


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


__all__ = ["VARIANCES", "decode", "encode", "make_anchors"]
