"""Shared fixtures for the deployment tests: zoo models whose every layer is live, and photo-like images.

A freshly initialised RNNPool outputs almost the same values for every image (FastGRNN's biases of 1 and
W, U ~ 0.1 N(0, 1) saturate it), so everything after it would see a constant input and a bit-exact test
would prove little. ``live_model`` scales the recurrent weights up, zeroes their biases, and sets every
BatchNorm's statistics from real forward passes, so each layer's output varies with the image;
``assert_live`` checks that it does in the int8 reference.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rnnpool.models import create_model
from rnnpool.nn import FastGRNNCell


def smooth_images(shape, count: int, seed: int = 0) -> List[torch.Tensor]:
    """Float (C, H, W) images in [0, 1] on the 8-bit grid, smooth like photos."""
    c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(count, c, max(2, h // 16), max(2, w // 16), generator=gen)
    images = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return list((images * 255).round() / 255)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def input_shape(model: nn.Module):
    if hasattr(model, "in_channels"):
        return (model.in_channels, *model.input_size)
    return (3, model.input_size, model.input_size)


@torch.no_grad()
def make_live(model: nn.Module, seed: int = 0, shape=None) -> nn.Module:
    """Recurrent weights that respond to their input, and BatchNorm statistics of real activations (on images of
    ``shape``, default the model's own input)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FastGRNNCell):
            m.w1.copy_(torch.randn(m.w1.shape, generator=gen) * 1.5 / math.sqrt(m.w1.shape[1]))
            m.u1.copy_(torch.randn(m.u1.shape, generator=gen) * 0.5 / math.sqrt(m.u1.shape[1]))
            m.bias_gate.copy_(torch.randn(m.bias_gate.shape, generator=gen) * 0.3)
            m.bias_update.copy_(torch.randn(m.bias_update.shape, generator=gen) * 0.3)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches below
    model.train()
    images = torch.stack(smooth_images(shape or input_shape(model), 6, seed + 100))
    for chunk in images.split(3):
        model(chunk)
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def live_model(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """A zoo model, initialised under ``seed``, made live (see the module doc), in eval mode."""
    torch.manual_seed(seed)
    return make_live(create_model(name, **kwargs), seed)


def assert_live(graph, images_uint8) -> None:
    """Every map of the int8 reference takes several values and differs between the two images."""
    from rnnpool.deploy.int8_reference import dead_maps

    assert dead_maps(graph, *images_uint8[:2]) == {}


@pytest.fixture(scope="session")
def face_m4_quantized():
    from rnnpool.deploy import quantize_model

    model = live_model("rnnpool_face_m4")
    images = smooth_images(input_shape(model), 4)
    return model, quantize_model(model, images[:2]), images
