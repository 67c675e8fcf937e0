"""Training and evaluation loops. The names below load their module on first use, so reading a run's
settings (:mod:`rnnpool.engine.config`, e.g. for the CLI's options) imports no torch."""
from importlib import import_module
from typing import Any

from .config import ClassifyConfig, DetectConfig, TrainConfig

_HOMES = {"evaluate_checkpoint": "classify", "evaluate_classifier": "classify", "train_classifier": "classify",
          "build_detector": "detect", "detect_image": "detect", "evaluate_detector": "detect", "train_detector": "detect"}

__all__ = ["ClassifyConfig", "DetectConfig", "TrainConfig", "build_detector", "detect_image", "evaluate_checkpoint",
           "evaluate_classifier", "evaluate_detector", "train_classifier", "train_detector"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'rnnpool.engine' has no attribute {name!r}")
