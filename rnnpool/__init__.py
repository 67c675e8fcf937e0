"""rnnpool: RNNPool pooling, peak-RAM analysis, models, training and microcontroller deployment."""
from typing import Any

__version__ = "0.1.0"
__all__ = ["RNNPool2d", "__version__"]


def __getattr__(name: str) -> Any:
    """``rnnpool.RNNPool2d`` on first use: importing the package (e.g. for ``rnnpool --help``) does not import
    torch."""
    if name == "RNNPool2d":
        from .nn import RNNPool2d

        return RNNPool2d
    raise AttributeError(f"module 'rnnpool' has no attribute {name!r}")
