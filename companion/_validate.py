"""Input validation shared by every public function of the companion.

Each check raises a ``TypeError`` (wrong kind of object) or a ``ValueError`` (right kind, bad
value) whose message names the argument and says what was expected.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def check_images(x: Any, name: str = "x", *, channels: int | None = None) -> torch.Tensor:
    """A non-empty float batch ``(B, C, H, W)`` with finite values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got {x.shape[1]}")
    values = x.detach()
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (images are scaled to [0, 1]), got range [{lo:.3g}, {hi:.3g}]")
    return x


def check_labels(y: Any, n: int, name: str = "y", num_classes: int | None = None) -> torch.Tensor:
    """Integer class labels of shape ``(n,)``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer labels, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the images, got {tuple(y.shape)}")
    if n and int(y.min()) < 0:
        raise ValueError(f"{name} holds negative labels")
    if num_classes is not None and n and int(y.max()) >= num_classes:
        raise ValueError(f"{name} holds label {int(y.max())} but there are only {num_classes} classes")
    return y.long()


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return v


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """One of a fixed set of option strings."""
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, options))}")
    return value


def check_generator(G: Any) -> int:
    """A generator ``nn.Module`` with a ``latent_dim`` attribute, in eval mode; returns its latent dimension.

    Eval mode matters: with BatchNorm in training mode each image's output would depend on the rest of the batch.
    """
    if not isinstance(G, torch.nn.Module) or not hasattr(G, "latent_dim"):
        raise TypeError(f"G must be a generator module with a latent_dim attribute, got {type(G).__name__}")
    if G.training:
        raise ValueError("G is in training mode: call G.eval() first (BatchNorm must use its running statistics, "
                         "otherwise each image's projection depends on the rest of the batch)")
    return int(G.latent_dim)
