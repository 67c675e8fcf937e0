"""The paper's models, registered by name: ``create_model("mobilenetv2_rnnpool", num_classes=10)``."""
from . import densenet, face, mobilenetv2  # noqa: F401  (registers the models)
from ._registry import ModelInfo, create_model, is_factory, is_fitted_file, is_zoo_name, list_models, model_info, register_model
from .densenet import DenseNet
from .face import FaceDetector
from .mobilenetv2 import MobileNetV2

__all__ = ["DenseNet", "FaceDetector", "MobileNetV2", "ModelInfo", "create_model", "is_factory", "is_fitted_file", "is_zoo_name", "list_models",
           "model_info", "register_model"]
