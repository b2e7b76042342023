"""Simple input transforms and the wrapper that puts one in front of a classifier.

These are the toy defenses of the foundations chapter: bit-depth reduction (a non-differentiable
transform whose gradient is zero almost everywhere) and additive noise (a randomised transform).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._validate import check_images, check_int, check_positive


def quantize(x: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Bit-depth reduction: round each pixel of ``x`` in [0, 1] to the nearest of ``levels`` values.

    ``levels = 2`` binarises. The output is piecewise constant in ``x``, so its gradient is zero
    almost everywhere: a gradient attack run through it learns nothing.
    """
    check_images(x)
    check_int(levels, "levels", minimum=2)
    return torch.round(x * (levels - 1)) / (levels - 1)


def gaussian_noise(x: torch.Tensor, sigma: float = 0.3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add fresh N(0, σ²) noise to every pixel of ``x`` and clip to [0, 1]: a randomised transform."""
    check_images(x)
    check_positive(sigma, "sigma")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp(0, 1)


class Preprocessed(nn.Module):
    """The defended classifier ``f(T(x))``: apply ``transform`` to the input, then ``model``."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], model: nn.Module) -> None:
        super().__init__()
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.model = model
        self.in_channels = getattr(model, "in_channels", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))
