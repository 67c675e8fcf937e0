"""Reading trained weights back into a zoo model, without the training engine.

Training checkpoints (``rnnpool train``) hold the model's state dict under ``"model"`` (a detector's
inside its S3FD wrapper, prefixed ``detector.``) and the run's settings under ``"config"`` (model name,
input size, model options); a bare state dict also loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import RnnpoolError
from ._registry import create_model


class CheckpointError(RnnpoolError, ValueError):
    """A checkpoint that cannot be read, or holds another model's weights."""


def load_checkpoint(path: Union[str, Path], map_location: str = "cpu") -> Dict[str, Any]:
    """Load a checkpoint; a missing or corrupt file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint: {err}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not weights")
    return checkpoint


def model_state(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The model weights of a training checkpoint, or the dict itself if it is a bare state_dict."""
    return checkpoint["model"] if "model" in checkpoint else checkpoint


def checkpoint_config(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The run settings saved with a training checkpoint (empty for a bare state dict)."""
    config = checkpoint.get("config", {})
    return config if isinstance(config, dict) else {}


def checked_model_name(checkpoint: Dict[str, Any], path: Union[str, Path], name: Optional[str]) -> Optional[str]:
    """``name``, refused (naming both) if the loaded ``checkpoint`` (read from ``path``) names another model;
    the model the checkpoint names when ``name`` is None (None if it names none)."""
    saved = checkpoint_config(checkpoint).get("model") or checkpoint.get("model_name")
    if name and saved and saved != name:
        raise CheckpointError(f"checkpoint {path} is {saved}, not {name}")
    return name or saved


def load_weights(model: nn.Module, path: Union[str, Path], name: Optional[str] = None) -> Dict[str, Any]:
    """Load ``path`` into ``model`` (also from a detector's S3FD training wrapper); returns the checkpoint.

    With ``name``, a checkpoint saved for another zoo model is refused, naming both."""
    checkpoint = load_checkpoint(path)
    if name:
        checked_model_name(checkpoint, path, name)
    state = model_state(checkpoint)
    if any(k.startswith("detector.") for k in state):
        state = {k[len("detector."):]: v for k, v in state.items() if k.startswith("detector.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit {name or type(model).__name__}: {first}") from None
    return checkpoint


def checkpoint_model(path: Union[str, Path], name: Optional[str] = None) -> str:
    """The zoo model a checkpoint is for: ``name``, checked against the one the checkpoint names, or that one
    when ``name`` is None; raises, naming both, if they differ or neither is known."""
    named = checked_model_name(load_checkpoint(path), path, name)
    if not named:
        raise CheckpointError(f"checkpoint {path} does not say which model it is; give the model name")
    return named


def create_model_from_checkpoint(path: Union[str, Path], name: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """The zoo model a training checkpoint was saved from, built with its saved options and weights.

    ``name`` defaults to the model the checkpoint names; ``kwargs`` override its saved options."""
    checkpoint = load_checkpoint(path)
    config = checkpoint_config(checkpoint)
    name = checked_model_name(checkpoint, path, name)
    if not name:
        raise CheckpointError(f"checkpoint {path} does not say which model it is; give the model name")
    options = dict(config.get("model_kwargs") or {})
    state = model_state(checkpoint)
    head = state.get("classifier.weight")
    if head is not None:
        options.setdefault("num_classes", head.shape[0])
    if "input_size" in config and "classifier.weight" in state:
        options.setdefault("input_size", config["input_size"])
    options.update(kwargs)
    model = create_model(name, **options)
    load_weights(model, path, name)
    return model


__all__ = ["CheckpointError", "checked_model_name", "checkpoint_config", "checkpoint_model", "create_model_from_checkpoint", "load_checkpoint", "load_weights",
           "model_state"]


def load_fitted_model(path: Union[str, Path]) -> nn.Module:
    """The model a ``rnnpool fit --save`` checkpoint carries (architecture and weights)."""
    checkpoint = load_checkpoint(path)
    model = checkpoint.get("fitted_model")
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"checkpoint {path} holds weights only, not a model: give the model's name "
                              "(a file saved by 'rnnpool fit --save' carries its model)")
    return model


def fitted_input_shape(path: Union[str, Path]) -> Optional[Tuple[int, ...]]:
    """The input shape a ``rnnpool fit --save`` checkpoint was fitted at (None for other checkpoints)."""
    shape = load_checkpoint(path).get("input_shape")
    return tuple(shape) if shape else None
