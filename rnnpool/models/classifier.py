"""The classifier interface shared by the zoo's CNNs (timm-style)."""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn
from ..errors import InvalidInputError


class Classifier(nn.Module):
    """Base for classifiers: ``forward = forward_head(forward_features(x))``.

    Subclasses set ``self.features`` (stem + stages), ``self.head_pool``, ``self.dropout_rate``,
    ``self.classifier`` and ``self.feature_info``: a list of
    ``{"num_chs", "reduction", "module"}`` per stage, which detectors use to tap the backbone.
    """

    features: nn.Module
    head_pool: nn.Module
    classifier: nn.Module
    feature_info: List[Dict[str, object]]
    num_features: int
    dropout_rate: float = 0.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> final feature map (N, num_features, H/32, W/32)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (N, num_classes), or the pooled features when ``pre_logits``."""
        x = torch.flatten(self.head_pool(x), 1)
        if pre_logits:
            return x
        x = nn.functional.dropout(x, self.dropout_rate, self.training)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer (0 classes: identity, for feature extraction)."""
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes


def check_input_size(input_size: int, multiple: int) -> int:
    if input_size <= 0 or input_size % multiple:
        raise InvalidInputError(f"input_size must be a positive multiple of {multiple}, got {input_size}")
    return input_size
