"""Train and evaluate the RNNPool-Face detectors (S3FD recipe: SGD 0.9, lr 0.01, 5 warm-up epochs, cosine).

Evaluation runs each val image at its own size (optionally several scales), then the WIDER FACE protocol:
AP over all faces (invalid-flagged ones ignored), AP on images with at most 3 faces, and, given the official
ground-truth folder, easy / medium / hard AP.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from ..data import FaceDataset, FaceRecord, collate_detection, detection_transforms, load_face_annotations
from ..models import create_model, model_info
from ..models.detection_utils import wider_rows
from . import distributed as dist
from ..models.checkpoint import checkpoint_model, load_weights
from .config import DetectConfig
from .loop import SHOW_EVERY, RunBook, TimeLimit, prepare_training, progress, resolve_device, setup_device
from .qat import RANGES_KEY, qat_model
from ..deploy.export import image_tensor, load_image
from .s3fd import EncodeTargets, S3FD
from ..metrics.widerface import ap_summary, evaluate_widerface, load_widerface_mat, plot_pr, truth_from_boxes
from ..errors import InvalidInputError


def build_detector(model_name: Optional[str], weights: Optional[str] = None, device: Union[str, torch.device] = "cpu") -> S3FD:
    """A zoo face model inside :class:`S3FD`, with a checkpoint's weights if given; ``device`` may be "auto".
    ``model_name`` None: the model the checkpoint was trained as; a checkpoint of another model is refused,
    naming both."""
    if weights:
        model_name = checkpoint_model(weights, model_name)
    elif model_name is None:
        raise InvalidInputError("give a face model name, or the weights of a training run")
    if model_info(model_name).task != "detection":
        raise InvalidInputError(f"{model_name!r} is not a face detector; see 'rnnpool list *face*'")
    device = resolve_device(device) if isinstance(device, str) else device
    model = S3FD(create_model(model_name))
    if weights:
        load_weights(model.detector, weights, model_name)
    return model.to(device)


def _load_image(path: Path, in_channels: int, device: torch.device) -> torch.Tensor:
    """An image file as a detector reads it: (C, H, W) floats in [0, 1], grey for one input channel, else RGB."""
    with Image.open(path) as img:
        img = img.convert("L" if in_channels == 1 else "RGB")
        return pil_to_tensor(img).float().div_(255).to(device)


@torch.no_grad()
def predict_faces(model: S3FD, records: Sequence[FaceRecord], scales: Sequence[float] = (1.0,)) -> Dict[str, np.ndarray]:
    """``model``'s detections on each image of ``records`` at ``scales``, as the WIDER FACE protocol reads them:
    (K, 5) x, y, w, h, score rows by image name."""
    device = next(model.parameters()).device
    return {r.name: wider_rows(model.detect(_load_image(r.path, model.detector.in_channels, device), scales))
            for r in progress(records, desc="detect", leave=False)}


def evaluate_detector(model: S3FD, annotations: str, image_root: Optional[str] = None, scales: Sequence[float] = (1.0,),
                      gt_dir: Optional[str] = None, skip_bad: bool = False, pr_plot: Optional[str] = None,
                      size_bins: Sequence[float] = ()) -> Dict[str, Any]:
    """AP of ``model`` on the images of ``annotations`` (see module doc). Keys: ``ap``, ``ap_le3``, settings;
    with ``size_bins`` (face-size edges in pixels, e.g. ``(16, 32, 64)``) also ``ap_by_size`` and
    ``faces_by_size``, keyed ``<16px``, ``16-32px``, ... (other faces ignored in each)."""
    data = load_face_annotations(annotations, image_root, skip_bad)
    predictions = predict_faces(model, data.records, scales)
    truth = truth_from_boxes({r.name: r.boxes for r in data.records}, {r.name: r.invalid for r in data.records}, size_bins)
    summary = ap_summary(predictions, truth)
    result = {"ap": summary["ap"], "ap_le3": summary["ap_le3"], "images": len(data.records), "faces": summary["faces"],
              "skipped_boxes": len(data.problems)}
    if size_bins:
        result["ap_by_size"], result["faces_by_size"] = summary["ap_by_size"], summary["faces_by_size"]
    curves = {"all": summary["all"]}
    if gt_dir:
        official = load_widerface_mat(gt_dir)
        by_stem = {Path(name).stem: p for name, p in predictions.items()}
        settings = evaluate_widerface(by_stem, official)
        result.update({f"ap_{s}": r["ap"] for s, r in settings.items()})
        curves = settings
    if pr_plot:
        plot_pr(curves, pr_plot)
    return result


def train_detector(cfg: DetectConfig) -> Dict[str, Any]:
    """Train a face detector (from ``cfg.weights`` if given; with ``cfg.qat``, quantization-aware: the steps and
    the validation run the int8 program's arithmetic, see :mod:`rnnpool.engine.qat`); returns the last metrics
    and the run folder."""
    device, distributed = setup_device(cfg.device, cfg.deterministic)
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.model, cfg.weights, device=device)
    annotations = load_face_annotations(cfg.train, cfg.image_root, cfg.skip_bad)
    if annotations.problems and dist.is_main():
        print(f"--skip-bad dropped {len(annotations.problems)} boxes/images (listed in config.yaml):", *annotations.problems[:5], sep="\n  ")
    carried: Dict[str, Any] = {"model_name": cfg.model}
    trained = model  # what the steps run: the model, or (QAT) the model as its int8 program computes
    if cfg.qat:
        detector = model.detector

        def calibration() -> List[torch.Tensor]:
            return [image_tensor(load_image(r.path, detector.in_channels, detector.input_size))
                    for r in annotations.records[: cfg.qat_calibration]]

        fake_quant, carried[RANGES_KEY] = qat_model(cfg, detector, calibration, detector.input_size)
        trained = S3FD(fake_quant)
    train_set = FaceDataset(annotations, detection_transforms(cfg.input_size, True, model.detector.in_channels))
    collate = EncodeTargets(trained.anchors_for(cfg.input_size, cfg.input_size), collate_detection)  # matching runs in the workers
    parts = prepare_training(cfg, trained, train_set, collate, device, distributed)
    book = RunBook(cfg, {"skipped_boxes": annotations.problems}, [("loss_conf", "loss_loc"), ("val_ap", "val_ap_le3")])
    book.resume(model, parts.optimizer, parts.scheduler, parts.scaler)
    end_epoch = cfg.end_epoch()
    metrics: Dict[str, Any] = {}
    limit = TimeLimit(cfg.time_limit, device)
    trained_params = [p for group in parts.optimizer.param_groups for p in group["params"]]
    with book.interruptible():
        for epoch in range(book.start_epoch, end_epoch):
            # conf and loc loss sums, kept on the device and read every SHOW_EVERY steps (no host wait per step)
            running = torch.zeros(2, dtype=torch.float64, device=device)
            batches = 0
            start = time.time()
            bar = parts.epoch_batches(cfg, epoch)
            for step, (images, targets) in enumerate(bar):
                images = images.to(device, non_blocking=True)
                targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
                with torch.autocast(device.type, enabled=parts.use_amp):
                    losses = parts.net(images, targets)
                parts.optimize(losses["loss_conf"] + losses["loss_loc"], trained_params, cfg.grad_clip)
                running += torch.stack([losses["loss_conf"].detach(), losses["loss_loc"].detach()]).double()
                batches += 1
                if step % SHOW_EVERY == 0 or step == len(bar) - 1:
                    conf, loc = (running / batches).tolist()
                    bar.set_postfix(conf=f"{conf:.3f}", loc=f"{loc:.3f}")
            totals = dist.all_reduce_sum(torch.cat([running, torch.tensor([batches], dtype=torch.float64, device=device)])).cpu()
            metrics = {"epoch": epoch + 1, "lr": parts.optimizer.param_groups[0]["lr"], "loss_conf": totals[0].item() / max(totals[2].item(), 1),
                       "loss_loc": totals[1].item() / max(totals[2].item(), 1), "val_ap": float("nan"), "val_ap_le3": float("nan"),
                       "seconds": 0.0}
            stop = limit.stop_after_this_epoch(epoch, end_epoch)
            last = epoch + 1 == end_epoch or stop  # (validated: the run's last epoch)
            if cfg.val and dist.is_main() and ((epoch + 1) % cfg.eval_period == 0 or last):
                trained.eval()
                pr = str(book.run / "pr.png") if book.run is not None else None
                val = evaluate_detector(trained, cfg.val, cfg.image_root, cfg.eval_scales, skip_bad=cfg.skip_bad, pr_plot=pr)
                metrics["val_ap"], metrics["val_ap_le3"] = val["ap"], val["ap_le3"]
            metrics["seconds"] = round(time.time() - start, 2)
            score = -metrics["loss_conf"] - metrics["loss_loc"] if math.isnan(metrics["val_ap"]) else metrics["val_ap"]
            book.end_epoch(epoch, metrics, score, model, parts.optimizer, parts.scheduler, parts.scaler, carried)
            if stop:
                limit.note(epoch + 1, cfg.epochs)
                break
    return {"run": str(book.run) if book.run else None, "last_epoch": metrics, "best": book.best}


def detect_image(model: S3FD, image_path: str, output: Optional[str] = None, scales: Sequence[float] = (1.0,),
                 threshold: float = 0.5) -> List[Dict[str, Any]]:
    """Faces in one image (boxes xyxy in its pixels, scores >= threshold); draws them into ``output`` if given."""
    from torchvision.utils import draw_bounding_boxes

    path = Path(image_path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    device = next(model.parameters()).device
    image = _load_image(path, model.detector.in_channels, device)
    det = model.detect(image, scales)
    keep = det["scores"] >= threshold
    boxes, scores = det["boxes"][keep].cpu(), det["scores"][keep].cpu()
    if output:
        canvas = (image.cpu() * 255).to(torch.uint8)
        if canvas.shape[0] == 1:
            canvas = canvas.expand(3, -1, -1)
        drawn = draw_bounding_boxes(canvas, boxes, [f"{s:.2f}" for s in scores.tolist()], colors="lime", width=2)
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(output)
    return [{"box": [round(v, 1) for v in b.tolist()], "score": round(s, 4)} for b, s in zip(boxes, scores.tolist())]
