"""What every training run shares: the run folder, resuming, and the end-of-epoch bookkeeping."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from . import distributed as dist
from .checkpoint import load_checkpoint, model_state, save_checkpoint, set_rng_state
from .run_dir import append_metrics, new_run_dir, plot_curves, truncate_metrics, write_config


class RunBook:
    """Run folder (main process only), resume state, and per-epoch checkpoints / metrics / curves.

    ``cfg`` needs ``project``, ``name``, ``exist_ok``, ``resume`` and ``seed`` and is saved as config.yaml.
    """

    def __init__(self, cfg: Any, extra_config: Dict[str, Any], curves: Sequence[Sequence[str]]) -> None:
        self.cfg = cfg
        self.curves = curves
        self.start_epoch, self.best = 0, float("-inf")
        self.run: Optional[Path] = None
        if dist.is_main():
            self.run = new_run_dir(cfg.project, cfg.name, exist_ok=cfg.exist_ok or cfg.resume is not None)
            write_config(self.run, {**asdict(cfg), **extra_config, "world_size": dist.world_size()})

    def resume(self, model: nn.Module, optimizer, scheduler, scaler) -> None:
        """Load ``cfg.resume`` (weights, optimizer, schedule, scaler, epoch, best, RNG) if set."""
        if not self.cfg.resume:
            return
        ckpt = load_checkpoint(self.cfg.resume)
        model.load_state_dict(model_state(ckpt))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch, self.best = ckpt["epoch"], ckpt["best"]
        set_rng_state(ckpt["rng"])
        if self.run is not None:
            truncate_metrics(self.run, self.start_epoch)

    @staticmethod
    def seed_epoch(seed: int, epoch: int, generator: torch.Generator) -> None:
        """Make the epoch's randomness (shuffle, augmentation, dropout) a function of (seed, epoch) alone."""
        torch.manual_seed(seed * 100_003 + epoch)
        generator.manual_seed(seed * 100_003 + epoch)

    def end_epoch(self, epoch: int, metrics: Dict[str, Any], score: float, model: nn.Module, optimizer, scheduler, scaler,
                  extra: Optional[Dict[str, Any]] = None) -> None:
        """Save weights/last.pt (and best.pt when ``score`` improves), a metrics.csv row, curves.png."""
        improved = score > self.best
        self.best = max(self.best, score)
        if self.run is None:
            return
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "scaler": scaler.state_dict(), "epoch": epoch + 1, "best": self.best, "config": asdict(self.cfg), **(extra or {})}
        save_checkpoint(self.run / "weights" / "last.pt", payload)
        if improved:
            save_checkpoint(self.run / "weights" / "best.pt", payload)
        append_metrics(self.run, metrics)
        plot_curves(self.run, self.curves)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()), flush=True)
