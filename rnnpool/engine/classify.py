"""Train and evaluate classifiers (the paper's recipe: SGD 0.9, wd 4e-5, cosine, lr 0.05 at batch 256).

One process, or several under ``torchrun`` (DistributedDataParallel + DistributedSampler). Each epoch's
randomness (shuffle, augmentation, dropout) is seeded from (seed, epoch), and a checkpoint holds everything
else, so ``resume`` continues a run exactly: 2 epochs == 1 epoch + resume + 1 epoch, weight for weight.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import build_classification_data, collate_skipping_bad
from ..data.classification import ImageClassFolder, classification_transforms
from ..data.on_device import DeviceBatches, device_batches
from ..models import create_model, is_fitted_file, is_zoo_name, model_info
from ..models.checkpoint import CheckpointError, checked_model_name, checkpoint_config, load_weights
from ..errors import InvalidInputError, UnsupportedError
from ..nn import RNNPool2d
from . import distributed as dist
from .checkpoint import load_checkpoint, model_state
from .config import ClassifyConfig
from .distill import distillation_loss
from .loop import SHOW_EVERY, RunBook, TimeLimit, prepare_training, progress, setup_device
from .qat import RANGES_KEY, qat_model


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device) -> Dict[str, Any]:
    """Loss, top-1 accuracy and per-class accuracy over ``loader`` (summed over processes)."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    # loss, correct, seen, per-class correct / seen: summed on the device, read once at the end
    totals = torch.zeros(3 + 2 * num_classes, dtype=torch.float64, device=device)
    for images, labels, skipped in progress(loader, desc="validate", leave=False):
        if images is None:
            continue
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        pred = logits.argmax(1)
        totals[0] += criterion(logits.float(), labels)
        totals[1] += (pred == labels).sum()
        totals[2] += labels.numel()
        totals[3 : 3 + num_classes] += torch.bincount(labels[pred == labels], minlength=num_classes)
        totals[3 + num_classes :] += torch.bincount(labels, minlength=num_classes)
    totals = dist.all_reduce_sum(totals).cpu()
    seen = max(totals[2].item(), 1)
    per_class = (totals[3 : 3 + num_classes] / totals[3 + num_classes :].clamp(min=1)).tolist()
    return {"loss": totals[0].item() / seen, "top1": totals[1].item() / seen, "per_class": per_class, "samples": int(totals[2].item())}


def with_classes(model: nn.Module, num_classes: int) -> nn.Module:
    """``model`` with ``num_classes`` outputs: its ``reset_classifier`` if it has one, else its last nn.Linear
    replaced (a torchvision model, or one saved by rnnpool fit) when that has another size."""
    if getattr(model, "num_classes", None) == num_classes:
        return model
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        return model
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UnsupportedError(f"{type(model).__name__} has no nn.Linear classifier to give {num_classes} outputs")
    name, last = linears[-1]
    if last.out_features != num_classes:
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attribute,
                nn.Linear(last.in_features, num_classes, bias=last.bias is not None))
    return model


def build_classifier(name: str, num_classes: int, input_size: int, model_kwargs: Optional[Dict[str, Any]] = None) -> nn.Module:
    """A zoo classifier, ``torchvision:NAME`` or a model saved by ``rnnpool fit`` (``*.pt``), with ``num_classes``
    outputs; only zoo models take ``model_kwargs`` and an input size."""
    if not is_zoo_name(name):
        if model_kwargs:
            raise InvalidInputError(f"{name} takes no model options (got {', '.join(model_kwargs)})")
        return with_classes(create_model(name) if is_fitted_file(name) else create_model(name, num_classes=num_classes), num_classes)
    return create_model(name, num_classes=num_classes, input_size=input_size, **(model_kwargs or {}))


def trained_classifier(name: str, weights: str, num_classes: int, input_size: int) -> nn.Module:
    """``name`` with the trained ``weights`` (a checkpoint of a fitted model carries the model itself)."""
    checkpoint = load_checkpoint(weights)
    if isinstance(checkpoint.get("fitted_model"), nn.Module):
        return with_classes(checkpoint["fitted_model"], num_classes)
    model = build_classifier(name, num_classes, input_size)
    load_weights(model, weights, name if is_zoo_name(name) else None)
    return model


def _calibration_images(train_set, count: int, input_size: int) -> List[torch.Tensor]:
    """``count`` training images spread over the classes, resized and centre-cropped as for evaluation, in [0, 1]."""
    plain = ImageClassFolder(train_set.root, classification_transforms(input_size, False, normalize=False), train_set.classes,
                             skip_bad=True)
    picks = torch.linspace(0, len(plain) - 1, min(count, len(plain))).round().long().unique().tolist()
    return [item[0] for item in (plain[i] for i in picks) if item is not None]


def _rnn_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for m in model.modules() if isinstance(m, RNNPool2d) for p in m.parameters() if p.requires_grad]


def train_classifier(cfg: ClassifyConfig, data: Optional[Tuple[DeviceBatches, DeviceBatches]] = None) -> Dict[str, Any]:
    """Run training; returns the final metrics and the run folder. Writes only on the main process.

    ``data``: (training, validation) batches already on the device (:func:`rnnpool.data.on_device.device_batches`
    of ``cfg.data`` at ``cfg.input_size``), to share one decoding between several runs; None: as ``cfg`` says.
    """
    device, distributed = setup_device(cfg.device, cfg.deterministic)
    train_set, val_set = build_classification_data(cfg.data, cfg.input_size, cfg.layout, cfg.skip_bad, cfg.min_scale)
    num_classes = len(train_set.classes)
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.model, num_classes, cfg.input_size, cfg.model_kwargs)
    if cfg.weights:
        load_weights(model, cfg.weights, cfg.model if is_zoo_name(cfg.model) else None)
    if cfg.bn_momentum is not None:  # e.g. torchvision's MobileNetV3 (0.01): its statistics lag a short run's weights
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = cfg.bn_momentum
    model = model.to(device)
    trained, extra = model, {}  # what the steps run: the model, or (QAT) the model as its int8 program computes
    if cfg.qat:
        trained, extra[RANGES_KEY] = qat_model(cfg, model, lambda: _calibration_images(train_set, cfg.qat_calibration, cfg.input_size),
                                               (cfg.input_size, cfg.input_size))
    teacher = None
    if cfg.teacher:  # knowledge distillation from a trained model (e.g. the original of a fitted one)
        teacher = trained_classifier(cfg.teacher, cfg.teacher_weights, num_classes, cfg.input_size).to(device).eval()
        teacher.requires_grad_(False)
    # a fitted model's checkpoints carry the model itself, so eval and profile take them without its .pt
    carried = {"fitted_model": model, "input_shape": [3, cfg.input_size, cfg.input_size]} if is_fitted_file(cfg.model) else {}
    if data is not None:
        batches, val_loader = data
        given = {"batch_size": batches.batch_size, "input_size": batches.input_size, "min_scale": batches.scale[0], "seed": batches.seed}
        differ = {k: v for k, v in given.items() if v != getattr(cfg, k)}
        if differ or not batches.train or val_loader.train:
            raise InvalidInputError("the data given were made for other settings than the run's: "
                                    + (", ".join(f"{k} {v} (run: {getattr(cfg, k)})" for k, v in differ.items())
                                       or "expected (training, validation) batches"))
    elif cfg.data_on_device:
        batches, val_loader = device_batches(train_set, val_set, device, cfg.batch_size, cfg.input_size, cfg.min_scale, cfg.seed,
                                             dist.rank(), dist.world_size(), cfg.workers)
    if data is not None or cfg.data_on_device:
        if dist.is_main():
            held = batches.data.images.numel() + val_loader.data.images.numel()
            print(f"data on {device}: {len(batches.data)} training and {len(val_loader.data)} validation images, "
                  f"{held / 2**20:.0f} MiB" + (f"; {batches.data.skipped + val_loader.data.skipped} unreadable images left out"
                                                if batches.data.skipped + val_loader.data.skipped else ""), flush=True)
    else:
        batches = None
        val_loader = DataLoader(val_set, cfg.batch_size, sampler=dist.ShardSampler(len(val_set)), num_workers=cfg.workers,
                                collate_fn=collate_skipping_bad)
    parts = prepare_training(cfg, trained, train_set, collate_skipping_bad, device, distributed, batches)
    book = RunBook(cfg, {"classes": train_set.classes}, [("train_loss", "val_loss"), ("train_top1", "val_top1")])
    book.resume(model, parts.optimizer, parts.scheduler, parts.scaler)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    rnn_params = _rnn_parameters(model)
    metrics: Dict[str, Any] = {}
    limit = TimeLimit(cfg.time_limit, device)
    with book.interruptible():
        for epoch in range(book.start_epoch, cfg.end_epoch()):
            # loss sum, correct, seen, skipped (unreadable + lone samples); the first two summed on the device and
            # read every SHOW_EVERY steps, so the host does not wait for each step
            running = torch.zeros(2, dtype=torch.float64, device=device)
            seen = skipped_total = 0
            start = time.time()
            bar = parts.epoch_batches(cfg, epoch)
            for step, (images, labels, skipped) in enumerate(bar):
                skipped_total += skipped
                if images is None or images.shape[0] < 2:  # all unreadable, or one sample left: BN cannot train on it
                    skipped_total += 0 if images is None else 1
                    continue
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=parts.use_amp):
                    logits = parts.net(images)
                    if teacher is None:
                        loss = criterion(logits, labels)
                    else:
                        with torch.no_grad():
                            soft_targets = teacher(images)
                        loss = distillation_loss(logits, soft_targets, labels, cfg.distill_temperature, cfg.distill_weight, criterion)
                parts.optimize(loss, rnn_params, cfg.rnn_clip)
                running[0] += loss.detach() * labels.numel()
                running[1] += (logits.argmax(1) == labels).sum()
                seen += labels.numel()
                if step % SHOW_EVERY == 0 or step == len(bar) - 1:
                    loss_sum, correct = running.tolist()
                    shown = {"loss": f"{loss_sum / seen:.4f}", "acc": f"{correct / seen:.3f}"}
                    if device.type == "cuda":  # the GPU memory the step holds
                        shown["gpu_mem"] = f"{torch.cuda.memory_allocated(device) / 2**30:.2f}G"
                    bar.set_postfix(**shown)
            totals = dist.all_reduce_sum(torch.cat([running, torch.tensor([seen, skipped_total], dtype=torch.float64, device=device)])).cpu()
            stop = limit.stop_after_this_epoch(epoch, cfg.end_epoch())
            val = evaluate_classifier(trained, val_loader, num_classes, device)
            seen = max(totals[2].item(), 1)
            metrics = {"epoch": epoch + 1, "lr": parts.optimizer.param_groups[0]["lr"], "train_loss": totals[0].item() / seen,
                       "train_top1": totals[1].item() / seen, "val_loss": val["loss"], "val_top1": val["top1"],
                       "skipped": int(totals[3].item()), "seconds": round(time.time() - start, 2)}
            book.end_epoch(epoch, metrics, val["top1"], model, parts.optimizer, parts.scheduler, parts.scaler,
                           {"classes": train_set.classes, **carried, **extra})
            if stop:
                limit.note(epoch + 1, cfg.epochs)
                break
    final = evaluate_classifier(trained, val_loader, num_classes, device)
    if book.run is not None:
        print(f"top-1 {final['top1']:.4f} on {final['samples']} images; per class: "
              + ", ".join(f"{c} {a:.3f}" for c, a in zip(train_set.classes, final["per_class"])), flush=True)
    return {"run": str(book.run) if book.run else None, "final": final, "last_epoch": metrics, "best_top1": book.best,
            "classes": train_set.classes}


def evaluate_checkpoint(model_name: Optional[str], weights: Optional[str], data: str, layout: str = "imagefolder",
                        input_size: Optional[int] = None, batch_size: int = 64, workers: int = 2, device: str = "auto",
                        skip_bad: bool = False, model_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Top-1 and per-class accuracy of ``model_name`` with ``weights`` on ``data``'s val (or test) split.

    The model, its input size and its ``model_kwargs`` (e.g. ``{"downsample": "avg"}``) default to those the
    checkpoint's run was trained with (None: from the checkpoint; a model's own 224 without one); a checkpoint
    of another model is refused, naming both. The result says which model and input size it evaluated.
    """
    checkpoint = load_checkpoint(weights) if weights else {}
    config = checkpoint_config(checkpoint)
    fitted = checkpoint.get("fitted_model")  # a fitted model's run: the checkpoint carries the model itself
    model_name = checked_model_name(checkpoint, weights, model_name)
    if model_name is None:
        raise CheckpointError(f"checkpoint {weights} does not say which model it is; give --model" if weights
                              else "give --model, or --weights of a training run")
    if input_size is None:
        zoo = is_zoo_name(model_name) and not isinstance(fitted, nn.Module)
        input_size = int(config.get("input_size") or (model_info(model_name).input_shape[-1] if zoo else 224))
    if model_kwargs is None:
        model_kwargs = config.get("model_kwargs", {})
    dev, _ = setup_device(device)
    _, val_set = build_classification_data(data, input_size, layout, skip_bad)
    if isinstance(fitted, nn.Module):
        model = with_classes(fitted, len(val_set.classes)).to(dev)
    else:
        model = build_classifier(model_name, len(val_set.classes), input_size, model_kwargs).to(dev)
        if weights:
            model.load_state_dict(model_state(checkpoint))
    loader = DataLoader(val_set, batch_size, sampler=dist.ShardSampler(len(val_set)), num_workers=workers, collate_fn=collate_skipping_bad)
    result = evaluate_classifier(model, loader, len(val_set.classes), dev)
    return {**result, "classes": val_set.classes, "model": model_name, "input_size": input_size}
