"""Training and evaluation loops."""
from .classify import ClassifyConfig, evaluate_checkpoint, evaluate_classifier, train_classifier
from .detect import DetectConfig, build_detector, detect_image, evaluate_detector, train_detector

__all__ = ["ClassifyConfig", "DetectConfig", "build_detector", "detect_image", "evaluate_checkpoint", "evaluate_classifier",
           "evaluate_detector", "train_classifier", "train_detector"]
