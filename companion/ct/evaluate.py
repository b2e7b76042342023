"""Image quality outside the metal, per metal-size group (the layout of the paper's Tables 4.1 and 4.2).

PSNR uses a fixed peak (``data_range = 2.0`` water units, our stand-in for DeepLesion's per-image
dynamic range) and averages the squared error over the non-metal pixels only; SSIM is scikit-image's,
computed after setting the metal pixels of the estimate to the target's values. Metal pixels are
those with any implant coverage.
"""
from __future__ import annotations

import numpy as np
import torch

from .._validate import check_positive
from ..metrics import psnr_from_mse

PEAK = 2.0


def _check(x: torch.Tensor, ref: torch.Tensor, metal: torch.Tensor) -> None:
    for name, t in (("x", x), ("ref", ref), ("metal", metal)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            raise ValueError(f"{name} must be a tensor of shape (B, H, W), got {tuple(getattr(t, 'shape', ()))}")
    if x.shape != ref.shape or x.shape != metal.shape:
        raise ValueError(f"x, ref and metal must have the same shape, got {tuple(x.shape)}, {tuple(ref.shape)}, {tuple(metal.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")


def masked_psnr(x: torch.Tensor, ref: torch.Tensor, metal: torch.Tensor, data_range: float = PEAK) -> torch.Tensor:
    """PSNR (dB) of each image of ``(B, H, W)`` over the pixels where ``metal == 0``
    (:func:`companion.metrics.psnr_from_mse` of the MSE outside the metal)."""
    _check(x, ref, metal)
    check_positive(data_range, "data_range")
    keep = (metal == 0).double()
    mse = ((x.double() - ref.double()) ** 2 * keep).sum((1, 2)) / keep.sum((1, 2)).clamp(min=1)
    return psnr_from_mse(mse, data_range)


def masked_ssim(x: torch.Tensor, ref: torch.Tensor, metal: torch.Tensor, data_range: float = PEAK) -> torch.Tensor:
    """SSIM of each image with the metal pixels of ``x`` replaced by ``ref``'s."""
    from skimage.metrics import structural_similarity

    _check(x, ref, metal)
    check_positive(data_range, "data_range")
    filled = torch.where(metal > 0, ref, x).double().numpy()
    target = ref.double().numpy()
    return torch.tensor([structural_similarity(a, b, data_range=data_range) for a, b in zip(filled, target)])


def group_means(values: torch.Tensor, group: torch.Tensor, n_groups: int = 5) -> list[float]:
    """Mean of ``values`` in each group ``0 .. n_groups−1`` followed by the mean over the groups."""
    means = [float(values[group == g].mean()) for g in range(n_groups)]
    return means + [float(np.mean(means))]
