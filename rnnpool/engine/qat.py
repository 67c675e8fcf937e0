"""Quantization-aware fine-tuning in the training engine: the model a QAT run trains, and its fixed ranges.

The activation ranges are measured once, on the float model of ``--weights`` over the first
``qat_calibration`` training images at the model's deployed input size, and saved in every checkpoint
(``activation_ranges``); a resumed run reads them back instead of measuring the changed model again.
``rnnpool export c`` and :func:`rnnpool.deploy.quantize.quantize_model` take them from the checkpoint, so the
int8 program is the model the fine-tuning saw.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..deploy.fake_quant import RANGES_KEY, FakeQuantModel, calibrate_ranges, checkpoint_ranges, fold_batchnorm_
from ..errors import InvalidInputError
from .config import TrainConfig


def qat_model(cfg: TrainConfig, model: nn.Module, calibration: Callable[[], List[torch.Tensor]],
              input_size: Optional[Tuple[int, int]] = None) -> Tuple[FakeQuantModel, Dict[str, Tuple[float, float]]]:
    """``model`` (the float weights of ``cfg.weights``) as a :class:`FakeQuantModel` and its activation ranges:
    the resumed checkpoint's, else those of the images ``calibration()`` loads (float (C, H, W) at
    ``input_size``; not read when resuming). The
    BatchNorm statistics are folded into the convs first (:func:`fold_batchnorm_`), so the fine-tuning moves
    the deployed weights at the learning rate it is given."""
    fold_batchnorm_(model)
    if cfg.resume:
        ranges = checkpoint_ranges(cfg.resume)
        if ranges is None:
            raise InvalidInputError(f"--resume {cfg.resume} is not a QAT run's checkpoint (it has no activation ranges)")
    else:
        images = calibration()
        if not images:
            raise InvalidInputError("QAT needs calibration images (qat_calibration > 0 training images)")
        ranges = calibrate_ranges(model, images, input_size)
    return FakeQuantModel(model, ranges, input_size), ranges


__all__ = ["RANGES_KEY", "qat_model"]
