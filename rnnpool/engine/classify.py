"""Train and evaluate classifiers (the paper's recipe: SGD 0.9, wd 4e-5, cosine, lr 0.05 at batch 256).

One process, or several under ``torchrun`` (DistributedDataParallel + DistributedSampler). Each epoch's
randomness (shuffle, augmentation, dropout) is seeded from (seed, epoch), and a checkpoint holds everything
else, so ``resume`` continues a run exactly: 2 epochs == 1 epoch + resume + 1 epoch, weight for weight.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..data import build_classification_data, collate_skipping_bad
from ..models import create_model
from ..nn import RNNPool2d
from . import distributed as dist
from .checkpoint import load_checkpoint, model_state
from .loop import RunBook


@dataclass
class ClassifyConfig:
    """Everything a classification run depends on (saved as the run's config.yaml)."""

    model: str
    data: str
    layout: str = "imagefolder"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 4e-5
    schedule: str = "cosine"
    step_size: int = 30
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    rnn_clip: Optional[float] = 5.0
    amp: bool = True
    input_size: int = 224
    min_scale: float = 0.08
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    project: str = "runs/classify"
    name: str = "exp"
    exist_ok: bool = False
    resume: Optional[str] = None
    skip_bad: bool = False
    max_steps: int = 0
    stop_epoch: int = 0  # stop after this epoch (0: at ``epochs``); the schedule still spans ``epochs``
    model_kwargs: Dict[str, Any] = field(default_factory=dict)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(cfg: ClassifyConfig, model: nn.Module, steps_per_epoch: int):
    """Optimizer and a per-step schedule (linear warm-up, then cosine or step decay)."""
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected 'sgd' or 'adamw'")
    if cfg.schedule not in ("cosine", "step"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}; expected 'cosine' or 'step'")
    warm, total = cfg.warmup_epochs * steps_per_epoch, max(1, cfg.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        return 0.1 ** (step // (cfg.step_size * steps_per_epoch))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device) -> Dict[str, Any]:
    """Loss, top-1 accuracy and per-class accuracy over ``loader`` (summed over processes)."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    totals = torch.zeros(3 + 2 * num_classes, dtype=torch.float64)  # loss, correct, seen, per-class correct/seen
    for images, labels, skipped in loader:
        if images is None:
            continue
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        pred = logits.argmax(1)
        totals[0] += criterion(logits.float(), labels).item()
        totals[1] += (pred == labels).sum().item()
        totals[2] += labels.numel()
        totals[3 : 3 + num_classes] += torch.bincount(labels[pred == labels].cpu(), minlength=num_classes).double()
        totals[3 + num_classes :] += torch.bincount(labels.cpu(), minlength=num_classes).double()
    totals = dist.all_reduce_sum(totals.to(device) if device.type == "cuda" else totals).cpu()
    seen = max(totals[2].item(), 1)
    per_class = (totals[3 : 3 + num_classes] / totals[3 + num_classes :].clamp(min=1)).tolist()
    return {"loss": totals[0].item() / seen, "top1": totals[1].item() / seen, "per_class": per_class, "samples": int(totals[2].item())}


def _rnn_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for m in model.modules() if isinstance(m, RNNPool2d) for p in m.parameters() if p.requires_grad]


def train_classifier(cfg: ClassifyConfig) -> Dict[str, Any]:
    """Run training; returns the final metrics and the run folder. Writes only on the main process."""
    device = _device(cfg.device)
    distributed = dist.init_distributed(device.type)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", dist.rank() % torch.cuda.device_count())
    train_set, val_set = build_classification_data(cfg.data, cfg.input_size, cfg.layout, cfg.skip_bad, cfg.min_scale)
    num_classes = len(train_set.classes)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=num_classes, input_size=cfg.input_size, **cfg.model_kwargs).to(device)
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size(), rank=dist.rank(), shuffle=True, seed=cfg.seed)
    generator = torch.Generator()
    # drop the ragged last batch (BN cannot train on a single sample) unless it is the only one
    loader = DataLoader(train_set, cfg.batch_size, sampler=sampler, num_workers=cfg.workers, collate_fn=collate_skipping_bad,
                        generator=generator, drop_last=len(sampler) > cfg.batch_size, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, cfg.batch_size, sampler=dist.ShardSampler(len(val_set)), num_workers=cfg.workers,
                            collate_fn=collate_skipping_bad)
    steps_per_epoch = len(loader) if not cfg.max_steps else min(len(loader), cfg.max_steps)
    optimizer, scheduler = make_optimizer(cfg, model, steps_per_epoch)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    book = RunBook(cfg, {"classes": train_set.classes}, [("train_loss", "val_loss"), ("train_top1", "val_top1")])
    book.resume(model, optimizer, scheduler, scaler)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if distributed else model
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    rnn_params = _rnn_parameters(model)
    metrics: Dict[str, Any] = {}
    end_epoch = min(cfg.epochs, cfg.stop_epoch) if cfg.stop_epoch > 0 else cfg.epochs
    for epoch in range(book.start_epoch, end_epoch):
        book.seed_epoch(cfg.seed, epoch, generator)
        sampler.set_epoch(epoch)
        net.train()
        totals = torch.zeros(4, dtype=torch.float64)  # loss sum, correct, seen, skipped (unreadable + lone samples)
        start = time.time()
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not dist.is_main(), leave=False)
        for step, (images, labels, skipped) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            totals[3] += skipped
            if images is None or images.shape[0] < 2:  # all unreadable, or one sample left: BN cannot train on it
                totals[3] += 0 if images is None else 1
                continue
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp):
                logits = net(images)
                loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.rnn_clip and rnn_params:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(rnn_params, cfg.rnn_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            totals += torch.tensor([loss.item() * labels.numel(), (logits.argmax(1) == labels).sum().item(), labels.numel(), 0.0], dtype=torch.float64)
            mem = f"{torch.cuda.memory_allocated(device) / 2**30:.2f}G" if device.type == "cuda" else "cpu"
            bar.set_postfix(loss=f"{totals[0] / max(totals[2], 1):.4f}", acc=f"{totals[1] / max(totals[2], 1):.3f}", mem=mem)
        totals = dist.all_reduce_sum(totals)
        val = evaluate_classifier(model, val_loader, num_classes, device)
        metrics = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": totals[0].item() / max(totals[2].item(), 1),
                   "train_top1": totals[1].item() / max(totals[2].item(), 1), "val_loss": val["loss"], "val_top1": val["top1"],
                   "skipped": int(totals[3].item()), "seconds": round(time.time() - start, 2)}
        book.end_epoch(epoch, metrics, val["top1"], model, optimizer, scheduler, scaler, {"classes": train_set.classes})
    final = evaluate_classifier(model, val_loader, num_classes, device)
    if book.run is not None:
        print(f"top-1 {final['top1']:.4f} on {final['samples']} images; per class: "
              + ", ".join(f"{c} {a:.3f}" for c, a in zip(train_set.classes, final["per_class"])), flush=True)
    return {"run": str(book.run) if book.run else None, "final": final, "last_epoch": metrics, "best_top1": book.best,
            "classes": train_set.classes}


def evaluate_checkpoint(model_name: str, weights: Optional[str], data: str, layout: str = "imagefolder", input_size: int = 224,
                        batch_size: int = 64, workers: int = 2, device: str = "auto", skip_bad: bool = False) -> Dict[str, Any]:
    """Top-1 and per-class accuracy of ``model_name`` with ``weights`` on ``data``'s val (or test) split."""
    dev = _device(device)
    _, val_set = build_classification_data(data, input_size, layout, skip_bad)
    model = create_model(model_name, num_classes=len(val_set.classes), input_size=input_size).to(dev)
    if weights:
        model.load_state_dict(model_state(load_checkpoint(weights)))
    loader = DataLoader(val_set, batch_size, num_workers=workers, collate_fn=collate_skipping_bad)
    result = evaluate_classifier(model, loader, len(val_set.classes), dev)
    return {**result, "classes": val_set.classes}
