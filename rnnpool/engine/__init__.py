"""Training and evaluation loops."""
from .classify import ClassifyConfig, evaluate_checkpoint, evaluate_classifier, train_classifier

__all__ = ["ClassifyConfig", "evaluate_checkpoint", "evaluate_classifier", "train_classifier"]
