"""rnnpool: RNNPool pooling, peak-RAM analysis, models, training and microcontroller deployment."""
from .nn import RNNPool2d

__version__ = "0.1.0"
__all__ = ["RNNPool2d", "__version__"]
