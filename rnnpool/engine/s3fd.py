"""S3FD's detection machinery (Zhang et al. 2017) around a zoo face model.

Anchors: one square anchor per head location, centred on the stride grid, sized by the head
(16, 32, ..., 512). Matching: anchors with IoU >= 0.35 to a face, each face's best anchor, then scale
compensation (faces with fewer than N matches, N the mean match count, take their next best anchors with
IoU >= 0.1). Loss: cross-entropy with 3:1 hard negative mining + smooth-L1 on SSD-encoded offsets.
Inference: decode, score threshold, NMS (torchvision.ops), optionally over several input scales.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert, box_iou

from ..models.detection_utils import (MAX_DETECTIONS, NMS_THRESHOLD, SCORE_THRESHOLD, encode, flatten_heads, make_anchors,
                                      merge_detections, postprocess)
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


def encode_targets(anchors: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One image's training targets: anchor labels (A,) (1 = face) and SSD offsets (A, 4) of the matched faces."""
    matched = match(anchors, boxes)
    offsets = encode(boxes[matched.clamp(min=0)], anchors) if len(boxes) else torch.zeros_like(anchors)
    return (matched >= 0).long(), offsets


class EncodeTargets:
    """A collate function that also matches every image's faces to the anchors of a fixed input size.

    Matching loops over faces on the CPU; done here, it runs in the DataLoader workers, in parallel with the
    training step, instead of in the main process between steps. The batch's targets become
    ``{"labels": (N, A), "loc": (N, A, 4)}``, which :class:`S3FD` takes in place of the list of boxes.
    """

    def __init__(self, anchors: torch.Tensor, collate: Callable) -> None:
        self.anchors = anchors.cpu()
        self.collate = collate

    def __call__(self, batch):
        images, targets = self.collate(batch)
        labels, offsets = zip(*(encode_targets(self.anchors, t["boxes"]) for t in targets))
        return images, {"labels": torch.stack(labels), "loc": torch.stack(offsets)}


def multibox_loss(conf: torch.Tensor, loc: torch.Tensor, anchors: torch.Tensor,
                  targets: Union[List[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]], neg_pos_ratio: int = 3) -> Dict[str, torch.Tensor]:
    """conf (N, A, 2), loc (N, A, 4) -> {"loss_conf", "loss_loc"}, both normalised by the positive count.

    ``targets``: one {"boxes": (K, 4) xyxy} per image, or the batch already encoded by :class:`EncodeTargets`.
    """
    if isinstance(targets, dict):
        labels_t, loc_t = targets["labels"], targets["loc"]
        if labels_t.shape != conf.shape[:2]:
            raise InvalidInputError(f"encoded targets are for {labels_t.shape[1]} anchors, the detector has {conf.shape[1]}: "
                                    "they were encoded for another input size")
    else:
        labels_t, loc_t = (torch.stack(t) for t in zip(*(encode_targets(anchors, t["boxes"]) for t in targets)))
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

    @torch.no_grad()
    def anchors_for(self, height: int, width: int) -> torch.Tensor:
        """The (A, 4) anchors of an input of this size, on the CPU (from one forward pass of a blank image)."""
        param = next(self.detector.parameters())
        was_training = self.detector.training
        self.detector.eval()  # a blank batch of one must not move BN statistics
        out = self.detector(torch.zeros(1, self.detector.in_channels, height, width, dtype=param.dtype, device=param.device))
        self.detector.train(was_training)
        sizes = [tuple(c.shape[2:]) for c in out["conf"]]
        return make_anchors(sizes, self.detector.head_strides, self.detector.anchor_sizes, torch.device("cpu"))

    def forward(self, images: torch.Tensor, targets: Optional[Union[List[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]] = None):
        conf, loc, anchors = self.raw(images)
        if self.training:
            if targets is None:
                raise InvalidInputError("S3FD in training mode needs targets (a list of {'boxes': (K, 4) xyxy}, or EncodeTargets' batch)")
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
        return merge_detections(boxes, scores, (h, w), self.nms_threshold, self.max_detections)
