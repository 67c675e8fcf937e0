"""Every face detector can learn: a short overfit of a few real face images reaches a clear AP on them.

This is the check that would have caught RNNPool-Face-Quant not learning (AP 0.04 here with its old BatchNorm
after the RNNPool and no L2Norm on the heads; 0.2 now) and Face-A / Face-B (AP 0.01 with FastGRNN's reference
update bias of 1; about 1.0 with 0). Real images from ../shared/data/faces; skipped where they are absent."""
import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.data.faces import FaceAnnotations, FaceDataset, collate_detection, detection_transforms, load_face_annotations
from rnnpool.engine.s3fd import S3FD
from rnnpool.metrics.widerface import evaluate_widerface, truth_from_boxes
from rnnpool.models import create_model

from ..conftest import SHARED_DATA

FACES = SHARED_DATA / "faces"
IMAGES, STEPS, SIZE, LR = 4, 100, 160, 0.01


def overfit_ap(name: str) -> float:
    """SGD (momentum 0.9, warm-up then cosine) on the first IMAGES training images as one batch, without
    augmentation; WIDER FACE-protocol AP of the trained model on those same images."""
    torch.manual_seed(0)
    records = load_face_annotations(FACES / "train_bbx_gt.txt").records[:IMAGES]
    model = S3FD(create_model(name))
    data = FaceDataset(FaceAnnotations(records), detection_transforms(SIZE, False, model.detector.in_channels))
    images, targets = collate_detection([data[i] for i in range(len(data))])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    model.train()
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = LR * min(1.0, (step + 1) / 30) * 0.5 * (1 + np.cos(np.pi * step / STEPS))
        losses = model(images, targets)
        optimizer.zero_grad()
        (losses["loss_conf"] + losses["loss_loc"]).backward()
        optimizer.step()
    model.eval()
    model.score_threshold = 0.01
    with torch.no_grad():
        outputs = model(images)
    predictions = {}
    for record, out in zip(records, outputs):
        with Image.open(record.path) as img:
            width, height = img.size
        boxes = (out["boxes"] * torch.tensor([width / SIZE, height / SIZE] * 2)).numpy()
        predictions[record.name] = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2], out["scores"].numpy()]
    truth = truth_from_boxes({r.name: r.boxes for r in records}, {r.name: r.invalid for r in records})
    return evaluate_widerface(predictions, truth)["all"]["ap"]


@pytest.mark.skipif(not (FACES / "train_bbx_gt.txt").is_file(), reason="../shared/data/faces not present (real-data check)")
@pytest.mark.parametrize("name", ["rnnpool_face_quant", "rnnpool_face_m4", "rnnpool_face_a", "rnnpool_face_b", "rnnpool_face_c"])
def test_face_model_overfits_a_few_real_images(name):
    assert overfit_ap(name) > 0.15
