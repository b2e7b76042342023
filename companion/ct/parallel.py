"""Parallel-beam Radon transform, its adjoint (back-projection) and filtered back-projection.

Coordinates. Pixel ``(row, col)`` of an ``N × N`` image sits at ``u = col − N//2`` (to the right),
``v = N//2 − row`` (up), in pixel units. The ray of angle ``θ`` and detector offset ``t`` is the line
``u cos θ + v sin θ = t``; detector bin ``j`` sits at ``t_j = (j − n_det//2)·Δt``. These are
scikit-image's conventions, so ``ParallelBeam(N, angles).A(x)`` matches ``skimage.transform.radon``
(``circle=True``) and :meth:`ParallelBeam.fbp` matches ``iradon``.

The matrix is *pixel driven*: pixel ``p`` adds ``x_p · max(0, 1 − |t_p(θ) − t_j|/Δt) / Δt`` to bin ``j``
(two bins per angle), which conserves mass (``Σ_j y_θj Δt = Σ_p x_p``). Its transpose is the classic
back-projector that linearly interpolates each filtered projection at ``t_p(θ)``, so

    FBP(y) = (π / n_θ) · Δt · Aᵀ(h ⋆ y),

the adjoint applied to ramp-filtered data. Sinograms have shape ``(..., n_det, n_θ)`` (detectors ×
views, as in scikit-image and the DuDoNet paper).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._validate import check_choice, check_int, check_positive
from .operator import SparseOperator

FILTERS = ("ramp", "shepp-logan", "hann")


def ramp_filter(n_det: int, spacing: float = 1.0, window: str = "ramp") -> torch.Tensor:
    """Frequency response (length ``P``, the zero-padded size) of the band-limited ramp filter.

    ``P`` is the next power of two ≥ ``2·n_det`` (so the linear convolution does not wrap around). The
    response is the DFT of the spatial Ram-Lak kernel ``h[0] = 1/(4Δt²)``, ``h[±n odd] = −1/(π n Δt)²``,
    ``h[even] = 0``, times ``Δt`` for the convolution integral; unlike a sampled ``|ω|`` it has no DC
    bias. ``window`` "shepp-logan" multiplies by a sinc, "hann" by a raised cosine (both damp noise).
    """
    check_int(n_det, "n_det")
    check_positive(spacing, "spacing")
    check_choice(window, "window", FILTERS)
    size = max(64, 1 << math.ceil(math.log2(2 * n_det)))
    n = torch.cat([torch.arange(0, size // 2 + 1), torch.arange(-(size // 2) + 1, 0)]).double()
    h = torch.zeros(size, dtype=torch.float64)
    h[0] = 1.0 / (4 * spacing**2)
    odd = n.remainder(2) == 1
    h[odd] = -1.0 / (math.pi * n[odd] * spacing) ** 2
    response = torch.fft.fft(h).real * spacing
    freq = torch.fft.fftfreq(size, dtype=torch.float64)          # cycles per sample, in [-1/2, 1/2)
    if window == "shepp-logan":
        w = torch.pi * freq
        response = response * torch.where(w == 0, torch.ones_like(w), torch.sin(w) / torch.where(w == 0, 1.0, w))
    elif window == "hann":
        response = response * 0.5 * (1 + torch.cos(2 * torch.pi * freq))
    return response


def filter_sinogram(y: torch.Tensor, spacing: float = 1.0, window: str = "ramp") -> torch.Tensor:
    """Ramp-filter ``y`` of shape ``(..., n_det, n_θ)`` along the detector axis (zero-padded, differentiable)."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.ndim < 2:
        raise ValueError("y must be a floating-point tensor of shape (..., n_det, n_views)")
    n_det = y.shape[-2]
    response = ramp_filter(n_det, spacing, window).to(device=y.device, dtype=y.dtype)
    size = response.numel()
    spectrum = torch.fft.rfft(y, n=size, dim=-2) * response[: size // 2 + 1, None]
    return torch.fft.irfft(spectrum, n=size, dim=-2)[..., :n_det, :]


class ParallelBeam(SparseOperator):
    """Parallel-beam geometry: ``A`` (Radon transform), ``A_adjoint`` (back-projection), ``fbp``.

    ``n_pixels``: image side ``N``; ``angles``: projection angles in radians (a sequence or 1-D tensor;
    ``fbp`` weights every view by ``π/n_θ``, right for angles spread uniformly over [0, π), and over
    [0, 2π), where it averages the two measurements of every line); ``n_detectors``: bins per view (default
    ``N``, which covers the inscribed circle; use ``ceil(√2·N)`` for the whole square);
    ``detector_spacing``: ``Δt`` in pixels. Images ``(..., N, N)`` ↦ sinograms ``(..., n_det, n_θ)``.

    Example: ``op = ParallelBeam(64, torch.linspace(0, math.pi, 90 + 1)[:-1])``;
    ``x_rec = op.fbp(op.A(x))``.
    """

    def __init__(self, n_pixels: int, angles: Sequence[float] | torch.Tensor, n_detectors: int | None = None,
                 detector_spacing: float = 1.0) -> None:
        super().__init__()
        check_int(n_pixels, "n_pixels", minimum=2)
        angles = torch.as_tensor(angles, dtype=torch.float64).flatten()
        if angles.numel() == 0 or not torch.isfinite(angles).all():
            raise ValueError("angles must be a non-empty sequence of finite angles in radians")
        n_det = n_pixels if n_detectors is None else check_int(n_detectors, "n_detectors", minimum=2)
        self.spacing = check_positive(detector_spacing, "detector_spacing")
        self.n_pixels, self.n_detectors, self.n_angles = n_pixels, n_det, angles.numel()
        self.register_buffer("angles", angles.float())
        self.in_shape, self.out_shape = (n_pixels, n_pixels), (n_det, self.n_angles)

        idx = torch.arange(n_pixels, dtype=torch.float64)
        v, u = torch.meshgrid(n_pixels // 2 - idx, idx - n_pixels // 2, indexing="ij")   # (row, col) grids
        t = u.flatten()[None, :] * torch.cos(angles)[:, None] + v.flatten()[None, :] * torch.sin(angles)[:, None]
        pos = t / self.spacing + n_det // 2                                            # (n_θ, N²) bin coordinate
        left = torch.floor(pos)
        frac = pos - left
        pixel = torch.arange(n_pixels * n_pixels).expand_as(pos)
        view = torch.arange(self.n_angles)[:, None].expand_as(pos)
        rows, cols, vals = [], [], []
        for offset, weight in ((0, 1 - frac), (1, frac)):
            j = left.long() + offset
            keep = (j >= 0) & (j < n_det) & (weight > 0)
            rows.append((j * self.n_angles + view)[keep])
            cols.append(pixel[keep])
            vals.append((weight / self.spacing)[keep])
        self._set_matrix(torch.cat(rows), torch.cat(cols), torch.cat(vals).float())

    def fbp(self, y: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Filtered back-projection of sinograms ``(..., n_det, n_θ)`` -> images ``(..., N, N)``."""
        q = filter_sinogram(y, self.spacing, filter)
        return self.A_adjoint(q) * (math.pi / self.n_angles * self.spacing)

    def extra_repr(self) -> str:
        return f"n_pixels={self.n_pixels}, n_angles={self.n_angles}, n_detectors={self.n_detectors}, spacing={self.spacing:.4g}"


def uniform_angles(n: int, span: float = math.pi) -> torch.Tensor:
    """``n`` angles ``k·span/n``, ``k = 0..n−1`` (radians)."""
    check_int(n, "n")
    return torch.arange(n, dtype=torch.float64) * (span / n)
