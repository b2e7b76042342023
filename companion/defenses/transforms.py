"""Simple input transforms and the wrapper that puts one in front of a classifier.

These are the toy defenses of the foundations chapter: bit-depth reduction (a non-differentiable
transform whose gradient is zero almost everywhere), additive noise and pixel dropout (randomised
transforms).
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


def pixel_dropout(x: torch.Tensor, rate: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set each pixel of ``x`` to 0 with probability ``rate``, a fresh draw at every call (all channels of a
    pixel together): a randomised transform whose single-draw gradient is a poor guide to the next draw."""
    check_images(x)
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"rate must lie in [0, 1), got {rate!r}")
    shape = (x.shape[0], 1, *x.shape[2:])
    keep = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype) >= rate
    return x * keep


class Preprocessed(nn.Module):
    """The defended classifier ``f(T(x))``: apply ``transform`` to the input, then ``model``."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], model: nn.Module) -> None:
        super().__init__()
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))


def majority_vote(model: nn.Module, transform: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, runs: int = 10,
                  *, batch_size: int = 512) -> torch.Tensor:
    """Ensemble inference for a randomised transform: classify ``transform(x)`` ``runs`` times and
    return the majority label per image (ties broken by the summed softmax). ``runs = 10`` is the
    paper's "Ens-10"."""
    check_images(x)
    check_int(runs, "runs")
    with torch.no_grad():
        scores = []
        for i in range(0, len(x), batch_size):
            xb = x[i: i + batch_size]
            votes, prob = None, None
            for _ in range(runs):
                logits = model(transform(xb))
                one_hot = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)
                p = logits.softmax(1)
                votes = one_hot if votes is None else votes + one_hot
                prob = p if prob is None else prob + p
            scores.append(votes + prob / (runs + 1))  # summed softmax < runs + 1: it only breaks ties
        return torch.cat(scores).argmax(1)
