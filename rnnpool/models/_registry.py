"""Model registry: ``@register_model`` on every variant, ``create_model(name, checkpoint_path=None, **kw)``,
``list_models(pattern)``.

The CLI, the profiler's zoo table, the benchmarks and the parametrised tests all iterate this registry, so a
registered model shows up everywhere.
"""
from __future__ import annotations

import difflib
import importlib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from torch import nn
from ..errors import InvalidInputError, UnknownModelError, UnsupportedError


@dataclass(frozen=True)
class ModelInfo:
    """What a variant is: its builder, default input shape (C, H, W), task and a one-line description."""

    name: str
    builder: Callable[..., nn.Module]
    input_shape: Tuple[int, int, int]
    task: str
    description: str


_MODELS: Dict[str, ModelInfo] = {}


def register_model(input_shape: Tuple[int, int, int], task: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a constructor under its function name; its docstring's first line describes it."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise InvalidInputError(f"model {fn.__name__!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _MODELS[fn.__name__] = ModelInfo(fn.__name__, fn, tuple(input_shape), task, doc[0] if doc else "")
        return fn

    return wrap


def list_models(pattern: str = "*", task: str = "") -> List[str]:
    """Registered names matching the glob ``pattern`` (and ``task`` if given), sorted."""
    return sorted(n for n, info in _MODELS.items() if fnmatch.fnmatch(n, pattern) and (not task or info.task == task))


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; unknown names raise a KeyError suggesting the closest one."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (see rnnpool.models.list_models())")
    return _MODELS[name]


TORCHVISION_PREFIX = "torchvision:"  # create_model("torchvision:resnet18"): any torchvision classification model
FITTED_SUFFIX = ".pt"  # create_model("fitted.pt"): a model saved by rnnpool fit --save


def is_fitted_file(name: str) -> bool:
    """Whether ``name`` is a file saved by ``rnnpool fit --save`` (or a run of such a model), not a model name."""
    return name.endswith(FITTED_SUFFIX)


def is_factory(name: str) -> bool:
    """Whether ``name`` is ``package.module:factory``, a function of the user's own code that builds the model."""
    return ":" in name and not name.startswith(TORCHVISION_PREFIX) and not is_fitted_file(name)


def is_zoo_name(name: str) -> bool:
    """Whether ``name`` names a registered model (not ``torchvision:NAME``, ``package.module:factory`` or a fitted ``*.pt``)."""
    return not (name.startswith(TORCHVISION_PREFIX) or is_fitted_file(name) or is_factory(name))


def _factory_model(spec: str, **kwargs: Any) -> nn.Module:
    """The model ``package.module:factory(**kwargs)`` returns (the factory may be a dotted attribute path)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidInputError(f"a model factory looks like package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UnknownModelError(f"cannot import {module_name!r} for the model {spec!r}: {err}") from None
    factory: Any = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise UnknownModelError(f"{module_name} has no callable {attribute!r} (model {spec!r})")
    try:
        model = factory(**kwargs)
    except TypeError as err:
        if kwargs and "unexpected keyword argument" in str(err):
            raise InvalidInputError(f"{spec} takes no option {str(err).split('argument ')[-1]}") from None
        raise
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision_model(name: str, **kwargs: Any) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=1)
        raise UnknownModelError(f"unknown torchvision model {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    return torchvision.models.get_model(name, weights=None, **kwargs)


def create_model(name: str, pretrained: bool = False, checkpoint_path: Optional[Union[str, Path]] = None,
                 **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` (or ``torchvision:NAME``, or a ``rnnpool fit --save`` file ``*.pt``);
    ``kwargs`` go to its constructor (e.g. ``num_classes=10``). ``checkpoint_path``: load these weights (a
    training checkpoint of this model, or a bare state dict). No pretrained weights ship with rnnpool:
    ``pretrained=True`` says so."""
    if pretrained:
        raise UnsupportedError(f"rnnpool ships no pretrained weights for {name!r}; train it and pass checkpoint_path=")
    if is_fitted_file(name):  # a model saved by rnnpool fit: it carries its architecture
        from .checkpoint import load_fitted_model

        if kwargs or checkpoint_path is not None:
            raise InvalidInputError(f"{name} carries its own model: it takes no options or other weights")
        return load_fitted_model(name)
    if name.startswith(TORCHVISION_PREFIX):
        model = _torchvision_model(name[len(TORCHVISION_PREFIX):], **kwargs)
    elif is_factory(name):
        model = _factory_model(name, **kwargs)
    else:
        info = model_info(name)
        try:
            model = info.builder(**kwargs)
        except TypeError as err:
            if "unexpected keyword argument" not in str(err):
                raise
            raise InvalidInputError(f"model {name!r} has no option {str(err).split('argument ')[-1]}") from None
    if checkpoint_path is not None:
        from .checkpoint import load_weights  # (it imports this module)

        load_weights(model, checkpoint_path, name if is_zoo_name(name) else None)
    return model