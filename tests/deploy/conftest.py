"""Shared fixtures for the deployment tests: small face models with non-trivial BatchNorm statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rnnpool.models import create_model


def face_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A zoo face model in eval mode whose BatchNorms are not the identity (as after training)."""
    torch.manual_seed(seed)
    model = create_model(name).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def smooth_images(model: torch.nn.Module, count: int, seed: int = 0) -> list:
    """Float (C, H, W) images in [0, 1] on the 8-bit grid, smooth like photos."""
    gen = torch.Generator().manual_seed(seed)
    h, w = model.input_size
    small = torch.rand(count, model.in_channels, h // 16, w // 16, generator=gen)
    images = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return list((images * 255).round() / 255)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="session")
def face_m4_quantized():
    from rnnpool.deploy import quantize_model

    model = face_model("rnnpool_face_m4")
    images = smooth_images(model, 3)
    return model, quantize_model(model, images), images
