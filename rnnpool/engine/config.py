"""The settings of a training run, as dataclasses that import nothing heavy: the CLI builds its options
from their defaults without importing torch (``rnnpool --help`` stays instant)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence
from ..errors import InvalidInputError


@dataclass(kw_only=True)
class TrainConfig:
    """Settings every training run has (each task adds its own; all are saved as the run's config.yaml)."""

    model: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 4e-5
    schedule: str = "cosine"
    step_size: int = 30  # epochs per 10x decay with schedule="step"
    warmup_epochs: int = 0
    amp: bool = True
    input_size: int = 224
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    project: str = "runs"
    name: str = "exp"
    exist_ok: bool = False
    resume: Optional[str] = None
    skip_bad: bool = False
    max_steps: int = 0  # cap on steps per epoch (0: all)
    stop_epoch: int = 0  # stop after this epoch (0: at ``epochs``); the schedule still spans ``epochs``
    time_limit: float = 0.0  # minutes: stop after the last epoch that fits in them (0: no limit); the schedule still spans ``epochs``
    deterministic: bool = False  # deterministic CUDA kernels (bit-exact reruns and resumes on GPUs; CPU runs are already)
    weights: Optional[str] = None  # start from these trained weights (a checkpoint of this model)
    qat: bool = False  # quantization-aware fine-tuning of ``weights`` (rnnpool.deploy.fake_quant)
    qat_calibration: int = 32  # training images that fix the activation ranges of a QAT run

    def __post_init__(self) -> None:
        from ..models import is_fitted_file, is_zoo_name, model_info  # (here: the CLI reads these defaults without torch)

        if is_fitted_file(self.model):  # a model saved by rnnpool fit (it carries its architecture)
            if not Path(self.model).is_file():
                raise InvalidInputError(f"fitted model {self.model} does not exist")
        elif is_zoo_name(self.model):  # (a torchvision name is checked when it is built)
            model_info(self.model)  # an unknown name fails here, naming the closest one, before any data is read
        for name in ("epochs", "batch_size", "input_size"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.qat and not self.weights:
            raise InvalidInputError("--qat fine-tunes a trained model: give its --weights (a float checkpoint)")
        if self.weights and not Path(self.weights).is_file():
            raise InvalidInputError(f"weights {self.weights} do not exist")
        if self.qat_calibration <= 0:
            raise InvalidInputError(f"qat_calibration must be positive, got {self.qat_calibration}")
        if self.lr <= 0 or self.warmup_epochs < 0 or self.max_steps < 0 or self.stop_epoch < 0 or not self.time_limit >= 0:
            raise InvalidInputError(f"need lr > 0 and warmup_epochs, max_steps, stop_epoch, time_limit >= 0; got lr={self.lr}, "
                             f"warmup_epochs={self.warmup_epochs}, max_steps={self.max_steps}, stop_epoch={self.stop_epoch}, "
                             f"time_limit={self.time_limit}")

    def end_epoch(self) -> int:
        return min(self.epochs, self.stop_epoch) if self.stop_epoch > 0 else self.epochs


@dataclass(kw_only=True)
class ClassifyConfig(TrainConfig):
    """A classification run: the shared :class:`TrainConfig` plus its data and loss settings."""

    data: str
    layout: str = "imagefolder"  # or "vww"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    label_smoothing: float = 0.0
    rnn_clip: Optional[float] = 5.0  # max grad norm of the RNNPool parameters
    min_scale: float = 0.08  # random-resized-crop scale (VWW: 0.2)
    data_on_device: bool = False  # decode the images once onto the device and augment there (rnnpool.data.on_device)
    project: str = "runs/classify"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    teacher: Optional[str] = None  # distil from this model (zoo name, torchvision:NAME or fitted .pt) ...
    teacher_weights: Optional[str] = None  # ... with these trained weights
    distill_temperature: float = 4.0
    distill_weight: float = 0.5  # share of the distillation term in the loss (the rest: the labels')
    bn_momentum: Optional[float] = None  # every BatchNorm's running-statistics momentum (None: the model's own)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.teacher is None) != (self.teacher_weights is None):
            raise InvalidInputError("distillation needs both teacher and teacher_weights (a trained teacher)")
        if self.bn_momentum is not None and not 0 < self.bn_momentum <= 1:
            raise InvalidInputError(f"bn_momentum must be in (0, 1], got {self.bn_momentum}")
        if self.distill_temperature <= 0 or not 0 <= self.distill_weight <= 1:
            raise InvalidInputError(f"need distill_temperature > 0 and 0 <= distill_weight <= 1, got "
                                    f"{self.distill_temperature} and {self.distill_weight}")


@dataclass(kw_only=True)
class DetectConfig(TrainConfig):
    """A detection run: the shared :class:`TrainConfig` plus annotations and evaluation settings."""

    train: str
    val: Optional[str] = None
    image_root: Optional[str] = None
    epochs: int = 300
    batch_size: int = 32
    lr: float = 0.01
    step_size: int = 100
    warmup_epochs: int = 5
    input_size: int = 640
    project: str = "runs/detect"
    eval_period: int = 10
    eval_scales: Sequence[float] = (1.0,)
    # max norm of the whole gradient (None: not clipped). 10 by default: it removed Face-Quant's unstable start and
    # raised both face detectors' AP on the shared face set (the README's face-clip table)
    grad_clip: Optional[float] = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise InvalidInputError(f"grad_clip must be a positive gradient norm (or None), got {self.grad_clip}")


__all__ = ["ClassifyConfig", "DetectConfig", "TrainConfig"]
