"""S3FD's detection machinery (Zhang et al. 2017) around a zoo face model.

Anchors: one square anchor per head location, centred on the stride grid, sized by the head
(16, 32, ..., 512). Matching: anchors with IoU >= 0.35 to a face, each face's best anchor, then scale
compensation (faces with fewer than N matches, N the mean match count, take their next best anchors with
IoU >= 0.1). Loss: cross-entropy with 3:1 hard negative mining + smooth-L1 on SSD-encoded offsets.
Inference: decode, score threshold, NMS (torchvision.ops), optionally over several input scales.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert, box_iou, clip_boxes_to_image, nms

from ..models.detection_utils import (MAX_DETECTIONS, NMS_THRESHOLD, SCORE_THRESHOLD, encode, flatten_heads, make_anchors,
                                      postprocess)
from ..models.face import FaceDetector
from ..errors import InvalidInputError

def match(anchors: torch.Tensor, boxes: torch.Tensor, threshold: float = 0.35, compensate_min_iou: float = 0.1) -> torch.Tensor:
    """Index of the face each anchor detects, or -1 (background). S3FD's scale-compensation matching."""
    matched = torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
    if len(boxes) == 0:
        return matched
    iou = box_iou(box_convert(anchors, "cxcywh", "xyxy"), boxes)  # (A, G)
    best_iou, best_face = iou.max(1)
    positive = best_iou >= threshold
    matched[positive] = best_face[positive]
    matched[iou.argmax(0)] = torch.arange(len(boxes), device=anchors.device)  # every face gets its best anchor
    counts = torch.bincount(matched[matched >= 0], minlength=len(boxes))
    n = max(1, int(round(counts.float().mean().item())))
    for face in torch.nonzero(counts < n).flatten().tolist():
        candidates = (iou[:, face] >= compensate_min_iou) & (matched < 0)
        order = torch.argsort(iou[:, face].masked_fill(~candidates, -1), descending=True)[: n - int(counts[face])]
        matched[order[candidates[order]]] = face
    return matched


def multibox_loss(conf: torch.Tensor, loc: torch.Tensor, anchors: torch.Tensor, targets: List[Dict[str, torch.Tensor]],
                  neg_pos_ratio: int = 3) -> Dict[str, torch.Tensor]:
    """conf (N, A, 2), loc (N, A, 4) -> {"loss_conf", "loss_loc"}, both normalised by the positive count."""
    labels, loc_targets = [], []
    for t in targets:
        m = match(anchors, t["boxes"])
        labels.append((m >= 0).long())
        loc_targets.append(encode(t["boxes"][m.clamp(min=0)], anchors) if len(t["boxes"]) else torch.zeros_like(anchors))
    labels_t, loc_t = torch.stack(labels), torch.stack(loc_targets)
    pos = labels_t > 0
    num_pos = pos.sum().clamp(min=1).float()
    loss_loc = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum") / num_pos
    ce = F.cross_entropy(conf.reshape(-1, 2), labels_t.reshape(-1), reduction="none").reshape(labels_t.shape)
    # hard negatives: the background anchors with the highest loss, 3 per positive, per image
    neg_loss = ce.detach().masked_fill(pos, 0)
    rank = neg_loss.argsort(1, descending=True).argsort(1)
    num_neg = (neg_pos_ratio * pos.sum(1, keepdim=True)).clamp(min=neg_pos_ratio, max=pos.shape[1] - 1)
    neg = rank < num_neg
    loss_conf = ce[pos | neg].sum() / num_pos
    return {"loss_conf": loss_conf, "loss_loc": loss_loc}


class S3FD(nn.Module):
    """A :class:`FaceDetector` with S3FD anchors, loss and post-processing (torchvision's detection contract).

    ``forward(images (N, C, H, W), targets)`` returns the loss dict in training; in eval it returns one dict
    per image with ``boxes`` (K, 4, xyxy pixels of the input), ``scores`` and ``labels`` (1 = face).
    """

    def __init__(self, detector: FaceDetector, score_threshold: float = SCORE_THRESHOLD, nms_threshold: float = NMS_THRESHOLD,
                 max_detections: int = MAX_DETECTIONS) -> None:
        super().__init__()
        self.detector = detector
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_detections = max_detections

    def raw(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """conf (N, A, 2), loc (N, A, 4) and anchors (A, 4) for a batch."""
        out = self.detector(images)
        conf, loc = flatten_heads(out)
        sizes = [tuple(c.shape[2:]) for c in out["conf"]]
        anchors = make_anchors(sizes, self.detector.head_strides, self.detector.anchor_sizes, images.device)
        return conf, loc, anchors

    def forward(self, images: torch.Tensor, targets: Optional[List[Dict[str, torch.Tensor]]] = None):
        conf, loc, anchors = self.raw(images)
        if self.training:
            if targets is None:
                raise InvalidInputError("S3FD in training mode needs targets (a list of {'boxes': (K, 4) xyxy})")
            return multibox_loss(conf.float(), loc.float(), anchors, targets)
        return self.postprocess(conf, loc, anchors)

    def postprocess(self, conf: torch.Tensor, loc: torch.Tensor, anchors: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        return postprocess(conf, loc, anchors, self.score_threshold, self.nms_threshold, self.max_detections)

    @torch.no_grad()
    def detect(self, image: torch.Tensor, scales: Sequence[float] = (1.0,)) -> Dict[str, torch.Tensor]:
        """Detections on one (C, H, W) image at several scales, merged by NMS; boxes in the image's pixels."""
        was_training = self.training
        self.eval()
        boxes, scores = [], []
        _, h, w = image.shape
        for scale in scales:
            size = (max(32, int(round(h * scale / 32)) * 32), max(32, int(round(w * scale / 32)) * 32))
            resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
            det = self(resized)[0]
            factor = torch.tensor([w / size[1], h / size[0], w / size[1], h / size[0]], device=image.device)
            boxes.append(det["boxes"] * factor)
            scores.append(det["scores"])
        self.train(was_training)
        b, s = clip_boxes_to_image(torch.cat(boxes), (h, w)), torch.cat(scores)
        kept = nms(b, s, self.nms_threshold)[: self.max_detections]
        return {"boxes": b[kept], "scores": s[kept], "labels": torch.ones_like(kept)}
