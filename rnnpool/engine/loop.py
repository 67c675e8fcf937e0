"""What every training run shares: its settings, optimizer and schedule, device, run folder, resuming and
end-of-epoch bookkeeping."""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from . import distributed as dist
from .checkpoint import load_checkpoint, model_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .run_dir import append_metrics, new_run_dir, plot_curves, run_dir_of, truncate_metrics, write_config
from ..errors import InvalidInputError


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, with "auto" meaning CUDA if present, else CPU."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def setup_device(name: str, deterministic: bool = False) -> Tuple[torch.device, bool]:
    """The device to train on (see :func:`resolve_device`) and whether torchrun launched several processes.

    ``deterministic`` selects deterministic cuDNN / cuBLAS kernels, so a CUDA run repeats (and resumes) bit
    for bit, at some speed cost; a warning names any op that has no deterministic kernel.
    """
    device = resolve_device(name)
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    distributed = dist.init_distributed(device.type)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", dist.rank() % torch.cuda.device_count())
    return device, distributed


def make_optimizer(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int):
    """Optimizer (SGD or AdamW) and a per-step schedule: linear warm-up, then cosine or step decay."""
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise InvalidInputError(f"unknown optimizer {cfg.optimizer!r}; expected 'sgd' or 'adamw'")
    if cfg.schedule not in ("cosine", "step"):
        raise InvalidInputError(f"unknown schedule {cfg.schedule!r}; expected 'cosine' or 'step'")
    warm, total = cfg.warmup_epochs * steps_per_epoch, max(1, cfg.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        return 0.1 ** (step // (cfg.step_size * steps_per_epoch))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


SHOW_EVERY = 20  # steps between progress-bar updates (each reads the running losses back from the device)
SEED_STRIDE = 100_003  # a prime above any epoch count: (seed, epoch) pairs never share a seed


def progress(iterable: Iterable, **kwargs: Any) -> tqdm:
    """``iterable`` behind a progress bar on the main process only. Its display is left to tqdm's own settings,
    so ``TQDM_DISABLE=1`` (or any other ``TQDM_*`` variable) reaches it: a log file need not hold the bars."""
    return tqdm(iterable, **kwargs) if dist.is_main() else tqdm(iterable, disable=True, **kwargs)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness (shuffle, augmentation, dropout) in a run seeded with ``seed``."""
    return seed * SEED_STRIDE + epoch


@dataclass
class TrainingParts:
    """The objects a training loop drives, built the same way for every task by :func:`prepare_training`."""

    loader: Iterable  # a DataLoader, or ready batches (prepare_training's ``batches``)
    sampler: Any  # its DistributedSampler (anything with set_epoch)
    generator: torch.Generator
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    use_amp: bool
    net: nn.Module  # the model, wrapped in DistributedDataParallel under torchrun

    def epoch_batches(self, cfg: TrainConfig, epoch: int) -> tqdm:
        """The epoch's batches (at most ``steps_per_epoch``) behind a progress bar, the model in training
        mode and the epoch's randomness (shuffle, augmentation, dropout) a function of (seed, epoch) alone."""
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        self.generator.manual_seed(epoch_seed(cfg.seed, epoch))
        self.sampler.set_epoch(epoch)
        self.net.train()
        return progress(itertools.islice(self.loader, self.steps_per_epoch), total=self.steps_per_epoch,
                        desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)

    def optimize(self, loss: torch.Tensor, clip: Sequence[nn.Parameter] = (), max_norm: Optional[float] = None) -> None:
        """One optimizer step on ``loss`` (AMP-scaled), clipping the gradient norm of ``clip`` to ``max_norm``."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if max_norm and clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(clip, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


def prepare_training(cfg: TrainConfig, model: nn.Module, train_set, collate: Callable, device: torch.device,
                     distributed: bool, batches=None) -> TrainingParts:
    """Sharded, epoch-seeded loader; optimizer and schedule; AMP scaler (CUDA only); DDP wrapper.

    ``batches``: ready batches to use instead of a DataLoader over ``train_set`` (e.g.
    :class:`rnnpool.data.on_device.DeviceBatches`: sharded and seeded by their own ``set_epoch``).
    """
    generator = torch.Generator()
    if batches is not None:
        sampler, loader = batches, batches
    else:
        sampler = DistributedSampler(train_set, num_replicas=dist.world_size(), rank=dist.rank(), shuffle=True, seed=cfg.seed)
        # drop the ragged last batch (BN cannot train on a single sample) unless it is the only one
        loader = DataLoader(train_set, cfg.batch_size, sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
                            generator=generator, drop_last=len(sampler) > cfg.batch_size, pin_memory=device.type == "cuda")
    steps = len(loader) if not cfg.max_steps else min(len(loader), cfg.max_steps)
    optimizer, scheduler = make_optimizer(cfg, model, steps)
    use_amp = cfg.amp and device.type == "cuda"
    ids = [device.index] if device.type == "cuda" else None
    net = nn.parallel.DistributedDataParallel(model, device_ids=ids) if distributed else model
    return TrainingParts(loader, sampler, generator, steps, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_amp), use_amp, net)


# Settings that may differ on --resume: where and how the work runs, not what it computes.
RESUME_MAY_CHANGE = {"resume", "stop_epoch", "time_limit", "name", "project", "exist_ok", "workers", "device"}


class TimeLimit:
    """A run's wall-time limit (``time_limit`` minutes; 0: none): at the end of each epoch's steps,
    :meth:`stop_after_this_epoch` says whether another epoch, as long as the mean one so far, would pass it.
    Every process decides alike (the decision is summed over them)."""

    def __init__(self, minutes: float, device: torch.device) -> None:
        self.seconds, self.device = minutes * 60, device
        self.start, self.epochs = time.monotonic(), 0

    def stop_after_this_epoch(self, epoch: int, end_epoch: int) -> bool:
        """After the steps of ``epoch`` (0-based) of a run that ends before ``end_epoch``: True if the run
        should end here to stay within the limit. Never after the run's last epoch (nothing is left to cut);
        called by every process at every epoch's end."""
        self.epochs += 1
        if self.seconds <= 0:
            return False
        elapsed = time.monotonic() - self.start
        stop = torch.tensor([float(elapsed + elapsed / self.epochs > self.seconds)], device=self.device)
        return dist.all_reduce_sum(stop).item() > 0 and epoch + 1 < end_epoch

    def note(self, epoch: int, epochs: int) -> None:
        """Say that the limit ends the run after ``epoch`` (1-based) of a schedule of ``epochs``."""
        if dist.is_main():
            print(f"time limit of {self.seconds / 60:g} min: stopping after epoch {epoch} of {epochs} "
                  f"({(time.monotonic() - self.start) / 60:.1f} min so far)", flush=True)


class RunBook:
    """Run folder (main process only), resume state, and per-epoch checkpoints / metrics / curves.

    ``cfg`` needs ``project``, ``name``, ``exist_ok``, ``resume`` and ``seed`` and is saved as config.yaml.
    """

    def __init__(self, cfg: Any, extra_config: Dict[str, Any], curves: Sequence[Sequence[str]]) -> None:
        self.cfg = cfg
        self.curves = curves
        self.start_epoch, self.best = 0, float("-inf")
        self.saved_epoch = 0  # epochs held by weights/last.pt
        # checked before anything is written, so a refused resume leaves its run folder as it was
        self.checkpoint = self._resume_checkpoint() if cfg.resume else None
        self.run: Optional[Path] = None
        self.new_folder = False  # this run made its folder (it is removed if no epoch finishes)
        if dist.is_main():
            # a resumed run goes on in the folder its checkpoint came from, whatever --name says
            self.run = run_dir_of(cfg.resume) if cfg.resume else None
            if self.run is None:
                reuse = cfg.exist_ok or cfg.resume is not None  # else new_run_dir picks a name that is free
                self.new_folder = not (reuse and (Path(cfg.project) / cfg.name).exists())
                self.run = new_run_dir(cfg.project, cfg.name, exist_ok=reuse)
            write_config(self.run, {**asdict(cfg), **extra_config, "world_size": dist.world_size()})
            print(f"run folder: {self.run}", flush=True)

    def _resume_checkpoint(self) -> Dict[str, Any]:
        """``cfg.resume`` loaded, refused if the run it continues was started with other settings."""
        ckpt = load_checkpoint(self.cfg.resume)
        saved, now = ckpt.get("config", {}), asdict(self.cfg)
        changed = sorted(k for k in now if k not in RESUME_MAY_CHANGE and k in saved and saved[k] != now[k])
        if changed:
            diffs = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed)
            raise InvalidInputError(f"--resume {self.cfg.resume}: the run was started with other settings ({diffs}); "
                             "resume with the same ones, or start a new run")
        return ckpt

    def resume(self, model: nn.Module, optimizer, scheduler, scaler) -> None:
        """Restore the ``cfg.resume`` checkpoint (weights, optimizer, schedule, scaler, epoch, best, RNG) if set."""
        ckpt = self.checkpoint
        if ckpt is None:
            return
        model.load_state_dict(model_state(ckpt))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch, self.best = ckpt["epoch"], ckpt["best"]
        self.saved_epoch = self.start_epoch
        set_rng_state(ckpt["rng"])
        if self.run is not None:
            truncate_metrics(self.run, self.start_epoch)
        self.checkpoint = None  # restored; let it be freed

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Around the epoch loop: on Ctrl-C, say which epoch ``weights/last.pt`` holds and how to resume."""
        try:
            yield
        except KeyboardInterrupt:
            if self.run is not None:
                last = self.run / "weights" / "last.pt"
                saved = (f"{last} holds epoch {self.saved_epoch}; continue with --resume {last}" if self.saved_epoch
                         else "no epoch was finished")
                print(f"\ninterrupted: {saved}", file=sys.stderr, flush=True)
            self._discard_empty_run()
            raise
        except BaseException:
            self._discard_empty_run()
            raise
        if self.run is not None:
            print(f"run finished: {self.run} (weights/best.pt, weights/last.pt, metrics.csv, curves.png)", flush=True)

    def _discard_empty_run(self) -> None:
        """Remove the folder this run made if it holds no finished epoch (only its config.yaml): a rerun then
        takes the same name instead of landing in ``name2``."""
        if self.run is not None and self.new_folder and self.saved_epoch == 0:
            shutil.rmtree(self.run, ignore_errors=True)
            print(f"removed {self.run}: no epoch was finished", file=sys.stderr, flush=True)

    def end_epoch(self, epoch: int, metrics: Dict[str, Any], score: float, model: nn.Module, optimizer, scheduler, scaler,
                  extra: Optional[Dict[str, Any]] = None) -> None:
        """Save weights/last.pt (and best.pt when ``score`` improves), a metrics.csv row, curves.png."""
        improved = score > self.best
        self.best = max(self.best, score)
        if self.run is None:
            return
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "scaler": scaler.state_dict(), "epoch": epoch + 1, "best": self.best, "config": asdict(self.cfg), **(extra or {})}
        # last.pt goes last: it is what --resume continues from, so everything before it is redone if the
        # process dies in between (the metrics row is then rewritten, not lost)
        append_metrics(self.run, metrics)
        plot_curves(self.run, self.curves)
        if improved:
            save_checkpoint(self.run / "weights" / "best.pt", payload)
        save_checkpoint(self.run / "weights" / "last.pt", payload)
        self.saved_epoch = epoch + 1
        shown = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}  # e.g. no validation
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()), flush=True)
