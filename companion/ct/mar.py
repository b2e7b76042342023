"""Classical metal artifact reduction in the sinogram: the metal trace, LI and NMAR.

Both baselines treat the sinogram values on the metal trace as missing and fill them in:

* **LI** (linear interpolation): in every view, join the last value before the trace to the first
  value after it by a straight line along the detector axis;
* **NMAR** (normalised MAR): divide the sinogram by the projection of a *prior image* (a segmentation
  of the LI reconstruction into air, soft tissue and bone), interpolate that flatter sinogram, and
  multiply back, so the filled values follow the anatomy's projection instead of a straight line.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from .._validate import check_positive


class Projector(Protocol):
    """What NMAR needs of a scanner: ``project(x)``, images ``(..., N, N)`` -> sinograms ``(..., n_det, n_views)``
    (e.g. :class:`companion.ct.simulate.Scanner`, which imports this module for the metal trace and LI)."""

    def project(self, x: torch.Tensor) -> torch.Tensor: ...


def metal_trace(projected_metal: torch.Tensor, threshold: float = 1e-3) -> torch.Tensor:
    """The metal trace ``M_t``: rays whose projected metal length exceeds ``threshold`` (bool, same shape)."""
    check_positive(threshold, "threshold", allow_zero=True)
    return projected_metal > threshold


def _check_pair(y: torch.Tensor, mask: torch.Tensor) -> None:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.ndim < 2:
        raise ValueError("y must be a floating-point sinogram tensor of shape (..., n_det, n_views)")
    if not isinstance(mask, torch.Tensor) or mask.shape != y.shape:
        raise ValueError(f"mask must be a tensor of the sinogram's shape {tuple(y.shape)}, "
                         f"got {tuple(getattr(mask, 'shape', ()))}")


def linear_interpolation(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LI: replace ``y`` where ``mask`` is true by linear interpolation along the detector axis (−2), per view.

    ``y`` and ``mask`` have shape ``(..., n_det, n_views)``. A gap touching the end of the detector is
    filled with the nearest known value; a view that is entirely masked is set to 0.
    """
    _check_pair(y, mask)
    mask = mask.bool()
    n = y.shape[-2]
    idx = torch.arange(n, device=y.device).view(n, 1).expand(y.shape)
    known = ~mask
    prev = torch.where(known, idx, torch.full_like(idx, -1)).cummax(dim=-2).values
    nxt = torch.where(known, idx, torch.full_like(idx, n)).flip(-2).cummin(dim=-2).values.flip(-2)
    y_prev = torch.gather(y, -2, prev.clamp(min=0))
    y_next = torch.gather(y, -2, nxt.clamp(max=n - 1))
    span = (nxt - prev).clamp(min=1).to(y.dtype)
    w = (idx - prev).to(y.dtype) / span
    filled = torch.where(prev < 0, y_next, torch.where(nxt >= n, y_prev, (1 - w) * y_prev + w * y_next))
    filled = torch.where((prev < 0) & (nxt >= n), torch.zeros_like(y), filled)
    return torch.where(mask, filled, y)


def nmar_prior(x: torch.Tensor, air: float = 0.3, tissue: float = 1.3, sigma: float = 1.0) -> torch.Tensor:
    """NMAR's prior image: smooth ``x`` (Gaussian, ``sigma`` pixels), then air -> 0, soft tissue -> 1, bone kept.

    ``x`` is ``(..., H, W)`` in water units (water = 1).
    """
    radius = max(1, round(3 * sigma))
    k = torch.exp(-torch.arange(-radius, radius + 1, dtype=x.dtype) ** 2 / (2 * sigma**2))
    k = (k / k.sum()).to(x.device)
    flat = x.reshape(-1, 1, *x.shape[-2:])
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    smooth = flat.reshape(x.shape)
    return torch.where(smooth < air, torch.zeros_like(smooth), torch.where(smooth < tissue, torch.ones_like(smooth), smooth))


def nmar(scanner: Projector, y: torch.Tensor, mask: torch.Tensor, x_li: torch.Tensor, delta: float = 0.01) -> torch.Tensor:
    """NMAR-corrected sinogram: LI of ``y / (P prior + δ)`` inside the trace, multiplied back.

    ``x_li`` is the LI reconstruction from which the prior is segmented (:func:`nmar_prior`);
    ``scanner.project`` provides ``P``. Returns a sinogram shaped like ``y``.
    """
    _check_pair(y, mask)
    check_positive(delta, "delta")
    norm = scanner.project(nmar_prior(x_li)) + delta
    return linear_interpolation(y / norm, mask) * norm
